"""``agora gateway ...``: run a gateway, manage API keys, see what a key spent.

    agora dev fund dev:gateway 1000           # the dev network: fund the gateway's dev key
    agora gateway start --dev-key gateway --node http://127.0.0.1:9944 --port 8000
    agora gateway keys new --dev-key alice --deposit 10          # prints the key once
    agora gateway keys list --dev-key alice
    agora gateway keys top-up --dev-key alice --key key_0123abcd --amount 5
    agora gateway usage --key sk-agora-...
    agora gateway verify answer.json --request request.json

Also ``python -m agora.gateway ...``. Exit codes: 0 success (or a clean stop), 1 an error the
message explains, 2 a usage error.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from agora.chain.client import DEFAULT_URL
from agora.chain.errors import NodeError, NodeUnreachable
from agora.crypto.keys import Keypair
from agora.protocol.errors import AgoraError
from agora.protocol.units import format_amount, parse_amount

__all__ = ["app"]

T = TypeVar("T")
NODE_ENV = "AGORA_NODE"
GATEWAY_ENV = "AGORA_GATEWAY"
DEFAULT_GATEWAY = "http://127.0.0.1:8000"

app = typer.Typer(
    name="gateway",
    help=(
        "Buy inference in the token through an OpenAI-compatible API: run a gateway, create "
        "API keys backed by an escrow on the ledger, see what they spent.\n\n"
        "Start with: agora gateway keys new --dev-key alice --deposit 10"
    ),
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
)
keys_app = typer.Typer(
    help="API keys: each is backed by an escrow channel from your account to the gateway.\n\n"
    "    agora gateway keys new --deposit 10 --dev-key alice",
    no_args_is_help=True,
)
app.add_typer(keys_app, name="keys")
console = Console(stderr=True)
out = Console()

WalletOption = Annotated[
    str | None,
    typer.Option("--wallet", "-w", help="Wallet whose coldkey pays (asks its password)."),
]
DevKeyOption = Annotated[
    str | None, typer.Option("--dev-key", help="Dev network only: Keypair.from_name(NAME).")
]
PasswordOption = Annotated[
    Path | None, typer.Option("--password-file", help="Read the wallet password from a file.")
]
GatewayOption = Annotated[
    str, typer.Option("--gateway", envvar=GATEWAY_ENV, help="The gateway's URL.")
]
NodeOption = Annotated[
    str | None,
    typer.Option("--node", envvar=NODE_ENV, help="Ledger node URL (default: the gateway's)."),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON.")]


def _fail(message: str) -> typer.Exit:
    console.print(f"[red]error:[/red] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(1)


def _run(coro: Coroutine[Any, Any, T]) -> T:
    """On uvloop when it is installed (faster HTTP), else asyncio's loop."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


@contextlib.contextmanager
def _friendly_errors() -> Iterator[None]:
    from agora.gateway.keys import GatewayCallError

    try:
        yield
    except GatewayCallError as error:
        raise _fail(
            error.message if error.reason == "gateway_unreachable" else str(error)
        ) from None
    except NodeUnreachable as error:
        raise _fail(str(error.message)) from None
    except NodeError as error:
        raise _fail(f"the ledger refused: {error}") from None
    except TimeoutError as error:
        raise _fail(str(error) or "timed out waiting for the ledger") from None
    except (AgoraError, ValueError) as error:
        raise _fail(str(error)) from None


def _tokens(option: str, text: str | None) -> int | None:
    if text is None:
        return None
    try:
        return parse_amount(text)
    except ValueError as error:
        raise _fail(f"{option}: {error}") from None


def _coldkey(wallet: str | None, dev_key: str | None, password_file: Path | None) -> Keypair:
    if (wallet is None) == (dev_key is None):
        raise _fail("say who pays: --wallet NAME, or --dev-key NAME on the dev network")
    if dev_key is not None:
        return Keypair.from_name(dev_key)
    from agora.wallet import Wallet, resolve_password

    assert wallet is not None
    with _friendly_errors():
        loaded = Wallet.load(wallet)
        password = resolve_password(str(password_file) if password_file else None, prompt=True)
        return loaded.coldkey(password)


