"""The one interface every inference engine implements, and the small types it speaks.

An engine is either an *embedder* (``task == "embed"``: `Engine.embed`) or a *generator*
(``task == "generate"``: `Engine.generate`, `Engine.generate_batch`, `Engine.stream`,
`Engine.score`). Both have a content-addressed ``model_id``, a ``context_length`` and
`Engine.count_tokens`. Operations an engine does not have raise `UnsupportedOperation`.

Everything is async. Engines that run a model in this process do the model work on one
dedicated thread (`ModelWorker`), so the event loop is never blocked and calls into the model
are serialised: one forward pass at a time, always on the same thread (on CPU, results differ in
the last bits between thread counts and batch shapes, see ``docs/models.md``). Throughput comes
from batching several requests into one call (`agora.models.batcher`), not from running calls
side by side.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import math
import os
import secrets
import threading
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, TypeVar

from agora.models.errors import EngineClosed, InvalidRequest, UnsupportedOperation

Task = Literal["embed", "generate", "classify"]
FinishReason = Literal["stop", "length"]

#: Upper bounds that keep a single request from tying up an engine; engines check their own
#: context window on top of these.
MAX_TOKENS_LIMIT = 1 << 16
MAX_TEMPERATURE = 100.0
MAX_SEED = (1 << 63) - 1

T = TypeVar("T")


def offline_mode() -> None:
    """Forbid every download from the Hugging Face hub in this process.

    Called by every code path that loads a model, before importing transformers or
    sentence-transformers. If huggingface_hub was imported already, its cached constant is set
    too (it reads the environment only once, at import).
    """
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    import sys

    constants = sys.modules.get("huggingface_hub.constants")
    if constants is not None:
        constants.HF_HUB_OFFLINE = True  # type: ignore[attr-defined]


@contextlib.contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """Run torch on ``count`` intra-op threads inside the block (process-wide), then restore.

    On a small machine shared with other busy processes, torch's default of one thread per
    core makes its threads wait on each other and runs several times slower than one thread.
    """
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@dataclass(frozen=True, slots=True)
class GenerateRequest:
    """One completion request. ``temperature == 0`` is greedy decoding (``seed`` is ignored);
    above zero, tokens are sampled with a generator seeded by ``seed`` (one is drawn at random
    and reported in the result when ``seed`` is None)."""

    prompt: str
    max_tokens: int = 64
    temperature: float = 0.0
    seed: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.prompt, str):
            raise InvalidRequest("prompt must be a string")
        if isinstance(self.max_tokens, bool) or not isinstance(self.max_tokens, int):
            raise InvalidRequest("max_tokens must be an integer")
        if not 1 <= self.max_tokens <= MAX_TOKENS_LIMIT:
            raise InvalidRequest(f"max_tokens must be between 1 and {MAX_TOKENS_LIMIT}")
        if isinstance(self.temperature, bool) or not isinstance(self.temperature, int | float):
            raise InvalidRequest("temperature must be a number")
        if not (math.isfinite(self.temperature) and 0.0 <= self.temperature <= MAX_TEMPERATURE):
            raise InvalidRequest(f"temperature must be between 0 and {MAX_TEMPERATURE}")
        if self.seed is not None and (
            isinstance(self.seed, bool)
            or not isinstance(self.seed, int)
            or not 0 <= self.seed <= MAX_SEED
        ):
            raise InvalidRequest("seed must be an integer between 0 and 2**63 - 1, or None")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0

    def resolved_seed(self) -> int | None:
        """The seed to sample with: None for greedy, the given seed, or a fresh random one."""
        if self.greedy:
            return None
        return self.seed if self.seed is not None else secrets.randbits(63)


@dataclass(frozen=True, slots=True)
class GenerateResult:
    """A finished completion.

    ``token_ids`` are the generated tokens, including the end-of-sequence token when the model
    stopped by itself (``finish_reason == "stop"``), so that ``score(prompt, token_ids)`` also
    checks the decision to stop. ``text`` is their decoded text without special tokens.
    ``seed`` is the seed the tokens were sampled with (None for greedy decoding): rerunning the
    request with that seed on the same model reproduces the tokens.
    """

    token_ids: list[int]
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: FinishReason
    seed: int | None
    model_id: str
    #: TOPLOC activation proof (base64, `agora.verify.toploc`); None for engines without one.
    proof: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GenerateResult:
        return cls(**data)


@dataclass(frozen=True, slots=True)
class TokenChunk:
    """A piece of a streamed completion: usually one new token and the text it completes.

    ``text`` can be empty while a multi-byte character is still incomplete; the texts of all
    chunks concatenated equal the ``text`` of the non-streamed result. ``completion_tokens`` is
    the running count; the last chunk carries ``finish_reason``; every chunk carries ``seed``.
    """

    token_ids: list[int]
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: FinishReason | None = None
    seed: int | None = None
    #: On the last chunk only: the TOPLOC proof of the whole completion (base64), if any.
    proof: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TokenChunk:
        return cls(**data)


@dataclass(frozen=True, slots=True)
class EngineInfo:
    """What an engine tells about itself (and what a miner advertises)."""

    model_id: str
    model_hash: str
    task: Task
    engine: str
    context_length: int
    dimension: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Engine(ABC):
    """An inference engine. Build one with `agora.models.load_engine` or a subclass's
    ``await Engine.load(...)``; call `close` when done.

    Raises (every method): `InvalidRequest` for bad arguments, `UnsupportedOperation` for an
    operation this engine does not have, `EngineClosed` after `close`.
    """

    #: Public id, ``<task>:<name>@<first 16 hex of model_hash>``, e.g. ``embed:minilm@1a2b...``.
    model_id: str
    #: Full SHA-256 (hex) of the model's files, see `agora.models.naming.model_hash`.
    model_hash: str
    task: Task
    #: Longest input (embedders) or prompt plus completion (generators), in tokens.
    context_length: int
    #: Short engine name: "sentence-transformers", "transformers", "llama.cpp", "vllm", "ray".
    engine_name: str = "engine"
    #: True when the engine batches concurrent `generate` calls itself, step by step (the
    #: transformers engine, vLLM): batching in front of it would only add waiting.
    continuous_batching: bool = False

    def info(self) -> EngineInfo:
        return EngineInfo(
            model_id=self.model_id,
            model_hash=self.model_hash,
            task=self.task,
            engine=self.engine_name,
            context_length=self.context_length,
            dimension=getattr(self, "dimension", None),
        )

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """One vector per text, in order (normalised to unit length by the built-in embedder)."""
        raise UnsupportedOperation(f"{self.model_id} is a {self.task} model; it cannot embed")

    async def generate(
        self,
        prompt: str,
        max_tokens: int = 64,
        temperature: float = 0.0,
        seed: int | None = None,
    ) -> GenerateResult:
        """Complete ``prompt``. Greedy when ``temperature == 0``, else seeded sampling."""
        request = GenerateRequest(prompt, max_tokens, temperature, seed)
        return (await self.generate_batch([request]))[0]

    async def generate_batch(self, requests: Sequence[GenerateRequest]) -> list[GenerateResult]:
        """Complete several prompts in one batched call; results in request order."""
        raise UnsupportedOperation(f"{self.model_id} is a {self.task} model; it cannot generate")

    async def stream(
        self,
        prompt: str,
        max_tokens: int = 64,
        temperature: float = 0.0,
        seed: int | None = None,
    ) -> AsyncIterator[TokenChunk]:
        """Like `generate`, token by token. Same tokens as `generate` for the same arguments."""
        raise UnsupportedOperation(f"{self.model_id} is a {self.task} model; it cannot generate")
        yield  # pragma: no cover  (makes this an async generator)

    async def classify(self, features: Sequence[float]) -> dict[str, Any]:
        """Classify one row of features with a zero-knowledge proof (``task == "classify"``):
        ``{"label", "label_name", "scores", "proof"}``, see `agora.zk.proof`."""
        raise UnsupportedOperation(f"{self.model_id} is a {self.task} model; it cannot classify")

    async def score(self, prompt: str, continuation_token_ids: Sequence[int]) -> list[float]:
        """Log-probability (natural log, temperature 1) of each continuation token given the
        prompt and the tokens before it. Validators use it to check a miner's tokens."""
        raise UnsupportedOperation(f"{self.model_id} ({self.engine_name}) has no logprobs")

    @abstractmethod
    async def count_tokens(self, text: str) -> int:
        """Tokens the model sees for ``text`` as input, special tokens included."""

    @abstractmethod
    async def close(self) -> None:
        """Release the model. Idempotent."""

    async def __aenter__(self) -> Engine:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def check_texts(texts: Sequence[str], limit: int = 4096) -> list[str]:
    """Validate an embedding input. Raises `InvalidRequest`."""
    if isinstance(texts, str):
        raise InvalidRequest("texts must be a list of strings, not one string")
    items = list(texts)
    if not items:
        raise InvalidRequest("texts must not be empty")
    if len(items) > limit:
        raise InvalidRequest(f"at most {limit} texts per call")
    if not all(isinstance(t, str) for t in items):
        raise InvalidRequest("every text must be a string")
    return items


