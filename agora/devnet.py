"""``agora up``: a whole local network in one command.

A small supervisor: it starts each part of the network as its own process (real HTTP between
them, as on many machines), waits until each answers, sets up what the network needs on the
ledger, prints where to look, writes the same as JSON to ``<data-dir>/devnet.json`` for scripts
and tests, then prints the metagraphs as they change until Ctrl-C or SIGTERM stops everything.

The network: a ledger node (1 s blocks), subnet 1 for embeddings (all-MiniLM-L6-v2) and subnet 2
for text generation (a tiny seeded language model built on first use), owned by the dev account
alice; three miners on subnet 1 (bob and charlie honest, dave deliberately returning random
vectors) and one on subnet 2 (ferdie); subnet 3 a zero-knowledge subnet (an iris classifier whose
answers carry EZKL proofs, miner alice, with a locally generated SRS that is FOR TESTING ONLY);
eve validating every subnet (subnet 3 every 30 s: a proof costs ~1 s); the OpenAI-compatible
gateway with a demo API key backed by 10 tokens of alice's in escrow; and the dashboard. Within a
couple of minutes the honest miners earn incentive and dave stays at zero. On subnets 1 and 2 eve
also audits the answers the gateway archived (``--gateway``: a sample drawn by block hash,
re-checked, disputed when wrong; agora.validator.audit), and alice backs every miner hotkey with
10 tokens of stake, so that an upheld dispute's slash takes something.
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
from agora.protocol.units import TOKEN

console = Console()
OWNER = "alice"
VALIDATOR = "eve"
# netuid -> model served on it
SUBNETS = {1: "embed:minilm", 2: "generate:tiny", 3: "classify:iris"}
# dev account -> (netuid, extra miner flags)
MINERS: dict[str, tuple[int, list[str]]] = {
    "bob": (1, []),
    "charlie": (1, []),
    "dave": (1, ["--cheat", "random"]),
    "ferdie": (2, []),
    "alice": (3, []),  # the ZK subnet: every answer carries an EZKL proof (agora.zk)
}
MODEL_ENV = {"OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
DEV_NAMES = ["alice", "bob", "charlie", "dave", "eve", "ferdie", "faucet", "gateway"]
GATEWAY_MODELS = {"minilm": 1, "tiny-llm": 2}  # OpenAI model name -> netuid


@dataclass
class Supervisor:
    """The processes of a local network; stopping it stops them all, newest first."""

    log_dir: Path
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def start(self, name: str, args: list[str], env: dict[str, str] | None = None) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_dir / f"{name}.log", "ab") as log:
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
        deadline = time.monotonic() + 20
        for process in reversed(self.processes.values()):
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def wait_for_http(url: str, supervisor: Supervisor, what: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    with console.status(f"starting {what}…"):
        while time.monotonic() < deadline:
            supervisor.check()
            try:
                if httpx.get(url, timeout=1.0).status_code < 500:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
    raise RuntimeError(f"{what} did not answer at {url} within {timeout:.0f}s")


async def ensure_subnets(node_url: str, count: int) -> list[int]:
    """Netuids 1..count, created (owned by the dev account alice) where missing."""
    async with LedgerClient(node_url) as client:
        owner = Keypair.from_name(OWNER)
        while len(await client.subnets()) < count:
            status = await client.status()
            nonce = await client.next_nonce(owner.address)
            tx = sign_transaction(owner, status.chain_id, "create_subnet", nonce, {})
            info = await client.wait_for_tx(await client.submit(tx), timeout=60)
            if info.status != "included":
                raise RuntimeError(f"could not create a dev subnet: {info.code}: {info.message}")
        return [s.netuid for s in await client.subnets()][:count]


MINER_BACKING = 10 * TOKEN
VALIDATOR_FLOAT = 20 * TOKEN


async def back_miners(node_url: str) -> None:
    """The owner stakes :data:`MINER_BACKING` behind every miner hotkey that has none of its stake
    yet (a miner without stake loses nothing to a slash, so audits would not deter it), and the
    faucet gives the validator's hotkey :data:`VALIDATOR_FLOAT` to pay dispute deposits."""
    owner, faucet = Keypair.from_name(OWNER), Keypair.from_name("faucet")
    async with LedgerClient(node_url) as client:
        chain_id = (await client.status()).chain_id
        backed = {s.hotkey for s in (await client.account(owner.address)).stakes if s.amount}
        nonce = await client.next_nonce(owner.address)
        sent = []
        for name in MINERS:
            hotkey = Keypair.from_name(name + "/hot").address
            if hotkey in backed:
                continue
            body = {"hotkey": hotkey, "amount": MINER_BACKING}
            tx = sign_transaction(owner, chain_id, "add_stake", nonce, body)
            sent.append(await client.submit(tx))
            nonce += 1
        validator = Keypair.from_name(VALIDATOR + "/hot").address
        if (await client.account(validator)).balance < VALIDATOR_FLOAT // 4:
            body = {"to": validator, "amount": VALIDATOR_FLOAT}
            nonce = await client.next_nonce(faucet.address)
            tx = sign_transaction(faucet, chain_id, "transfer", nonce, body)
            sent.append(await client.submit(tx))
        for tx_hash in sent:
            info = await client.wait_for_tx(tx_hash, timeout=60)
            if info.status != "included":
                console.print(f"[yellow]could not back the miners: {info.code}: {info.message}[/]")


