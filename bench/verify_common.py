"""The row every verification benchmark contributes to ``make bench-verify``'s table.

Each ``bench/verify_*.py`` module exposes ``rows(quick: bool) -> list[VerifyRow]``;
``bench/bench_verify.py`` gathers them and prints one table.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class VerifyRow:
    """One adversary (or the honest miner) against one verification layer.

    ``audited`` answers were checked and ``detected`` of them were flagged. For the honest row,
    ``detected`` counts false positives. ``verify_cost`` is the checker's CPU time as a fraction of
    the miner's time to produce the same answers (None where it does not apply);
    ``proof_bytes_per_token`` likewise.
    """

    layer: str  # "toploc", "reference", "spot-check", "dispute", "zk"
    adversary: str  # "honest", "perturb-1%", "int8", ...
    audited: int
    detected: int
    verify_cost: float | None = None
    proof_bytes_per_token: float | None = None
    note: str = ""

    @property
    def rate(self) -> float:
        return self.detected / self.audited if self.audited else float("nan")
