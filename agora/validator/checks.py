"""How an answer is judged: verdicts, and the comparisons against the reference model.

Every probe ends in one :class:`Verdict`. ``ok`` is the only one that earns anything; the
others score zero for that probe, and the *proven* ones (the miner signed a receipt for a wrong
answer, or claims another model, or sent a receipt that does not verify) also wipe the miner's
moving score, since a signed wrong answer is evidence, not bad luck:

    verdict        proven  what happened
    ok                     the answer matches the reference and the receipt verifies
    wrong_output     yes   embeddings or tokens that the reference model does not produce
    wrong_model      yes   the answer, its receipt or /health names another model
    bad_receipt      yes   the receipt's signature, hashes, miner, caller, subnet or nonce is wrong
    no_receipt             no receipt at all
    malformed              the body is not the API's JSON (wrong fields, not JSON)
    http_error             any status but 200 (including the guard's 401/403/429)
    timeout                no complete answer within the probe timeout
    unreachable            no connection (refused, reset, DNS)
    inconclusive           the validator could not judge (its own reference engine failed):
                           nothing is recorded

Thresholds, calibrated on the build machine (``tests/test_validator_checks.py`` pins them):

* **Embeddings**: cosine similarity of every vector with the reference's at least
  :data:`EMBED_MIN_COSINE` (0.999). The same model on another batch size or thread count gives
  1 - 1e-6 or closer (measured: 1 - 1e-12 for all-MiniLM-L6-v2 between batch sizes 1 and 16); a
  paraphrase's vector (another sentence than the one asked) gives ~0.9-0.95, a random vector ~0
  (|cos| < 0.2 in 384 dimensions).
* **Generation** (greedy): the miner's tokens equal the reference's, or they part at a *near
  tie*: at the first position where they differ, the reference model gives the miner's token a
  log-probability within :data:`TIE_LOGPROB_TOL` (1e-3 nats) of its own choice, and over the
  whole answer the miner's tokens average no more than :data:`MEAN_LOGPROB_TOL` (0.5 nats per
  token) below the reference's own. Float noise between machines is ~1e-5 in logprobs (see
  docs/models.md), so a tie can flip; a different model parts where the reference is confident
  (gaps of several nats on the tiny model).
* **Logprobs** (``/v1/score``): each within :data:`SCORE_LOGPROB_TOL` (1e-3 nats) of the
  reference's (llama.cpp's float16 KV cache stays within ~1e-3 of float32).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

import numpy as np

__all__ = [
    "EMBED_MIN_COSINE",
    "MEAN_LOGPROB_TOL",
    "PROVEN",
    "SCORE_LOGPROB_TOL",
    "TIE_LOGPROB_TOL",
    "Judgement",
    "ProbeFailed",
    "Verdict",
    "check_embeddings",
    "check_logprobs",
    "first_divergence",
    "judge_divergence",
]

EMBED_MIN_COSINE = 0.999
TIE_LOGPROB_TOL = 1e-3
MEAN_LOGPROB_TOL = 0.5
SCORE_LOGPROB_TOL = 1e-3


class Verdict(StrEnum):
    OK = "ok"
    WRONG_OUTPUT = "wrong_output"
    WRONG_MODEL = "wrong_model"
    BAD_RECEIPT = "bad_receipt"
    NO_RECEIPT = "no_receipt"
    MALFORMED = "malformed"
    HTTP_ERROR = "http_error"
    TIMEOUT = "timeout"
    UNREACHABLE = "unreachable"
    INCONCLUSIVE = "inconclusive"


PROVEN = frozenset({Verdict.WRONG_OUTPUT, Verdict.WRONG_MODEL, Verdict.BAD_RECEIPT})
"""Verdicts that reset a miner's moving score to zero rather than just scoring a zero."""


class ProbeFailed(Exception):
    """Raised inside a probe to end it with a verdict other than ``ok``."""

    def __init__(self, verdict: Verdict, reason: str) -> None:
        super().__init__(f"{verdict}: {reason}")
        self.verdict = verdict
        self.reason = reason


@dataclass(frozen=True)
class Judgement:
    """Whether an answer passes, with a figure and a reason a person can read."""

    ok: bool
    reason: str
    figure: float = 0.0