def dev_name(hotkey: str) -> str:
    for name in DEV_NAMES:
        if Keypair.from_name(name + "/hot").address == hotkey:
            return name
    return hotkey[:8]


async def metagraph_tables(node_url: str) -> list[Table]:
    tables = []
    async with LedgerClient(node_url) as client:
        for netuid, model in SUBNETS.items():
            meta = await client.metagraph(netuid)
            table = Table(title=f"subnet {netuid} ({model}) at block {meta.block}", pad_edge=False)
            for column in ("uid", "who", "role", "stake", "incentive", "dividends", "emission"):
                table.add_column(column, justify="left" if column in ("who", "role") else "right")
            for n in meta.neurons:
                name = dev_name(n.hotkey)
                flags = MINERS.get(name, (0, []))[1]
                role = (
                    "validator"
                    if name == VALIDATOR
                    else ("miner (cheats)" if "--cheat" in flags else "miner")
                )
                table.add_row(
                    str(n.uid),
                    name,
                    role,
                    f"{n.stake / 1e9:,.3f}",
                    f"{n.incentive_float:.3f}",
                    f"{n.dividends_float:.3f}",
                    f"{n.emission / 1e9:,.4f}",
                )
            tables.append(table)
    return tables


def demo_key(gateway_url: str, node_url: str, data_dir: Path) -> dict[str, Any]:
    """The demo API key: the one a previous run saved if the gateway still knows it, else new."""
    from agora.gateway.devnet import create_demo_key

    saved = data_dir / "devnet.json"
    if saved.exists():
        previous = json.loads(saved.read_text())
        key = previous.get("api_key")
        if key:
            answer = httpx.get(
                gateway_url + "/v1/usage", headers={"Authorization": f"Bearer {key}"}, timeout=10
            )
            if answer.status_code == 200:
                return {"key": key, "key_id": previous.get("api_key_id")}
    return create_demo_key(gateway_url, node_url, dev_account=OWNER, deposit_tokens=10)


def print_summary(info: dict[str, Any]) -> None:
    table = Table(title="Agora local network is up", show_header=False, title_style="bold green")
    table.add_row("dashboard", info["dashboard"])
    table.add_row("OpenAI-compatible API", f"{info['gateway']}  (models: minilm, tiny-llm)")
    table.add_row("demo API key", f"{info['api_key']}  (10 tokens of alice's in escrow)")
    table.add_row("ledger node API", info["node"] + "  (docs: /docs, events: /v1/events)")
    for netuid, model in SUBNETS.items():
        miners = [
            f"{name}{' (cheats)' if flags else ''} {info['miners'][name]}"
            for name, (n, flags) in MINERS.items()
            if n == netuid
        ]
        table.add_row(f"subnet {netuid}: {model}", "\n".join(miners))
    table.add_row("validator", f"{VALIDATOR} on subnets {', '.join(map(str, SUBNETS))}")
    table.add_row("data", info["data_dir"])
    table.add_row("logs", info["logs"])
    console.print(table)
    console.print(
        "Try:  [bold].venv/bin/agora status[/]    [bold].venv/bin/agora subnet show 1[/]    "
        "open the dashboard, or:\n"
        '  .venv/bin/python -c "from openai import OpenAI; '
        f"c = OpenAI(base_url='{info['gateway']}', api_key='{info['api_key']}'); "
        "print(c.embeddings.create(model='minilm', "
        "input=['hello']).data[0].embedding[:4])\"\n"
        "The metagraphs below refresh as epochs pass; Ctrl-C stops everything."
    )


