"""Deliberately bad miners. FOR TESTS AND THE LOCAL DEMO ONLY.

Validators must catch miners that cheat; these engines cheat on purpose so that the tests and
``agora up``'s demo network have someone to catch. A miner started with ``--cheat MODE`` serves
one of them while claiming, in every answer and receipt, the honest model id of ``--model``:

    random        random unit vectors / tokens sampled uniformly (temperature 100, a random seed)
    wrong-model   a different model: generate:tiny serves tiny-bad (same architecture, other
                  weights); an embedding model runs with only its first 2 transformer layers
    lazy          computes one answer, then returns it (cached) for every input
    slow          honest answers, delayed (0.5 s per request plus 25 ms per generated token)
    smaller-model a smaller model of the same family: generate:tiny serves tiny-small; an
                  embedding model runs with only its first 3 transformer layers
    perturb-1     the honest weights with 1% (perturb-5: 5%) relative noise (agora.verify.tamper)
    int8, int4    the honest weights quantised to 8 / 4 bits and back (agora.verify.tamper)
    cached        a semantic cache: a prompt close to an earlier one (character trigrams,
                  Jaccard >= 0.5) gets the earlier prompt's answer; only new ones are computed
    truncate      stops generating after half of max_tokens and claims "stop" (every other
                  answer: "length"); embeds only the first half of each text
    copy          answers every request with an answer another miner gave to another request
                  (honest answers to a fixed set of other prompts, handed out in turn)
    organic-only  honest to callers holding a validator permit (probes), and for everyone else
                  (the gateway's customers) serves the wrong-model impostor; chosen per request
                  by :class:`agora.miner.core.MinerCore` (it knows the caller), see
                  :func:`organic_cheat_mode`

Token counts and prices are those an honest miner would charge, so only the answers give them
away. Never run these against a real network: a validator will score them to zero and a dispute
can slash their stake.
"""

from __future__ import annotations

import asyncio
import math
import secrets
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from agora.miner.errors import MinerConfigError
from agora.models.base import (
    MAX_TEMPERATURE,
    Engine,
    FinishReason,
    GenerateRequest,
    GenerateResult,
    TokenChunk,
)
from agora.models.naming import make_model_id, model_hash
from agora.models.registry import load_engine, parse_spec

__all__ = [
    "CHEAT_MODES",
    "ORGANIC_ONLY",
    "SLOW_REQUEST_S",
    "SLOW_TOKEN_S",
    "CachedAnswers",
    "CheatEngine",
    "CopiedAnswers",
    "LazyAnswers",
    "RandomAnswers",
    "SlowAnswers",
    "TruncatedAnswers",
    "ValidatorPermits",
    "WrongModel",
    "load_cheat_engine",
    "organic_cheat_mode",
]

CHEAT_MODES = (
    "random",
    "wrong-model",
    "lazy",
    "slow",
    "smaller-model",
    "perturb-1",
    "perturb-5",
    "int8",
    "int4",
    "cached",
    "truncate",
    "copy",
    "organic-only",
)
TAMPER_MODES = {"perturb-1": "perturb-1", "perturb-5": "perturb-5", "int8": "int8", "int4": "int4"}
ORGANIC_ONLY = "organic-only"
CACHE_MIN_SIMILARITY = 0.5
COPY_PROMPTS = (
    "The weather in the mountains changes quickly in spring.",
    "A short history of the printing press and its effect on science.",
    "Explain how a bicycle stays upright while moving.",
    "List three uses of copper in electrical engineering.",
)
SLOW_REQUEST_S = 0.5
SLOW_TOKEN_S = 0.025
WRONG_MODEL_LAYERS = 2
SMALLER_MODEL_LAYERS = 3
#: cheat mode -> (tiny variant served instead of generate:tiny, layers kept of an embedding
#: model, what the error calls it when the spec has none)
IMPOSTORS = {
    "wrong-model": ("tiny-bad", WRONG_MODEL_LAYERS, "impostor"),
    "smaller-model": ("tiny-small", SMALLER_MODEL_LAYERS, "smaller model"),
}


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

    async def _reuse(self, earlier: GenerateResult, request: GenerateRequest) -> GenerateResult:
        """An earlier answer passed off as the answer to ``request``: cut to its max_tokens,
        with the token counts and seed an honest answer to it would carry."""
        tokens = earlier.token_ids[: request.max_tokens]
        return replace(
            earlier,
            token_ids=tokens,
            prompt_tokens=await self.inner.count_tokens(request.prompt),
            completion_tokens=len(tokens),
            finish_reason=earlier.finish_reason if tokens == earlier.token_ids else "length",
            seed=request.resolved_seed(),
            model_id=self.model_id,
        )

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