def check_embeddings(
    reference: Sequence[Sequence[float]],
    answer: object,
    min_cosine: float = EMBED_MIN_COSINE,
) -> Judgement:
    """Compare a miner's vectors with the reference's, row by row (``figure`` = the lowest
    cosine similarity)."""
    ref = np.asarray(reference, dtype=np.float64)
    try:
        got = np.asarray(answer, dtype=np.float64)
    except (TypeError, ValueError):
        return Judgement(False, "the embeddings are not a matrix of numbers")
    if got.shape != ref.shape:
        return Judgement(
            False, f"expected {ref.shape[0]} vectors of {ref.shape[1]}, got shape {got.shape}"
        )
    if not np.all(np.isfinite(got)):
        return Judgement(False, "the embeddings hold NaN or infinity")
    norms = np.linalg.norm(ref, axis=1) * np.linalg.norm(got, axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        cosines = np.where(norms > 0, (ref * got).sum(axis=1) / norms, 0.0)
    worst = float(cosines.min())
    if worst < min_cosine:
        row = int(cosines.argmin())
        return Judgement(
            False, f"vector {row} has cosine {worst:.6f} with the reference (< {min_cosine})", worst
        )
    return Judgement(True, f"min cosine {worst:.9f}", worst)


def first_divergence(a: Sequence[int], b: Sequence[int]) -> int | None:
    """The first index where two token sequences differ (a shorter one differs where it ends);
    None if they are equal."""
    for index, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return index
    return None if len(a) == len(b) else min(len(a), len(b))


def judge_divergence(
    reference_tokens: Sequence[int],
    reference_logprobs: Sequence[float],
    miner_tokens: Sequence[int],
    miner_logprobs: Sequence[float],
    *,
    tie_tol: float = TIE_LOGPROB_TOL,
    mean_tol: float = MEAN_LOGPROB_TOL,
) -> Judgement:
    """Greedy tokens that differ from the reference: accepted only if they part at a near tie
    and stay about as likely under the reference model (see the module docstring).

    ``*_logprobs`` are the reference model's log-probabilities of each sequence's tokens.
    """
    index = first_divergence(reference_tokens, miner_tokens)
    if index is None:
        return Judgement(True, "same tokens as the reference")
    if index >= len(miner_tokens):
        return Judgement(
            False, f"stopped after {len(miner_tokens)} tokens where the reference goes on"
        )
    if index >= len(reference_tokens):
        return Judgement(
            False, f"goes on after {len(reference_tokens)} tokens where the reference stopped"
        )
    gap = reference_logprobs[index] - miner_logprobs[index]
    if not math.isfinite(gap) or gap > tie_tol:
        return Judgement(
            False,
            f"token {index} is {miner_tokens[index]} where the reference model picks "
            f"{reference_tokens[index]} by {gap:.4f} nats (a tie would be < {tie_tol})",
            gap,
        )
    mean_ref = sum(reference_logprobs) / max(1, len(reference_logprobs))
    mean_miner = sum(miner_logprobs) / max(1, len(miner_logprobs))
    if mean_miner < mean_ref - mean_tol:
        return Judgement(
            False,
            f"parted at a tie at token {index}, but then averages {mean_miner:.3f} nats per "
            f"token against the reference's {mean_ref:.3f}",
            mean_ref - mean_miner,
        )
    return Judgement(True, f"parted at a near tie at token {index} ({gap:.2e} nats)", gap)


def check_logprobs(
    reference: Sequence[float], answer: object, tol: float = SCORE_LOGPROB_TOL
) -> Judgement:
    """Compare a miner's logprobs (``/v1/score``) with the reference's (``figure`` = the
    largest difference)."""
    if not isinstance(answer, list) or len(answer) != len(reference):
        size = len(answer) if isinstance(answer, list) else "no list"
        return Judgement(False, f"expected {len(reference)} logprobs, got {size}")
    try:
        got = np.asarray(answer, dtype=np.float64)
    except (TypeError, ValueError):
        return Judgement(False, "the logprobs are not numbers")
    if not np.all(np.isfinite(got)):
        return Judgement(False, "the logprobs hold NaN or infinity")
    worst = float(np.max(np.abs(got - np.asarray(reference, dtype=np.float64)), initial=0.0))
    if worst > tol:
        return Judgement(False, f"logprobs differ from the reference by up to {worst:.4f}", worst)
    return Judgement(True, f"logprobs within {worst:.2e}", worst)
