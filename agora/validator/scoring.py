"""From probe outcomes to scores: quality gates speed, and a moving average per uid.

For one round, a miner's sample is::

    sample = correctness * ((1 - latency_weight) + latency_weight * speed)
    speed  = fastest correct latency of the round / this miner's latency      (in (0, 1])

``correctness`` is 1 for an ``ok`` verdict and 0 for any other, so a wrong, late or unsigned
answer earns nothing however fast it came, and among correct miners the fastest gets the full
sample while one twice as slow gets ``1 - latency_weight / 2`` (0.9 with the default 0.2). Speed
is relative to the round, so it measures miners against each other and not against the
validator's own hardware.

The moving score is an exponential moving average::

    score = (1 - alpha) * score + alpha * sample        (alpha = 0.2 by default)

except that a *proven* misbehaviour (:data:`agora.validator.checks.PROVEN`: a signed wrong
answer, a wrong model, a receipt that does not verify) sets the score to zero at once, and a uid
whose hotkey changed (someone else registered on it) starts again from zero.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from agora.validator.checks import PROVEN, Verdict

__all__ = ["DEFAULT_ALPHA", "DEFAULT_LATENCY_WEIGHT", "ProbeOutcome", "ema", "round_samples"]

DEFAULT_ALPHA = 0.2
DEFAULT_LATENCY_WEIGHT = 0.2


@dataclass(frozen=True)
class ProbeOutcome:
    """What one round found out about one miner."""

    uid: int
    hotkey: str
    verdict: Verdict
    reason: str
    latency: float | None = None  # seconds for the main request, when it was answered
    tokens: int = 0  # tokens processed by the main request (counted by the validator)
    first_token: float | None = None  # seconds to the first streamed event

    @property
    def ok(self) -> bool:
        return self.verdict is Verdict.OK

    @property
    def proven(self) -> bool:
        return self.verdict in PROVEN

    @property
    def throughput(self) -> float | None:
        """Tokens per second of the main request."""
        if self.latency is None or self.latency <= 0 or not self.tokens:
            return None
        return self.tokens / self.latency


def round_samples(
    outcomes: Sequence[ProbeOutcome], latency_weight: float = DEFAULT_LATENCY_WEIGHT
) -> dict[int, float]:
    """Each uid's sample for this round (see the module docstring). Inconclusive outcomes (the
    validator could not judge) have none."""
    if not 0.0 <= latency_weight <= 1.0:
        raise ValueError("latency_weight must be between 0 and 1")
    latencies = [o.latency for o in outcomes if o.ok and o.latency is not None and o.latency > 0]
    best = min(latencies) if latencies else None
    samples: dict[int, float] = {}
    for outcome in outcomes:
        if outcome.verdict is Verdict.INCONCLUSIVE:
            continue
        if not outcome.ok:
            samples[outcome.uid] = 0.0
            continue
        speed = 1.0
        if best is not None and outcome.latency is not None and outcome.latency > 0:
            speed = min(1.0, best / outcome.latency)
        samples[outcome.uid] = (1.0 - latency_weight) + latency_weight * speed
    return samples


def ema(
    previous: float, sample: float, alpha: float = DEFAULT_ALPHA, *, reset: bool = False
) -> float:
    """The next moving score. ``reset`` (a proven misbehaviour) gives zero."""
    if reset:
        return 0.0
    if not 0.0 < alpha <= 1.0:
        raise ValueError("alpha must be in (0, 1]")
    value = (1.0 - alpha) * previous + alpha * sample
    return value if math.isfinite(value) and value > 1e-12 else 0.0