def check_token_ids(token_ids: Sequence[int], vocab_size: int) -> list[int]:
    """Validate token ids against a vocabulary. Raises `InvalidRequest`."""
    ids = list(token_ids)
    for t in ids:
        if isinstance(t, bool) or not isinstance(t, int) or not 0 <= t < vocab_size:
            raise InvalidRequest(f"token id {t!r} is outside the vocabulary (0..{vocab_size - 1})")
    return ids


class Detokenizer:
    """Turns a growing list of token ids into text deltas, holding back an incomplete UTF-8
    character (decoded as U+FFFD) until the token that completes it arrives.

    Decodes a short window (the previous chunk plus the new tokens) rather than the whole
    sequence, like vLLM and TGI, so that tokenizers that drop a leading space at the start of a
    sequence still produce the right text.
    """

    def __init__(self, decode: Callable[[list[int]], str]) -> None:
        self._decode = decode
        self._ids: list[int] = []
        self._prefix = 0
        self._read = 0

    def push(self, token_ids: Sequence[int]) -> str:
        self._ids.extend(token_ids)
        prefix_text = self._decode(self._ids[self._prefix : self._read])
        new_text = self._decode(self._ids[self._prefix :])
        if len(new_text) > len(prefix_text) and not new_text.endswith("\ufffd"):
            self._prefix, self._read = self._read, len(self._ids)
            return new_text[len(prefix_text) :]
        return ""

    def flush(self) -> str:
        """Whatever is held back (an incomplete character at the very end)."""
        prefix_text = self._decode(self._ids[self._prefix : self._read])
        new_text = self._decode(self._ids[self._prefix :])
        self._prefix = self._read = len(self._ids)
        return new_text[len(prefix_text) :]


