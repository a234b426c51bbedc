"""``agora validator ...``: run a validator, and read the scores it keeps.

    agora validator start --wallet val --subnet 1
    agora validator start --dev-key eve --subnet 1 --stake 100 --probe-interval 5
    agora validator scores --subnet 1

Exit codes: 0 after a clean stop (SIGTERM, Ctrl-C), 1 when it cannot start (no node, no subnet,
wrong password, registration or staking refused, model not found).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import time
from pathlib import Path
from typing import Annotated

import typer
from rich import box
from rich.console import Console
from rich.table import Table

from agora.chain.client import DEFAULT_URL
from agora.chain.errors import NodeError
from agora.crypto.keys import Keypair
from agora.protocol.errors import AgoraError
from agora.protocol.units import parse_amount
from agora.validator.service import Validator, ValidatorConfig, default_data_dir
from agora.validator.store import DB_NAME, ScoreBook

__all__ = ["app"]

app = typer.Typer(
    name="validator",
    help=(
        "Run a validator: probe a subnet's miners against a reference model, score them, and "
        "set weights every tempo. Start with `agora validator start --help`."
    ),
    no_args_is_help=True,
    add_completion=False,
)
err = Console(stderr=True)


def _fail(message: str) -> typer.Exit:
    err.print(f"[red]error:[/red] {message}", highlight=False)
    return typer.Exit(1)


def _keys(
    wallet: str | None, dev_key: str | None, password_file: Path | None
) -> tuple[Keypair, Keypair | object | None]:
    """The hotkey, and the coldkey (or a loader that decrypts it only when needed)."""
    if dev_key:
        return Keypair.from_name(dev_key + "/hot"), Keypair.from_name(dev_key)
    if not wallet:
        raise _fail("say which keys to use: --wallet NAME (or --dev-key NAME on the dev network)")
    from agora.wallet import Wallet, resolve_password

    loaded = Wallet.load(wallet)
    password = resolve_password(str(password_file) if password_file else None, prompt=True)
    hotkey = loaded.hotkey(password)
    return hotkey, lambda: loaded.coldkey(password)


def _hotkey(text: str) -> str:
    """A hotkey address from 64 hex characters or ``dev:NAME`` (the dev key NAME/hot)."""
    if text.startswith("dev:"):
        return Keypair.from_name(text[4:] + "/hot").address
    value = text.lower()
    if len(value) != 64 or any(c not in "0123456789abcdef" for c in value):
        raise _fail(f"--collude-with {text!r}: give a hotkey as 64 hex characters or dev:NAME")
    return value


@app.command()
def start(
    subnet: Annotated[int, typer.Option("--subnet", help="The subnet (netuid) to validate.")],
    wallet: Annotated[
        str | None, typer.Option("--wallet", help="Wallet whose hotkey validates.")
    ] = None,
    model: Annotated[
        str,
        typer.Option(
            "--model",
            help="The reference model miners are checked against: embed:minilm, generate:tiny, "
            "generate:/path, classify:iris;srs=PATH ... (see docs/models.md, docs/zk.md). Must "
            "be what the subnet serves (for classify: the same SRS file as the miners).",
        ),
    ] = "embed:minilm",
    node: Annotated[
        str, typer.Option("--node", envvar="AGORA_NODE", help="URL of a ledger node.")
    ] = DEFAULT_URL,
    data_dir: Annotated[
        Path | None,
        typer.Option(
            "--data-dir",
            help="Scores, commits and models. Default: $AGORA_HOME/validator or "
            "~/.agora/validator.",
            show_default=False,
        ),
    ] = None,
    password_file: Annotated[
        Path | None,
        typer.Option("--password-file", help="File with the wallet password (else prompt)."),
    ] = None,
    dev_key: Annotated[
        str | None,
        typer.Option(
            "--dev-key",
            help="Dev network only: coldkey Keypair.from_name(NAME), hotkey NAME/hot.",
        ),
    ] = None,
    stake: Annotated[
        str | None,
        typer.Option(
            "--stake",
            help="Stake this many tokens to the hotkey at start if it has less behind it.",
        ),
    ] = None,
    probe_interval: Annotated[
        float, typer.Option("--probe-interval", help="Seconds between probe rounds.", min=0.1)
    ] = 12.0,
    timeout: Annotated[
        float | None,
        typer.Option(
            "--timeout", help="Seconds a miner has per request (default 10 embed, 30 generate)."
        ),
    ] = None,
    no_register: Annotated[
        bool, typer.Option("--no-register", help="Fail instead of registering by burn.")
    ] = False,
    gateway: Annotated[
        list[str] | None,
        typer.Option(
            "--gateway",
            help="Audit the organic answers this gateway archived (repeatable): draw receipts "
            "by the subnet's audit rate, re-check them, open disputes, vote on others'.",
        ),
    ] = None,
    collude_with: Annotated[
        list[str] | None,
        typer.Option(
            "--collude-with",
            help="TESTS AND DEMOS ONLY: never dispute this miner hotkey (hex, or dev:NAME for "
            "NAME/hot) and vote not guilty on its disputes (repeatable).",
        ),
    ] = None,
    audit_interval: Annotated[
        float, typer.Option("--audit-interval", help="Seconds between audit steps.", min=0.1)
    ] = 2.0,
    http_port: Annotated[
        int,
        typer.Option(
            "--http-port",
            help="Serve the public read-only API (GET /v1/validator/scores) on this port and "
            "announce it as the hotkey's endpoint; 0: none.",
            min=0,
        ),
    ] = 0,
    http_host: Annotated[
        str, typer.Option("--http-host", help="Interface of the public API.")
    ] = "127.0.0.1",
    external_ip: Annotated[
        str | None,
        typer.Option("--external-ip", help="IP to announce for the API (default: --http-host)."),
    ] = None,
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error.")] = "info",
) -> None:
    """Start a validator on a subnet. It registers its hotkey by burn if needed (and with
    --stake, stakes up to that amount), then probes every miner with an endpoint each
    --probe-interval seconds, keeps a moving score per uid in <data-dir>/validator.sqlite, and
    sets weights every tempo (commit and reveal on subnets that ask for it). Stop with Ctrl-C.

    Examples:

        agora validator start --wallet val --subnet 1

        agora validator start --dev-key eve --subnet 1 --stake 100 --probe-interval 5

        agora validator start --wallet val --subnet 2 --model generate:tiny --node http://10.0.0.5:9944

        agora validator start --dev-key eve --subnet 2 --model generate:tiny --gateway http://127.0.0.1:8000

        agora validator start --dev-key eve --subnet 1 --http-port 8071   # dashboards read it
    """
    logging.basicConfig(
        level=getattr(logging, log_level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        stake_units = parse_amount(stake) if stake is not None else None
    except ValueError as error:
        raise _fail(f"--stake: {error}") from None
    try:
        hotkey, coldkey = _keys(wallet, dev_key, password_file)
    except AgoraError as error:
        raise _fail(str(error)) from None
    config = ValidatorConfig(
        netuid=subnet,
        hotkey=hotkey,
        coldkey=coldkey,  # type: ignore[arg-type]
        model=model,
        node=node.rstrip("/"),
        data_dir=data_dir or default_data_dir(),
        probe_interval=probe_interval,
        probe_timeout=timeout,
        stake=stake_units,
        register=not no_register,
        gateways=[g.rstrip("/") for g in gateway or []],
        collude_with=[_hotkey(h) for h in collude_with or []],
        audit_interval=audit_interval,
    )
    code = asyncio.run(_run(config, (http_host, http_port, external_ip) if http_port else None))
    if code:
        raise typer.Exit(code)


async def _run(config: ValidatorConfig, http: tuple[str, int, str | None] | None = None) -> int:
    try:
        with err.status(
            f"loading the reference model {config.model} and checking the hotkey on subnet "
            f"{config.netuid} (registering or staking waits for a block)…"
        ):
            validator = await Validator.create(config)
    except (AgoraError, NodeError) as error:
        err.print(f"[red]error:[/red] {error}", highlight=False)
        return 1
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, validator.stop)
    print(
        f"Agora validator {config.hotkey.address[:16]}… on subnet {config.netuid}\n"
        f"  node    {config.node}\n"
        f"  model   {validator.engine.model_id}\n"
        f"  data    {config.data_dir}\n"
        f"  probes  every {config.probe_interval:g}s"
        + (f"\n  audits  {', '.join(config.gateways)}" if config.gateways else ""),
        flush=True,
    )
    try:
        async with contextlib.AsyncExitStack() as stack:
            if http is not None:
                from agora.validator.http import public_api

                host, port, external_ip = http
                try:
                    with err.status("announcing the public API on the ledger (a block)…"):
                        url = await stack.enter_async_context(
                            public_api(validator, host, port, external_ip=external_ip)
                        )
                except (AgoraError, NodeError) as error:
                    err.print(f"[red]error:[/red] {error}", highlight=False)
                    return 1
                print(f"  api     {url}/v1/validator/scores", flush=True)
            await validator.run()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        await validator.close()
    return 0


@app.command()
def scores(
    subnet: Annotated[int, typer.Option("--subnet", help="The subnet (netuid).")],
    data_dir: Annotated[
        Path | None,
        typer.Option("--data-dir", help="The validator's data directory.", show_default=False),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Show the scores a validator keeps (read from its database; it may be running).

    Example:

        agora validator scores --subnet 1 --data-dir ~/.agora/validator
    """
    directory = data_dir or default_data_dir()
    path = directory / DB_NAME
    if not path.exists():
        raise _fail(f"no validator database at {path}; pass the validator's --data-dir")
    with ScoreBook(path) as book:
        rows = book.scores(subnet)
        last = book.get_meta(subnet, "last_weights")
        round_no = book.get_meta(subnet, "round")
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "netuid": subnet,
                    "round": int(round_no or 0),
                    "last_weights": json.loads(last) if last else None,
                    "scores": [row.__dict__ for row in rows.values()],
                }
            )
        )
        return
    table = Table(
        title=f"Validator scores on subnet {subnet} (round {round_no or 0})",
        box=box.SIMPLE_HEAD,
        collapse_padding=True,
        pad_edge=False,
    )
    columns = ("uid", "hotkey", "score", "latency", "tok/s", "ok/n", "proven", "last", "age")
    for column in columns:
        left = column in ("hotkey", "last")
        table.add_column(column, justify="left" if left else "right")
    now = time.time()
    problems: list[str] = []
    for row in rows.values():
        verdict = row.last_verdict or "-"
        style = "green" if verdict == "ok" else "red"
        if verdict != "ok" and row.last_reason:
            problems.append(f"uid {row.uid}: {verdict}: {row.last_reason}")
        table.add_row(
            str(row.uid),
            row.hotkey[:8] + "…",
            f"{row.score:.4f}",
            f"{row.latency * 1000:.0f} ms" if row.latency is not None else "-",
            f"{row.throughput:.0f}" if row.throughput is not None else "-",
            f"{row.ok}/{row.probes}",
            str(row.proven),
            f"[{style}]{verdict}[/]",
            f"{max(0.0, now - row.updated_ms / 1000):.0f} s",
        )
    console = Console()
    console.print(table)
    for line in problems:
        console.print(line, highlight=False, soft_wrap=True)
    if last:
        info = json.loads(last)
        pairs = ", ".join(f"{u}:{w}" for u, w in zip(info["uids"], info["weights"], strict=True))
        console.print(f"last weights ({info['how']} in block {info['block']}): {pairs}")
