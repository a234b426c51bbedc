"""GGUF models with llama.cpp, through llama-cpp-python (``pip install llama-cpp-python``).

`LlamaCppEngine.load(path)` opens a ``.gguf`` file on CPU (or offloads ``n_gpu_layers`` layers
when llama.cpp was built with a GPU backend). It uses the library's documented ``Llama`` API:
``tokenize``/``detokenize``, ``generate`` (a token iterator) with ``set_seed``, and ``eval`` with
``logits_all=True`` so that ``scores`` holds the logits of every position for `score`.

Determinism: the state is reset before every request (no prompt-prefix reuse), so a request
always takes the same code path. llama.cpp keeps its KV cache in float16 (its default), so its
logprobs differ from a float32 reference by up to a few 1e-3. Greedy decoding (temperature 0)
picks the argmax; sampling uses llama.cpp's own seeded sampler with top-k, top-p and min-p
switched off, so a seed reproduces its tokens on llama.cpp but not on the transformers engine
(a validator checks those with `score` under its reference model instead). On the tiny model,
llama.cpp's greedy tokens equal the transformers engine's (tested).

Requests run one at a time on the engine's thread (llama.cpp's high-level API decodes one
sequence); `generate_batch` runs them in turn.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import Any

from agora.models.base import (
    Detokenizer,
    Engine,
    GenerateRequest,
    GenerateResult,
    ModelWorker,
    TokenChunk,
    check_token_ids,
)
from agora.models.errors import ContextTooLong, EngineUnavailable, InvalidRequest, ModelNotFound
from agora.models.naming import make_model_id, model_hash

DEFAULT_CONTEXT = 2048


def import_llama_cpp() -> Any:
    """The ``llama_cpp`` module. Raises `EngineUnavailable` if it is not installed."""
    try:
        import llama_cpp
    except ImportError as exc:
        raise EngineUnavailable(
            "GGUF models need llama.cpp: pip install llama-cpp-python (it compiles llama.cpp, "
            "about 15 minutes on 2 cores; needs cmake and a C++ compiler)"
        ) from exc
    return llama_cpp


class LlamaCppEngine(Engine):
    """Build with ``await LlamaCppEngine.load("/path/model.gguf")``."""

    engine_name = "llama.cpp"
    task = "generate"

    def __init__(self, llm: Any, path: Path, digest: str, name: str) -> None:
        llama_cpp = import_llama_cpp()
        self._llm = llm
        self.path = path
        self.model_hash = digest
        self.model_id = make_model_id("generate", name, digest)
        self.context_length = int(llm.n_ctx())
        self.vocab_size = int(llm.n_vocab())
        eog: set[int] = set()
        is_eog = getattr(llama_cpp, "llama_vocab_is_eog", None)
        vocab = getattr(getattr(llm, "_model", None), "vocab", None)
        if is_eog is not None and vocab is not None:
            eog = {t for t in range(self.vocab_size) if is_eog(vocab, t)}
        self.eos_token_ids = frozenset(eog or {int(llm.token_eos())})
        self._worker = ModelWorker("llama-cpp")

    @classmethod
    async def load(
        cls,
        path: Path | str,
        *,
        name: str | None = None,
        n_ctx: int = DEFAULT_CONTEXT,
        n_threads: int | None = None,
        n_gpu_layers: int = 0,
    ) -> LlamaCppEngine:
        """Open a GGUF file. ``n_ctx`` is the context window to allocate (capped at what the
        model was trained for); ``n_threads`` defaults to every core.

        Raises `EngineUnavailable` or `ModelNotFound`.
        """
        path = Path(path)
        return await asyncio.to_thread(
            cls._load_sync, path, name or path.stem, n_ctx, n_threads, n_gpu_layers
        )

    @classmethod
    def _load_sync(
        cls, path: Path, name: str, n_ctx: int, n_threads: int | None, n_gpu_layers: int
    ) -> LlamaCppEngine:
        llama_cpp = import_llama_cpp()
        if not path.is_file():
            raise ModelNotFound(f"no GGUF file at {path}")
        with open(path, "rb") as f:
            if f.read(4) != b"GGUF":
                raise ModelNotFound(f"{path} is not a GGUF file")
        digest = model_hash(path)
        try:
            # The vocabulary-only open is cheap and tells the trained context length.
            probe = llama_cpp.Llama(model_path=str(path), vocab_only=True, verbose=False)
            metadata = dict(getattr(probe, "metadata", None) or {})
            probe.close()
            arch = metadata.get("general.architecture", "")
            trained = int(metadata.get(f"{arch}.context_length", 0) or 0)
            llm = llama_cpp.Llama(
                model_path=str(path),
                n_ctx=min(n_ctx, trained) if trained else n_ctx,
                n_threads=n_threads or max(1, (os.cpu_count() or 2)),
                n_gpu_layers=n_gpu_layers,
                logits_all=True,
                verbose=False,
            )
        except (ValueError, RuntimeError) as exc:
            raise ModelNotFound(f"llama.cpp cannot load {path}: {exc}") from exc
        return cls(llm, path, digest, name)

    # -- public API -------------------------------------------------------------------------

    async def count_tokens(self, text: str) -> int:
        if not isinstance(text, str):
            raise InvalidRequest("text must be a string")
        return len(await self._worker.run(self._encode, text))

    async def generate_batch(self, requests: Sequence[GenerateRequest]) -> list[GenerateResult]:
        return [await self._worker.run(self._generate_sync, r) for r in requests]

    async def stream(
        self,
        prompt: str,
        max_tokens: int = 64,
        temperature: float = 0.0,
        seed: int | None = None,
    ) -> AsyncIterator[TokenChunk]:
        request = GenerateRequest(prompt, max_tokens, temperature, seed)
        async for chunk in self._worker.iterate(lambda: self._stream_sync(request)):
            yield chunk

    async def score(self, prompt: str, continuation_token_ids: Sequence[int]) -> list[float]:
        if not isinstance(prompt, str):
            raise InvalidRequest("prompt must be a string")
        continuation = check_token_ids(continuation_token_ids, self.vocab_size)
        return await self._worker.run(self._score_sync, prompt, continuation)

    async def close(self) -> None:
        if not self._worker.closed:
            self._worker.close()
            close = getattr(self._llm, "close", None)
            if callable(close):
                await asyncio.to_thread(close)

    # -- on the worker thread ---------------------------------------------------------------

    def _encode(self, text: str) -> list[int]:
        return list(self._llm.tokenize(text.encode("utf-8"), add_bos=True, special=False))

    def _decode(self, ids: list[int]) -> str:
        return bytes(self._llm.detokenize(ids)).decode("utf-8", errors="replace")

    def _prompt_ids(self, request: GenerateRequest) -> list[int]:
        ids = self._encode(request.prompt)
        if not ids:
            raise InvalidRequest("the prompt encodes to no tokens; give a non-empty prompt")
        if len(ids) + request.max_tokens > self.context_length:
            raise ContextTooLong(
                f"prompt ({len(ids)} tokens) plus max_tokens ({request.max_tokens}) exceeds "
                f"the context length of {self.context_length}"
            )
        return ids

    def _tokens(
        self, prompt: list[int], request: GenerateRequest, seed: int | None
    ) -> Iterator[int]:
        llm = self._llm
        if seed is not None:
            llm.set_seed(seed)
        llm.reset()
        tokens = llm.generate(
            prompt,
            top_k=0,
            top_p=1.0,
            min_p=0.0,
            typical_p=1.0,
            temp=request.temperature,
            repeat_penalty=1.0,
            reset=True,
        )
        for count, token in enumerate(tokens, start=1):
            yield int(token)
            if token in self.eos_token_ids or count == request.max_tokens:
                return

    def _generate_sync(self, request: GenerateRequest) -> GenerateResult:
        chunks = list(self._stream_sync(request))
        tokens = [t for c in chunks for t in c.token_ids]
        return GenerateResult(
            token_ids=tokens,
            text="".join(c.text for c in chunks),
            prompt_tokens=chunks[-1].prompt_tokens,
            completion_tokens=len(tokens),
            finish_reason=chunks[-1].finish_reason or "length",
            seed=chunks[-1].seed,
            model_id=self.model_id,
        )

    def _stream_sync(self, request: GenerateRequest) -> Iterator[TokenChunk]:
        prompt = self._prompt_ids(request)
        seed = request.resolved_seed()
        text = Detokenizer(self._decode)
        for count, token in enumerate(self._tokens(prompt, request, seed), start=1):
            stopped = token in self.eos_token_ids
            finished = stopped or count == request.max_tokens
            yield TokenChunk(
                token_ids=[token],
                text=text.push([token]) + (text.flush() if finished else ""),
                prompt_tokens=len(prompt),
                completion_tokens=count,
                finish_reason=("stop" if stopped else "length") if finished else None,
                seed=seed,
            )

    def _score_sync(self, prompt: str, continuation: list[int]) -> list[float]:
        import numpy as np

        prompt_ids = self._encode(prompt)
        if not prompt_ids:
            raise InvalidRequest("the prompt encodes to no tokens; give a non-empty prompt")
        if not continuation:
            return []
        ids = prompt_ids + continuation
        if len(ids) > self.context_length:
            raise ContextTooLong(
                f"prompt plus continuation ({len(ids)} tokens) exceeds the context length of "
                f"{self.context_length}"
            )
        llm = self._llm
        llm.reset()
        llm.eval(ids)
        start = len(prompt_ids) - 1
        logits = np.asarray(llm.scores[start : start + len(continuation)], dtype=np.float64)
        peak = logits.max(axis=1, keepdims=True)
        logprobs = logits - peak - np.log(np.exp(logits - peak).sum(axis=1, keepdims=True))
        return [float(logprobs[i, t]) for i, t in enumerate(continuation)]
