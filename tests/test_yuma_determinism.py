"""The Yuma epoch gives the same bits everywhere.

- Two processes with 1 and with 2 threads (``OMP_NUM_THREADS``, ``OPENBLAS_NUM_THREADS``,
  ``MKL_NUM_THREADS``), and a third with numpy's SIMD dispatch switched off
  (``NPY_DISABLE_CPU_FEATURES``), hash the same epochs to the same digest as this process.
- That digest is pinned (``GOLDEN``): a different machine, OS or numpy version must reproduce
  it. Changing it is a consensus change and must be deliberate.
- The inputs come from splitmix64 in integer arithmetic, not from numpy's random generators,
  whose streams may change between numpy versions.
- ``yuma.py`` and ``fixedpoint.py`` import nothing that does I/O, reads a clock or draws random
  numbers, and contain no float literal.
"""

from __future__ import annotations

import ast
import hashlib
import os
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import numpy as np
import numpy.typing as npt

from agora.protocol import fixedpoint, yuma
from agora.protocol.fixedpoint import ONE
from agora.protocol.yuma import YumaParams, epoch, top_k_permits

REPO = Path(__file__).resolve().parents[1]

GOLDEN = "6aca2273f61609bc680aeb26e83d0cbc23ee3dd7164cb00812e9c6b20a549f1f"
EXP_TABLES_SHA256 = "afcdb326c1d63ae799130db42a5227ff3ea6da7acf46bbe50f2b5f96d1fa2bd1"


def splitmix64(seed: int, count: int) -> npt.NDArray[np.uint64]:
    """``count`` pseudo-random 64-bit words; uint64 arithmetic wraps modulo 2**64 by definition."""
    with np.errstate(over="ignore"):
        x = np.uint64(seed) + np.arange(1, count + 1, dtype=np.uint64) * np.uint64(
            0x9E3779B97F4A7C15
        )
        z = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        result: npt.NDArray[np.uint64] = z ^ (z >> np.uint64(31))
    return result


def digest(validators: int = 96, uids: int = 1024) -> str:
    """SHA-256 over every output of a YC2 and a YC3 epoch on a fixed pseudo-random subnet.

    96 validators x 1024 uids: big enough for the epoch to work in several column blocks.
    """
    cells = uids * uids
    stake_words = splitmix64(1, uids)
    stake = [int(w % np.uint64(10**16)) if uid % 7 == 0 else 0 for uid, w in enumerate(stake_words)]
    permits = top_k_permits(stake, validators)
    weights = (splitmix64(2, cells) % np.uint64(65536)).astype(np.uint16).reshape(uids, uids)
    weights[(splitmix64(3, cells) % np.uint64(5) == 0).reshape(uids, uids)] = 0
    bonds = (splitmix64(4, cells) % np.uint64(ONE + 1)).astype(np.int64).reshape(uids, uids)
    bonds[~permits] = 0
    last_update = (splitmix64(5, uids) % np.uint64(1000)).astype(np.int64) + 9000
    registered = (splitmix64(6, uids) % np.uint64(9500)).astype(np.int64)
    yc2 = YumaParams(yuma3=False, bonds_penalty=40000, bonds_moving_average=975_000, tempo=100)
    yc3 = YumaParams(
        yuma3=True,
        liquid_alpha=True,
        bonds_penalty=0,
        alpha_low=6553,
        alpha_high=19660,
        alpha_sigmoid_steepness=1000,
        tempo=100,
    )
    h = hashlib.sha256()
    for params in (yc2, yc3):
        result = epoch(
            stake, weights, bonds, last_update, registered, 10_000, 5_000, permits, params
        )
        for field in fields(result):
            h.update(field.name.encode())
            h.update(np.ascontiguousarray(getattr(result, field.name), dtype="<i8").tobytes())
    return h.hexdigest()


def digest_in_subprocess(**env: str) -> str:
    environment = {**os.environ, **env, "PYTHONPATH": str(REPO)}
    code = "from tests.test_yuma_determinism import digest; print(digest())"
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    return done.stdout.strip()


def threads(count: int) -> dict[str, str]:
    value = str(count)
    return {"OMP_NUM_THREADS": value, "OPENBLAS_NUM_THREADS": value, "MKL_NUM_THREADS": value}


def test_same_bits_with_one_or_two_threads() -> None:
    one = digest_in_subprocess(**threads(1))
    two = digest_in_subprocess(**threads(2))
    assert one == two == digest()


def test_same_bits_without_simd_dispatch() -> None:
    from numpy._core._multiarray_umath import __cpu_dispatch__, __cpu_features__

    features = [f for f in __cpu_dispatch__ if __cpu_features__.get(f)]
    plain = digest_in_subprocess(NPY_DISABLE_CPU_FEATURES=" ".join(features))
    assert plain == digest()


def test_digest_is_pinned() -> None:
    assert digest() == GOLDEN


def test_exp_tables_are_pinned() -> None:
    tables = (
        fixedpoint.EXP_NEG_INT.astype("<i8").tobytes()
        + fixedpoint.EXP_NEG_FRAC.astype("<i8").tobytes()
    )
    assert hashlib.sha256(tables).hexdigest() == EXP_TABLES_SHA256


FORBIDDEN = {"sqlite3", "httpx", "fastapi", "asyncio", "requests", "socket", "random", "time"}
FORBIDDEN |= {"datetime", "os", "threading", "subprocess", "secrets", "uuid"}


def test_the_epoch_modules_are_pure() -> None:
    for module in (yuma, fixedpoint):
        tree = ast.parse(Path(module.__file__ or "").read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                names = []
            for name in names:
                assert name.split(".")[0] not in FORBIDDEN, (module.__name__, name)
            if isinstance(node, ast.Constant):
                assert not isinstance(node.value, float), (module.__name__, node.value)
