"""Time one Yuma epoch: the fixed-point ledger code next to the float64 reference.

    python -m bench.bench_yuma            # all sizes, YC2 and YC3
    python -m bench.bench_yuma --quick    # fewer repeats

Each subnet has ``validators`` permitted uids with stake and dense random weights over all
``uids`` (the worst case: every weight non-zero), random previous bonds, and last updates and
registrations spread so that a few weights are outdated. YC3 runs with liquid alpha on and no
bonds penalty; YC2 with the full bonds penalty. Both implementations run in this process on the
same inputs; the table shows the median of several runs in milliseconds and the largest
difference between the two over incentive, dividends, consensus and bonds. The target is a
256 x 4096 epoch under 100 ms on one core.
"""

from __future__ import annotations

import functools
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from agora.protocol.fixedpoint import ONE, to_float
from agora.protocol.yuma import (
    YumaParams,
    apply_bonds,
    epoch,
    top_k_permits,
)
from bench.yuma_reference import epoch_reference

SIZES = [(64, 256), (256, 1024), (256, 4096)]
TARGET_MS = 100.0
CURRENT_BLOCK = 10_000
ACTIVITY_CUTOFF = 5_000


@dataclass(frozen=True)
class Subnet:
    stake: list[int]
    weights: npt.NDArray[np.uint16]
    bonds: npt.NDArray[np.int64]
    last_update: npt.NDArray[np.int64]
    block_at_registration: npt.NDArray[np.int64]
    permit: npt.NDArray[np.bool_]
    params: YumaParams

    def args(self) -> tuple[Any, ...]:
        return (
            self.stake,
            self.weights,
            self.bonds,
            self.last_update,
            self.block_at_registration,
            CURRENT_BLOCK,
            ACTIVITY_CUTOFF,
            self.permit,
            self.params,
        )


def make_subnet(validators: int, uids: int, *, yuma3: bool, seed: int = 0) -> Subnet:
    """A random subnet with ``validators`` permitted uids out of ``uids`` (seeded)."""
    rng = np.random.default_rng(seed)
    chosen = rng.choice(uids, size=validators, replace=False)
    stake = [0] * uids
    for uid in chosen:
        stake[int(uid)] = int(rng.integers(10**12, 2 * 10**16))
    permit = top_k_permits(stake, validators)
    weights = np.zeros((uids, uids), dtype=np.uint16)
    weights[chosen] = rng.integers(0, 65536, size=(validators, uids), dtype=np.uint16)
    bonds = np.zeros((uids, uids), dtype=np.int64)
    raw_bonds = rng.integers(0, ONE + 1, size=(validators, uids), dtype=np.int64)
    if not yuma3:  # YC2 stores bonds column max-upscaled: each column's largest bond is ONE
        raw_bonds[np.argmax(raw_bonds, axis=0), np.arange(uids)] = ONE
    bonds[chosen] = raw_bonds
    last_update = rng.integers(CURRENT_BLOCK - 2 * ACTIVITY_CUTOFF // 3, CURRENT_BLOCK, uids)
    registered = rng.integers(0, CURRENT_BLOCK - ACTIVITY_CUTOFF // 2, uids)
    params = YumaParams(
        yuma3=yuma3,
        liquid_alpha=yuma3,
        bonds_penalty=0 if yuma3 else 65535,
        bonds_moving_average=975_000,
        alpha_low=6553,
        alpha_high=19660,
        tempo=360,
    )
    return Subnet(stake, weights, bonds, last_update, registered, permit, params)


def median_ms(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000.0)
    return statistics.median(times)


def max_difference(subnet: Subnet) -> float:
    """Largest |fixed - float| over incentive, dividends, consensus and the bond matrix."""
    fixed = epoch(*subnet.args())
    ref = epoch_reference(*subnet.args())
    diffs = [
        np.max(np.abs(to_float(getattr(fixed, name)) - ref[name]))
        for name in ("incentive", "dividends", "consensus")
    ]
    bonds = to_float(apply_bonds(subnet.bonds, fixed))
    diffs.append(np.max(np.abs(bonds - ref["bonds"])))
    return float(max(diffs))


def main() -> None:
    quick = "--quick" in sys.argv[1:]
    fixed_repeats, ref_repeats = (3, 1) if quick else (9, 3)
    threads = {k: os.environ.get(k, "-") for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
    print(
        f"Yuma epoch benchmark: python {platform.python_version()}, numpy {np.__version__}, "
        f"{platform.machine()}, {os.cpu_count()} CPUs, threads {threads}"
    )
    print(f"median of {fixed_repeats} runs (fixed point) and {ref_repeats} (float64 reference)")
    columns = ("validators x uids", "mode", "fixed ms", "float ms", "max |diff|")
    header = " ".join(f"{c:>{w}}" for c, w in zip(columns, (18, 4, 9, 9, 11), strict=True))
    print(header)
    print("-" * len(header))
    worst = 0.0
    for validators, uids in SIZES:
        for yuma3 in (False, True):
            subnet = make_subnet(validators, uids, yuma3=yuma3)
            epoch(*subnet.args())  # warm up (liquid alpha table, caches)
            fixed_ms = median_ms(functools.partial(epoch, *subnet.args()), fixed_repeats)
            ref_ms = median_ms(functools.partial(epoch_reference, *subnet.args()), ref_repeats)
            diff = max_difference(subnet)
            mode = "YC3" if yuma3 else "YC2"
            print(
                f"{f'{validators} x {uids}':>18} {mode:>4} {fixed_ms:9.1f} {ref_ms:9.1f} "
                f"{diff:11.1e}"
            )
            if (validators, uids) == SIZES[-1]:
                worst = max(worst, fixed_ms)
    verdict = "meets" if worst < TARGET_MS else "MISSES"
    size = f"{SIZES[-1][0]} x {SIZES[-1][1]}"
    print(f"{size}: {worst:.1f} ms, {verdict} the {TARGET_MS:.0f} ms target")


if __name__ == "__main__":
    main()
