"""OpenAI's request and response shapes: parsing what clients send, writing what they expect.

Requests are read strictly: an unknown parameter, or a known one this gateway cannot honour with
a value other than its neutral default, is a 400 naming the parameter (``param``), never silently
ignored. Supported:

    /v1/embeddings        model, input (a string or a list of strings), encoding_format
                          ("float" or "base64"), user
    /v1/chat/completions  model, messages (system, developer, user, assistant; text content),
                          max_tokens | max_completion_tokens, temperature (0..2, default 1),
                          seed, stream, stream_options.include_usage, user;
                          neutral values only: n=1, top_p=1, presence/frequency_penalty=0,
                          logprobs=false, stop=[], tools=[], response_format={"type":"text"}
    /v1/completions       model, prompt (a string, or a list of one), max_tokens (default 16),
                          temperature, seed, stream, stream_options, user; n=1, best_of=1,
                          echo=false, top_p=1, penalties 0, stop, logprobs and suffix null

Answers are OpenAI's objects plus the Agora fields: ``agora_receipt`` (the miner's signed
receipt), ``agora_charged`` (units taken from the key's escrow) and, for generations,
``agora_request`` (the exact body sent to the miner: the rendered prompt and parameters),
``agora_token_ids``, ``agora_seed`` and ``agora_toploc`` (the miner's TOPLOC activation proof,
or null; what the receipt's hashes cover besides the text), so
that a customer can check it offline (:mod:`agora.gateway.verify`). Streams carry the same in
their chunks: ``agora_token_ids`` on each, the rest on the last one before the usage chunk.
"""

from __future__ import annotations

import base64
import json
import math
import time
from dataclasses import dataclass
from typing import Any

from agora.gateway.errors import BadRequest
from agora.net.receipts import Receipt

__all__ = [
    "EmbeddingsCall",
    "GenerationCall",
    "chat_chunk",
    "completion_chunk",
    "embeddings_response",
    "generation_response",
    "parse_chat",
    "parse_completions",
    "parse_embeddings",
    "parse_json_body",
]

MAX_INPUTS = 256
MAX_PROMPT_CHARS = 16_384
MAX_TOKENS_LIMIT = 4096
MAX_SEED = 2**63 - 1

_NEUTRAL: dict[str, tuple[Any, ...]] = {
    "n": (1,),
    "best_of": (1,),
    "top_p": (1, 1.0),
    "presence_penalty": (0, 0.0),
    "frequency_penalty": (0, 0.0),
    "logprobs": (False,),
    "top_logprobs": (0,),
    "echo": (False,),
    "stop": ([],),
    "tools": ([],),
    "functions": ([],),
    "tool_choice": ("none",),
    "function_call": ("none",),
    "parallel_tool_calls": (),
    "response_format": ({"type": "text"},),
    "logit_bias": ({},),
    "suffix": ("",),
    "store": (False,),
    "metadata": ({},),
    "service_tier": ("auto", "default"),
    "modalities": (["text"],),
    "dimensions": (),
}
_WHY = {
    "stop": "the miners' generation API has no stop sequences",
    "tools": "tool calling is not supported",
    "logprobs": "log probabilities are not returned",
    "n": "one choice per request",
    "dimensions": "embeddings come at the model's native size",
}
EMBEDDINGS_PARAMS = {"model", "input", "encoding_format", "user", "dimensions"}
CHAT_PARAMS = {
    "model",
    "messages",
    "max_tokens",
    "max_completion_tokens",
    "temperature",
    "seed",
    "stream",
    "stream_options",
    "user",
    "n",
    "top_p",
    "presence_penalty",
    "frequency_penalty",
    "logprobs",
    "top_logprobs",
    "stop",
    "tools",
    "tool_choice",
    "functions",
    "function_call",
    "parallel_tool_calls",
    "response_format",
    "logit_bias",
    "store",
    "metadata",
    "service_tier",
    "modalities",
}
COMPLETIONS_PARAMS = {
    "model",
    "prompt",
    "max_tokens",
    "temperature",
    "seed",
    "stream",
    "stream_options",
    "user",
    "n",
    "best_of",
    "echo",
    "top_p",
    "presence_penalty",
    "frequency_penalty",
    "logprobs",
    "stop",
    "suffix",
    "logit_bias",
}


