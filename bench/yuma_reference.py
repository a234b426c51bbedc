"""A float64 reference of one Yuma epoch: a plain port of subtensor's ``epoch_dense``.

Written for reading and for cross-checking :func:`agora.protocol.yuma.epoch`, not for
consensus: it uses floats (and BLAS, when numpy has one), works on the full ``n x n`` matrices,
and ports subtensor's pivoting ``weighted_median`` literally instead of sorting. The
benchmark (``bench/bench_yuma.py``) times it next to the fixed-point epoch, and
``tests/test_yuma_properties.py`` checks that the two agree within 1e-6.

Inputs are those of :func:`agora.protocol.yuma.epoch` (bonds as Q32 integers); the result
is a dict of float64 arrays with the same names as :class:`agora.protocol.yuma.EpochResult`
fields, plus ``bonds``, the full ``n x n`` bond matrix after the epoch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from agora.protocol.yuma import YumaParams

F = npt.NDArray[np.float64]
U16_MAX = 65535.0
Q32_ONE = float(1 << 32)


def _normalize(x: F) -> F:
    total = x.sum()
    result: F = x / total if total != 0 else x.copy()
    return result


def _col_normalize(x: F) -> F:
    sums = x.sum(axis=0)
    result: F = np.divide(x, sums, out=np.zeros_like(x), where=sums != 0)
    return result


def weighted_median(
    stake: F, score: F, partition: list[int], minority: float, lo: float, hi: float
) -> float:
    """subtensor's ``weighted_median`` (math.rs), line by line: a mid-pivot quickselect."""
    current = partition
    for _ in range(len(partition) + 1):
        n = len(current)
        if n == 0:
            return 0.0
        if n == 1:
            return float(score[current[0]])
        pivot = score[current[n // 2]]
        lo_stake = hi_stake = 0.0
        lower: list[int] = []
        upper: list[int] = []
        for idx in current:
            if score[idx] == pivot:
                continue
            if score[idx] < pivot:
                lo_stake += stake[idx]
                lower.append(idx)
            else:
                hi_stake += stake[idx]
                upper.append(idx)
        if minority < lo + lo_stake and lower:
            current, hi = lower, lo + lo_stake
        elif hi - hi_stake <= minority and upper:
            current, lo = upper, hi - hi_stake
        else:
            return float(pivot)
    return 0.0


def weighted_median_col(stake: F, score: F, majority: float) -> F:
    """subtensor's ``weighted_median_col``: per column, over rows with positive stake."""
    voters = [i for i in range(len(stake)) if stake[i] > 0]
    median = np.zeros(score.shape[1])
    if not voters:
        return median
    use_stake = _normalize(stake[voters])
    stake_sum = float(use_stake.sum())
    minority = stake_sum - majority
    for c in range(score.shape[1]):
        column = score[voters, c]
        median[c] = weighted_median(
            use_stake, column, list(range(len(voters))), minority, 0.0, stake_sum
        )
    return median


def epoch_reference(
    stake: Sequence[int],
    weights: npt.NDArray[np.integer[Any]],
    bonds: npt.NDArray[np.int64],
    last_update: Sequence[int] | npt.NDArray[np.integer[Any]],
    block_at_registration: Sequence[int] | npt.NDArray[np.integer[Any]],
    current_block: int,
    activity_cutoff: int,
    permits: Sequence[bool] | npt.NDArray[np.bool_],
    params: YumaParams,
    *,
    next_permits: Sequence[bool] | npt.NDArray[np.bool_] | None = None,
) -> dict[str, F]:
    """One epoch in float64, following ``epoch_dense`` step by step."""
    permit = np.asarray(permits, dtype=bool)
    next_permit = permit if next_permits is None else np.asarray(next_permits, dtype=bool)
    updated = np.asarray(last_update, dtype=np.int64)
    registered = np.asarray(block_at_registration, dtype=np.int64)

    # Stake: threshold, normalise; active stake of active permitted validators.
    raw = np.array([float(s) if s >= params.stake_threshold else 0.0 for s in stake])
    stake_f = _normalize(raw)
    active = updated + activity_cutoff >= current_block
    active_stake = _normalize(np.where(active & permit, stake_f, 0.0))

    # Weights: permit rows, no diagonal, no outdated weights, rows normalised.
    w = np.asarray(weights, dtype=np.float64).copy()
    w[~permit] = 0.0
    np.fill_diagonal(w, 0.0)
    w[updated[:, None] <= registered[None, :]] = 0.0
    row_sums = w.sum(axis=1, keepdims=True)
    w = np.divide(w, row_sums, out=np.zeros_like(w), where=row_sums > 0)

    # Consensus, clipping, trust, ranks, incentive.
    preranks = (w * active_stake[:, None]).sum(axis=0)
    kappa = params.kappa / U16_MAX
    consensus = weighted_median_col(active_stake, w, kappa)
    clipped = np.minimum(w, consensus[None, :])
    validator_trust = clipped.sum(axis=1)
    ranks = (clipped * active_stake[:, None]).sum(axis=0)
    trust = np.divide(ranks, preranks, out=np.zeros_like(ranks), where=preranks != 0)
    incentive = _normalize(ranks)

    # Bonds.
    beta = params.bonds_penalty / U16_MAX
    w_bonds = w + beta * (clipped - w)
    previous = np.asarray(bonds, dtype=np.float64) / Q32_ONE
    last_tempo = max(current_block - params.tempo, 0)
    previous[:, registered >= last_tempo] = 0.0
    fixed_alpha = 1.0 - params.bonds_moving_average / 1e6
    if params.yuma3:
        if params.liquid_alpha and np.any(consensus != 0):
            low = params.alpha_low / U16_MAX
            high = params.alpha_high / U16_MAX
            diff_buy = np.clip(w_bonds - consensus[None, :], 0.0, 1.0)
            diff_sell = np.clip(previous - w_bonds, 0.0, 1.0)
            d = np.where(w_bonds >= previous, diff_buy, diff_sell)
            t = params.alpha_sigmoid_steepness / -100.0 * (d - 0.5)
            sigmoid = 1.0 / (1.0 + np.exp(t))
            alpha = np.clip(low + sigmoid * (high - low), low, high)
            new_bonds = np.minimum(1.0, (1.0 - alpha) * previous + np.maximum(alpha * w_bonds, 0.0))
        else:
            new_bonds = fixed_alpha * w_bonds + (1.0 - fixed_alpha) * previous
        per_validator = (_col_normalize(new_bonds) * incentive[None, :]).sum(axis=1)
        dividends = _normalize(per_validator * active_stake)
        stored = new_bonds
    else:
        old = _col_normalize(previous)
        delta = _col_normalize(w_bonds * active_stake[:, None])
        ema = _col_normalize(fixed_alpha * delta + (1.0 - fixed_alpha) * old)
        dividends = _normalize(ema @ incentive)
        maxima = ema.max(axis=0)
        stored = np.divide(ema, maxima, out=np.zeros_like(ema), where=maxima != 0)

    new_matrix = np.asarray(bonds, dtype=np.float64) / Q32_ONE
    new_matrix[next_permit] = stored[next_permit]
    new_matrix[permit & ~next_permit] = 0.0

    # Emission shares and pruning scores.
    combined = incentive + dividends
    total = combined.sum()
    if total != 0:
        server_emission = incentive / total
        validator_emission = dividends / total
        pruning_score = _normalize(combined)
    else:
        server_emission = incentive
        validator_emission = stake_f if active_stake.sum() == 0 else active_stake
        pruning_score = validator_emission

    return {
        "stake": stake_f,
        "active_stake": active_stake,
        "rank": incentive,
        "trust": trust,
        "consensus": consensus,
        "incentive": incentive,
        "dividends": dividends,
        "validator_trust": validator_trust,
        "server_emission": server_emission,
        "validator_emission": validator_emission,
        "pruning_score": pruning_score,
        "bonds": new_matrix,
    }
