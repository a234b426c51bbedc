"""``agora node ...``: run a ledger node (producer or follower) and look at one.

    agora node start --dev                              # local dev chain, a block a second
    agora node start --genesis g.json --producer-seed-file producer.seed
    agora node start --follow http://10.0.0.5:9944 --port 9945 --data-dir /srv/audit
    agora node status --node http://127.0.0.1:9944

Exit codes: 0 after a clean stop (SIGTERM, Ctrl-C), 1 when the node cannot start or fails, 3 when
a follower refused a block from its upstream.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from agora.chain.client import DEFAULT_URL, LedgerClient
from agora.chain.errors import ChainError, NodeError
from agora.chain.genesis import GenesisSpec, dev_genesis, dev_producer, load_genesis
from agora.chain.mempool import MempoolLimits
from agora.chain.models import Status
from agora.chain.node import Node, NodeConfig
from agora.chain.runner import EXIT_FAILED, bind, serve
from agora.crypto.keys import Keypair
from agora.protocol.codec import is_hex
from agora.protocol.units import format_amount

__all__ = ["app", "default_data_dir"]

app = typer.Typer(
    name="node",
    help="Run a ledger node, or follow one to audit it. Start with `agora node start --dev`.",
    no_args_is_help=True,
    add_completion=False,
)
err = Console(stderr=True)


def default_data_dir() -> Path:
    home = os.environ.get("AGORA_HOME")
    return (Path(home) if home else Path.home() / ".agora") / "node"


def _fail(message: str) -> typer.Exit:
    err.print(f"[red]error:[/red] {message}", highlight=False)
    return typer.Exit(EXIT_FAILED)


def _read_seed(path: Path) -> Keypair:
    try:
        text = path.read_text().strip()
    except OSError as error:
        raise _fail(f"cannot read the producer seed file {path}: {error.strerror}") from None
    if not is_hex(text.lower(), 64):
        raise _fail(f"{path} must hold the producer's 32-byte seed as 64 hex characters")
    if path.stat().st_mode & 0o077:
        err.print(f"[yellow]warning:[/yellow] {path} is readable by others; chmod 600 it")
    return Keypair.from_seed_hex(text.lower())


@app.command()
def start(
    dev: Annotated[
        bool, typer.Option("--dev", help="Dev chain: well-known producer and funded accounts.")
    ] = False,
    data_dir: Annotated[
        Path | None,
        typer.Option(
            "--data-dir",
            help="Where the chain is stored. Default: $AGORA_HOME/node, else ~/.agora/node.",
            show_default=False,
        ),
    ] = None,
    host: Annotated[str, typer.Option(help="Address the API listens on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port of the API.")] = 9944,
    block_time: Annotated[
        float | None,
        typer.Option(help="Seconds between blocks. Default: 1 with --dev, else 12.", min=0.05),
    ] = None,
    genesis: Annotated[
        Path | None,
        typer.Option("--genesis", help="Genesis file (JSON) of a non-dev network."),
    ] = None,
    producer_seed_file: Annotated[
        Path | None,
        typer.Option(help="File with the producer's seed (64 hex), with --genesis."),
    ] = None,
    follow: Annotated[
        str | None,
        typer.Option(
            "--follow", help="Follow this node (URL): re-execute its blocks, stop on a bad one."
        ),
    ] = None,
    genesis_hash: Annotated[
        str | None,
        typer.Option(help="With --follow: refuse an upstream whose genesis has another hash."),
    ] = None,
    snapshot_interval: Annotated[
        int, typer.Option(help="Store a state snapshot every N blocks.", min=1)
    ] = 100,
    max_pending_per_sender: Annotated[
        int, typer.Option(help="Mempool: pending transactions allowed per sender.", min=1)
    ] = MempoolLimits.max_per_sender,
    rate: Annotated[
        float, typer.Option(help="Mempool: transactions a second allowed per sender.", min=0.01)
    ] = MempoolLimits.rate,
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error.")] = "info",
) -> None:
    """Start a node that produces blocks, or follows another node.

    Produce with --dev (the dev chain) or --genesis FILE --producer-seed-file FILE; audit
    another node with --follow URL. Blocks are on disk before they are announced. Stop with
    Ctrl-C or SIGTERM.

    Examples:

        agora node start --dev

        agora node start --dev --port 9955 --data-dir /tmp/agora-node --block-time 0.5

        agora node start --follow http://127.0.0.1:9944 --port 9945 --data-dir /tmp/follower
    """
    logging.basicConfig(
        level=getattr(logging, log_level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request otherwise
    modes = sum([dev, genesis is not None, follow is not None])
    if modes != 1:
        raise _fail(
            "choose one of --dev, --genesis FILE --producer-seed-file FILE, or --follow URL"
        )
    spec: GenesisSpec | None = None
    producer: Keypair | None = None
    if dev:
        spec, producer = dev_genesis(), dev_producer()
    elif genesis is not None:
        if producer_seed_file is None:
            raise _fail("--genesis needs --producer-seed-file (the key that signs blocks)")
        try:
            spec = load_genesis(genesis)
        except ValueError as error:
            raise _fail(str(error)) from None
        producer = _read_seed(producer_seed_file)
    if genesis_hash is not None and not is_hex(genesis_hash, 64):
        raise _fail("--genesis-hash must be 64 lowercase hex characters")
    config = NodeConfig(
        data_dir=data_dir or default_data_dir(),
        block_time=block_time if block_time is not None else (1.0 if dev else 12.0),
        snapshot_interval=snapshot_interval,
        limits=MempoolLimits(max_per_sender=max_pending_per_sender, rate=rate),
        follow=follow.rstrip("/") if follow else None,
        genesis_hash=genesis_hash,
    )
    try:
        sock = bind(host, port)
    except OSError as error:
        raise _fail(
            f"cannot listen on {host}:{port} ({error.strerror}); is another node running? "
            "pick another --port"
        ) from None
    code = asyncio.run(_run(config, spec, producer, sock, host, port))
    if code:
        raise typer.Exit(code)


async def _run(
    config: NodeConfig,
    spec: GenesisSpec | None,
    producer: Keypair | None,
    sock: socket.socket,
    host: str,
    port: int,
) -> int:
    try:
        node = await Node.create(config, genesis=spec, producer=producer)
    except (ChainError, ValueError) as error:
        err.print(f"[red]error:[/red] {error}", highlight=False)
        return EXIT_FAILED

    def ready() -> None:
        base = f"http://{host}:{port}"
        lines = [
            f"Agora node ({node.role}) of chain {node.state.chain_id} at height {node.height}",
            f"  API     {base}/v1   (status: {base}/v1/status)",
            f"  docs    {base}/docs",
            f"  events  {base}/v1/events",
            f"  data    {config.data_dir}",
            f"  genesis {node.genesis_hash}",
        ]
        if node.role == "follower":
            lines.append(f"  follows {config.follow}")
        else:
            lines.append(f"  blocks  every {config.block_time:g}s by {node.state.producer[:16]}…")
        print("\n".join(lines), flush=True)

    code = await serve(node, sock, ready)
    if node.failure is not None:
        err.print(f"[red]error:[/red] {node.failure}", highlight=False)
    return code


@app.command()
def status(
    node: Annotated[
        str, typer.Option("--node", envvar="AGORA_NODE", help="URL of the node.")
    ] = DEFAULT_URL,
) -> None:
    """Show a node's chain, height, issuance and mempool.

    Example:

        agora node status --node http://127.0.0.1:9944
    """

    async def fetch() -> Status:
        async with LedgerClient(node) as client:
            return await client.status()

    try:
        info = asyncio.run(fetch())
    except NodeError as error:
        raise _fail(error.message) from None
    table = Table(show_header=False, box=None)
    for key, value in info.model_dump().items():
        if key in ("total_issuance", "total_burned", "supply_cap", "block_reward") or (
            key == "next_halving_at" and value is not None
        ):
            value = f"{format_amount(value)} tokens"
        table.add_row(key, str(value))
    Console().print(table)
