"""Deliberately bad miners. FOR TESTS AND THE LOCAL DEMO ONLY.

Validators must catch miners that cheat; these engines cheat on purpose so that the tests and
``agora up``'s demo network have someone to catch. A miner started with ``--cheat MODE`` serves
one of them while claiming, in every answer and receipt, the honest model id of ``--model``:

    random        random unit vectors / tokens sampled uniformly (temperature 100, a random seed)
    wrong-model   a different model: generate:tiny serves tiny-bad (same architecture, other
                  weights); an embedding model runs with only its first 2 transformer layers
    lazy          computes one answer, then returns it (cached) for every input
    slow          honest answers, delayed (0.5 s per request plus 25 ms per generated token)

Token counts and prices are those an honest miner would charge, so only the answers give them
away. Never run these against a real network: a validator will score them to zero and a dispute
can slash their stake.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from agora.miner.errors import MinerConfigError
from agora.models.base import (
    MAX_TEMPERATURE,
    Engine,
    GenerateRequest,
    GenerateResult,
    TokenChunk,
)
from agora.models.naming import make_model_id, model_hash
from agora.models.registry import load_engine, parse_spec

__all__ = [
    "CHEAT_MODES",
    "SLOW_REQUEST_S",
    "SLOW_TOKEN_S",
    "CheatEngine",
    "LazyAnswers",
    "RandomAnswers",
    "SlowAnswers",
    "WrongModel",
    "load_cheat_engine",
]

CHEAT_MODES = ("random", "wrong-model", "lazy", "slow")
SLOW_REQUEST_S = 0.5
SLOW_TOKEN_S = 0.025
WRONG_MODEL_LAYERS = 2


class CheatEngine(Engine):
    """Forwards everything to ``inner`` while claiming ``model_id`` (default: inner's)."""

    def __init__(
        self, inner: Engine, model_id: str | None = None, model_hash: str | None = None
    ) -> None:
        self.inner = inner
        self.model_id = model_id or inner.model_id
        self.model_hash = model_hash or inner.model_hash
        self.task = inner.task
        self.context_length = inner.context_length
        self.engine_name = f"cheat:{inner.engine_name}"
        self.dimension = getattr(inner, "dimension", None)

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        return await self.inner.embed(texts)

    async def generate_batch(self, requests: Sequence[GenerateRequest]) -> list[GenerateResult]:
        results = await self.inner.generate_batch(requests)
        return [replace(r, model_id=self.model_id) for r in results]

    async def stream(
        self,
        prompt: str,
        max_tokens: int = 64,
        temperature: float = 0.0,
        seed: int | None = None,
    ) -> AsyncIterator[TokenChunk]:
        async for chunk in self.inner.stream(prompt, max_tokens, temperature, seed):
            yield chunk

    async def score(self, prompt: str, continuation_token_ids: Sequence[int]) -> list[float]:
        return await self.inner.score(prompt, continuation_token_ids)

    async def count_tokens(self, text: str) -> int:
        return await self.inner.count_tokens(text)

    async def close(self) -> None:
        await self.inner.close()


class WrongModel(CheatEngine):
    """Another model's answers under the honest model's id (see :func:`load_cheat_engine`)."""


class RandomAnswers(CheatEngine):
    """Random unit vectors; tokens drawn almost uniformly from the vocabulary (the model sampled
    at temperature 100 with a random seed), reported with the request's own seed."""

    def __init__(self, inner: Engine) -> None:
        super().__init__(inner)
        self._rng = np.random.default_rng()

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        if self.dimension is None:
            return await self.inner.embed(texts)  # raises UnsupportedOperation
        vectors = self._rng.standard_normal((len(texts), self.dimension))
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        return [[float(x) for x in row] for row in vectors]

    async def generate_batch(self, requests: Sequence[GenerateRequest]) -> list[GenerateResult]:
        noisy = [
            GenerateRequest(r.prompt, r.max_tokens, MAX_TEMPERATURE, secrets.randbits(63))
            for r in requests
        ]
        results = await self.inner.generate_batch(noisy)
        return [
            replace(result, seed=request.resolved_seed(), model_id=self.model_id)
            for request, result in zip(requests, results, strict=True)
        ]

    async def stream(
        self,
        prompt: str,
        max_tokens: int = 64,
        temperature: float = 0.0,
        seed: int | None = None,
    ) -> AsyncIterator[TokenChunk]:
        claimed = GenerateRequest(prompt, max_tokens, temperature, seed).resolved_seed()
        chunks = self.inner.stream(prompt, max_tokens, MAX_TEMPERATURE, secrets.randbits(63))
        async for chunk in chunks:
            yield replace(chunk, seed=claimed)

    async def score(self, prompt: str, continuation_token_ids: Sequence[int]) -> list[float]:
        await self.inner.score(prompt, continuation_token_ids)  # refuses what honesty refuses
        return [float(-x) for x in self._rng.exponential(5.0, len(continuation_token_ids))]


class LazyAnswers(CheatEngine):
    """Computes the first answer honestly and returns it for every later input."""

    def __init__(self, inner: Engine) -> None:
        super().__init__(inner)
        self._vector: list[float] | None = None
        self._result: GenerateResult | None = None

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        if self._vector is None:
            self._vector = (await self.inner.embed(list(texts)[:1]))[0]
        return [list(self._vector) for _ in texts]

    async def _cached(self, request: GenerateRequest) -> GenerateResult:
        if self._result is None:
            self._result = (await self.inner.generate_batch([request]))[0]
        cached = self._result
        tokens = cached.token_ids[: request.max_tokens]
        return replace(
            cached,
            token_ids=tokens,
            prompt_tokens=await self.inner.count_tokens(request.prompt),
            completion_tokens=len(tokens),
            finish_reason=cached.finish_reason if tokens == cached.token_ids else "length",
            seed=request.resolved_seed(),
            model_id=self.model_id,
        )

    async def generate_batch(self, requests: Sequence[GenerateRequest]) -> list[GenerateResult]:
        return [await self._cached(r) for r in requests]

    async def stream(
        self,
        prompt: str,
        max_tokens: int = 64,
        temperature: float = 0.0,
        seed: int | None = None,
    ) -> AsyncIterator[TokenChunk]:
        result = await self._cached(GenerateRequest(prompt, max_tokens, temperature, seed))
        yield TokenChunk(
            token_ids=result.token_ids,
            text=result.text,
            prompt_tokens=result.prompt_tokens,
            completion_tokens=result.completion_tokens,
            finish_reason=result.finish_reason,
            seed=result.seed,
        )


class SlowAnswers(CheatEngine):
    """Honest answers, late: ``SLOW_REQUEST_S`` per request plus ``SLOW_TOKEN_S`` per token."""

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        vectors = await self.inner.embed(texts)
        await asyncio.sleep(SLOW_REQUEST_S)
        return vectors

    async def generate_batch(self, requests: Sequence[GenerateRequest]) -> list[GenerateResult]:
        results = await self.inner.generate_batch(requests)
        longest = max((r.completion_tokens for r in results), default=0)
        await asyncio.sleep(SLOW_REQUEST_S + SLOW_TOKEN_S * longest)
        return results

    async def stream(
        self,
        prompt: str,
        max_tokens: int = 64,
        temperature: float = 0.0,
        seed: int | None = None,
    ) -> AsyncIterator[TokenChunk]:
        await asyncio.sleep(SLOW_REQUEST_S)
        async for chunk in self.inner.stream(prompt, max_tokens, temperature, seed):
            await asyncio.sleep(SLOW_TOKEN_S)
            yield chunk


def _drop_layers(engine: Engine, keep: int) -> None:
    """Cut a sentence-transformers model down to its first ``keep`` transformer layers, in
    place: a cheaper model that still loads from (and so claims the hash of) the honest files."""
    import torch

    from agora.models.embeddings import EmbeddingEngine

    if not isinstance(engine, EmbeddingEngine):
        raise MinerConfigError("--cheat wrong-model for embeddings needs a local embedding model")
    transformer = engine._model[0].auto_model  # the underlying Hugging Face encoder
    layers = transformer.encoder.layer
    transformer.encoder.layer = torch.nn.ModuleList(list(layers)[:keep])


async def load_cheat_engine(
    mode: str, spec: str, data_dir: Path | str, *, ray: str | None = None
) -> Engine:
    """The cheating engine for ``mode`` (one of :data:`CHEAT_MODES`), claiming ``spec``'s id.

    Raises:
        MinerConfigError: unknown mode, or ``wrong-model`` for a model it has no impostor for.
        ModelError subclasses from loading the engines.
    """
    if mode not in CHEAT_MODES:
        raise MinerConfigError(f"unknown --cheat mode {mode!r}; choose one of {CHEAT_MODES}")
    if mode == "wrong-model":
        return await _wrong_model(spec, Path(data_dir), ray)
    honest = await load_engine(spec, data_dir, ray=ray)
    cheats: dict[str, type[CheatEngine]] = {
        "random": RandomAnswers,
        "lazy": LazyAnswers,
        "slow": SlowAnswers,
    }
    return cheats[mode](honest)


async def _wrong_model(spec: str, data_dir: Path, ray: str | None) -> Engine:
    from agora.models.tiny import ensure_tiny_model

    parsed = parse_spec(spec)
    if parsed.kind == "generate" and parsed.target == "tiny":
        honest_path = await asyncio.to_thread(ensure_tiny_model, data_dir, "tiny")
        digest = await asyncio.to_thread(model_hash, honest_path)
        impostor = await load_engine(replace(parsed, target="tiny-bad"), data_dir, ray=ray)
        return WrongModel(impostor, make_model_id("generate", "tiny", digest), digest)
    if parsed.kind == "embed" and ray is None and "ray" not in parsed.options:
        engine = await load_engine(parsed, data_dir)
        _drop_layers(engine, WRONG_MODEL_LAYERS)
        return WrongModel(engine)
    raise MinerConfigError(
        f"--cheat wrong-model has no impostor for {spec!r}: use generate:tiny or an embed: "
        "model (not through Ray)"
    )
