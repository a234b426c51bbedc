"""The node as a process: ``python -m agora.chain start``, clean stops, the CLI's errors."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
from typer.testing import CliRunner

from agora.chain.cli import app
from agora.chain.genesis import GenesisSpec, save_genesis
from agora.chain.testing import free_port
from agora.crypto.keys import Keypair
from agora.protocol.units import TOKEN

if TYPE_CHECKING:
    from tests.conftest import Service

REPO = Path(__file__).resolve().parents[1]

runner = CliRunner()


def test_sigterm_stops_cleanly_and_a_restart_continues(
    tmp_path: Path, start_node: Callable[..., Service]
) -> None:
    node = start_node(block_time=0.1)
    status = httpx.get(f"{node.url}/v1/status").json()
    with httpx.stream("GET", f"{node.url}/v1/events", timeout=10) as events:
        lines = events.iter_lines()
        assert next(lines) == "retry: 1000"
        assert node.stop(signal.SIGTERM) == 0  # with an event stream open
    output = node.output()
    assert "API     http://127.0.0.1:" in output and "/docs" in output

    result = runner.invoke(app, ["status", "--node", node.url])
    assert result.exit_code == 1 and "agora node start --dev" in result.output

    again = start_node(block_time=0.1, data_dir=tmp_path / "node")
    restarted = httpx.get(f"{again.url}/v1/status").json()
    assert restarted["genesis_hash"] == status["genesis_hash"]
    assert restarted["height"] >= status["height"]
    result = runner.invoke(app, ["status", "--node", again.url])
    assert result.exit_code == 0 and "agora-dev" in result.output, result.output
    assert again.stop(signal.SIGINT) == 0


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agora.chain", "start", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )


def test_a_port_in_use_is_reported(tmp_path: Path, start_node: Callable[..., Service]) -> None:
    node = start_node()
    port = node.url.rsplit(":", 1)[1]
    result = _run("--dev", "--data-dir", str(tmp_path / "other"), "--port", port)
    assert result.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr


def test_one_mode_must_be_chosen(tmp_path: Path) -> None:
    result = runner.invoke(app, ["start", "--data-dir", str(tmp_path)])
    assert result.exit_code == 1 and "choose one of --dev" in result.output
    result = runner.invoke(app, ["start", "--dev", "--follow", "http://x", "--data-dir", "d"])
    assert result.exit_code == 1


def test_a_network_from_a_genesis_file(tmp_path: Path, start_node: Callable[..., Service]) -> None:
    producer, funded = Keypair.generate(), Keypair.generate()
    genesis = tmp_path / "genesis.json"
    spec = GenesisSpec("agora-test-7", producer.address, {funded.address: 5 * TOKEN}, "mainnet")
    save_genesis(spec, genesis)
    seed = tmp_path / "producer.seed"
    seed.write_text(producer.seed.hex() + "\n")
    seed.chmod(0o600)
    node = start_node(
        "--genesis", str(genesis), "--producer-seed-file", str(seed), dev=False, block_time=0.1
    )
    status = httpx.get(f"{node.url}/v1/status").json()
    assert status["chain_id"] == "agora-test-7" and status["producer"] == producer.address
    balance = httpx.get(f"{node.url}/v1/accounts/{funded.address}").json()["balance"]
    assert balance == 5 * TOKEN
    assert node.stop() == 0

    wrong = tmp_path / "wrong.seed"
    wrong.write_text(Keypair.generate().seed.hex())
    port = str(free_port())
    result = _run(
        "--genesis",
        str(genesis),
        "--producer-seed-file",
        str(wrong),
        "--port",
        port,
        "--data-dir",
        str(tmp_path / "node"),
    )
    assert result.returncode == 1 and "is not the producer the genesis names" in result.stderr
    result = _run("--dev", "--data-dir", str(tmp_path / "node"), "--port", port)
    assert result.returncode == 1 and "use another --data-dir" in result.stderr
