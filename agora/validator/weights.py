"""Scores to the weights a validator sets: proportional to score, within the subnet's rules.

``compute_weights`` returns ``(uids, weights)`` that pass the ledger's own checks
(:mod:`agora.protocol.weights`, subtensor's): unique existing uids, a positive sum, at least
``min(min_allowed_weights, n)`` entries, and after normalisation no uid above
``max_weight_limit / 65535``. Step by step:

1. Candidates are uids other than the validator's own with a positive, finite score.
2. Shares are proportional to score, then capped at ``max_weight_limit / 65535`` by water
   filling: capped uids stay at the cap and what they lose is shared among the others in
   proportion to their scores, until none is over (bittensor's ``normalize_max_weight``). When
   fewer than ``65535 / max_weight_limit`` miners have a score no split can respect the cap and
   :class:`NoWeights` says so: spreading weight over miners that scored zero would pay them.
3. Shares become integers summing to about 65535 (at least 1 each), checked with the ledger's
   integer rule and nudged down one unit at a time if rounding put one over the cap.
4. If there are fewer entries than ``min_allowed_weights`` requires, other uids are added with
   weight 0, lowest uid first. The ledger counts entries, zeros included, as subtensor does; a
   zero gives nothing to a miner that earned nothing.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from agora.protocol.params import U16_MAX

__all__ = ["NoWeights", "cap_shares", "compute_weights", "passes_ledger_checks"]


class NoWeights(Exception):
    """There is nothing valid to set this time; the message says why."""


def cap_shares(scores: list[float], cap: float) -> list[float]:
    """Shares proportional to ``scores`` (all positive), none above ``cap``, summing to 1.

    Raises:
        NoWeights: ``len(scores) * cap < 1``: no split respects the cap.
    """
    n = len(scores)
    if n == 0:
        raise NoWeights("no scores")
    if n * cap < 1.0 - 1e-12:
        raise NoWeights(
            f"max_weight_limit allows at most {cap:.1%} per uid, so at least "
            f"{math.ceil(1 / cap)} miners must have a score; {n} do"
        )
    shares = [0.0] * n
    capped: set[int] = set()
    while True:
        free = [i for i in range(n) if i not in capped]
        remaining = 1.0 - cap * len(capped)
        total = sum(scores[i] for i in free)
        for i in free:
            shares[i] = scores[i] / total * remaining if total > 0 else remaining / len(free)
        over = [i for i in free if shares[i] > cap]
        if not over:
            break
        for i in over:
            shares[i] = cap
            capped.add(i)
        if len(capped) == n:
            break
    return shares


def passes_ledger_checks(weights: list[int], max_weight_limit: int) -> bool:
    """The ledger's integer rule for ``max_weight_limit`` (``_check_weights``)."""
    total = sum(weights)
    if total == 0:
        return False
    if max_weight_limit >= U16_MAX:
        return True
    return max(w * U16_MAX // total for w in weights) <= max_weight_limit


def compute_weights(
    scores: Mapping[int, float],
    n: int,
    *,
    self_uid: int | None = None,
    min_allowed_weights: int = 1,
    max_weight_limit: int = U16_MAX,
) -> tuple[list[int], list[int]]:
    """``(uids, u16 weights)`` for a subnet of ``n`` uids (see the module docstring).

    Raises:
        NoWeights: no miner has a positive score, or too few for ``max_weight_limit``.
    """
    candidates = sorted(
        (uid, score)
        for uid, score in scores.items()
        if 0 <= uid < n and uid != self_uid and math.isfinite(score) and score > 0
    )
    if not candidates:
        raise NoWeights("no miner has a positive score yet")
    cap = max_weight_limit / U16_MAX
    shares = cap_shares([score for _, score in candidates], cap)
    weights = [max(1, math.floor(share * U16_MAX)) for share in shares]
    for _ in range(len(weights) * 4 + 16):
        if passes_ledger_checks(weights, max_weight_limit):
            break
        top = max(range(len(weights)), key=lambda i: weights[i])
        if weights[top] <= 1:
            break
        weights[top] -= 1
    if not passes_ledger_checks(weights, max_weight_limit):
        raise NoWeights("could not round the weights under max_weight_limit")
    uids = [uid for uid, _ in candidates]
    needed = min(min_allowed_weights, n)
    if len(uids) < needed:
        taken = set(uids)
        fillers = [uid for uid in range(n) if uid not in taken and uid != self_uid]
        if self_uid is not None and 0 <= self_uid < n and self_uid not in taken:
            fillers.append(self_uid)
        extra = fillers[: needed - len(uids)]
        pairs = sorted([*zip(uids, weights, strict=True), *((uid, 0) for uid in extra)])
        uids = [uid for uid, _ in pairs]
        weights = [w for _, w in pairs]
    return uids, weights
