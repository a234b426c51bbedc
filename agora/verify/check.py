"""The validator's entry point: does a miner's TOPLOC proof match this answer?

    verdict = verify_generation(engine, prompt, token_ids, proof_b64)
    verdict = await verify_generation_async(engine, prompt, token_ids, proof_b64)
    verdicts = verify_generations(engine, [GenerationItem(prompt, token_ids, proof_b64), ...])

``engine`` is the validator's reference `agora.models.causal_lm.CausalLMEngine` (the same model
the miner claims to serve). The check runs one forward pass over prompt plus output, recomputes
the top entries of every position and compares them with the miner's commitment
(`agora.verify.toploc`). `verify_generations` checks several answers with one padded forward
pass per ``batch_size`` of them: a validator auditing a round of answers pays the model's fixed
per-call cost once per batch instead of once per answer, which for small models is most of the
cost of a prefill.
Nothing here raises for a bad proof: a malformed, truncated or mismatched proof is a failing
`Verdict` whose ``reason`` says what is wrong, so that a validator can score it and keep it as
evidence. Bad arguments from the caller (a prompt that is not a string, token ids outside the
vocabulary) raise `agora.models.errors.InvalidRequest`.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import functools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from agora.models.base import check_token_ids
from agora.models.errors import ContextTooLong, InvalidRequest
from agora.verify.activations import prefill_hidden_batch
from agora.verify.toploc import (
    DEFAULT_PER_POSITION,
    DEFAULT_THRESHOLDS,
    Proof,
    ProofError,
    Thresholds,
    check_proof_fits,
    compare,
    decode_proof,
    judge_answer,
    trimmed_error,
)


@dataclass(frozen=True)
class Verdict:
    """``ok`` when every chunk passes; else ``reason`` names the first failing chunk and
    statistic. ``stats`` holds the worst figures over all chunks (and their count)."""

    ok: bool
    reason: str
    stats: dict[str, Any] = field(default_factory=dict)


def _fail(reason: str, **stats: Any) -> Verdict:
    return Verdict(False, reason, dict(stats))


@dataclass(frozen=True)
class GenerationItem:
    """One answer to audit: the prompt, the generated token ids, the miner's proof (base64)
    and, if known, the ``max_tokens`` the request asked for."""

    prompt: str
    token_ids: list[int]
    proof: str | None
    max_tokens: int | None = None


@dataclass(frozen=True)
class _Prepared:
    """An answer whose proof decoded and fits; it only needs the reference's hidden states."""

    ids: list[int]
    proof: Proof
    proof_bytes: int


#: Answers per padded forward pass in `verify_generations`.
DEFAULT_BATCH = 8


def _prepare(engine: Any, item: GenerationItem, per_position: int | None) -> Verdict | _Prepared:
    """Every check that needs no model: a failing `Verdict`, or what the forward pass needs.
    Raises `InvalidRequest` / `ContextTooLong` for arguments the caller should not pass."""
    prompt, token_ids, proof_b64, max_tokens = (
        item.prompt,
        item.token_ids,
        item.proof,
        item.max_tokens,
    )
    if not isinstance(prompt, str):
        raise InvalidRequest("prompt must be a string")
    tokens = check_token_ids(token_ids, int(engine.vocab_size))
    if not tokens:
        return _fail("the answer has no tokens; there is nothing to verify")
    short = max_tokens is not None and len(tokens) < max_tokens
    if short and tokens[-1] not in engine.eos_token_ids:
        return _fail(
            f"truncated output: {len(tokens)} of {max_tokens} tokens and no end-of-sequence"
        )
    if not proof_b64:
        return _fail("no TOPLOC proof came with the answer")
    try:
        raw = base64.b64decode(proof_b64, validate=True)
    except (binascii.Error, ValueError, TypeError):
        return _fail("the proof is not valid base64")
    try:
        proof = decode_proof(raw)
    except ProofError as exc:
        return _fail(f"malformed proof: {exc}")
    prompt_ids = engine.encode_prompt(prompt)
    ids = prompt_ids + tokens
    if len(ids) > engine.context_length:
        raise ContextTooLong(
            f"prompt plus output ({len(ids)} tokens) exceeds the context length of "
            f"{engine.context_length}"
        )
    hidden_size = int(engine.torch_model.config.hidden_size)
    try:
        check_proof_fits(proof, len(prompt_ids), len(tokens), hidden_size, per_position)
    except ProofError as exc:
        return _fail(f"proof does not fit the answer: {exc}")
    return _Prepared(ids, proof, len(raw))


