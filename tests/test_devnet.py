"""``agora up``: the local network starts, says where it is, and stops cleanly."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from agora.chain.testing import free_port

REPO = Path(__file__).resolve().parents[1]


def test_up_starts_a_node_with_a_dev_subnet_and_stops_on_sigterm(tmp_path: Path) -> None:
    port = free_port()
    data = tmp_path / "net"
    proc = subprocess.Popen(
        [sys.executable, "-m", "agora.cli", "up", "--data-dir", str(data), "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        cwd=REPO,
        env={**os.environ, "COLUMNS": "120"},
    )
    try:
        deadline = time.monotonic() + 120
        while not (data / "devnet.json").exists():
            assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
            assert time.monotonic() < deadline, "agora up did not write devnet.json"
            time.sleep(0.3)
        info = json.loads((data / "devnet.json").read_text())
        assert info["node"] == f"http://127.0.0.1:{port}"
        subnets = httpx.get(info["node"] + "/v1/subnets").json()["subnets"]
        assert [s["netuid"] for s in subnets] == [info["subnet"]]
        proc.send_signal(signal.SIGTERM)
        output = proc.communicate(timeout=30)[0].decode()
        assert proc.returncode == 0, output
        assert "ledger node API" in output and f":{port}" in output
    finally:
        if proc.poll() is None:
            proc.kill()
    # Everything it started is gone with it.
    for pid in info["pids"].values():
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            continue
        raise AssertionError(f"process {pid} outlived agora up")
