"""``agora up``: the whole local network starts, says where it is, and stops cleanly."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from openai import OpenAI

from agora.chain.testing import free_port
from agora.crypto.keys import Keypair

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def test_up_starts_the_network_and_stops_everything_on_sigterm(tmp_path: Path) -> None:
    port, dashboard, gateway = free_port(), free_port(), free_port()
    miner_port = 20000 + os.getpid() % 20000  # four consecutive ports from here
    data = tmp_path / "net"
    command = [
        sys.executable, "-m", "agora.cli", "up", "--data-dir", str(data), "--port", str(port),
        "--dashboard-port", str(dashboard), "--miner-port", str(miner_port),
        "--gateway-port", str(gateway),
        "--validator-port", str(miner_port + 10),  # the validators' public APIs, one per subnet
    ]  # fmt: skip
    proc = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=REPO,
        env={**os.environ, "COLUMNS": "120"},
    )  # fmt: skip
    info: dict[str, object] = {}
    try:
        deadline = time.monotonic() + 400
        while not (data / "devnet.json").exists():
            assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
            assert time.monotonic() < deadline, "agora up did not write devnet.json"
            time.sleep(0.5)
        info = json.loads((data / "devnet.json").read_text())
        node = info["node"]
        assert node == f"http://127.0.0.1:{port}"
        assert httpx.get(f"{info['dashboard']}/config.json").status_code == 200
        for netuid, model in info["subnets"].items():  # type: ignore[attr-defined]
            meta = httpx.get(f"{node}/v1/subnets/{netuid}/metagraph").json()
            served = [n for n in meta["neurons"] if n["endpoint"]]
            assert served, f"no miner serves subnet {netuid} ({model})"
        for url in info["miners"].values():  # type: ignore[attr-defined]
            assert httpx.get(f"{url}/health").json()["status"] == "ok"
        validator = Keypair.from_name("eve/hot").address
        deadline = time.monotonic() + 120  # the validator registers and stakes after it starts
        while httpx.get(f"{node}/v1/accounts/{validator}").json()["stake_behind"] == 0:
            assert time.monotonic() < deadline, "the validator never staked"
            time.sleep(1)
        client = OpenAI(base_url=str(info["gateway"]), api_key=str(info["api_key"]), max_retries=5)
        vector = client.embeddings.create(model="minilm", input=["hello"]).data[0].embedding
        assert len(vector) == 384
        proc.send_signal(signal.SIGTERM)
        output = proc.communicate(timeout=60)[0].decode()
        assert proc.returncode == 0, output
        assert "ledger node API" in output and "dashboard" in output
    finally:
        if proc.poll() is None:  # a failed assertion: stop it the way a person would, so that
            proc.send_signal(signal.SIGTERM)  # it stops its children too (a SIGKILL orphans them)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
    for pid in info.get("pids", {}).values():  # type: ignore[attr-defined]
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            continue
        raise AssertionError(f"process {pid} outlived agora up")
