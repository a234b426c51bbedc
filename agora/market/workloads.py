"""Leased workloads on the provider's machine: one working directory and one process group each.

    manager = Workloads(Path("/srv/agora/leases"))
    manager.prepare(lease_id, hardware)                 # when the ledger opens the lease
    manager.start(lease_id, ["python", "train.py"], files={"train.py": b"..."})
    manager.read_log(lease_id, offset)                  # what the tenant streams
    manager.stop(lease_id)                              # when the lease ends on the ledger

Each lease gets ``<root>/lease-<id>/`` as its working directory (the tenant's files go there) and
``<root>/lease-<id>.log`` for its output. The process starts through :mod:`agora.market.sandbox`
in a new session, so ``stop`` can end it and everything it spawned with one ``killpg``: SIGTERM,
then SIGKILL after a grace period. Paths a tenant names are resolved inside the working directory
and refused if they escape it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from agora.protocol.market_state import Hardware

__all__ = ["Workload", "WorkloadError", "Workloads"]

log = logging.getLogger(__name__)

MAX_FILES_BYTES = 8 * 1024 * 1024
CGROUP_ROOT = Path("/sys/fs/cgroup")


class WorkloadError(Exception):
    """A request about a workload that cannot be served (unknown lease, bad path ...)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


@dataclass
class Workload:
    lease_id: int
    hardware: Hardware
    directory: Path
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    started_at: float | None = None
    stopped: bool = False  # the lease ended: nothing may start any more
    extra: list[subprocess.Popen[bytes]] = field(default_factory=list)  # e.g. a Ray node
    notes: list[str] = field(default_factory=list)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def exit_code(self) -> int | None:
        return None if self.process is None else self.process.poll()


def _cgroup_for(lease_id: int, hardware: Hardware) -> str:
    """A cgroup v2 with the lease's CPU and memory caps, when this user may create one."""
    base = CGROUP_ROOT / "agora-market"
    path = base / f"lease-{lease_id}"
    try:
        path.mkdir(parents=True, exist_ok=True)
        (path / "memory.max").write_text(str(hardware.mem * 1024 * 1024))
        (path / "cpu.max").write_text(f"{hardware.cpu * 100000} 100000")
    except OSError:
        return ""
    return str(path)


