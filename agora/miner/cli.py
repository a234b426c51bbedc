"""``agora miner ...``: run a miner, or ask one how it is doing.

    agora miner start --wallet alice --subnet 1 --model embed:minilm
    agora miner start --dev-key charlie --subnet 1 --model generate:tiny --port 8092
    agora miner status --endpoint http://127.0.0.1:8091

Also ``python -m agora.miner start ...``. Exit codes: 0 after a clean stop (SIGTERM, Ctrl-C),
1 when the miner cannot start (the message says what to do), 2 for a usage error.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from agora.chain.client import DEFAULT_URL
from agora.chain.errors import NodeError, NodeUnreachable
from agora.crypto.keys import Keypair
from agora.miner.adversary import CHEAT_MODES
from agora.miner.config import MinerConfig
from agora.miner.errors import MinerError
from agora.miner.pricing import DEFAULT_PRICE, format_price, parse_price
from agora.protocol.errors import AgoraError
from agora.protocol.units import format_amount, parse_amount

__all__ = ["app"]

T = TypeVar("T")

app = typer.Typer(
    name="miner",
    help=(
        "Serve a model on a subnet and get paid for it. Every answer carries a receipt signed "
        "by the miner's hotkey.\n\n"
        "Start with: agora miner start --dev-key charlie --subnet 1 --model embed:minilm"
    ),
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
)
console = Console(stderr=True)
NODE_ENV = "AGORA_NODE"


class ConsoleReporter:
    """Tells the person at the terminal what the miner is doing, with spinners."""

    def info(self, message: str) -> None:
        console.print(message, highlight=False, soft_wrap=True)

    @contextlib.contextmanager
    def status(self, message: str) -> Iterator[None]:
        with console.status(message):
            yield


def _fail(message: str) -> typer.Exit:
    console.print(f"[red]error:[/red] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(1)


def _run(coro: Coroutine[Any, Any, T]) -> T:
    """Run on uvloop when it is installed (faster HTTP), else on asyncio's loop."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


def _quiet_libraries() -> None:
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    for name in ("httpx", "httpcore", "sentence_transformers", "transformers"):
        logging.getLogger(name).setLevel(logging.WARNING)
    with contextlib.suppress(ImportError):
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]


def _keys(
    wallet: str | None, dev_key: str | None, password_file: Path | None
) -> tuple[Keypair, Callable[[], Keypair]]:
    """The hotkey, and a way to open the coldkey later (only if the miner must register)."""
    if (wallet is None) == (dev_key is None):
        raise _fail(
            "say whose keys run the miner: --wallet NAME (create one with `agora wallet new "
            "NAME`), or --dev-key NAME on the dev network"
        )
    if dev_key is not None:
        name = dev_key
        return Keypair.from_name(name + "/hot"), lambda: Keypair.from_name(name)
    from agora.wallet import Wallet, resolve_password

    assert wallet is not None
    loaded = Wallet.load(wallet)
    password = resolve_password(str(password_file) if password_file else None, prompt=True)
    hotkey = loaded.hotkey(password)
    return hotkey, lambda: loaded.coldkey(password)


def _confirm_burn(yes: bool) -> Callable[[int], bool]:
    def confirm(burn: int) -> bool:
        if yes or not sys.stdin.isatty():
            return True
        return typer.confirm(f"Burn {format_amount(burn)} tokens to register?", default=True)

    return confirm


def _tokens(option: str, text: str | None) -> int | None:
    if text is None:
        return None
    try:
        return parse_amount(text)
    except ValueError as error:
        raise _fail(f"{option}: {error}") from None