def _judge(prepared: _Prepared, hidden: np.ndarray, thresholds: Thresholds) -> Verdict:
    """Compare the reference's hidden states with the proof and decide."""
    proof = prepared.proof
    chunks = compare(proof, hidden, thresholds)
    stats: dict[str, Any] = {
        "chunks": len(chunks),
        "per_position": proof.per_position,
        "index_mismatches": max(c.index_mismatches for c in chunks),
        "exp_mismatches": max(c.exp_mismatches for c in chunks),
        "position_mismatches": max(c.position_mismatches for c in chunks),
        "mant_err_mean": max(c.mant_err_mean for c in chunks),
        "mant_err_max": max(c.mant_err_max for c in chunks),
        "mant_err_trimmed": trimmed_error(chunks, thresholds.trim),
        "proof_bytes": prepared.proof_bytes,
    }
    reason = judge_answer(chunks, thresholds)
    if reason is not None:
        return Verdict(False, reason, stats)
    return Verdict(True, f"all {len(chunks)} chunks match", stats)


def verify_generations(
    engine: Any,
    items: Sequence[GenerationItem],
    *,
    thresholds: Thresholds = DEFAULT_THRESHOLDS,
    per_position: int | None = DEFAULT_PER_POSITION,
    batch_size: int = DEFAULT_BATCH,
) -> list[Verdict]:
    """`verify_generation` of several answers, one `Verdict` per item in order, with one
    padded forward pass per ``batch_size`` answers whose proofs decode (answers of similar
    length are batched together, so little of each pass is padding).

    Every item's arguments are checked before any model runs: a prompt that is not a string,
    token ids outside the vocabulary or an answer beyond the context raise `InvalidRequest` /
    `ContextTooLong` and nothing is verified.
    """
    if batch_size < 1:
        raise InvalidRequest("batch_size must be at least 1")
    prepared = [_prepare(engine, item, per_position) for item in items]
    verdicts: dict[int, Verdict] = {}
    todo: list[tuple[int, _Prepared]] = []
    for i, p in enumerate(prepared):
        if isinstance(p, Verdict):
            verdicts[i] = p
        else:
            todo.append((i, p))
    todo.sort(key=lambda pair: len(pair[1].ids))
    pad_id = int(getattr(engine, "pad_token_id", 0) or 0)
    for start in range(0, len(todo), batch_size):
        group = todo[start : start + batch_size]
        hidden = prefill_hidden_batch(
            engine.torch_model, [p.ids for _, p in group], engine.device, pad_id
        )
        for (i, p), states in zip(group, hidden, strict=True):
            verdicts[i] = _judge(p, states, thresholds)
    return [verdicts[i] for i in range(len(prepared))]


def verify_generation(
    engine: Any,
    prompt: str,
    token_ids: list[int],
    proof_b64: str | None,
    *,
    thresholds: Thresholds = DEFAULT_THRESHOLDS,
    per_position: int | None = DEFAULT_PER_POSITION,
    max_tokens: int | None = None,
) -> Verdict:
    """Check ``proof_b64`` against ``prompt`` and the generated ``token_ids`` with ``engine``.

    ``per_position`` is the number of entries per position this validator insists on (None
    accepts the proof's own). With ``max_tokens`` (what the request asked for), an answer
    shorter than that which does not end with an end-of-sequence token fails as truncated.

    Raises `InvalidRequest` for arguments that are not a string prompt and token ids of the
    engine's vocabulary; everything wrong with the proof is a failing `Verdict`.
    """
    item = GenerationItem(prompt, token_ids, proof_b64, max_tokens)
    [verdict] = verify_generations(engine, [item], thresholds=thresholds, per_position=per_position)
    return verdict


async def verify_generation_async(
    engine: Any,
    prompt: str,
    token_ids: list[int],
    proof_b64: str | None,
    **options: Any,
) -> Verdict:
    """`verify_generation` off the event loop: on the engine's own model thread when it has
    one (calls into a model are serialised there), else on a worker thread."""
    call = functools.partial(verify_generation, engine, prompt, token_ids, proof_b64, **options)
    verdict: Verdict = await _off_loop(engine, call)
    return verdict


async def verify_generations_async(
    engine: Any, items: Sequence[GenerationItem], **options: Any
) -> list[Verdict]:
    """`verify_generations` off the event loop (as `verify_generation_async`)."""
    call = functools.partial(verify_generations, engine, list(items), **options)
    verdicts: list[Verdict] = await _off_loop(engine, call)
    return verdicts


async def _off_loop(engine: Any, call: Any) -> Any:
    """Run ``call`` on the engine's own model thread when it has one (calls into a model are
    serialised there), else on a worker thread."""
    run_in_worker = getattr(engine, "run_in_worker", None)
    if run_in_worker is not None:
        return await run_in_worker(call)
    return await asyncio.to_thread(call)