class Workloads:
    """The workloads of one provider agent."""

    def __init__(self, root: Path, *, grace_s: float = 3.0, use_cgroups: bool = True) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.grace_s = grace_s
        self.use_cgroups = use_cgroups
        self._leases: dict[int, Workload] = {}

    def __contains__(self, lease_id: int) -> bool:
        return lease_id in self._leases

    def known(self) -> list[int]:
        return sorted(self._leases)

    def get(self, lease_id: int) -> Workload:
        workload = self._leases.get(lease_id)
        if workload is None:
            raise WorkloadError(404, "unknown_lease", f"this provider serves no lease {lease_id}")
        return workload

    def prepare(self, lease_id: int, hardware: Hardware) -> Workload:
        """Create the lease's working directory (idempotent)."""
        if lease_id in self._leases:
            return self._leases[lease_id]
        directory = self.root / f"lease-{lease_id}"
        directory.mkdir(parents=True, exist_ok=True)
        log_path = self.root / f"lease-{lease_id}.log"
        log_path.touch()
        workload = Workload(lease_id, hardware, directory, log_path)
        self._leases[lease_id] = workload
        return workload

    def start(
        self,
        lease_id: int,
        argv: list[str],
        files: dict[str, bytes] | None = None,
        env: dict[str, str] | None = None,
    ) -> Workload:
        """Write ``files`` into the working directory and start ``argv`` in the lease's limits.

        Raises WorkloadError: unknown or ended lease, already running, bad paths, empty argv.
        """
        workload = self.get(lease_id)
        if workload.stopped:
            raise WorkloadError(409, "lease_closed", f"lease {lease_id} has ended")
        if workload.running:
            raise WorkloadError(409, "already_running", f"lease {lease_id} already runs a job")
        if not argv or not all(isinstance(a, str) and a for a in argv):
            raise WorkloadError(400, "bad_request", "argv must be a non-empty list of strings")
        files = files or {}
        if sum(len(data) for data in files.values()) > MAX_FILES_BYTES:
            raise WorkloadError(413, "too_large", f"files are limited to {MAX_FILES_BYTES} bytes")
        targets = {self.resolve(lease_id, name): data for name, data in files.items()}
        for target, data in targets.items():
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        hw = workload.hardware
        cgroup = _cgroup_for(lease_id, hw) if self.use_cgroups else ""
        command = [
            sys.executable,
            "-m",
            "agora.market.sandbox",
            "--cpus",
            str(hw.cpu),
            "--mem-mib",
            str(hw.mem),
            *(["--cgroup", cgroup] if cgroup else []),
            "--",
            *argv,
        ]
        environment = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(workload.directory),
            "PYTHONUNBUFFERED": "1",
            "AGORA_LEASE_ID": str(lease_id),
            **({"PYTHONPATH": os.environ["PYTHONPATH"]} if "PYTHONPATH" in os.environ else {}),
            **(env or {}),
        }
        with workload.log_path.open("ab") as log_file:
            workload.process = subprocess.Popen(
                command,
                cwd=workload.directory,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                env=environment,
                start_new_session=True,
            )
        workload.started_at = time.time()
        log.info("lease %d: started %s (pid %d)", lease_id, argv[0], workload.process.pid)
        return workload

    def add_process(
        self, lease_id: int, command: list[str], env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        """Start a helper process of the lease (a Ray node) in its own group, logging to the
        lease's log; it is stopped with the lease."""
        workload = self.get(lease_id)
        with workload.log_path.open("ab") as log_file:
            process = subprocess.Popen(
                command,
                cwd=workload.directory,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                env={**os.environ, **(env or {})},
                start_new_session=True,
            )
        workload.extra.append(process)
        return process

    def resolve(self, lease_id: int, name: str) -> Path:
        """A path inside the lease's working directory. Raises WorkloadError if it escapes."""
        directory = self.get(lease_id).directory.resolve()
        target = (directory / name).resolve()
        if not name or target == directory or directory not in target.parents:
            raise WorkloadError(400, "bad_path", f"{name!r} is not a path inside the lease")
        return target

    def read_file(self, lease_id: int, name: str, limit: int = MAX_FILES_BYTES) -> bytes:
        target = self.resolve(lease_id, name)
        if not target.is_file():
            raise WorkloadError(404, "not_found", f"no file {name!r} in lease {lease_id}")
        with target.open("rb") as handle:
            return handle.read(limit)

    def read_log(self, lease_id: int, offset: int = 0, limit: int = 1 << 20) -> tuple[bytes, int]:
        """Log bytes from ``offset`` and the offset to ask for next."""
        workload = self.get(lease_id)
        with workload.log_path.open("rb") as handle:
            handle.seek(max(0, offset))
            data = handle.read(limit)
        return data, max(0, offset) + len(data)

    def stop(self, lease_id: int) -> None:
        """End the lease's processes (SIGTERM, then SIGKILL after the grace period). Idempotent;
        the files stay for the tenant to read."""
        workload = self._leases.get(lease_id)
        if workload is None:
            return
        workload.stopped = True
        processes = [p for p in [workload.process, *workload.extra] if p is not None]
        for process in processes:
            _signal_group(process, signal.SIGTERM)
        deadline = time.monotonic() + self.grace_s
        for process in processes:
            remaining = max(0.0, deadline - time.monotonic())
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(remaining)
            _signal_group(process, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(5)
        if any(p.pid for p in processes):
            log.info("lease %d: stopped", lease_id)

    def stop_all(self) -> None:
        for lease_id in list(self._leases):
            self.stop(lease_id)


def _signal_group(process: subprocess.Popen[bytes], sig: int) -> None:
    """Signal the process group the lease's process leads (it started a new session)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, sig)
