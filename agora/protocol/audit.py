"""Spot checks: which receipts validators audit, and how often they must to keep miners honest.

The draw. A validator audits a receipt when ``audit_draw(block_hash, receipt_hash) <
audit_rate_ppm``, where ``block_hash`` is the hash of the receipt's *deciding block*: the first
block whose timestamp is after the receipt's timestamp. The miner signs the receipt before that
block exists, so when it answers it cannot know whether this answer will be checked; once the
block exists every validator (and the miner) computes the same draw, so a validator cannot claim
a receipt was drawn when it was not. The draw is a domain-separated SHA-256, read as a uniform
number in ``[0, 10^6)`` by multiply-and-shift (bias below 10^-13).

The honesty condition. A miner that cheats on one answer saves ``C - c`` (the cost of honest work
minus the cost of cheating); with probability ``p`` the answer is audited, the audit detects the
cheat with probability ``d``, and the miner then loses the answer's reward ``R`` and the slashed
stake ``S``. Cheating does not pay when

    p * d * (R + S) >= C - c,  that is  p >= (C - c) / (d (R + S)).

:func:`required_audit_rate` evaluates it exactly (``Fraction``); :func:`honesty_report` prints
the figures a subnet runs with, per miner, with the stake each miner actually carries: ``S`` is
``slash_ppm`` of the stake behind the miner's hotkey, so **a miner without stake is not
deterred** (``S = 0``, and ``p`` would have to reach ``(C - c) / (d R)``, which exceeds 1 when
honest work costs most of the reward).

The ledger does not know ``C``, ``c`` or ``R`` (prices are agreed off the ledger); the report
takes them as inputs, with the defaults of :data:`DEFAULT_ECONOMICS`: an answer priced at 0.001
token, honest work costing all of it (a miner at break-even, the one most tempted), cheating
costing nothing, and the issue's detection target ``d = 0.99``.
"""

from __future__ import annotations

import hashlib
from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from fractions import Fraction
from typing import Any

from agora.protocol.codec import is_hex
from agora.protocol.units import TOKEN

PPM = 1_000_000
AUDIT_DOMAIN = b"agora/audit/v1"


def audit_draw(block_hash: str, receipt_hash: str) -> int:
    """A number in ``[0, 10^6)`` that nobody could know before ``block_hash`` existed.

    Raises ValueError unless both hashes are 64 lowercase hex characters.
    """
    if not is_hex(block_hash, 64) or not is_hex(receipt_hash, 64):
        raise ValueError("block_hash and receipt_hash must be 64 lowercase hex characters")
    digest = hashlib.sha256(
        AUDIT_DOMAIN + b"\n" + bytes.fromhex(block_hash) + bytes.fromhex(receipt_hash)
    ).digest()
    return (int.from_bytes(digest[:8], "big") * PPM) >> 64


def is_audited(block_hash: str, receipt_hash: str, rate_ppm: int) -> bool:
    """Whether the receipt is drawn for audit at rate ``rate_ppm`` (parts per million).

    ``block_hash`` is the hash of the receipt's deciding block (:func:`deciding_height`). Raises
    ValueError for malformed hashes or a rate outside ``[0, 10^6]``.
    """
    if isinstance(rate_ppm, bool) or not isinstance(rate_ppm, int) or not 0 <= rate_ppm <= PPM:
        raise ValueError(f"rate_ppm must be an integer in [0, {PPM}], got {rate_ppm!r}")
    return audit_draw(block_hash, receipt_hash) < rate_ppm


def deciding_height(block_times: Sequence[int], first_height: int, timestamp: int) -> int | None:
    """The height of the first block in ``block_times`` whose timestamp is after ``timestamp``,
    or None if none is.

    ``block_times`` are the timestamps of consecutive blocks from ``first_height`` on; block
    timestamps never go backwards, so a binary search finds it. An answer of ``first_height``
    is the deciding block only when the list starts at the chain's first block; otherwise the
    deciding block may be older than the list (the ledger treats that as outside any window).
    """
    index = bisect_right(block_times, timestamp)
    if index == len(block_times):
        return None
    return first_height + index


# -- the honesty condition ------------------------------------------------------------------


@dataclass(frozen=True)
class Economics:
    """What the ledger cannot know and the honesty condition needs, per answer, in units."""

    reward: int  # R: what an answer pays the miner
    honest_cost: int  # C: what honest work on it costs
    cheat_cost: int  # c: what a cheat costs
    detection_ppm: int  # d: probability that an audit detects a cheat, in ppm


DEFAULT_ECONOMICS = Economics(
    reward=TOKEN // 1000, honest_cost=TOKEN // 1000, cheat_cost=0, detection_ppm=990_000
)


