"""Shared fixtures: free ports and real processes started, waited for and killed at the end.

Helpers that need no pytest (``free_port``, ``wait_until_ready``, ``running_app``,
``app_in_thread``) live in :mod:`agora.chain.testing`, so tests import them from there.

- ``port``: a TCP port nobody listens on.
- ``spawn_service(cmd, ready_url=...)``: start a process, wait until ``ready_url`` answers 200,
  and kill it at teardown (its output goes to a log file). Returns a :class:`Service`.
- ``start_node(data_dir=..., block_time=0.3, *extra)``: ``python -m agora.chain start --dev``
  on a free port, via ``spawn_service``.
- ``anyio_backend``: async tests are ``@pytest.mark.anyio`` on asyncio.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from agora.chain.testing import free_port, wait_until_ready

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def port() -> int:
    return free_port()


@dataclass
class Service:
    """A process started by ``spawn_service``."""

    proc: subprocess.Popen[bytes]
    log_path: Path
    url: str = ""
    args: list[str] = field(default_factory=list)

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def kill(self) -> int:
        """SIGKILL: no cleanup at all, as a power cut or ``kill -9``."""
        if self.proc.poll() is None:
            self.proc.kill()
        return self.proc.wait(10)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        """Send ``sig`` and wait for the exit code (SIGKILL if it does not exit in time)."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                return self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
                raise
        return self.proc.returncode

    def wait(self, timeout: float) -> int:
        return self.proc.wait(timeout)


@pytest.fixture
def spawn_service(tmp_path: Path) -> Iterator[Callable[..., Service]]:
    started: list[Service] = []

    def spawn(
        cmd: list[str],
        *,
        ready_url: str | None = None,
        timeout: float = 30.0,
        env: dict[str, str] | None = None,
        name: str = "service",
    ) -> Service:
        log_path = tmp_path / f"{name}-{len(started)}.log"
        environment = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        environment["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(REPO), environment.get("PYTHONPATH", "")) if p
        )
        with log_path.open("wb") as log:
            proc = subprocess.Popen(
                cmd, stdout=log, stderr=subprocess.STDOUT, env=environment, cwd=REPO
            )
        service = Service(proc, log_path, args=cmd)
        started.append(service)
        if ready_url is not None:
            try:
                wait_until_ready(ready_url, timeout, proc)
            except RuntimeError as error:
                service.kill()
                raise RuntimeError(f"{error}\n--- output of {cmd}:\n{service.output()}") from None
        return service

    yield spawn
    for service in started:
        service.kill()


@pytest.fixture
def start_node(spawn_service: Callable[..., Service], tmp_path: Path) -> Callable[..., Service]:
    """``start_node(*extra, data_dir=None, port=None, block_time=0.3, dev=True)``."""

    def start(
        *extra: str,
        data_dir: Path | None = None,
        port: int | None = None,
        block_time: float = 0.3,
        dev: bool = True,
        wait: bool = True,
    ) -> Service:
        port = port or free_port()
        cmd = [
            sys.executable,
            "-m",
            "agora.chain",
            "start",
            *(["--dev"] if dev else []),
            "--data-dir",
            str(data_dir or tmp_path / "node"),
            "--port",
            str(port),
            "--block-time",
            str(block_time),
            *extra,
        ]
        url = f"http://127.0.0.1:{port}"
        service = spawn_service(cmd, ready_url=f"{url}/v1/status" if wait else None, name="node")
        service.url = url
        return service

    return start