class _Reporter:
    def info(self, message: str) -> None:
        console.print(message, highlight=False)

    @contextlib.contextmanager
    def status(self, message: str) -> Iterator[None]:
        with console.status(message):
            yield


# -- start ------------------------------------------------------------------------------------


@app.command()
def start(
    wallet: WalletOption = None,
    dev_key: Annotated[
        str | None,
        typer.Option(
            "--dev-key", help="Dev network only: coldkey from_name(NAME), hotkey NAME/hot."
        ),
    ] = None,
    node: Annotated[
        str, typer.Option("--node", envvar=NODE_ENV, help="URL of a ledger node's API.")
    ] = DEFAULT_URL,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on (0: any free port).")] = 8000,
    data_dir: Annotated[
        Path | None,
        typer.Option("--data-dir", help="Keys and usage. Default: $AGORA_HOME/gateway."),
    ] = None,
    config: Annotated[
        Path | None, typer.Option("--config", help="A TOML file of settings (docs/gateway.md).")
    ] = None,
    register: Annotated[
        bool,
        typer.Option(
            "--register/--no-register",
            help="Register the hotkey on each subnet served (--no-register: miners must --allow "
            "it).",
        ),
    ] = True,
    max_burn: Annotated[
        str | None, typer.Option(help="Refuse to register if the burn is above this (tokens).")
    ] = None,
    float_tokens: Annotated[
        str | None,
        typer.Option(
            "--float",
            help="Keep this many tokens in the hotkey's account for miner channels, moved from "
            "the coldkey at start (default: 100 with --dev-key, else 0).",
        ),
    ] = None,
    serve: Annotated[
        list[str] | None,
        typer.Option(
            "--serve",
            help="NAME=NETUID: serve this built-in model (minilm, tiny-llm) from that subnet "
            "(repeatable; default: the config's models, else minilm=1 and tiny-llm=2).",
        ),
    ] = None,
    password_file: PasswordOption = None,
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error.")] = "info",
) -> None:
    """Run a gateway until Ctrl-C or SIGTERM.

    Registers the gateway's hotkey on each subnet it serves (the burn is paid by the coldkey),
    then answers OpenAI-compatible requests, routing them to the subnets' miners, paying miners
    through channels and redeeming customers' escrow in batches.

        agora gateway start --dev-key gateway --node http://127.0.0.1:9944

        agora gateway start --wallet gw --config gateway.toml --port 8000
    """
    logging.basicConfig(
        level=getattr(logging, log_level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for name in ("httpx", "httpcore"):
        logging.getLogger(name).setLevel(logging.WARNING)
    if (wallet is None) == (dev_key is None):
        raise _fail("say whose keys run the gateway: --wallet NAME, or --dev-key NAME")
    from agora.gateway.config import load_config

    if data_dir is None:
        from agora.wallet import resolve_root

        data_dir = resolve_root() / "gateway"
    float_units = _tokens("--float", float_tokens)
    if float_units is None:
        float_units = parse_amount("100") if dev_key is not None else None
    with _friendly_errors():
        settings = load_config(
            config,
            node_url=node,
            host=host,
            port=port,
            data_dir=data_dir,
            max_burn=_tokens("--max-burn", max_burn),
            float_target=float_units,
            models=_served(serve),
            **({} if register else {"register": False}),
        )
    hotkey: Keypair
    coldkey: Callable[[], Keypair]
    if dev_key is not None:
        name = dev_key
        hotkey = Keypair.from_name(name + "/hot")

        def coldkey() -> Keypair:
            return Keypair.from_name(name)

    else:
        from agora.wallet import Wallet, resolve_password

        assert wallet is not None
        with _friendly_errors():
            loaded = Wallet.load(wallet)
            password = resolve_password(str(password_file) if password_file else None, prompt=True)
            hotkey = loaded.hotkey(password)

        def coldkey() -> Keypair:
            return loaded.coldkey(password)

    code = _run(_start(settings, hotkey, coldkey, log_level))
    raise typer.Exit(code)


def _served(serve: list[str] | None) -> tuple[Any, ...] | None:
    """``--serve minilm=1 --serve tiny-llm=3`` as model routes (None: not given)."""
    if not serve:
        return None
    from dataclasses import replace

    from agora.gateway.config import DEFAULT_MODELS

    known = {route.name: route for route in DEFAULT_MODELS}
    routes = []
    for item in serve:
        name, _, netuid = item.partition("=")
        if name not in known or not netuid.isdigit():
            raise _fail(
                f"--serve {item!r}: write NAME=NETUID with NAME one of {', '.join(known)} (other "
                "models go in --config)"
            )
        routes.append(replace(known[name], netuid=int(netuid)))
    return tuple(routes)


async def _start(settings: Any, hotkey: Keypair, coldkey: Callable[[], Keypair], level: str) -> int:
    from agora.gateway.service import Gateway

    with _friendly_errors():
        gateway = await Gateway.create(settings, hotkey, coldkey=coldkey, reporter=_Reporter())
    models = ", ".join(f"{r.name} (subnet {r.netuid})" for r in settings.models)
    console.print(
        f"[green]gateway[/green] at [bold]{gateway.url}/v1[/bold] (OpenAI-compatible) as "
        f"{hotkey.address}, serving {models}. Ctrl-C stops.",
        highlight=False,
    )
    code = await gateway.serve(log_level="info" if level.lower() == "debug" else "warning")
    console.print("gateway stopped")
    return code


# -- keys -------------------------------------------------------------------------------------


@keys_app.command("new")
def keys_new(
    deposit: Annotated[str, typer.Option("--deposit", help="Tokens to lock in the escrow.")],
    wallet: WalletOption = None,
    dev_key: DevKeyOption = None,
    gateway: GatewayOption = DEFAULT_GATEWAY,
    node: NodeOption = None,
    label: Annotated[str, typer.Option(help="A name for the key.")] = "",
    rpm: Annotated[float | None, typer.Option(help="Requests per minute allowed.")] = None,
    burst: Annotated[int | None, typer.Option(help="Requests allowed at once.")] = None,
    daily_limit: Annotated[
        str | None, typer.Option("--daily-limit", help="Tokens the key may spend per UTC day.")
    ] = None,
    timeout_blocks: Annotated[
        int, typer.Option(help="Blocks before you may close the escrow and take back the rest.")
    ] = 1_000_000,
    password_file: PasswordOption = None,
    as_json: JsonOption = False,
) -> None:
    """Open an escrow channel to the gateway and turn it into an API key (shown once).

    The channel (payee and signer: the gateway) is opened by a transaction your coldkey signs;
    the gateway then signs its own vouchers against it, up to the deposit, for what you use.
    Check every charge against the miners' receipts (`agora gateway usage`).

        agora gateway keys new --wallet alice --deposit 10
    """
    from agora.gateway.keys import GatewayAccount

    units = _tokens("--deposit", deposit)
    assert units is not None
    payer = _coldkey(wallet, dev_key, password_file)

    async def go() -> dict[str, Any]:
        async with GatewayAccount(gateway, payer, node_url=node) as account:
            with console.status("opening the escrow channel (waiting for a block)…"):
                return await account.create_key(
                    units,
                    label=label,
                    timeout_blocks=timeout_blocks,
                    rate_limit_rpm=rpm,
                    burst=burst,
                    daily_spend_limit=_tokens("--daily-limit", daily_limit),
                )

    with _friendly_errors():
        key = _run(go())
    if as_json:
        typer.echo(json.dumps(key))
        return
    out.print(f"[bold green]{key['key']}[/bold green]", highlight=False)
    console.print(
        f"key {key['key_id']} on channel {key['channel']}: {format_amount(key['deposit'])} tokens "
        f"in escrow. This is the only time the key is shown: store it now.\n"
        f"Use it:  OPENAI_BASE_URL={gateway.rstrip('/')}/v1 OPENAI_API_KEY=<the key>",
        highlight=False,
    )


@keys_app.command("list")
def keys_list(
    wallet: WalletOption = None,
    dev_key: DevKeyOption = None,
    gateway: GatewayOption = DEFAULT_GATEWAY,
    password_file: PasswordOption = None,
    as_json: JsonOption = False,
) -> None:
    """Your keys at a gateway: escrow deposit, spent, redeemed on the ledger, available.

    Example:

        agora gateway keys list --wallet alice --gateway http://127.0.0.1:8000
    """
    from agora.gateway.keys import GatewayAccount

    payer = _coldkey(wallet, dev_key, password_file)

    async def go() -> list[dict[str, Any]]:
        async with GatewayAccount(gateway, payer) as account:
            return await account.keys()

    with _friendly_errors():
        keys = _run(go())
    if as_json:
        typer.echo(json.dumps(keys))
        return
    table = Table(title=f"keys of {payer.address[:16]}… at {gateway}")
    for column in (
        "key",
        "label",
        "channel",
        "deposit",
        "spent",
        "redeemed",
        "available",
        "blocks left",
        "state",
    ):
        table.add_column(column)
    for key in keys:
        state = "revoked" if key["revoked"] else "closed" if key["closed"] else "active"
        table.add_row(
            key["key_id"],
            key["label"],
            str(key["channel"]),
            format_amount(key["deposit"]),
            format_amount(key["spent"]),
            format_amount(key["redeemed"]),
            format_amount(key["available"]),
            str(key["blocks_left"]),
            state,
        )
    out.print(table)


@keys_app.command("top-up")
def keys_top_up(
    key: Annotated[str, typer.Option("--key", help="The key id (key_...) from `keys list`.")],
    amount: Annotated[str, typer.Option("--amount", help="Tokens to add to the escrow.")] = "0",
    extend: Annotated[int, typer.Option(help="Blocks to push the escrow's expiry.")] = 0,
    wallet: WalletOption = None,
    dev_key: DevKeyOption = None,
    gateway: GatewayOption = DEFAULT_GATEWAY,
    node: NodeOption = None,
    password_file: PasswordOption = None,
) -> None:
    """Add tokens to a key's escrow (and/or push its expiry); usable at once.

    Examples:

        agora gateway keys top-up --key key_0123abcd4567ef89 --amount 5 --wallet alice

        agora gateway keys top-up --key key_0123abcd4567ef89 --extend 1000 --dev-key alice
    """
    from agora.gateway.keys import GatewayAccount

    units = _tokens("--amount", amount) or 0
    if units == 0 and extend == 0:
        raise _fail("give --amount TOKENS, --extend BLOCKS, or both")
    payer = _coldkey(wallet, dev_key, password_file)

    async def go() -> dict[str, Any]:
        async with GatewayAccount(gateway, payer, node_url=node) as account:
            with console.status("topping up (waiting for a block)…"):
                return await account.top_up(key, units, extend)

    with _friendly_errors():
        result = _run(go())
    console.print(
        f"{key}: deposit {format_amount(result['deposit'])}, available "
        f"{format_amount(result['available'])} tokens, expires at block {result['expires_at']}",
        highlight=False,
    )


@keys_app.command("revoke")
def keys_revoke(
    key: Annotated[str, typer.Option("--key", help="The key id (key_...).")],
    wallet: WalletOption = None,
    dev_key: DevKeyOption = None,
    gateway: GatewayOption = DEFAULT_GATEWAY,
    password_file: PasswordOption = None,
) -> None:
    """Stop a key for good (its escrow stays yours: close the channel after it expires).

    Example:

        agora gateway keys revoke --key key_0123abcd4567ef89 --wallet alice
    """
    from agora.gateway.keys import GatewayAccount

    payer = _coldkey(wallet, dev_key, password_file)

    async def go() -> dict[str, Any]:
        async with GatewayAccount(gateway, payer) as account:
            return await account.revoke(key)

    with _friendly_errors():
        _run(go())
    console.print(f"{key} revoked")


# -- usage and verification ------------------------------------------------------------------


@app.command()
def usage(
    key: Annotated[
        str | None,
        typer.Option("--key", help="The API key (sk-agora-...); or $AGORA_API_KEY."),
    ] = None,
    gateway: GatewayOption = DEFAULT_GATEWAY,
    limit: Annotated[int, typer.Option(help="Recent calls to show.", min=1, max=1000)] = 20,
    as_json: JsonOption = False,
) -> None:
    """What a key spent, on which miners and models, and its recent calls with their receipts.

    Example:

        agora gateway usage --key sk-agora-... --gateway http://127.0.0.1:8000 --limit 20
    """
    import httpx

    key = key or os.environ.get("AGORA_API_KEY") or os.environ.get("OPENAI_API_KEY")
    if not key:
        raise _fail("give --key sk-agora-... (or set AGORA_API_KEY)")
    try:
        response = httpx.get(
            gateway.rstrip("/") + "/v1/usage",
            params={"limit": limit},
            headers={"Authorization": f"Bearer {key}"},
            timeout=30,
        )
    except httpx.HTTPError as error:
        raise _fail(f"no gateway answers at {gateway}: {error!r}") from None
    data = response.json()
    if response.status_code != 200:
        raise _fail(data.get("error", {}).get("message", response.text))
    if as_json:
        typer.echo(json.dumps(data))
        return
    k, totals = data["key"], data["totals"]
    out.print(
        f"[bold]{k['key_id']}[/bold] ({k['label'] or 'no label'}), channel {k['channel']}: "
        f"deposit {format_amount(k['deposit'])}, spent {format_amount(k['spent'])}, redeemed on "
        f"the ledger {format_amount(k['redeemed'])}, available {format_amount(k['available'])} "
        f"tokens; {totals['requests']} requests, "
        f"{totals['prompt_tokens'] + totals['completion_tokens']} tokens",
        highlight=False,
    )
    table = Table(title="by miner")
    for column in ("miner", "requests", "tokens", "price", "charged"):
        table.add_column(column)
    for row in totals["by_miner"]:
        table.add_row(
            row["miner"][:16] + "…",
            str(row["requests"]),
            str(row["tokens"]),
            format_amount(row["price"]),
            format_amount(row["charged"]),
        )
    out.print(table)
    recent = Table(title="recent calls")
    for column in ("time (ms)", "model", "miner", "tokens", "charged"):
        recent.add_column(column)
    for row in data["recent"]:
        recent.add_row(
            str(row["ts_ms"]),
            row["model"],
            row["miner"][:12] + "…",
            str(row["prompt_tokens"] + row["completion_tokens"]),
            format_amount(row["charged"]),
        )
    out.print(recent)


@app.command()
def verify(
    response: Annotated[Path, typer.Argument(help="The gateway's answer: JSON, or a stream.")],
    request: Annotated[Path, typer.Option("--request", help="The OpenAI request you sent (JSON).")],
    gateway: Annotated[
        str | None, typer.Option("--gateway-address", help="Require this caller (hex).")
    ] = None,
) -> None:
    """Check a saved answer offline against its miner's receipt: signature, the request the
    miner was sent, the answer it signed, the price charged. Exit 0 valid, 1 invalid.

    Example:

        agora gateway verify answer.json --request request.json
    """
    from agora.gateway.verify import verify_response
    from agora.net.errors import InvalidReceipt

    try:
        receipt = verify_response(
            json.loads(request.read_text()), response.read_bytes(), gateway=gateway
        )
    except (OSError, ValueError, KeyError, InvalidReceipt) as error:
        raise _fail(f"invalid: {error}") from None
    out.print(
        f"[green]valid[/green]: {receipt.model_id} served by miner {receipt.miner} on subnet "
        f"{receipt.netuid}, {receipt.prompt_tokens}+{receipt.completion_tokens} tokens for "
        f"{format_amount(receipt.price)} tokens",
        highlight=False,
    )


def main() -> None:
    app(prog_name="agora gateway")


if __name__ == "__main__":  # pragma: no cover
    main()