def run_devnet(
    data_dir: Path,
    port: int,
    block_time: float,
    host: str = "127.0.0.1",
    dashboard_port: int = 8080,
    miner_port: int = 8091,
    gateway_port: int = 8000,
    refresh: float = 20.0,
    validator_port: int = 8071,
) -> None:
    data_dir = data_dir.resolve()
    supervisor = Supervisor(log_dir=data_dir / "logs")
    node_url = f"http://{host}:{port}"
    stop_requested = False

    def on_signal(signum: int, frame: object) -> None:
        nonlocal stop_requested
        stop_requested = True

    signal.signal(signal.SIGTERM, on_signal)
    python = sys.executable
    try:
        supervisor.start(
            "node",
            [
                python,
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
        with console.status("creating the dev subnets…"):
            asyncio.run(ensure_subnets(node_url, len(SUBNETS)))
        from agora.zk.devnet import shared_specs
        from agora.zk.srs import TESTING_WARNING

        with console.status("setting up the ZK subnet's circuit…"):
            specs = shared_specs(SUBNETS, data_dir / "models")  # one SRS for miner and validator
        console.print(f"[yellow]ZK subnet 3: {TESTING_WARNING}[/]")

        # The gateway registers on both subnets before the miners start, so that miners, which
        # read who may call them from the metagraph, accept it from their first request.
        from agora.gateway.devnet import fund_dev_gateway, gateway_command

        gateway_url = f"http://{host}:{gateway_port}"
        with console.status("funding the gateway…"):
            fund_dev_gateway(node_url)
        command = gateway_command(
            node_url, data_dir / "gateway", port=gateway_port, host=host, serve=GATEWAY_MODELS
        )
        supervisor.start("gateway", command)
        wait_for_http(gateway_url + "/health", supervisor, "the gateway")
        dashboard_url = f"http://{host}:{dashboard_port}"
        dashboard = [
            python, "-m", "agora.dashboard", "--node", node_url, "--gateway", gateway_url,
            "--host", host, "--port", str(dashboard_port),
        ]  # fmt: skip
        supervisor.start("dashboard", dashboard)
        miners: dict[str, str] = {}
        for index, (name, (netuid, flags)) in enumerate(MINERS.items()):
            miner_url = f"http://{host}:{miner_port + index}"
            miners[name] = miner_url
            supervisor.start(
                f"miner-{name}",
                [
                    python,
                    "-m",
                    "agora.miner",
                    "start",
                    "--dev-key",
                    name,
                    "--subnet",
                    str(netuid),
                    "--model",
                    specs[netuid],
                    "--host",
                    host,
                    "--port",
                    str(miner_port + index),
                    "--node",
                    node_url,
                    "--data-dir",
                    str(data_dir / "models"),
                    "--yes",
                    *flags,
                ],
                env=MODEL_ENV,
            )
        wait_for_http(dashboard_url + "/config.json", supervisor, "the dashboard")
        for name, miner_url in miners.items():
            wait_for_http(miner_url + "/health", supervisor, f"miner {name}", timeout=300)
        with console.status("backing the miners with stake (so a slash takes something)…"):
            asyncio.run(back_miners(node_url))
        audited = set(GATEWAY_MODELS.values())  # the subnets whose organic answers are archived
        for index, (netuid, model) in enumerate(SUBNETS.items()):
            supervisor.start(
                f"validator-{netuid}",
                [
                    python,
                    "-m",
                    "agora.validator",
                    "start",
                    "--dev-key",
                    VALIDATOR,
                    "--subnet",
                    str(netuid),
                    "--model",
                    specs[netuid],
                    "--node",
                    node_url,
                    "--data-dir",
                    str(data_dir / f"validator-{netuid}"),
                    "--stake",
                    "100",
                    "--probe-interval",
                    "30" if model.startswith("classify:") else "5",  # a proof costs ~1 s
                    # its public API, announced on the ledger: the dashboard shows what it measured
                    "--http-port",
                    str(validator_port + index),
                    "--http-host",
                    host,
                    # audit the gateway's organic answers and open disputes (agora.validator.audit)
                    *(["--gateway", gateway_url] if netuid in audited else []),
                ],
                env=MODEL_ENV,
            )
        with console.status("opening the demo API key's escrow…"):
            demo = demo_key(gateway_url, node_url, data_dir)
        info = {
            "node": node_url,
            "dashboard": dashboard_url,
            "gateway": gateway_url + "/v1",
            "api_key": demo["key"],
            "api_key_id": demo.get("key_id"),
            "subnets": {str(netuid): model for netuid, model in SUBNETS.items()},
            "miners": miners,
            "validator": Keypair.from_name(VALIDATOR + "/hot").address,
            "validator_apis": {
                str(netuid): f"http://{host}:{validator_port + index}"
                for index, netuid in enumerate(SUBNETS)
            },
            "data_dir": str(data_dir),
            "logs": str(supervisor.log_dir),
            "pids": {name: p.pid for name, p in supervisor.processes.items()},
        }
        (data_dir / "devnet.json").write_text(json.dumps(info, indent=2) + "\n")
        print_summary(info)
        next_print = time.monotonic() + refresh
        while not stop_requested:
            supervisor.check()
            if time.monotonic() >= next_print:
                next_print = time.monotonic() + refresh
                try:
                    for table in asyncio.run(metagraph_tables(node_url)):
                        console.print(table)
                except Exception as error:
                    console.print(f"[yellow]could not read the metagraph: {error}[/]")
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    except RuntimeError as error:
        console.print(f"[red]error:[/] {error}")
        console.print("stopping the local network…")
        supervisor.stop()
        raise SystemExit(1) from None
    console.print("stopping the local network…")
    supervisor.stop()
