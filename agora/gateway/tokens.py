"""Counting tokens before a request is sent, and the chat template of generation models.

The gateway counts every prompt with the same tokenizer the miners run (the ``tokenizers``
library reading the model's ``tokenizer.json``), so that it can refuse a prompt over the context
limit with a 400 before any miner is paid, reserve the worst-case cost in the customer's escrow,
and check the token counts a miner signs in its receipt. Counts include special tokens (BOS, or
[CLS] and [SEP]), as the miner's engines count them.

The ``simple`` chat template turns OpenAI messages into one prompt::

    <|system|>\\n{system content}\\n<|user|>\\n{user content}\\n<|assistant|>\\n

one ``<|role|>\\n{content}\\n`` block per message in order (``developer`` is written as
``system``), then ``<|assistant|>\\n`` for the model to continue. The tiny test model has no chat
training, so any fixed, documented template serves; a real chat model would get its own.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from agora.gateway.errors import BadRequest, GatewayConfigError

__all__ = ["ChatMessage", "TokenCounter", "load_counter", "render_chat"]

ChatMessage = dict[str, Any]
CHAT_ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}


class TokenCounter:
    """Counts tokens of texts with one tokenizer (special tokens included, no truncation)."""

    def __init__(self, tokenizer: Any, source: str) -> None:
        tokenizer.no_truncation()
        tokenizer.no_padding()
        self._tokenizer = tokenizer
        self.source = source

    def count(self, text: str) -> int:
        return len(self._tokenizer.encode(text, add_special_tokens=True).ids)

    def count_many(self, texts: list[str]) -> list[int]:
        if len(texts) == 1:
            return [self.count(texts[0])]
        encodings = self._tokenizer.encode_batch(texts, add_special_tokens=True)
        return [len(e.ids) for e in encodings]


def _tokenizer_file(spec: str, data_dir: Path) -> Path:
    if spec == "minilm":
        from agora.models.embeddings import default_model_path

        return default_model_path() / "tokenizer.json"
    if spec in ("tiny", "tiny-bad"):
        from agora.models.tiny import ensure_tiny_model

        return ensure_tiny_model(data_dir, spec) / "tokenizer.json"
    path = Path(spec).expanduser()
    return path / "tokenizer.json" if path.is_dir() else path


def load_counter(spec: str, data_dir: Path) -> TokenCounter:
    """The counter for a model's ``tokenizer`` setting: ``minilm``, ``tiny``, or a path to a
    ``tokenizer.json`` (or a folder holding one).

    Raises:
        GatewayConfigError: no such file, or not a tokenizer.
    """
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # one short text: no thread pool
    from tokenizers import Tokenizer

    try:
        path = _tokenizer_file(spec, data_dir)
        tokenizer = Tokenizer.from_file(str(path))
    except Exception as error:  # tokenizers raises plain Exceptions for bad files
        raise GatewayConfigError(
            f"cannot load the tokenizer {spec!r} ({error}); give `minilm`, `tiny`, or a path to "
            "a tokenizer.json"
        ) from None
    return TokenCounter(tokenizer, str(path))


def _content(message: ChatMessage, index: int) -> str:
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for j, part in enumerate(content):
            if not isinstance(part, dict) or part.get("type") != "text":
                raise BadRequest(
                    f"messages[{index}].content[{j}]: only text parts are supported by this "
                    "model (no images, audio or files)",
                    param=f"messages[{index}].content",
                    code="unsupported_content",
                )
            text = part.get("text")
            if not isinstance(text, str):
                raise BadRequest(
                    f"messages[{index}].content[{j}].text must be a string",
                    param=f"messages[{index}].content",
                )
            parts.append(text)
        return "".join(parts)
    raise BadRequest(
        f"messages[{index}].content must be a string or a list of text parts",
        param=f"messages[{index}].content",
    )


def render_chat(messages: list[ChatMessage]) -> str:
    """The prompt for ``messages`` under the ``simple`` template (see the module docstring).

    Raises:
        BadRequest: an empty list, an unknown role (tool, function), a non-text content part.
    """
    if not messages:
        raise BadRequest("messages must hold at least one message", param="messages")
    blocks = []
    for index, message in enumerate(messages):
        if not isinstance(message, dict):
            raise BadRequest(f"messages[{index}] must be an object", param="messages")
        role = CHAT_ROLES.get(message.get("role"))  # type: ignore[arg-type]
        if role is None:
            raise BadRequest(
                f"messages[{index}].role {message.get('role')!r} is not supported; use system, "
                "developer, user or assistant (tools are not supported)",
                param=f"messages[{index}].role",
                code="unsupported_role",
            )
        extra = set(message) - {"role", "content", "name"}
        if extra:
            raise BadRequest(
                f"messages[{index}] has unsupported fields {sorted(extra)}",
                param=f"messages[{index}]",
                code="unsupported_parameter",
            )
        blocks.append(f"<|{role}|>\n{_content(message, index)}\n")
    blocks.append("<|assistant|>\n")
    return "".join(blocks)


def check_config(counter: TokenCounter) -> None:
    """Raises GatewayConfigError if the tokenizer counts nothing (a broken file)."""
    if counter.count("hello") < 1:
        raise GatewayConfigError(f"the tokenizer at {counter.source} encodes nothing")