class OneAnswerAtATime(CheatEngine):
    """A cheat that makes up each generation on its own (from a cache, another miner ...):
    subclasses write ``_answer``; a batch is answered one by one and a stream is one chunk."""

    async def _answer(self, request: GenerateRequest) -> GenerateResult:
        raise NotImplementedError

    async def generate_batch(self, requests: Sequence[GenerateRequest]) -> list[GenerateResult]:
        return [await self._answer(r) for r in requests]

    async def stream(
        self,
        prompt: str,
        max_tokens: int = 64,
        temperature: float = 0.0,
        seed: int | None = None,
    ) -> AsyncIterator[TokenChunk]:
        yield _single_chunk(
            await self._answer(GenerateRequest(prompt, max_tokens, temperature, seed))
        )


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


class LazyAnswers(OneAnswerAtATime):
    """Computes the first answer honestly and returns it for every later input."""

    def __init__(self, inner: Engine) -> None:
        super().__init__(inner)
        self._vector: list[float] | None = None
        self._result: GenerateResult | None = None

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        if self._vector is None:
            self._vector = (await self.inner.embed(list(texts)[:1]))[0]
        return [list(self._vector) for _ in texts]

    async def _answer(self, request: GenerateRequest) -> GenerateResult:
        if self._result is None:
            self._result = (await self.inner.generate_batch([request]))[0]
        return await self._reuse(self._result, request)


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


def _trigrams(text: str) -> frozenset[str]:
    padded = f"  {text.lower()} "
    return frozenset(padded[i : i + 3] for i in range(len(padded) - 2))


def _similarity(a: frozenset[str], b: frozenset[str]) -> float:
    return len(a & b) / len(a | b) if a or b else 1.0


def _single_chunk(result: GenerateResult) -> TokenChunk:
    return TokenChunk(
        token_ids=result.token_ids,
        text=result.text,
        prompt_tokens=result.prompt_tokens,
        completion_tokens=result.completion_tokens,
        finish_reason=result.finish_reason,
        seed=result.seed,
    )


class CachedAnswers(OneAnswerAtATime):
    """A semantic cache: a prompt (or text) whose character trigrams overlap an earlier one's by
    at least :data:`CACHE_MIN_SIMILARITY` (Jaccard) gets the earlier one's answer, cut to the
    request's ``max_tokens``; anything else is computed honestly and cached."""

    def __init__(self, inner: Engine, min_similarity: float = CACHE_MIN_SIMILARITY) -> None:
        super().__init__(inner)
        self.min_similarity = min_similarity
        self._texts: list[tuple[frozenset[str], list[float]]] = []
        self._answers: list[tuple[frozenset[str], GenerateResult]] = []
        self.hits = 0

    def _nearest(self, key: frozenset[str], entries: Sequence[tuple[frozenset[str], Any]]) -> Any:
        best, best_score = None, self.min_similarity
        for other, value in entries:
            score = _similarity(key, other)
            if score >= best_score:
                best, best_score = value, score
        return best

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        out: list[list[float] | None] = []
        missing: list[int] = []
        for index, text in enumerate(texts):
            hit = self._nearest(_trigrams(text), self._texts)
            out.append(None if hit is None else list(hit))
            if hit is None:
                missing.append(index)
            else:
                self.hits += 1
        if missing:
            vectors = await self.inner.embed([texts[i] for i in missing])
            for index, vector in zip(missing, vectors, strict=True):
                out[index] = vector
                self._texts.append((_trigrams(texts[index]), vector))
        return [v for v in out if v is not None]

    async def _answer(self, request: GenerateRequest) -> GenerateResult:
        key = _trigrams(request.prompt)
        hit: GenerateResult | None = self._nearest(key, self._answers)
        if hit is None:
            result = (await self.inner.generate_batch([request]))[0]
            self._answers.append((key, result))
            return replace(result, model_id=self.model_id)
        self.hits += 1
        return await self._reuse(hit, request)