def parse_json_body(body: bytes) -> dict[str, Any]:
    """The request body as a JSON object. Raises BadRequest (``invalid_json``)."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError) as error:
        raise BadRequest(
            f"we could not parse the JSON body of your request ({error}); send a JSON object "
            "with Content-Type: application/json",
            code="invalid_json",
        ) from None
    if not isinstance(data, dict):
        raise BadRequest("the request body must be a JSON object", code="invalid_json")
    return data


def _check_params(data: dict[str, Any], allowed: set[str]) -> None:
    for name in sorted(data):
        if name not in allowed:
            raise BadRequest(
                f"unrecognized request argument supplied: {name}",
                param=name,
                code="unknown_parameter",
            )
        value = data[name]
        if name in _NEUTRAL and value is not None and value not in _NEUTRAL[name]:
            why = _WHY.get(name, "this gateway cannot honour it")
            neutral = _NEUTRAL[name]
            hint = f"leave it out or send {json.dumps(neutral[0])}" if neutral else "leave it out"
            raise BadRequest(
                f"unsupported parameter {name}={json.dumps(value)[:80]}: {why}; {hint}",
                param=name,
                code="unsupported_parameter",
            )


def _model(data: dict[str, Any]) -> str:
    model = data.get("model")
    if not isinstance(model, str) or not model:
        raise BadRequest("you must provide a model parameter", param="model", code="missing_model")
    return model


def _int(data: dict[str, Any], name: str, low: int, high: int) -> int | None:
    value = data.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise BadRequest(f"{name} must be an integer from {low} to {high}", param=name)
    return value


def _bool(data: dict[str, Any], name: str) -> bool:
    value = data.get(name)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise BadRequest(f"{name} must be true or false", param=name)
    return value


@dataclass(frozen=True)
class EmbeddingsCall:
    model: str
    texts: list[str]
    encoding_format: str
    user: str | None


def parse_embeddings(data: dict[str, Any]) -> EmbeddingsCall:
    """Raises BadRequest."""
    _check_params(data, EMBEDDINGS_PARAMS)
    model = _model(data)
    raw = data.get("input")
    texts: list[str]
    if isinstance(raw, str):
        texts = [raw]
    elif isinstance(raw, list) and raw and all(isinstance(t, str) for t in raw):
        texts = raw
    elif isinstance(raw, list) and raw and all(isinstance(t, int | list) for t in raw):
        raise BadRequest(
            "token-id inputs are not supported: send the text",
            param="input",
            code="unsupported_parameter",
        )
    else:
        raise BadRequest(
            "input must be a non-empty string or a non-empty list of strings", param="input"
        )
    if len(texts) > MAX_INPUTS:
        raise BadRequest(f"at most {MAX_INPUTS} inputs per request", param="input")
    for i, text in enumerate(texts):
        if not text:
            raise BadRequest(f"input[{i}] is empty", param="input")
    encoding = data.get("encoding_format") or "float"
    if encoding not in ("float", "base64"):
        raise BadRequest("encoding_format must be float or base64", param="encoding_format")
    user = data.get("user")
    if user is not None and not isinstance(user, str):
        raise BadRequest("user must be a string", param="user")
    return EmbeddingsCall(model, texts, encoding, user)


@dataclass(frozen=True)
class GenerationCall:
    model: str
    chat: bool
    messages: list[dict[str, Any]] | None  # chat: rendered by the route's template
    prompt: str | None  # completions
    max_tokens: int | None
    temperature: float
    seed: int | None
    stream: bool
    include_usage: bool
    user: str | None


def _generation(data: dict[str, Any], chat: bool) -> GenerationCall:
    model = _model(data)
    max_tokens = _int(data, "max_tokens", 1, MAX_TOKENS_LIMIT)
    if chat:
        other = _int(data, "max_completion_tokens", 1, MAX_TOKENS_LIMIT)
        if other is not None and max_tokens is not None and other != max_tokens:
            raise BadRequest(
                "max_tokens and max_completion_tokens differ; send one",
                param="max_completion_tokens",
            )
        max_tokens = other if other is not None else max_tokens
    elif max_tokens is None:
        max_tokens = 16  # OpenAI's default for /v1/completions
    temperature = data.get("temperature")
    if temperature is None:
        temperature = 1.0
    if (
        isinstance(temperature, bool)
        or not isinstance(temperature, int | float)
        or not math.isfinite(temperature)
        or not 0.0 <= temperature <= 2.0
    ):
        raise BadRequest("temperature must be a number from 0 to 2", param="temperature")
    seed = _int(data, "seed", 0, MAX_SEED)
    stream = _bool(data, "stream")
    options = data.get("stream_options")
    include_usage = False
    if options is not None:
        if not stream:
            raise BadRequest(
                "stream_options is only allowed with stream: true", param="stream_options"
            )
        if not isinstance(options, dict) or set(options) - {"include_usage"}:
            raise BadRequest(
                "stream_options supports only include_usage",
                param="stream_options",
                code="unsupported_parameter",
            )
        include_usage = bool(options.get("include_usage", False))
    user = data.get("user")
    if user is not None and not isinstance(user, str):
        raise BadRequest("user must be a string", param="user")
    messages: list[dict[str, Any]] | None = None
    prompt: str | None = None
    if chat:
        raw = data.get("messages")
        if not isinstance(raw, list) or not raw:
            raise BadRequest("messages must be a non-empty list", param="messages")
        messages = raw
    else:
        raw = data.get("prompt")
        if isinstance(raw, list) and len(raw) == 1 and isinstance(raw[0], str):
            raw = raw[0]
        if isinstance(raw, list):
            raise BadRequest(
                "prompt must be one string (batches and token ids are not supported)",
                param="prompt",
                code="unsupported_parameter",
            )
        if not isinstance(raw, str) or not raw:
            raise BadRequest("prompt must be a non-empty string", param="prompt")
        prompt = raw
    return GenerationCall(
        model,
        chat,
        messages,
        prompt,
        max_tokens,
        float(temperature),
        seed,
        stream,
        include_usage,
        user,
    )


def parse_chat(data: dict[str, Any]) -> GenerationCall:
    """Raises BadRequest."""
    _check_params(data, CHAT_PARAMS)
    return _generation(data, chat=True)


def parse_completions(data: dict[str, Any]) -> GenerationCall:
    """Raises BadRequest."""
    _check_params(data, COMPLETIONS_PARAMS)
    return _generation(data, chat=False)


# -- answers ----------------------------------------------------------------------------------


def embeddings_response(
    model: str,
    rows: list[bytes],
    encoding_format: str,
    prompt_tokens: int,
    receipt_json: bytes,
    charged: int,
) -> bytes:
    """The ``/v1/embeddings`` body, spliced from the miner's raw number lists (floats are never
    re-printed; for base64 they are packed as little-endian float32, as OpenAI does) and the
    receipt's canonical JSON."""
    parts = []
    if encoding_format == "base64":
        import numpy as np

        for index, row in enumerate(rows):
            packed = np.asarray(json.loads(b"[" + row + b"]"), dtype="<f4").tobytes()
            parts.append(
                b'{"object":"embedding","index":%d,"embedding":"%s"}'
                % (index, base64.b64encode(packed))
            )
    else:
        for index, row in enumerate(rows):
            parts.append(b'{"object":"embedding","index":%d,"embedding":[%s]}' % (index, row))
    return b"".join(
        [
            b'{"object":"list","data":[',
            b",".join(parts),
            b'],"model":',
            json.dumps(model).encode(),
            b',"usage":{"prompt_tokens":%d,"total_tokens":%d}' % (prompt_tokens, prompt_tokens),
            b',"agora_charged":%d,"agora_receipt":' % charged,
            receipt_json,
            b"}",
        ]
    )


