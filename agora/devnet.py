"""``agora up``: a whole local network in one command.

A small supervisor: it starts each part of the network as its own process (real HTTP between
them, as on many machines), waits until each answers, sets up what the network needs on the
ledger (a dev subnet), prints where to look, writes the same as JSON to ``<data-dir>/devnet.json``
for scripts and tests, and stops everything on Ctrl-C or SIGTERM. Today the parts are the ledger
node and the dev subnet; miners, a validator, the gateway and the dashboard join as they land.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table

from agora.chain.client import LedgerClient
from agora.crypto.keys import Keypair
from agora.crypto.signing import sign_transaction

console = Console()
DEV_SUBNET_OWNER = "alice"


@dataclass
class Supervisor:
    """The processes of a local network; stopping it stops them all, newest first."""

    log_dir: Path
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def start(self, name: str, args: list[str], env: dict[str, str] | None = None) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_dir / f"{name}.log", "ab")  # noqa: SIM115 - the child owns it
        self.processes[name] = subprocess.Popen(
            args,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            start_new_session=True,  # Ctrl-C reaches us; we stop the children in order
        )

    def check(self) -> None:
        """Raise if a process died, pointing at its log."""
        for name, process in self.processes.items():
            if process.poll() is not None:
                raise RuntimeError(
                    f"{name} exited with code {process.returncode}; "
                    f"see {self.log_dir / (name + '.log')}"
                )

    def stop(self) -> None:
        for process in reversed(self.processes.values()):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 15
        for process in reversed(self.processes.values()):
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()


def wait_for_http(url: str, supervisor: Supervisor, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    with console.status(f"starting {what}…"):
        while time.monotonic() < deadline:
            supervisor.check()
            try:
                if httpx.get(url, timeout=1.0).status_code < 500:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
    raise RuntimeError(f"{what} did not answer at {url} within {timeout:.0f}s")


async def ensure_dev_subnet(node_url: str) -> int:
    """The dev subnet's netuid, creating it (owned by the dev account alice) if needed."""
    async with LedgerClient(node_url) as client:
        subnets = await client.subnets()
        if subnets:
            return subnets[0].netuid
        owner = Keypair.from_name(DEV_SUBNET_OWNER)
        status = await client.status()
        nonce = await client.next_nonce(owner.address)
        tx = sign_transaction(owner, status.chain_id, "create_subnet", nonce, {})
        info = await client.wait_for_tx(await client.submit(tx), timeout=60)
        if info.status != "included":
            raise RuntimeError(f"could not create the dev subnet: {info.code}: {info.message}")
        return (await client.subnets())[0].netuid


def print_summary(info: dict[str, Any]) -> None:
    table = Table(title="Agora local network is up", show_header=False, title_style="bold green")
    table.add_row("dashboard", info["dashboard"])
    table.add_row("ledger node API", info["node"])
    table.add_row("API docs", info["node"] + "/docs")
    table.add_row("block events (SSE)", info["node"] + "/v1/events")
    table.add_row("dev subnet", f"netuid {info['subnet']}  (owner: dev account alice)")
    table.add_row("data", info["data_dir"])
    table.add_row("logs", info["logs"])
    console.print(table)
    console.print(
        "Try:  [bold].venv/bin/agora status[/]    "
        f"[bold].venv/bin/agora subnet show {info['subnet']}[/]    "
        "[bold].venv/bin/agora dev fund dev:bob 5[/]\nCtrl-C stops everything."
    )


def run_devnet(data_dir: Path, port: int, block_time: float, host: str = "127.0.0.1") -> None:
    data_dir = data_dir.resolve()
    supervisor = Supervisor(log_dir=data_dir / "logs")
    node_url = f"http://{host}:{port}"
    stop_requested = False

    def on_signal(signum: int, frame: object) -> None:
        nonlocal stop_requested
        stop_requested = True

    signal.signal(signal.SIGTERM, on_signal)
    try:
        supervisor.start(
            "node",
            [
                sys.executable,
                "-m",
                "agora.chain",
                "start",
                "--dev",
                "--data-dir",
                str(data_dir / "node"),
                "--host",
                host,
                "--port",
                str(port),
                "--block-time",
                str(block_time),
            ],
        )
        wait_for_http(node_url + "/v1/status", supervisor, "the ledger node")
        with console.status("creating the dev subnet…"):
            netuid = asyncio.run(ensure_dev_subnet(node_url))
        dashboard_url = f"http://{host}:{port + 136}"  # 9944 -> 10080
        supervisor.start(
            "dashboard",
            [
                sys.executable,
                "-m",
                "agora.dashboard",
                "--node",
                node_url,
                "--host",
                host,
                "--port",
                str(port + 136),
            ],
        )
        wait_for_http(dashboard_url + "/config.json", supervisor, "the dashboard")
        info = {
            "node": node_url,
            "dashboard": dashboard_url,
            "subnet": netuid,
            "data_dir": str(data_dir),
            "logs": str(supervisor.log_dir),
            "pids": {name: p.pid for name, p in supervisor.processes.items()},
        }
        (data_dir / "devnet.json").write_text(json.dumps(info, indent=2) + "\n")
        print_summary(info)
        while not stop_requested:
            supervisor.check()
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    except RuntimeError as error:
        console.print(f"[red]error:[/] {error}")
        supervisor.stop()
        raise SystemExit(1) from None
    finally:
        console.print("stopping the local network…")
        supervisor.stop()