@app.command()
def start(
    subnet: Annotated[int, typer.Option("--subnet", help="Netuid of the subnet to serve.", min=0)],
    wallet: Annotated[
        str | None,
        typer.Option("--wallet", "-w", help="Wallet whose hotkey serves (asks its password)."),
    ] = None,
    dev_key: Annotated[
        str | None,
        typer.Option(
            "--dev-key",
            help="Dev network only: coldkey Keypair.from_name(NAME), hotkey NAME/hot.",
        ),
    ] = None,
    model: Annotated[
        str,
        typer.Option(
            "--model",
            help="Engine spec: embed:minilm, generate:tiny, generate:/path, gguf:/path.gguf, "
            "classify:iris;srs=CEREMONY.srs (ZK proofs, docs/zk.md) ...",
        ),
    ] = "embed:minilm",
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on (0: any free port).")] = 8091,
    external_ip: Annotated[
        str | None,
        typer.Option(help="IP to announce on the ledger (default: --host)."),
    ] = None,
    price: Annotated[
        str, typer.Option(help="Tokens charged per 1,000 tokens (prompt + completion).")
    ] = DEFAULT_PRICE,
    node: Annotated[
        str, typer.Option("--node", envvar=NODE_ENV, help="URL of a ledger node's API.")
    ] = DEFAULT_URL,
    data_dir: Annotated[
        Path | None,
        typer.Option(
            "--data-dir",
            help="Where models are built or cached. Default: $AGORA_HOME, else ~/.agora.",
            show_default=False,
        ),
    ] = None,
    password_file: Annotated[
        Path | None, typer.Option("--password-file", help="Read the wallet password from a file.")
    ] = None,
    register: Annotated[
        bool,
        typer.Option(
            "--register/--no-register",
            help="Register the hotkey by burn if it has no uid (--no-register refuses to pay).",
        ),
    ] = True,
    max_burn: Annotated[
        str | None, typer.Option(help="Refuse to register if the burn is above this (tokens).")
    ] = None,
    yes: Annotated[
        bool, typer.Option("--yes", "-y", help="Pay the registration burn without asking.")
    ] = False,
    min_caller_stake: Annotated[
        str, typer.Option(help="Serve only callers with at least this stake (tokens).")
    ] = "0",
    allow: Annotated[
        list[str] | None,
        typer.Option("--allow", help="Also serve this hotkey even if unregistered (repeatable)."),
    ] = None,
    cheat: Annotated[
        str | None,
        typer.Option(
            "--cheat",
            help=f"TESTS AND DEMOS ONLY: serve bad answers ({', '.join(CHEAT_MODES)}).",
        ),
    ] = None,
    ray: Annotated[
        str | None,
        typer.Option("--ray", help="Serve through Ray Serve: local, auto, HOST:PORT."),
    ] = None,
    threads: Annotated[
        int | None,
        typer.Option(
            help="Torch threads. Default: torch's default less one, leaving a core to the HTTP "
            "side.",
            min=1,
        ),
    ] = None,
    engine_process: Annotated[
        bool,
        typer.Option(
            "--engine-process/--in-process",
            help="Run the model in a child process (default), or in the miner's own process.",
        ),
    ] = True,
    max_batch: Annotated[
        int, typer.Option(help="Generation requests per batched model call.", min=1)
    ] = 32,
    max_wait_ms: Annotated[
        float,
        typer.Option(help="How long a batch waits for more requests before it runs (ms).", min=0),
    ] = 5.0,
    rate_limit: Annotated[
        float, typer.Option(help="Requests a second allowed per caller.", min=0.01)
    ] = 200.0,
    burst: Annotated[int, typer.Option(help="Requests a caller may send at once.", min=1)] = 400,
    grace: Annotated[
        float, typer.Option(help="Seconds in-flight requests get to finish on SIGTERM.", min=0)
    ] = 30.0,
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error.")] = "info",
) -> None:
    """Serve a model on a subnet until Ctrl-C or SIGTERM.

    Loads the model, registers the hotkey by burn if it has no uid (the burn is shown first;
    --no-register refuses to pay), announces the endpoint on the ledger, then answers signed
    requests from callers registered on the subnet. On SIGTERM, requests in flight finish
    first.

    Examples:

        agora miner start --wallet alice --subnet 1 --model embed:minilm

        agora miner start --dev-key charlie --subnet 1 --model generate:tiny --port 8092

        agora miner start -w m1 --subnet 1 --host 0.0.0.0 --external-ip 203.0.113.7 --no-register
    """
    logging.basicConfig(
        level=getattr(logging, log_level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    _quiet_libraries()
    try:
        config = MinerConfig(
            netuid=subnet,
            model=model,
            data_dir=data_dir if data_dir is not None else _default_data_dir(),
            host=host,
            port=port,
            external_ip=external_ip,
            node_url=node,
            price_per_1k=parse_price(price),
            register=register,
            max_burn=_tokens("--max-burn", max_burn),
            min_caller_stake=_tokens("--min-caller-stake", min_caller_stake) or 0,
            allow=frozenset(allow or ()),
            cheat=cheat,
            ray=ray,
            threads=threads,
            engine_process=engine_process,
            max_batch_size=max_batch,
            max_wait_ms=max_wait_ms,
            rate_per_second=rate_limit,
            burst=burst,
            grace_s=grace,
        )
        config.announced_ip()
    except MinerError as error:
        raise _fail(str(error)) from None
    with _friendly_errors():
        hotkey, coldkey = _keys(wallet, dev_key, password_file)
    if cheat is not None:
        console.print(
            f"[bold red]--cheat {cheat}: this miner serves WRONG answers on purpose (tests and "
            "demos only)[/bold red]"
        )
    code = _run(_start(config, hotkey, coldkey, _confirm_burn(yes), log_level))
    raise typer.Exit(code)


def _default_data_dir() -> Path:
    from agora.wallet import resolve_root

    return resolve_root()


async def _start(
    config: MinerConfig,
    hotkey: Keypair,
    coldkey: Callable[[], Keypair],
    confirm: Callable[[int], bool],
    log_level: str,
) -> int:
    from agora.miner.service import Miner

    with _friendly_errors():
        miner = await Miner.create(
            config, hotkey, coldkey=coldkey, confirm_burn=confirm, reporter=ConsoleReporter()
        )
    console.print(
        f"[green]serving[/green] {miner.engine.model_id} at [bold]{miner.url}[/bold] on subnet "
        f"{config.netuid} as uid {miner.neuron.uid} (hotkey {hotkey.address}), "
        f"{format_price(config.price_per_1k)}. Ctrl-C stops.",
        highlight=False,
        soft_wrap=True,
    )
    uvicorn_level = "info" if log_level.lower() == "debug" else "warning"
    code = await miner.serve(log_level=uvicorn_level)
    console.print(f"stopped after {miner.core.served} answers{_batching(miner)}")
    return code


def _batching(miner: Any) -> str:
    """`` (mean batch 12.3 requests)`` from the engine's batcher, if it batched anything."""
    engine = miner.engine
    batcher = getattr(
        engine, "embed_batcher" if engine.task == "embed" else "generate_batcher", None
    )
    sizes = getattr(batcher, "batch_sizes", None)
    if not sizes:
        return ""
    return f" (mean batch {sum(sizes) / len(sizes):.1f} requests in {len(sizes)} model calls)"


@contextlib.contextmanager
def _friendly_errors() -> Iterator[None]:
    """Expected failures become one line saying what to do, and exit code 1."""
    try:
        yield
    except NodeUnreachable as error:
        raise _fail(str(error.message)) from None
    except NodeError as error:
        raise _fail(f"the ledger refused: {error}") from None
    except TimeoutError as error:
        raise _fail(str(error) or "timed out waiting for the ledger") from None
    except AgoraError as error:
        raise _fail(str(error)) from None


@app.command()
def status(
    endpoint: Annotated[
        str, typer.Option("--endpoint", help="The miner's URL, e.g. http://127.0.0.1:8091.")
    ],
    as_json: Annotated[bool, typer.Option("--json", help="Print the raw /health JSON.")] = False,
) -> None:
    """Ask a running miner what it serves, at what price, and how busy it is.

    Reads the miner's public /health:

        agora miner status --endpoint http://127.0.0.1:8091
    """
    import httpx

    from agora.miner.client import fetch_health

    try:
        health = _run(fetch_health(endpoint.rstrip("/")))
    except httpx.HTTPError as error:
        raise _fail(
            f"no miner answers at {endpoint} ({type(error).__name__}); check the URL, or start "
            "one with `agora miner start`"
        ) from None
    except (MinerError, ValueError) as error:
        raise _fail(f"{endpoint} did not answer like a miner: {error}") from None
    if as_json:
        typer.echo(health.model_dump_json())
        return
    table = Table(title=f"miner at {endpoint}", show_header=False)
    table.add_row("status", health.status)
    table.add_row("model", health.model)
    table.add_row("task", health.task)
    table.add_row("subnet", str(health.netuid))
    table.add_row("hotkey", health.hotkey)
    table.add_row("price", format_price(health.price_per_1k_tokens))
    table.add_row("in flight", str(health.in_flight))
    table.add_row("answers served", str(health.served))
    Console().print(table)