def required_audit_rate(
    honest_cost: int, cheat_cost: int, detection_ppm: int, reward: int, slashed: int
) -> Fraction | None:
    """The smallest audit probability ``p`` with ``p * d * (R + S) >= C - c``, exactly.

    Zero when cheating saves nothing (``C <= c``). None when no probability is enough because
    there is nothing to lose or nothing is detected (``d (R + S) = 0`` while ``C > c``). A
    result above 1 also means that no audit rate suffices: raise the slash or the stake.
    Raises ValueError for negative inputs or ``detection_ppm`` above 10^6.
    """
    for name, value in (
        ("honest_cost", honest_cost),
        ("cheat_cost", cheat_cost),
        ("detection_ppm", detection_ppm),
        ("reward", reward),
        ("slashed", slashed),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
    if detection_ppm > PPM:
        raise ValueError(f"detection_ppm must be at most {PPM}")
    gain = honest_cost - cheat_cost
    if gain <= 0:
        return Fraction(0)
    loss = Fraction(detection_ppm, PPM) * (reward + slashed)
    if loss == 0:
        return None
    return Fraction(gain) / loss


def ppm_ceil(value: Fraction) -> int:
    """A probability rounded up to whole parts per million (so the condition still holds)."""
    return -((-value.numerator * PPM) // value.denominator)


def min_stake_for_honesty(economics: Economics, audit_rate_ppm: int, slash_ppm: int) -> int | None:
    """The smallest stake (units) behind a miner for which the condition holds at these rates.

    From ``p d (R + s X) >= C - c`` with ``s = slash_ppm``: ``X >= ((C - c) / (p d) - R) / s``,
    rounded up the way the slash rounds. None when no stake is enough (``p``, ``d`` or ``s`` is
    zero while ``C > c``).
    """
    gain = economics.honest_cost - economics.cheat_cost
    if gain <= 0:
        return 0
    if audit_rate_ppm == 0 or economics.detection_ppm == 0 or slash_ppm == 0:
        return None
    p = Fraction(audit_rate_ppm, PPM)
    d = Fraction(economics.detection_ppm, PPM)
    needed_slash = Fraction(gain) / (p * d) - economics.reward
    if needed_slash <= 0:
        return 0
    # The slash is rounded down (stake * slash_ppm // 10^6), so it must reach the next whole
    # unit: floor(X s / 10^6) >= N  <=>  X >= ceil(N 10^6 / s).
    whole = -((-needed_slash.numerator) // needed_slash.denominator)
    return -((-whole * PPM) // slash_ppm)


@dataclass(frozen=True)
class MinerFigures:
    """The honesty condition for one miner, with the stake it actually carries."""

    uid: int
    hotkey: str
    stake: int
    slash: int  # S: what one upheld dispute takes from it
    required_rate_ppm: int | None  # None: no rate is enough
    holds: bool


def miner_figures(
    uid: int,
    hotkey: str,
    stake: int,
    audit_rate_ppm: int,
    slash_ppm: int,
    economics: Economics,
) -> MinerFigures:
    """Evaluate the condition for one miner (``S = stake * slash_ppm // 10^6``)."""
    slash = stake * slash_ppm // PPM
    required = required_audit_rate(
        economics.honest_cost,
        economics.cheat_cost,
        economics.detection_ppm,
        economics.reward,
        slash,
    )
    rate = None if required is None or required > 1 else ppm_ceil(required)
    holds = required is not None and required <= Fraction(audit_rate_ppm, PPM)
    return MinerFigures(uid, hotkey, stake, slash, rate, holds)


def honesty_report(
    params: dict[str, int],
    miners: Sequence[tuple[int, str, int]],
    economics: Economics = DEFAULT_ECONOMICS,
) -> dict[str, Any]:
    """The numbers a subnet runs with, as JSON: its audit and dispute parameters, the economics
    assumed, the smallest stake that deters cheating, and each miner's figures.

    ``params`` holds the six audit hyperparameters; ``miners`` are ``(uid, hotkey, stake)``.
    """
    rate, slash_ppm = params["audit_rate_ppm"], params["slash_ppm"]
    figures = [
        miner_figures(uid, hotkey, stake, rate, slash_ppm, economics)
        for uid, hotkey, stake in miners
    ]
    return {
        "params": dict(params),
        "economics": asdict(economics),
        "condition": "p >= (C - c) / (d (R + S))",
        "min_stake": min_stake_for_honesty(economics, rate, slash_ppm),
        "miners": [asdict(f) for f in figures],
        "deterred": sum(1 for f in figures if f.holds),
    }
