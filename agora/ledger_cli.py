"""``agora tx``, ``agora subnet``, ``agora account``, ``agora dev`` and ``agora status``.

Every command talks to a node over its public HTTP API (``--node``, default the local dev node),
signs with a wallet (``--wallet NAME``, asking for its password) or, on the dev network, with a
well-known dev key (``--dev-key alice``), and waits for the transaction to be included, showing a
spinner, unless ``--no-wait``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from agora.chain.client import DEFAULT_URL, LedgerClient
from agora.chain.errors import NodeError, NodeUnreachable
from agora.crypto.keys import Keypair
from agora.crypto.signing import sign_transaction
from agora.protocol.codec import is_hex
from agora.protocol.errors import AgoraError
from agora.protocol.units import TOKEN, format_amount, parse_amount

console = Console()
NODE_ENV = "AGORA_NODE"

NodeOption = Annotated[
    str, typer.Option("--node", envvar=NODE_ENV, help="URL of a ledger node's API.")
]
WalletOption = Annotated[
    str | None, typer.Option("--wallet", "-w", help="Wallet that signs (asks for its password).")
]
DevKeyOption = Annotated[
    str | None,
    typer.Option("--dev-key", help="Sign with a well-known dev key (alice, bob, ...): dev only."),
]
PasswordFileOption = Annotated[
    Path | None, typer.Option("--password-file", help="Read the wallet password from a file.")
]
WaitOption = Annotated[
    bool, typer.Option("--wait/--no-wait", help="Wait until a block includes the transaction.")
]


@contextmanager
def friendly_errors() -> Iterator[None]:
    """Turn expected failures into one line that says what to do, and exit code 1."""
    try:
        yield
    except NodeUnreachable as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(1) from None
    except NodeError as error:
        typer.echo(f"error: {error.code}: {error}", err=True)
        raise typer.Exit(1) from None
    except (AgoraError, ValueError) as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(1) from None


def resolve_address(text: str, hotkey: bool = False) -> str:
    """An address, a wallet name (its coldkey, or hotkey), or dev:NAME for a dev key."""
    if is_hex(text, 64):
        return text
    if text.startswith("dev:"):
        return Keypair.from_name(text[4:]).address
    from agora.wallet import Wallet

    wallet = Wallet.load(text)
    return wallet.hotkey_address if hotkey else wallet.coldkey_address


def signer(
    wallet: str | None, dev_key: str | None, password_file: Path | None, hotkey: bool = False
) -> Keypair:
    if dev_key:
        return Keypair.from_name(dev_key)
    if not wallet:
        raise ValueError("say who signs: --wallet NAME (or --dev-key alice on the dev network)")
    from agora.wallet import Wallet, resolve_password

    loaded = Wallet.load(wallet)
    password = resolve_password(str(password_file) if password_file else None, prompt=True)
    return loaded.hotkey(password) if hotkey else loaded.coldkey(password)


async def _send(node: str, key: Keypair, kind: str, body: dict[str, Any], wait: bool) -> None:
    async with LedgerClient(node) as client:
        status = await client.status()
        nonce = await client.next_nonce(key.address)
        tx = sign_transaction(key, status.chain_id, kind, nonce, body)
        tx_hash = await client.submit(tx)
        if not wait:
            console.print(f"submitted [bold]{kind}[/] {tx_hash}")
            return
        with console.status(f"waiting for a block to include {tx_hash[:12]}…"):
            info = await client.wait_for_tx(tx_hash, timeout=max(30.0, 5 * status.block_time))
        if info.status == "included":
            console.print(f"[green]included[/] {kind} in block {info.height}  ({tx_hash})")
        else:
            raise ValueError(f"rejected: {info.code}: {info.message}")


def send(node: str, key: Keypair, kind: str, body: dict[str, Any], wait: bool) -> None:
    with friendly_errors():
        asyncio.run(_send(node, key, kind, body, wait))


# -- agora tx ------------------------------------------------------------------------------

tx_app = typer.Typer(no_args_is_help=True)


@tx_app.command("transfer")
def transfer(
    to: Annotated[str, typer.Option("--to", help="Address, wallet name, or dev:NAME.")],
    amount: Annotated[str, typer.Option("--amount", help="Tokens, e.g. 1.5")],
    wallet: WalletOption = None,
    dev_key: DevKeyOption = None,
    password_file: PasswordFileOption = None,
    node: NodeOption = DEFAULT_URL,
    wait: WaitOption = True,
) -> None:
    """Send tokens. The balance shows up in the next block.

    agora tx transfer --wallet alice --to bob --amount 1.5
    agora tx transfer --dev-key alice --to 3f2a…(64 hex) --amount 10
    """
    with friendly_errors():
        body = {"to": resolve_address(to), "amount": parse_amount(amount)}
        key = signer(wallet, dev_key, password_file)
    send(node, key, "transfer", body, wait)


def _stake_command(kind: str):  # type: ignore[no-untyped-def]
    def command(
        hotkey: Annotated[str, typer.Option("--hotkey", help="Hotkey address or wallet name.")],
        amount: Annotated[str, typer.Option("--amount", help="Tokens, e.g. 100")],
        wallet: WalletOption = None,
        dev_key: DevKeyOption = None,
        password_file: PasswordFileOption = None,
        node: NodeOption = DEFAULT_URL,
        wait: WaitOption = True,
    ) -> None:
        with friendly_errors():
            body = {"hotkey": resolve_address(hotkey, hotkey=True), "amount": parse_amount(amount)}
            key = signer(wallet, dev_key, password_file)
        send(node, key, kind, body, wait)

    return command


stake = _stake_command("add_stake")
stake.__doc__ = """Stake tokens behind a hotkey (yours, or a validator's: delegation).

        agora tx stake --wallet alice --hotkey alice --amount 100
    """
unstake = _stake_command("remove_stake")
unstake.__doc__ = """Return staked tokens to your free balance.

    From a hotkey registered on a subnet the tokens unbond first: they stay slashable and reach
    your balance after the subnets' dispute_window + dispute_period blocks (see `agora account
    show`). From a hotkey registered nowhere they return at once.

        agora tx unstake --wallet alice --hotkey alice --amount 40
    """
tx_app.command("stake")(stake)
tx_app.command("unstake")(unstake)


# -- agora subnet --------------------------------------------------------------------------

subnet_app = typer.Typer(no_args_is_help=True)


@subnet_app.command("create")
def subnet_create(
    wallet: WalletOption = None,
    dev_key: DevKeyOption = None,
    password_file: PasswordFileOption = None,
    node: NodeOption = DEFAULT_URL,
    wait: WaitOption = True,
) -> None:
    """Create a subnet; your coldkey locks the chain's lock cost and owns it.

    agora subnet create --wallet alice
    """
    with friendly_errors():
        key = signer(wallet, dev_key, password_file)
    send(node, key, "create_subnet", {}, wait)


@subnet_app.command("register")
def subnet_register(
    netuid: Annotated[int, typer.Option("--netuid", help="Subnet to join.")],
    wallet: WalletOption = None,
    hotkey: Annotated[
        str | None, typer.Option("--hotkey", help="Hotkey to register (default: the wallet's).")
    ] = None,
    dev_key: DevKeyOption = None,
    password_file: PasswordFileOption = None,
    node: NodeOption = DEFAULT_URL,
    wait: WaitOption = True,
) -> None:
    """Register a hotkey on a subnet by burning the current price (see `agora subnet list`).

    agora subnet register --wallet bob --netuid 1
    """
    with friendly_errors():
        if hotkey is None:
            if dev_key:
                hotkey = f"dev:{dev_key}/hot"
            elif wallet:
                hotkey = wallet
            else:
                raise ValueError("say which hotkey: --wallet NAME or --hotkey ADDRESS")
        body = {"netuid": netuid, "hotkey": resolve_address(hotkey, hotkey=True)}
        key = signer(wallet, dev_key, password_file)
    send(node, key, "register", body, wait)


@subnet_app.command("serve")
def subnet_serve(
    netuid: Annotated[int, typer.Option("--netuid")],
    ip: Annotated[str, typer.Option("--ip")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port")] = 8091,
    protocol: Annotated[str, typer.Option("--protocol")] = "http",
    wallet: WalletOption = None,
    dev_key: DevKeyOption = None,
    password_file: PasswordFileOption = None,
    node: NodeOption = DEFAULT_URL,
    wait: WaitOption = True,
) -> None:
    """Announce where your hotkey serves (signed by the hotkey).

    agora subnet serve --wallet bob --netuid 1 --ip 127.0.0.1 --port 8091
    """
    with friendly_errors():
        key = (
            Keypair.from_name(dev_key + "/hot")
            if dev_key
            else signer(wallet, None, password_file, hotkey=True)
        )
    send(node, key, "serve", {"netuid": netuid, "ip": ip, "port": port, "protocol": protocol}, wait)


def _int_list(text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ValueError(f"{text!r} is not a comma-separated list of integers") from None


@subnet_app.command("weights")
def subnet_weights(
    netuid: Annotated[int, typer.Option("--netuid")],
    uids: Annotated[str, typer.Option("--uids", help="Comma-separated uids, e.g. 1,2,3")],
    weights: Annotated[str, typer.Option("--weights", help="Comma-separated u16 weights")],
    wallet: WalletOption = None,
    dev_key: DevKeyOption = None,
    password_file: PasswordFileOption = None,
    node: NodeOption = DEFAULT_URL,
    wait: WaitOption = True,
) -> None:
    """Set weights on a subnet (signed by the hotkey; needs a validator permit).

    agora subnet weights --wallet val --netuid 1 --uids 1,2 --weights 3,1
    """
    with friendly_errors():
        key = (
            Keypair.from_name(dev_key + "/hot")
            if dev_key
            else signer(wallet, None, password_file, hotkey=True)
        )
        body = {"netuid": netuid, "uids": _int_list(uids), "weights": _int_list(weights)}
    send(node, key, "set_weights", body, wait)


@subnet_app.command("set")
def subnet_set(
    netuid: Annotated[int, typer.Option("--netuid")],
    changes: Annotated[list[str], typer.Argument(help="name=value pairs, e.g. tempo=20")],
    wallet: WalletOption = None,
    dev_key: DevKeyOption = None,
    password_file: PasswordFileOption = None,
    node: NodeOption = DEFAULT_URL,
    wait: WaitOption = True,
) -> None:
    """Change hyperparameters of a subnet you own (each within its bounds).

    agora subnet set --wallet alice --netuid 1 tempo=20 commit_reveal_enabled=true
    """
    with friendly_errors():
        parsed: dict[str, int | bool] = {}
        for change in changes:
            name, _, value = change.partition("=")
            if not value:
                raise ValueError(f"{change!r}: write name=value")
            lowered = value.strip().lower()
            parsed[name.strip()] = (
                (lowered == "true") if lowered in ("true", "false") else int(value)
            )
        key = signer(wallet, dev_key, password_file)
    send(node, key, "set_hyperparams", {"netuid": netuid, "changes": parsed}, wait)


@subnet_app.command("list")
def subnet_list(node: NodeOption = DEFAULT_URL) -> None:
    """List subnets with their size, tempo and registration price.

    agora subnet list
    """

    async def fetch() -> Any:
        async with LedgerClient(node) as client:
            return await client.subnets()

    with friendly_errors():
        subnets = asyncio.run(fetch())
    table = Table(title="Subnets")
    for column in ("netuid", "owner", "neurons", "tempo", "burn", "pending emission"):
        table.add_column(column, justify="right" if column != "owner" else "left")
    for s in subnets:
        table.add_row(
            str(s.netuid),
            s.owner[:12] + "…",
            f"{s.neurons}/{s.max_uids}",
            str(s.tempo),
            format_amount(s.registration_burn),
            format_amount(s.pending_emission),
        )
    console.print(table)


def _pct(value: float) -> str:
    return f"{value:.3f}"


def _short_amount(units: int) -> str:
    """Tokens with 3 decimals, for tables (the exact figure is in the API)."""
    return f"{units / TOKEN:,.3f}"


@subnet_app.command("show")
def subnet_show(
    netuid: Annotated[int, typer.Argument(help="The subnet's netuid.")],
    node: NodeOption = DEFAULT_URL,
) -> None:
    """Print a subnet's metagraph: stake, incentive, dividends, trust and emission per uid.

    agora subnet show 1
    """

    async def fetch() -> Any:
        async with LedgerClient(node) as client:
            return await client.metagraph(netuid)

    with friendly_errors():
        meta = asyncio.run(fetch())
    table = Table(title=f"Subnet {netuid} at block {meta.block}", pad_edge=False)
    columns = (
        "uid",
        "hotkey",
        "stake",
        "V",
        "inc",
        "div",
        "trust",
        "cons",
        "vtrust",
        "emission",
        "endpoint",
    )
    for column in columns:
        table.add_column(
            column, justify="left" if column in ("hotkey", "endpoint") else "right", no_wrap=True
        )
    for n in meta.neurons:
        endpoint = f"{n.endpoint.ip}:{n.endpoint.port}" if n.endpoint else "-"
        table.add_row(
            str(n.uid),
            n.hotkey[:8],
            _short_amount(n.stake),
            "✓" if n.validator_permit else "",
            _pct(n.incentive_float),
            _pct(n.dividends_float),
            _pct(n.trust_float),
            _pct(n.consensus_float),
            _pct(n.validator_trust_float),
            _short_amount(n.emission),
            endpoint,
        )
    console.print(table)


# -- agora account, agora dev, agora status --------------------------------------------------

account_app = typer.Typer(no_args_is_help=True)


@account_app.command("show")
def account_show(
    who: Annotated[str, typer.Argument(help="Address, wallet name, or dev:NAME.")],
    node: NodeOption = DEFAULT_URL,
) -> None:
    """Balance, nonce and stake of an account.

    agora account show alice
    """

    async def fetch(address: str) -> Any:
        async with LedgerClient(node) as client:
            return await client.account(address)

    with friendly_errors():
        account = asyncio.run(fetch(resolve_address(who)))
    table = Table(title="Account", show_header=False)
    table.add_row("address", account.address)
    table.add_row("balance", format_amount(account.balance))
    table.add_row("staked (as coldkey)", format_amount(account.total_staked))
    table.add_row("stake behind (as hotkey)", format_amount(account.stake_behind))
    for entry in account.unbonding:  # removed stake, slashable until paid at its block
        table.add_row(
            "unbonding",
            f"{format_amount(entry.amount)} from {entry.hotkey[:12]}…, paid in block "
            f"{entry.release_at}",
        )
    table.add_row("next nonce", str(account.pending_nonce))
    for reg in account.registrations:
        table.add_row("registered", f"subnet {reg.netuid} uid {reg.uid}")
    console.print(table)


dev_app = typer.Typer(no_args_is_help=True)


@dev_app.command("fund")
def dev_fund(
    who: Annotated[str, typer.Argument(help="Address, wallet name, or dev:NAME.")],
    amount: Annotated[str, typer.Argument(help="Tokens")] = "100",
    node: NodeOption = DEFAULT_URL,
    wait: WaitOption = True,
) -> None:
    """Send tokens from the dev network's faucet (its key is public: dev networks only).

    agora dev fund alice 100
    """
    with friendly_errors():
        body = {"to": resolve_address(who), "amount": parse_amount(amount)}
    send(node, Keypair.from_name("faucet"), "transfer", body, wait)


account_app.command("balance", hidden=True)(account_show)