def generation_response(
    call: GenerationCall,
    request_id: str,
    text: str,
    finish_reason: str,
    token_ids: list[int],
    seed: int | None,
    receipt: Receipt,
    charged: int,
    miner_request: bytes,
    receipt_dict: dict[str, Any] | None = None,
    toploc: str | None = None,
) -> dict[str, Any]:
    """A ``chat.completion`` or ``text_completion`` object."""
    p, c = receipt.prompt_tokens, receipt.completion_tokens
    if call.chat:
        choice: dict[str, Any] = {
            "index": 0,
            "message": {"role": "assistant", "content": text, "refusal": None},
            "logprobs": None,
            "finish_reason": finish_reason,
        }
    else:
        choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish_reason}
    return {
        "id": ("chatcmpl-" if call.chat else "cmpl-") + request_id,
        "object": "chat.completion" if call.chat else "text_completion",
        "created": int(time.time()),
        "model": call.model,
        "system_fingerprint": receipt.model_id,
        "choices": [choice],
        "usage": {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c},
        "agora_charged": charged,
        "agora_token_ids": token_ids,
        "agora_seed": seed,
        "agora_toploc": toploc,
        "agora_request": miner_request.decode(),
        "agora_receipt": receipt.to_json() if receipt_dict is None else receipt_dict,
    }


def chat_chunk(
    stream_id: str,
    model: str,
    created: int,
    delta: dict[str, Any],
    finish_reason: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    return {
        "id": stream_id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
        **extra,
    }


def completion_chunk(
    stream_id: str,
    model: str,
    created: int,
    text: str,
    finish_reason: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    return {
        "id": stream_id,
        "object": "text_completion",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": finish_reason}],
        **extra,
    }