class TruncatedAnswers(CheatEngine):
    """Stops after half of ``max_tokens`` (at least one token) and claims to be done: "stop" on
    odd-numbered answers, "length" on even ones. Embeds only the first half of each text."""

    def __init__(self, inner: Engine) -> None:
        super().__init__(inner)
        self._count = 0

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        return await self.inner.embed([t[: max(1, len(t) // 2)] for t in texts])

    def _claim(self) -> FinishReason:
        self._count += 1
        return "stop" if self._count % 2 == 1 else "length"

    async def stream(
        self,
        prompt: str,
        max_tokens: int = 64,
        temperature: float = 0.0,
        seed: int | None = None,
    ) -> AsyncIterator[TokenChunk]:
        keep = max(1, max_tokens // 2)
        claim = self._claim()
        chunks = self.inner.stream(prompt, max_tokens, temperature, seed)
        sent = 0
        try:
            async for chunk in chunks:
                ids = chunk.token_ids[: keep - sent]
                sent += len(ids)
                done = sent >= keep or chunk.finish_reason is not None
                yield replace(
                    chunk,
                    token_ids=ids,
                    completion_tokens=sent,
                    finish_reason=(chunk.finish_reason or claim) if done else None,
                )
                if done:
                    return
        finally:
            close = getattr(chunks, "aclose", None)
            if close is not None:
                await close()

    async def generate_batch(self, requests: Sequence[GenerateRequest]) -> list[GenerateResult]:
        results = []
        for request in requests:
            text: list[str] = []
            tokens: list[int] = []
            last: TokenChunk | None = None
            async for chunk in self.stream(
                request.prompt, request.max_tokens, request.temperature, request.seed
            ):
                text.append(chunk.text)
                tokens.extend(chunk.token_ids)
                last = chunk
            assert last is not None
            results.append(
                GenerateResult(
                    token_ids=tokens,
                    text="".join(text),
                    prompt_tokens=last.prompt_tokens,
                    completion_tokens=len(tokens),
                    finish_reason=last.finish_reason or "stop",
                    seed=last.seed,
                    model_id=self.model_id,
                )
            )
        return results


class CopiedAnswers(OneAnswerAtATime):
    """Answers each request with another request's answer: honest answers of the model to
    :data:`COPY_PROMPTS` (as a copier would have seen another miner give them), in turn. They
    are real outputs of the right model, so only a check against the request's own prompt (or a
    proof bound to it) tells them apart."""

    def __init__(self, inner: Engine) -> None:
        super().__init__(inner)
        self._turn = 0
        self._vectors: list[list[float]] | None = None
        self._answers: dict[int, list[GenerateResult]] = {}

    def _next(self, size: int) -> int:
        self._turn += 1
        return (self._turn - 1) % size

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        if self._vectors is None:
            self._vectors = await self.inner.embed(list(COPY_PROMPTS))
        return [list(self._vectors[self._next(len(COPY_PROMPTS))]) for _ in texts]

    async def _answer(self, request: GenerateRequest) -> GenerateResult:
        pool = self._answers.get(request.max_tokens)
        if pool is None:
            pool = await self.inner.generate_batch(
                [GenerateRequest(p, request.max_tokens) for p in COPY_PROMPTS]
            )
            self._answers[request.max_tokens] = pool
        copied = pool[self._next(len(pool))]
        return replace(
            copied,
            prompt_tokens=await self.inner.count_tokens(request.prompt),
            seed=request.resolved_seed(),
            model_id=self.model_id,
        )


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


class ValidatorPermits:
    """``await permits(hotkey)``: whether the hotkey holds a validator permit on the subnet (the
    metagraph read at most every ``refresh_s``; on a ledger error the last answer stands, and
    before any answer everyone counts as a validator, so the cheat stays hidden)."""

    def __init__(self, ledger: Any, netuid: int, refresh_s: float = 5.0) -> None:
        self.ledger = ledger
        self.netuid = netuid
        self.refresh_s = refresh_s
        self._holders: frozenset[str] | None = None
        self._read_at = -math.inf

    async def __call__(self, hotkey: str) -> bool:
        now = time.monotonic()
        if now - self._read_at >= self.refresh_s:
            self._read_at = now
            try:
                graph = await self.ledger.metagraph(self.netuid)
                self._holders = frozenset(n.hotkey for n in graph.neurons if n.validator_permit)
            except Exception:  # the ledger is down: keep the last answer
                pass
        return self._holders is None or hotkey in self._holders


def organic_cheat_mode(spec: str) -> str:
    """What an ``organic-only`` miner serves to callers without a validator permit."""
    return "wrong-model"


async def load_cheat_engine(
    mode: str, spec: str, data_dir: Path | str, *, ray: str | None = None
) -> Engine:
    """The cheating engine for ``mode`` (one of :data:`CHEAT_MODES`), claiming ``spec``'s id.
    For ``organic-only`` this is the engine served to organic callers (the honest one is loaded
    as usual; see :class:`agora.miner.core.MinerCore`).

    Raises:
        MinerConfigError: unknown mode, or a mode with no impostor for this model.
        ModelError subclasses from loading the engines.
    """
    if mode not in CHEAT_MODES:
        raise MinerConfigError(f"unknown --cheat mode {mode!r}; choose one of {CHEAT_MODES}")
    if mode == ORGANIC_ONLY:
        mode = organic_cheat_mode(spec)
    if mode in IMPOSTORS:
        return await _impostor(mode, spec, Path(data_dir), ray)
    if mode in TAMPER_MODES:
        return await _tampered(TAMPER_MODES[mode], spec, Path(data_dir), ray)
    honest = await load_engine(spec, data_dir, ray=ray)
    cheats: dict[str, type[CheatEngine]] = {
        "random": RandomAnswers,
        "lazy": LazyAnswers,
        "slow": SlowAnswers,
        "cached": CachedAnswers,
        "truncate": TruncatedAnswers,
        "copy": CopiedAnswers,
    }
    return cheats[mode](honest)


async def _impostor(mode: str, spec: str, data_dir: Path, ray: str | None) -> Engine:
    """A model other than ``spec`` that claims ``spec``'s id: for generate:tiny another tiny
    variant (``tiny-bad`` for wrong-model, the 1-layer ``tiny-small`` for smaller-model); for an
    embedding model the same model cut to its first few transformer layers."""
    from agora.models.tiny import ensure_tiny_model

    variant, layers, noun = IMPOSTORS[mode]
    parsed = parse_spec(spec)
    if parsed.kind == "generate" and parsed.target == "tiny":
        honest_path = await asyncio.to_thread(ensure_tiny_model, data_dir, "tiny")
        digest = await asyncio.to_thread(model_hash, honest_path)
        impostor_path = await asyncio.to_thread(ensure_tiny_model, data_dir, variant)
        impostor = await load_engine(replace(parsed, target=str(impostor_path)), data_dir, ray=ray)
        return WrongModel(impostor, make_model_id("generate", "tiny", digest), digest)
    if parsed.kind == "embed" and ray is None and "ray" not in parsed.options:
        engine = await load_engine(parsed, data_dir)
        _drop_layers(engine, layers)
        return WrongModel(engine)
    raise MinerConfigError(
        f"--cheat {mode} has no {noun} for {spec!r}: use generate:tiny or an embed: "
        "model (not through Ray)"
    )


async def _tampered(kind: str, spec: str, data_dir: Path, ray: str | None) -> Engine:
    """The honest engine with its weights tampered in place by :mod:`agora.verify.tamper`."""
    try:
        from agora.verify import tamper
    except ImportError:
        raise MinerConfigError(
            f"--cheat {kind} needs agora.verify.tamper, which this build does not have"
        ) from None
    if ray is not None:
        raise MinerConfigError(f"--cheat {kind} cannot tamper with a model served through Ray")
    try:
        if parse_spec(spec).kind == "generate":
            engine = await tamper.load_tampered_engine(spec, kind, data_dir)
        else:
            engine = await load_engine(spec, data_dir)
            try:
                await asyncio.to_thread(tamper.tamper_engine, engine, kind)
            except BaseException:
                await engine.close()
                raise
    except tamper.TamperError as error:
        raise MinerConfigError(f"--cheat {kind}: {error}") from None
    return CheatEngine(engine)