_ITEM, _DONE, _ERROR = range(3)


class ModelWorker:
    """One dedicated thread for an engine's model work.

    `run` executes a blocking function there; `iterate` drives a blocking iterator there and
    yields its items to the event loop as they come (the thread stops at the next item once the
    consumer goes away).
    """

    def __init__(self, name: str) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"agora-{name}")
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        if self._closed:
            raise EngineClosed("the engine is closed")
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._pool, functools.partial(fn, *args, **kwargs))
        except asyncio.CancelledError:
            # close() cancels what is still queued; that is not the caller being cancelled
            task = asyncio.current_task()
            if self._closed and task is not None and not task.cancelling():
                raise EngineClosed("the engine was closed before this request ran") from None
            raise

    def submit(self, fn: Callable[[], None]) -> concurrent.futures.Future[None]:
        """Queue ``fn`` on the thread without waiting for it (it reports its own results).
        Raises EngineClosed once the worker is closed."""
        if self._closed:
            raise EngineClosed("the engine is closed")
        try:
            return self._pool.submit(fn)
        except RuntimeError as exc:  # shut down between the check and the submit
            raise EngineClosed("the engine is closed") from exc

    async def iterate(self, make_iterator: Callable[[], Iterator[T]]) -> AsyncIterator[T]:
        if self._closed:
            raise EngineClosed("the engine is closed")
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[int, Any]] = asyncio.Queue()
        stop = threading.Event()

        def send(kind: int, value: Any) -> None:
            with contextlib.suppress(RuntimeError):  # the loop is already closed
                loop.call_soon_threadsafe(queue.put_nowait, (kind, value))

        def produce() -> None:
            iterator: Iterator[T] | None = None
            try:
                iterator = make_iterator()
                for item in iterator:
                    send(_ITEM, item)
                    if stop.is_set():
                        break
                send(_DONE, None)
            except BaseException as exc:
                send(_ERROR, exc)
            finally:
                close = getattr(iterator, "close", None)
                if callable(close):
                    close()

        done = loop.run_in_executor(self._pool, produce)
        try:
            while True:
                kind, value = await queue.get()
                if kind == _ITEM:
                    yield value
                elif kind == _DONE:
                    return
                else:
                    raise value
        finally:
            stop.set()
            # Wait for the thread to let go, so the next call starts on an idle worker.
            await asyncio.shield(done)

    def close(self) -> None:
        """Refuse new work and drop queued work (its callers get `EngineClosed`); the call
        running now finishes on its thread."""
        self._closed = True
        self._pool.shutdown(wait=False, cancel_futures=True)
