"""Yuma consensus: one epoch of one subnet, YC2 and YC3 (with liquid alpha), in Q32 fixed point.

A port of subtensor's ``epoch_dense`` (``pallets/subtensor/src/epoch/run_epoch.rs`` and
``epoch/math.rs``). Pure: no I/O, no clock, no randomness, no floats in anything a result
depends on, so every machine computes the same bits (see :mod:`agora.protocol.fixedpoint` for
the argument).

Numbers
-------
Every fraction is a Q32 integer in an ``int64`` array: ``x`` is stored as ``floor(x * ONE)`` with
``ONE = 2**32`` (:data:`agora.protocol.fixedpoint.ONE`), the quantum of subtensor's ``I32F32``.
Weights arrive as u16 (each row's scale is irrelevant), stakes as raw integer units, kappa,
bonds penalty and alpha bounds as u16 fractions of 65535, the bonds moving average in parts per
million, all exactly as subtensor stores them. EMA coefficients (alpha) are Q30, so that
``alpha * (w - b)`` fits one int64 product.

Public API
----------
``YumaParams``                  the subnet hyperparameters an epoch reads.
``EpochResult``                 what an epoch produces: Q32 vectors of length n and the new bonds.
``epoch(stake, weights, bonds, last_update, block_at_registration, current_block,
activity_cutoff, permits, params, *, next_permits=None) -> EpochResult``  one epoch.
``normalize_stake(stake, threshold=0) -> Q``      raw stakes to Q32 shares, exactly.
``top_k_permits(stake, k, threshold=0) -> bool array``  subtensor's ``is_topk_nonzero``.
``apply_bonds(previous, result) -> Q``            the full n x n bond matrix after an epoch.
``emission_split(result, amount) -> (server, validator)``  integer units per uid.
``liquid_alpha_table(steepness, alpha_low, alpha_high)``   Q30 alpha at 65537 knots of ``d``.

The epoch, step by step (``i`` = validator row, ``j`` = uid column)
------------------------------------------------------------------
1. Stake: raw stake below ``params.stake_threshold`` counts as 0; the rest is normalised to sum
   to 1. ``active[i] = last_update[i] + activity_cutoff >= current_block``. Active stake is the
   stake of active uids holding a validator permit, normalised again.
2. Weights: rows of uids without a permit are dropped, the diagonal (self-weight) is dropped, and
   ``w[i, j]`` is dropped when ``last_update[i] <= block_at_registration[j]`` (set before ``j``
   registered). Each row is normalised to sum to 1.
3. Consensus ``c[j]``: the stake-weighted median of column ``j`` over validators with active
   stake, at ``kappa``: the smallest weight ``v`` such that the stake on weights ``<= v`` exceeds
   ``stake_sum - kappa`` (or the column maximum if none does). This is exactly what subtensor's
   pivoting ``weighted_median`` returns (it keeps ``stake(< pivot) <= minority < stake(<= pivot)``
   as an invariant), computed here with one sort per column.
4. Clipped weights ``min(w, c)``; validator trust = row sums of clipped weights; preranks and
   ranks = stake-weighted column sums of ``w`` and of the clipped weights; trust = ranks /
   preranks; incentive = rank = ranks normalised.
5. Bond weights ``(1 - beta) * w + beta * clipped`` with ``beta = bonds_penalty``.
6. Bonds (columns of uids registered since the last tempo, ``current_block - tempo <=
   block_at_registration[j]``, are reset to 0 first):

   * YC3 (``params.yuma3``): bonds are proportions in ``[0, 1]``.
     ``b' = min(1, b + alpha * (w_b - b))``. With liquid alpha on and some consensus non-zero,
     ``alpha`` is per bond: ``alpha_low + sigmoid(steepness/100 * (d - 1/2)) * (alpha_high -
     alpha_low)`` clamped to ``[alpha_low, alpha_high]``, where ``d = clamp(w_b - c, 0, 1)`` if
     ``w_b >= b`` else ``clamp(b - w_b, 0, 1)``; otherwise ``alpha = 1 - bonds_moving_average /
     1e6``. Dividends: ``d_i = active_stake_i * sum_j (b'_ij / sum_k b'_kj) * incentive_j``,
     normalised.
   * YC2: ``B`` and ``delta = active_stake_i * w_b`` are column-normalised,
     ``E = (1 - alpha) * B + alpha * delta`` with ``alpha = 1 - bonds_moving_average / 1e6``, then
     column-normalised; dividends ``d_i = sum_j E_ij * incentive_j``, normalised. Bonds are
     stored column max-upscaled (each column's largest bond is 1), as subtensor stores them.
7. Emission shares: servers get ``incentive / sum(incentive + dividends)``, validators
   ``dividends / sum(...)``; pruning score = ``incentive + dividends`` normalised. If that sum is
   0, validators get the active stake (or the stake, if no stake is active).
8. Bond rows: a uid keeping (or gaining) a permit stores its new row; a uid losing its permit has
   its row cleared; other rows are not touched.

Where this differs from subtensor, on purpose
---------------------------------------------
* Rounding: a sum of products (ranks, dividends) is computed exactly and rounded once, and an EMA
  ``b + alpha*(w - b)`` is rounded once; subtensor rounds every product, so its sums can differ
  from ours by up to one unit of ``2**-32`` per term.
* ``exp``: subtensor's ``substrate_fixed::exp`` is a 31-term Taylor series in I32F32. The chain's
  sigmoid is accurate to about 1e-9 for ``-6.7 <= t <= 21.5``, but off by 2e-7 at ``t = -8`` and
  by 3e-4 at ``t = -10``; above ``t ~ 21.5`` the series overflows, ``safe_exp`` returns 0 and
  the sigmoid jumps to 1. Agora uses the true ``e**-|t|`` (error < 4e-9): the same sigmoid
  wherever the chain's is accurate, which covers every ``d`` when ``|steepness| <= 1340``
  (``|t| <= 6.7``; the chain default is 1000). For steeper sigmoids Agora follows the
  mathematical definition, not the truncated series.
* Liquid alpha is linearly interpolated between 65537 exact knots of ``d``; the interpolation
  error is below ``4e-12 * (alpha_high - alpha_low) * (steepness/100)**2``.
* Bonds are kept in Q32; subtensor also rounds stored bonds down to u16 (``floor(b * 65535)``),
  which moves them by less than ``1.6e-5``. ``steepness / 100`` is not rounded before use.
* Not modelled (later subtensor features): the subnet owner's self-weight exception,
  commit-reveal masking inside the epoch, and liquid-alpha consensus modes.
* Rows of ``bonds`` outside ``permits | next_permits`` are ignored (treated as 0): on chain a
  row is cleared when its permit is lost, so they are empty. The state layer must keep it so
  (clear a uid's bond row when the uid is replaced).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

from agora.protocol.fixedpoint import (
    ONE,
    WIDE,
    Q,
    combine,
    div,
    dot_cols,
    dot_rows_parts,
    exp_neg_q31,
    mul,
    mul_sum,
    normalize,
    ratio,
    ratio_parts,
)

__all__ = [
    "ALPHA_BITS",
    "ONE",
    "U16_MAX",
    "EpochResult",
    "YumaParams",
    "apply_bonds",
    "emission_split",
    "epoch",
    "liquid_alpha_table",
    "normalize_stake",
    "top_k_permits",
]

Mask = npt.NDArray[np.bool_]
_Array = TypeVar("_Array", bound=npt.NDArray[Any])

U16_MAX = 65535
ALPHA_BITS = 30
"""EMA coefficients are Q30: ``alpha * (w - b)`` with ``|w - b| <= 2**32`` stays below ``2**62``."""
_PPM = 1_000_000
_MAX_UIDS = 1 << 14  # keeps every exact sum of products below 2**63 (see fixedpoint)
_DELTA_SHIFT = 18  # YC2 bond deltas are Q46: floor(stake * w / 2**18)
_KNOT_SHIFT = 16  # liquid alpha is tabulated at d = i / 2**16, i = 0..2**16


@dataclass(frozen=True)
class YumaParams:
    """Subnet hyperparameters, stored the way subtensor stores them.

    ``kappa``, ``bonds_penalty``, ``alpha_low`` and ``alpha_high`` are u16 fractions of 65535;
    ``bonds_moving_average`` is in parts per million (alpha = 1 - it / 1e6);
    ``alpha_sigmoid_steepness`` is the i16 the chain stores (it divides it by 100); ``tempo`` is
    in blocks; ``stake_threshold`` is in raw stake units. Defaults are subtensor's.
    """

    kappa: int = 32767
    bonds_penalty: int = U16_MAX
    bonds_moving_average: int = 900_000
    yuma3: bool = False
    liquid_alpha: bool = False
    alpha_low: int = 45875
    alpha_high: int = 58982
    alpha_sigmoid_steepness: int = 1000
    tempo: int = 360
    stake_threshold: int = 0

    def __post_init__(self) -> None:
        for name in ("kappa", "bonds_penalty", "alpha_low", "alpha_high"):
            value = getattr(self, name)
            if not 0 <= value <= U16_MAX:
                raise ValueError(f"YumaParams.{name} must be a u16, got {value}")
        if not 0 <= self.bonds_moving_average <= _PPM:
            raise ValueError("YumaParams.bonds_moving_average must be in [0, 1_000_000] ppm")
        if not -(1 << 15) <= self.alpha_sigmoid_steepness < (1 << 15):
            raise ValueError("YumaParams.alpha_sigmoid_steepness must be an i16")
        if self.tempo < 0 or self.stake_threshold < 0:
            raise ValueError("YumaParams.tempo and stake_threshold must not be negative")


@dataclass(frozen=True, eq=False)
class EpochResult:
    """Everything an epoch produces. Vectors have length n and are Q32 unless noted; all arrays
    are read-only.

    ``rank`` equals ``incentive`` (subtensor stores the normalised ranks as both).
    ``server_emission`` and ``validator_emission`` are each uid's share of the epoch's emission
    (together they sum to ONE, up to rounding); ``pruning_score`` is the normalised combined
    emission. ``bond_rows`` (uids, int64) lists the rows of the bond matrix this epoch rewrote,
    and ``bonds`` (``len(bond_rows) x n``, Q32) their new contents; see :func:`apply_bonds`.
    """

    stake: Q
    active: Mask
    active_stake: Q
    rank: Q
    trust: Q
    consensus: Q
    incentive: Q
    dividends: Q
    validator_trust: Q
    server_emission: Q
    validator_emission: Q
    pruning_score: Q
    bond_rows: Q
    bonds: Q


def normalize_stake(stake: Sequence[int], threshold: int = 0) -> Q:
    """Raw stakes (integer units, any size) to Q32 shares ``floor(s * ONE / total)``, exactly.

    Stakes below ``threshold`` count as 0 (subtensor's stake threshold filter). All zeros if the
    total is 0.

    Raises:
        ValueError: if a stake is negative or not an integer.
    """
    if any(not isinstance(s, (int, np.integer)) or isinstance(s, bool) for s in stake):
        raise ValueError("stakes must be integers")
    raw = [int(s) for s in stake]
    if any(s < 0 for s in raw):
        raise ValueError("stakes must not be negative")
    kept = [s if s >= threshold else 0 for s in raw]
    total = sum(kept)
    if total == 0:
        return np.zeros(len(kept), dtype=np.int64)
    return np.array([(s << 32) // total for s in kept], dtype=np.int64)


def top_k_permits(stake: Sequence[int], k: int, threshold: int = 0) -> Mask:
    """Validator permits: the ``k`` largest non-zero stakes (subtensor's ``is_topk_nonzero``).

    ``stake`` is raw stake in integer units. Like the chain, this ranks the normalised Q32 shares
    (:func:`normalize_stake`, with the same ``threshold`` as the epoch), so two stakes whose
    shares round to the same value tie; ties go as the chain's ascending stable sort sends them:
    the higher uid wins. With ``k >= n`` every non-zero share gets a permit.

    Raises:
        ValueError: if ``k`` is negative or a stake is negative or not an integer.
    """
    if k < 0:
        raise ValueError("top_k_permits: k must not be negative")
    shares = normalize_stake(stake, threshold)
    permits: Mask = shares != 0
    n = len(shares)
    if n < k:
        return permits
    order = np.argsort(shares, kind="stable")
    permits[order[: n - k]] = False
    return permits


@functools.lru_cache(maxsize=32)
def liquid_alpha_table(
    steepness: int, alpha_low: int, alpha_high: int
) -> tuple[npt.NDArray[np.int32], npt.NDArray[np.int32]]:
    """Liquid alpha (Q30) at ``d = i / 2**16`` for ``i = 0..2**16``, and the slopes between knots.

    ``alpha(d) = alpha_low + sigmoid(t) * (alpha_high - alpha_low)`` clamped to
    ``[alpha_low, alpha_high]``, with ``sigmoid(t) = 1 / (1 + e**t)`` and
    ``t = steepness / 100 * (1/2 - d)``; ``alpha_low``/``alpha_high`` are u16 / 65535. Integer
    arithmetic only: ``|t|`` in Q31 is ``floor(|steepness * (2**15 - i)| * 2**15 / 100)``,
    ``u = e**-|t|`` comes from :func:`~agora.protocol.fixedpoint.exp_neg_q31`, and the sigmoid is
    ``u / (1 + u)`` for ``t > 0`` and ``1 / (1 + u)`` otherwise (floored Q31 quotients).
    """
    knots = np.arange((1 << _KNOT_SHIFT) + 1, dtype=np.int64)
    num = steepness * ((1 << (_KNOT_SHIFT - 1)) - knots)  # t = num / (100 * 2**16)
    t_abs = (np.abs(num) << 15) // 100  # |t| * 2**31; |num| < 2**31, so this is < 2**46
    u = exp_neg_q31(t_abs)
    one31 = np.int64(1 << 31)
    sigmoid = np.where(num > 0, (u << 31) // (one31 + u), np.int64(1 << 62) // (one31 + u))
    low = (alpha_low << ALPHA_BITS) // U16_MAX
    high = (alpha_high << ALPHA_BITS) // U16_MAX
    alpha = low + ((sigmoid * (high - low)) >> 31)
    alpha = np.maximum(np.minimum(alpha, high), low)  # clamp_value: min(high) first, then max(low)
    slope = np.diff(alpha, append=alpha[-1:])
    # int32 halves the memory the per-bond lookups touch; |alpha|, |slope| <= 2**30.
    table = alpha.astype(np.int32)
    slopes = slope.astype(np.int32)
    table.flags.writeable = False
    slopes.flags.writeable = False
    return table, slopes


def _liquid_alpha(d: Q, params: YumaParams) -> Q:
    """Per-bond Q30 alpha for Q32 ``d`` in ``[0, ONE]``: table lookup and linear interpolation."""
    table, slope = liquid_alpha_table(
        params.alpha_sigmoid_steepness, params.alpha_low, params.alpha_high
    )
    knot = d >> _KNOT_SHIFT
    alpha = d & ((1 << _KNOT_SHIFT) - 1)  # the fraction between knots, then alpha, in place
    alpha *= np.take(slope, knot)
    alpha >>= _KNOT_SHIFT
    alpha += np.take(table, knot)
    return alpha


def _fixed_alpha(params: YumaParams) -> int:
    """Q30 ``1 - bonds_moving_average / 1e6`` (subtensor's ``compute_disabled_liquid_alpha``)."""
    return ((_PPM - params.bonds_moving_average) << ALPHA_BITS) // _PPM


def _ema(old: Q, new: Q, alpha: Q | int) -> Q:
    """``old + alpha * (new - old)``, floored once; ``alpha`` is Q30 in ``[0, 2**30]``.

    For ``old, new`` in ``[0, ONE]`` the result stays in ``[0, ONE]`` without clamping: the exact
    value lies between ``old`` and ``new``, and flooring it keeps it there because ``old`` is an
    integer. (This is subtensor's ``mat_ema`` / ``mat_ema_alpha``, whose ``min(1)`` and ``max(0)``
    therefore never bind, with one rounding instead of two.)
    """
    result: Q = new - old
    result *= alpha
    result >>= ALPHA_BITS
    result += old
    return result


@dataclass(frozen=True)
class _Voters:
    """Who votes in the weighted median: rows with positive active stake, stake renormalised."""

    rows: Q  # indices into the validator rows
    stake: Q  # their stake, normalised again (as subtensor's weighted_median_col does)
    minority: int  # stake_sum - kappa
    bits: int  # bits that hold a row index in a sort key

    @classmethod
    def of(cls, row_stake: Q, kappa: int) -> _Voters:
        rows = np.flatnonzero(row_stake > 0)
        stake = normalize(row_stake[rows])
        return cls(rows, stake, int(stake.sum()) - kappa, max(1, (len(rows) - 1).bit_length()))


def _weighted_median_cols(voters: _Voters, values: Q) -> Q:
    """Stake-weighted median of each column of ``values`` (voter rows only) at kappa.

    subtensor's ``weighted_median_col``: for each column, the smallest value ``v`` with
    ``stake(<= v) > stake_sum - kappa``, or the largest value if no ``v`` qualifies. Each voter's
    row index sits in the low bits of a sort key under the value, so one integer sort per column
    yields the values in order together with whose stake they carry. The keys are distinct, so
    every sorting algorithm (SIMD or not) puts them in the same order.
    """
    n_rows, n_cols = values.shape
    if n_rows == 0:
        return np.zeros(n_cols, dtype=np.int64)
    keys = values << voters.bits
    keys |= np.arange(n_rows, dtype=np.int64)[:, None]
    keys = np.ascontiguousarray(keys.T)  # one row of keys per column
    keys.sort(axis=1)
    cumulative = np.take(voters.stake, keys & ((1 << voters.bits) - 1))
    np.cumsum(cumulative, axis=1, out=cumulative)
    position = np.count_nonzero(cumulative <= voters.minority, axis=1)
    np.minimum(position, n_rows - 1, out=position)
    median: Q = keys[np.arange(n_cols), position] >> voters.bits
    return median


def _weight_rows(
    weights: npt.NDArray[np.integer],
    rows: Q,
    permitted: Mask,
    last_update: Q,
    block_at_registration: Q,
) -> Q:
    """Rows ``rows`` of the weight matrix, masked (permit, diagonal, outdated), row-normalised."""
    raw = np.take(weights, rows, axis=0)
    unsigned_small = raw.dtype in (np.uint8, np.uint16)
    if not unsigned_small and raw.size and (int(raw.min()) < 0 or int(raw.max()) > U16_MAX):
        raise ValueError("weights must be u16 values in [0, 65535]")
    w = raw.astype(np.int64)
    if not permitted.all():
        w[~permitted] = 0
    w[np.arange(len(rows)), rows] = 0
    updated = last_update[rows]
    if len(rows):
        # Outdated: set at or before the target registered. Only columns registered at or after
        # the oldest update can be affected, so look at those alone.
        suspects = np.flatnonzero(block_at_registration >= updated.min())
        if len(suspects):
            block = w[:, suspects]
            block[updated[:, None] <= block_at_registration[suspects][None, :]] = 0
            w[:, suspects] = block
    sums = w.sum(axis=1)
    # I32F32 division of u16 integers: floor((W << 32) / S), W << 32 < 2**48. One scalar divisor
    # per row (numpy divides by a scalar much faster than by an array).
    w <<= 32
    for i in np.flatnonzero(sums):
        w[i] //= sums[i]
    return w


def _blocks(n_rows: int, n_cols: int) -> list[slice]:
    """Column blocks of about 64k cells: every temporary of the epoch then stays in cache."""
    width = max(64, (1 << 16) // max(n_rows, 1))
    return [slice(start, min(start + width, n_cols)) for start in range(0, n_cols, width)]


def _bond_weights(w: Q, clipped: Q, beta: int) -> Q:
    """``w + beta * (clipped - w)``: subtensor's ``interpolate`` by the bonds penalty."""
    if beta == 0:
        return w
    if beta == ONE:
        return clipped
    return w + mul(clipped - w, beta)


def _bonds_yuma3(
    w_bonds: Q, previous: Q, consensus: Q, incentive: Q, liquid: bool, params: YumaParams
) -> tuple[Q, Q, Q]:
    """YC3 on a block of columns: new bonds (proportions) and the partial sums, per row, of
    ``sum_j b_ij / (sum_k b_kj) * incentive_j`` (split parts at :data:`WIDE`, see
    :func:`~agora.protocol.fixedpoint.dot_rows_parts`): a per-column ratio and one rounding per
    total, where subtensor normalises the matrix and rounds every product."""
    if liquid:
        # d = clamp(w - c, 0, 1) where w >= b, else clamp(b - w, 0, 1); both are <= ONE already.
        d = w_bonds - consensus
        np.maximum(d, 0, out=d)
        np.subtract(previous, w_bonds, out=d, where=w_bonds < previous)
        alpha: Q | int = _liquid_alpha(d, params)
    else:
        alpha = _fixed_alpha(params)
    bonds = _ema(previous, w_bonds, alpha)
    high, low = dot_rows_parts(bonds, *ratio_parts(incentive, bonds.sum(axis=0), shift=WIDE))
    return bonds, high, low


def _bonds_yuma2(
    w_bonds: Q, previous: Q, incentive: Q, stake: Q, params: YumaParams
) -> tuple[Q, Q, Q]:
    """YC2 on a block of columns: new bonds (column max-upscaled) and the partial sums, per row,
    of ``sum_j E_ij / (sum_k E_kj) * incentive_j`` (split parts at :data:`WIDE`).

    ``E = (1 - alpha) * B / sum(B) + alpha * delta / sum(delta)`` per column, with
    ``delta = stake_i * w_ij``, is one exact sum with per-column factors, rounded once.
    ``delta`` is Q46 (14 more bits than Q32): it is a product of two fractions and a column's
    total can be tiny, so Q32 would lose its relative precision before the normalisation; ``E``
    is also formed in Q46 before its max-upscale, for the same reason. The stored bonds are
    ``E_ij / max_k E_kj`` with the reciprocal rounded up, so each column's largest bond is
    exactly ONE (as subtensor's max-upscale gives).
    """
    delta = mul(w_bonds, stake[:, None], shift=_DELTA_SHIFT)  # Q46, column sums <= 2**46
    alpha = _fixed_alpha(params) << (32 - ALPHA_BITS)
    keep = ratio_parts(ONE - alpha, previous.sum(axis=0), shift=WIDE)
    add = ratio_parts(alpha, delta.sum(axis=0), shift=WIDE)  # per Q46 unit of delta
    ema_wide = mul_sum((previous, *keep), (delta, *add), shift=32)  # E in Q46
    ema = ema_wide >> (WIDE - 32)
    high, low = dot_rows_parts(ema, *ratio_parts(incentive, ema.sum(axis=0), shift=WIDE))
    upscale = ratio_parts(ONE, ema_wide.max(axis=0, initial=0), shift=WIDE, round_up=True)
    return mul_sum((ema_wide, *upscale), shift=WIDE), high, low


def _int_vector(values: Sequence[int] | npt.NDArray[np.integer], n: int, name: str) -> Q:
    array = np.asarray(values, dtype=np.int64)
    if array.shape != (n,):
        raise ValueError(f"{name} must have length {n}, got shape {array.shape}")
    if n and int(array.min()) < 0:
        raise ValueError(f"{name} must not be negative")
    return array


def _mask(values: Sequence[bool] | Mask | None, n: int, name: str) -> Mask:
    array = np.asarray(values, dtype=np.bool_)
    if array.shape != (n,):
        raise ValueError(f"{name} must have length {n}, got shape {array.shape}")
    return array


def _frozen(array: _Array) -> _Array:
    array.flags.writeable = False
    return array


def epoch(
    stake: Sequence[int],
    weights: npt.NDArray[np.integer],
    bonds: Q,
    last_update: Sequence[int] | npt.NDArray[np.integer],
    block_at_registration: Sequence[int] | npt.NDArray[np.integer],
    current_block: int,
    activity_cutoff: int,
    permits: Sequence[bool] | Mask,
    params: YumaParams,
    *,
    next_permits: Sequence[bool] | Mask | None = None,
) -> EpochResult:
    """Run one Yuma epoch over a subnet of ``n = len(stake)`` uids (see the module docstring).

    Args:
        stake: raw stake per uid, integer units.
        weights: ``n x n`` u16 weights, row = the uid that set them, column = its target.
        bonds: ``n x n`` Q32 bonds from the previous epoch (YC3: proportions; YC2: column
            max-upscaled). Only rows with a permit (now or next) are read.
        last_update: block of each uid's last weight update.
        block_at_registration: block at which each uid last registered.
        current_block: the block the epoch runs at.
        activity_cutoff: blocks after its last update during which a uid counts as active.
        permits: the validator permits in force (subtensor reads those stored by the previous
            epoch); rows without one are masked.
        params: the subnet's :class:`YumaParams`.
        next_permits: the permits this epoch issues (default: ``permits``); they decide which
            bond rows are stored and which are cleared.

    Raises:
        ValueError: on a length or shape mismatch, a negative stake or block, a weight outside
            u16, a bond outside ``[0, ONE]``, or more than 16383 uids.
    """
    n = len(stake)
    if n >= _MAX_UIDS:
        raise ValueError(f"at most {_MAX_UIDS - 1} uids per subnet")
    weights_arr = np.asarray(weights)
    bonds_arr = np.asarray(bonds)
    if weights_arr.shape != (n, n) or bonds_arr.shape != (n, n):
        raise ValueError(f"weights and bonds must be {n} x {n}")
    if not np.issubdtype(weights_arr.dtype, np.integer):
        raise ValueError("weights must be an integer array")
    if not np.issubdtype(bonds_arr.dtype, np.integer):
        raise ValueError("bonds must be an integer (Q32) array")
    updated = _int_vector(last_update, n, "last_update")
    registered = _int_vector(block_at_registration, n, "block_at_registration")
    permit = _mask(permits, n, "permits")
    next_permit = permit if next_permits is None else _mask(next_permits, n, "next_permits")
    if current_block < 0 or activity_cutoff < 0:
        raise ValueError("current_block and activity_cutoff must not be negative")

    # 1. Stake.
    stake_q = normalize_stake(stake, params.stake_threshold)
    active = updated >= current_block - activity_cutoff
    active_stake = normalize(np.where(active & permit, stake_q, 0))

    # 2. Weights, on the rows that can matter: uids with a permit now or next.
    rows = np.flatnonzero(permit | next_permit).astype(np.int64)
    w = _weight_rows(weights_arr, rows, permit[rows], updated, registered)
    row_stake = active_stake[rows]
    previous = np.take(bonds_arr, rows, axis=0).astype(np.int64, copy=False)
    if previous.size and (int(previous.min()) < 0 or int(previous.max()) > ONE):
        raise ValueError("bonds must be Q32 values in [0, ONE]")
    last_tempo = max(current_block - params.tempo, 0)
    fresh = np.flatnonzero(registered >= last_tempo)  # registered since the last tempo
    if len(fresh):
        previous[:, fresh] = 0

    # 3.-4. Consensus, clipping, trust, ranks, incentive; column by column, in blocks.
    voters = _Voters.of(row_stake, ratio(params.kappa, U16_MAX))
    voter_w = w if len(voters.rows) == len(rows) else w[voters.rows]
    blocks = _blocks(len(rows), n)
    consensus = np.zeros(n, dtype=np.int64)
    preranks = np.zeros(n, dtype=np.int64)
    ranks = np.zeros(n, dtype=np.int64)
    row_trust = np.zeros(len(rows), dtype=np.int64)
    for block in blocks:
        consensus[block] = _weighted_median_cols(voters, voter_w[:, block])
        clipped = np.minimum(w[:, block], consensus[block])
        row_trust += clipped.sum(axis=1)
        preranks[block] = dot_cols(row_stake, w[:, block])
        ranks[block] = dot_cols(row_stake, clipped)
    validator_trust = np.zeros(n, dtype=np.int64)
    validator_trust[rows] = row_trust
    trust = div(ranks, preranks)  # ranks <= preranks
    incentive = normalize(ranks)

    # 5.-6. Bonds and dividends, block by block; new bonds overwrite ``previous`` in place.
    beta = ratio(params.bonds_penalty, U16_MAX)
    liquid = params.liquid_alpha and bool(consensus.any())
    high = np.zeros(len(rows), dtype=np.int64)
    low = np.zeros(len(rows), dtype=np.int64)
    for block in blocks:
        w_block = w[:, block]
        w_bonds = _bond_weights(w_block, np.minimum(w_block, consensus[block]), beta)
        if params.yuma3:
            new, part_high, part_low = _bonds_yuma3(
                w_bonds, previous[:, block], consensus[block], incentive[block], liquid, params
            )
        else:
            new, part_high, part_low = _bonds_yuma2(
                w_bonds, previous[:, block], incentive[block], row_stake, params
            )
        previous[:, block] = new
        high += part_high
        low += part_low
    row_dividends = combine(high, low, WIDE)
    if params.yuma3:
        row_dividends = mul(row_dividends, row_stake)
    dividends = np.zeros(n, dtype=np.int64)
    dividends[rows] = row_dividends
    dividends = normalize(dividends)
    new_bonds = previous
    new_bonds[~next_permit[rows]] = 0  # a permit lost: the row is cleared

    # 7. Emission shares and pruning scores.
    combined = incentive + dividends
    total = int(combined.sum())
    if total:
        server_emission = div(incentive, total)
        validator_emission = div(dividends, total)
        pruning_score = normalize(combined)
    else:
        server_emission = incentive
        fallback = stake_q if int(active_stake.sum()) == 0 else active_stake
        validator_emission = fallback
        pruning_score = fallback

    return EpochResult(
        stake=_frozen(stake_q),
        active=_frozen(active),
        active_stake=_frozen(active_stake),
        rank=_frozen(incentive.copy()),
        trust=_frozen(trust),
        consensus=_frozen(consensus),
        incentive=_frozen(incentive),
        dividends=_frozen(dividends),
        validator_trust=_frozen(validator_trust),
        server_emission=_frozen(server_emission),
        validator_emission=_frozen(validator_emission.copy()),
        pruning_score=_frozen(pruning_score.copy()),
        bond_rows=_frozen(rows),
        bonds=_frozen(new_bonds),
    )


def apply_bonds(previous: Q, result: EpochResult) -> Q:
    """The full ``n x n`` bond matrix after ``result``: ``previous`` with the rewritten rows."""
    bonds = np.array(previous, dtype=np.int64)
    bonds[result.bond_rows] = result.bonds
    return bonds


def emission_split(result: EpochResult, amount: int) -> tuple[list[int], list[int]]:
    """Split ``amount`` units into (server, validator) units per uid, each rounded down.

    ``floor(share * amount / ONE)`` in Python integers, as subtensor's I96F32 product truncated
    to u64. Rounding leaves a remainder of at most ``2n`` units unassigned.

    Raises:
        ValueError: if ``amount`` is negative.
    """
    if amount < 0:
        raise ValueError("emission_split: amount must not be negative")
    server = [(int(s) * amount) >> 32 for s in result.server_emission]
    validator = [(int(v) * amount) >> 32 for v in result.validator_emission]
    return server, validator
