"""The structured reference string (SRS) that EZKL's KZG commitments need.

An SRS is the powers ``g, g^t, g^(t^2), ...`` of a secret ``t``. Whoever knows ``t`` can forge
proofs that verify, so a real network reads its SRS from a file made by a public ceremony that
nobody can reconstruct ``t`` from (pass it with ``srs=PATH`` in the model spec, or ``--srs``).

For tests and a local network, `testing_srs` generates one with ``ezkl.gen_srs``: this machine
knew ``t`` while generating it. Such a file is marked by a sidecar ``<file>.testing-only`` and
everything that uses it says **FOR TESTING ONLY**. Miners and validators must use the *same*
file: the verification key, and so the model id, depend on it.

The file format is halo2's ``ParamsKZG``: it starts with ``k`` as a little-endian u32 and holds
``2**k`` points, enough for circuits of up to ``2**k`` rows.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

from agora.zk.errors import SrsError

__all__ = ["TESTING_WARNING", "is_testing", "srs_digest", "srs_logrows", "testing_srs"]

TESTING_WARNING = (
    "SRS generated locally with ezkl.gen_srs: FOR TESTING ONLY (whoever generated it knows the "
    "trapdoor and can forge proofs; use a ceremony file with srs=PATH on a real network)"
)
_MARK = ".testing-only"


def srs_logrows(path: Path) -> int:
    """``k`` of an SRS file (it serves circuits of up to ``2**k`` rows). Raises `SrsError`."""
    try:
        with open(path, "rb") as f:
            head = f.read(4)
            size = os.fstat(f.fileno()).st_size
    except OSError as error:
        raise SrsError(f"cannot read the SRS file {path}: {error.strerror}") from None
    if len(head) < 4:
        raise SrsError(f"{path} is not an SRS file (under 4 bytes)")
    k = int.from_bytes(head, "little")
    # each of the 2**k points takes at least 32 bytes (compressed G1)
    if not 1 <= k <= 28 or size < (1 << k) * 32:
        raise SrsError(f"{path} is not a KZG SRS file (header k={k}, {size} bytes)")
    return k


def srs_digest(path: Path) -> str:
    """SHA-256 (hex) of an SRS file. Raises `SrsError`."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
    except OSError as error:
        raise SrsError(f"cannot read the SRS file {path}: {error.strerror}") from None
    return digest.hexdigest()


def is_testing(path: Path) -> bool:
    """Whether ``path`` was generated locally by `testing_srs` (it has the sidecar mark)."""
    return Path(str(path) + _MARK).exists()


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive lock between processes (a miner and a validator sharing a data dir)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def testing_srs(data_dir: Path, logrows: int) -> Path:
    """The locally generated SRS for ``2**logrows`` rows under ``<data_dir>/zk/``, made on first
    use (about 1 s for k=11). FOR TESTING ONLY: see the module docstring. Raises `SrsError`."""
    import ezkl

    folder = Path(data_dir) / "zk"
    path = folder / f"testing-k{logrows}.srs"
    with file_lock(folder / f".testing-k{logrows}.lock"):
        if path.exists() and is_testing(path):
            return path
        partial = folder / f".testing-k{logrows}.srs.partial"
        try:
            ezkl.gen_srs(str(partial), logrows)
        except Exception as error:
            raise SrsError(f"ezkl.gen_srs failed: {error}") from None
        Path(str(path) + _MARK).write_text(TESTING_WARNING + "\n")
        os.replace(partial, path)
    return path
