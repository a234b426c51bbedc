"""``agora provider ...`` and ``agora market ...``: rent out a machine, or rent one.

    agora provider start --dev-key carol --offer "cpu=2,mem=8GiB,gpu=0,price=0.02/h"
    agora market order --dev-key alice --need "cpu=1,mem=2GiB" --max-price 0.05/h --deposit 1
    agora market bids 1
    agora market lease 1 --dev-key alice
    agora market run 1 --dev-key alice --file train.py -- python train.py
    agora market logs 1 --dev-key alice --follow
    agora market close 1 --dev-key alice

Prices per hour are converted to the per-block prices the ledger uses with the node's block time
(see ``docs/market.md``). Signing: ``--wallet NAME`` (the coldkey; password from
``--password-file``, ``$AGORA_PASSWORD`` or a prompt) or, on the dev network, ``--dev-key NAME``.
Exit codes: 0 done, 1 refused or failed (one line on stderr says why).
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from agora.chain.client import DEFAULT_URL, LedgerClient
from agora.chain.errors import NodeError
from agora.chain.models import MarketBid
from agora.crypto.keys import Keypair
from agora.market.offers import format_price, parse_offer, parse_resources, per_block
from agora.market.tenant import ProviderError, Tenant
from agora.protocol.errors import AgoraError
from agora.protocol.market_state import MARKET
from agora.protocol.units import format_amount, parse_amount

__all__ = ["market_app", "provider_app"]

T = TypeVar("T")
console = Console()
err = Console(stderr=True)

provider_app = typer.Typer(
    name="provider",
    help="Rent out this machine on the compute market: bid, run leased jobs, get paid per block.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
market_app = typer.Typer(
    name="market",
    help="Rent CPUs and GPUs by the block: order, pick a bid, run a job, read its output.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

NodeOption = Annotated[
    str, typer.Option("--node", envvar="AGORA_NODE", help="URL of a ledger node's API.")
]
WalletOption = Annotated[
    str | None, typer.Option("--wallet", "-w", help="Wallet whose coldkey signs.")
]
DevKeyOption = Annotated[
    str | None, typer.Option("--dev-key", help="Sign with a well-known dev key (dev only).")
]
PasswordOption = Annotated[
    Path | None, typer.Option("--password-file", help="Read the wallet password from a file.")
]


@contextmanager
def _errors() -> Iterator[None]:
    try:
        yield
    except NodeError as error:
        err.print(f"error: {error.code}: {error}", highlight=False)
        raise typer.Exit(1) from None
    except ProviderError as error:
        err.print(f"error: provider: {error.code}: {error}", highlight=False)
        raise typer.Exit(1) from None
    except (AgoraError, ValueError, TimeoutError, OSError) as error:
        err.print(f"error: {error}", highlight=False)
        raise typer.Exit(1) from None


def _run(coro: Coroutine[Any, Any, T]) -> T:
    with _errors():
        return asyncio.run(coro)


def _signer(wallet: str | None, dev_key: str | None, password_file: Path | None) -> Keypair:
    if dev_key:
        return Keypair.from_name(dev_key)
    if not wallet:
        raise ValueError("say who signs: --wallet NAME (or --dev-key NAME on the dev network)")
    from agora.wallet import Wallet, resolve_password

    loaded = Wallet.load(wallet)
    return loaded.coldkey(
        resolve_password(str(password_file) if password_file else None, prompt=True)
    )


def _key(wallet: str | None, dev_key: str | None, password_file: Path | None) -> Keypair:
    with _errors():
        return _signer(wallet, dev_key, password_file)


# -- agora provider ----------------------------------------------------------------------------


@provider_app.command("start")
def provider_start(
    offer: Annotated[
        str,
        typer.Option(
            "--offer", help='Capacity and price, e.g. "cpu=2,mem=8GiB,gpu=0,price=0.02/h".'
        ),
    ],
    wallet: WalletOption = None,
    dev_key: DevKeyOption = None,
    password_file: PasswordOption = None,
    node: NodeOption = DEFAULT_URL,
    host: Annotated[str, typer.Option(help="Address the agent listens on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port of the agent (logs, files, runs).")] = 8700,
    public_url: Annotated[
        str | None, typer.Option(help="URL tenants reach the agent at (default: host:port).")
    ] = None,
    work_dir: Annotated[
        Path | None, typer.Option(help="Where leases run (default: ~/.agora/provider).")
    ] = None,
    stake: Annotated[str, typer.Option(help="Tokens to stake (slashed on failures).")] = str(
        MARKET.min_provider_stake // 10**9
    ),
    policy: Annotated[
        str, typer.Option(help="floor: bid your price; max: bid the order's max price.")
    ] = "floor",
    ray: Annotated[bool, typer.Option("--ray", help="Let tenants form Ray clusters.")] = False,
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error.")] = "info",
) -> None:
    """Register this machine as a provider and serve leases until Ctrl-C / SIGTERM.

    The agent bids on open orders it can serve, starts each leased job in its own working
    directory and process group with the lease's CPU and memory limits, streams its logs to the
    tenant, stops it when the lease ends, heartbeats, and answers hardware challenges.

        agora provider start --dev-key carol --offer "cpu=2,mem=8GiB,gpu=0,price=0.02/h"
    """
    from agora.market.provider import ProviderAgent, ProviderConfig

    logging.basicConfig(
        level=getattr(logging, log_level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)
    if policy not in ("floor", "max"):
        raise typer.BadParameter("--policy is floor or max")
    key = _key(wallet, dev_key, password_file)
    with _errors():
        parsed = parse_offer(offer)
        config = ProviderConfig(
            node_url=node,
            offer=parsed,
            work_dir=work_dir or Path.home() / ".agora" / "provider",
            host=host,
            port=port,
            public_url=public_url,
            stake=parse_amount(stake),
            policy=policy,  # type: ignore[arg-type]
            ray=ray,
        )

    async def main() -> int:
        agent = await ProviderAgent.create(config, key)
        description = parsed.describe(agent.block_time)

        def ready() -> None:
            err.print(
                f"provider {key.address[:12]}… serving at {config.url}: {description}",
                highlight=False,
            )

        return await agent.serve(on_ready=ready)

    raise typer.Exit(_run(main()))


@provider_app.command("info")
def provider_info(
    address: Annotated[str, typer.Argument(help="Provider address, or dev:NAME.")],
    node: NodeOption = DEFAULT_URL,
) -> None:
    """A provider's hardware, stake and record (leases served, failures, slashes, uptime).

    Example:

        agora provider info dev:charlie
    """
    if address.startswith("dev:"):
        address = Keypair.from_name(address[4:]).address

    async def main() -> None:
        async with LedgerClient(node) as ledger:
            provider = await ledger.market_provider(address)
        console.print_json(provider.model_dump_json())

    _run(main())


# -- agora market ------------------------------------------------------------------------------


async def _block_time(ledger: LedgerClient) -> float:
    return (await ledger.status()).block_time


@market_app.command("order")
def market_order(
    need: Annotated[str, typer.Option("--need", help='e.g. "cpu=1,mem=2GiB" (+gpu, region)')],
    max_price: Annotated[
        str, typer.Option("--max-price", help="Most you pay, e.g. 0.05/h (per lease).")
    ],
    deposit: Annotated[str, typer.Option("--deposit", help="Escrow per lease, in tokens.")],
    count: Annotated[int, typer.Option(help="Providers wanted (a Ray cluster).")] = 1,
    auditor: Annotated[
        str, typer.Option(help="Only providers this auditor attested (address).")
    ] = "",
    wallet: WalletOption = None,
    dev_key: DevKeyOption = None,
    password_file: PasswordOption = None,
    node: NodeOption = DEFAULT_URL,
) -> None:
    """Place an order; its escrow (deposit x count) is locked until leases use it.

    agora market order --dev-key alice --need "cpu=1,mem=2GiB" --max-price 0.05/h --deposit 1
    """
    key = _key(wallet, dev_key, password_file)

    async def main() -> None:
        async with Tenant(key, LedgerClient(node)) as tenant:
            block_time = await _block_time(tenant.ledger)
            price = per_block(max_price, block_time, round_up=False)
            amount = parse_amount(deposit)
            order_id = await tenant.order(parse_resources(need), price, amount, count, auditor)
            detail = await tenant.order_detail(order_id)
        blocks = amount // price
        console.print(
            f"order [bold]{order_id}[/]: up to {format_price(price, block_time)}, escrow "
            f"{format_amount(amount)} x {count} (at least {blocks} blocks, "
            f"{blocks * block_time:.0f} s)",
            highlight=False,
        )
        if detail.matching_providers == 0:
            err.print(
                "warning: no active provider can serve this order right now (resources, "
                "region, GPU model or auditor); it stays open for new providers",
                highlight=False,
            )
        else:
            console.print(f"{detail.matching_providers} providers could serve it; see bids with")
            console.print(f"  agora market bids {order_id}")

    _run(main())


def _bid_row(bid: MarketBid, block_time: float) -> list[str]:
    info = bid.provider_info
    hw = bid.hardware
    gpu = f" {hw.gpu}x{hw.gpu_model}" if hw.gpu else ""
    record = uptime = stake = "?"
    if info is not None:
        h = info.history
        record = f"{h.leases_served} ok / {h.leases_failed} failed, {h.slashed} slashed"
        uptime = "-" if h.uptime_ppm is None else f"{h.uptime_ppm / 10_000:.2f}%"
        stake = format_amount(info.stake)
    return [
        str(bid.id),
        bid.status,
        bid.provider[:12] + "…",
        format_price(bid.price, block_time),
        f"{hw.cpu} cpu {hw.mem} MiB{gpu} {hw.region}".strip(),
        stake,
        record,
        uptime,
    ]


@market_app.command("bids")
def market_bids(
    order: Annotated[int, typer.Argument(help="Order id.")],
    node: NodeOption = DEFAULT_URL,
) -> None:
    """An order's bids, cheapest first, with exactly the hardware each offers and each
    provider's record on the ledger (leases served, failures, slashes, uptime).

    Example:

        agora market bids 3
    """

    async def main() -> None:
        async with LedgerClient(node) as ledger:
            block_time = await _block_time(ledger)
            detail = await ledger.market_order(order)
        table = Table(title=f"order {order} ({detail.status}): bids")
        for column in (
            "bid",
            "status",
            "provider",
            "price",
            "hardware",
            "stake",
            "record",
            "uptime",
        ):
            table.add_column(column)
        for bid in detail.bid_details:
            table.add_row(*_bid_row(bid, block_time))
        console.print(table)
        if not detail.bid_details:
            err.print(
                f"no bids yet; {detail.matching_providers} active providers could serve it",
                highlight=False,
            )

    _run(main())


@market_app.command("orders")
def market_orders(
    status: Annotated[str | None, typer.Option(help="open, filled or cancelled")] = "open",
    node: NodeOption = DEFAULT_URL,
) -> None:
    """Orders on the market.

    Example:

        agora market orders --status open
    """

    async def main() -> None:
        async with LedgerClient(node) as ledger:
            block_time = await _block_time(ledger)
            orders = await ledger.market_orders(status=status)
        table = Table()
        for column in ("order", "tenant", "needs", "max price", "escrow", "bids", "providers"):
            table.add_column(column)
        for o in orders:
            n = o.need
            table.add_row(
                str(o.id),
                o.tenant[:12] + "…",
                f"{n.cpu} cpu {n.mem} MiB {n.gpu} gpu {n.gpu_model} {n.region}".strip(),
                format_price(o.max_price, block_time),
                f"{format_amount(o.deposit)} x {o.count}",
                str(len(o.bids)),
                str(o.matching_providers),
            )
        console.print(table)

    _run(main())


@market_app.command("lease")
def market_lease(
    bid: Annotated[int, typer.Argument(help="Bid id to accept.")],
    wallet: WalletOption = None,
    dev_key: DevKeyOption = None,
    password_file: PasswordOption = None,
    node: NodeOption = DEFAULT_URL,
) -> None:
    """Accept a bid: a lease opens and its escrow pays the provider every block.

    Example:

        agora market lease 5 --wallet bob
    """
    key = _key(wallet, dev_key, password_file)

    async def main() -> None:
        async with Tenant(key, LedgerClient(node)) as tenant:
            lease_id = await tenant.lease(bid)
            lease = await tenant.ledger.market_lease(lease_id)
        console.print(
            f"lease [bold]{lease_id}[/] with {lease.provider[:12]}… at {lease.provider_url}; "
            f"paid through block {lease.expires_at} unless closed",
            highlight=False,
        )

    _run(main())


@market_app.command("run")
def market_run(
    lease: Annotated[int, typer.Argument(help="Lease id.")],
    command: Annotated[list[str], typer.Argument(help="The command, after --.")],
    file: Annotated[
        list[Path] | None, typer.Option("--file", "-f", help="Upload into the working dir.")
    ] = None,
    follow: Annotated[bool, typer.Option("--follow", help="Stream the output until exit.")] = False,
    env: Annotated[
        list[str] | None, typer.Option("--env", "-e", help="KEY=VALUE for the job (repeat).")
    ] = None,
    wallet: WalletOption = None,
    dev_key: DevKeyOption = None,
    password_file: PasswordOption = None,
    node: NodeOption = DEFAULT_URL,
) -> None:
    """Run a command on the leased machine, in the lease's working directory and limits.

    agora market run 1 --dev-key alice --file train.py -- python train.py
    """
    key = _key(wallet, dev_key, password_file)
    with _errors():
        files = {path.name: path.read_bytes() for path in (file or [])}
        variables = dict(item.split("=", 1) for item in (env or []) if "=" in item)
        if len(variables) != len(env or []):
            raise ValueError("--env takes KEY=VALUE")

    async def main() -> None:
        async with Tenant(key, LedgerClient(node)) as tenant:
            await tenant.run(lease, list(command), files, variables)
            err.print(f"started on lease {lease}", highlight=False)
            if follow:
                await _follow(tenant, lease)

    _run(main())


async def _follow(tenant: Tenant, lease: int) -> None:
    offset = 0
    while True:
        chunk = await tenant.logs(lease, offset)
        sys.stdout.write(chunk["data"])
        sys.stdout.flush()
        offset = chunk["next"]
        if not chunk["running"] and not chunk["data"]:
            if chunk["exit_code"] is not None:
                err.print(f"exit code {chunk['exit_code']}", highlight=False)
            return
        await asyncio.sleep(0.3)


@market_app.command("logs")
def market_logs(
    lease: Annotated[int, typer.Argument(help="Lease id.")],
    follow: Annotated[bool, typer.Option("--follow", help="Keep streaming until exit.")] = False,
    wallet: WalletOption = None,
    dev_key: DevKeyOption = None,
    password_file: PasswordOption = None,
    node: NodeOption = DEFAULT_URL,
) -> None:
    """The job's output, from the provider's agent (requests signed by the tenant).

    Example:

        agora market logs 2 --follow --dev-key bob
    """
    key = _key(wallet, dev_key, password_file)

    async def main() -> None:
        async with Tenant(key, LedgerClient(node)) as tenant:
            if follow:
                await _follow(tenant, lease)
            else:
                sys.stdout.write((await tenant.logs(lease))["data"])

    _run(main())


@market_app.command("get")
def market_get(
    lease: Annotated[int, typer.Argument(help="Lease id.")],
    path: Annotated[str, typer.Argument(help="File in the lease's working directory.")],
    output: Annotated[Path | None, typer.Option("-o", help="Write here (default: stdout).")] = None,
    wallet: WalletOption = None,
    dev_key: DevKeyOption = None,
    password_file: PasswordOption = None,
    node: NodeOption = DEFAULT_URL,
) -> None:
    """Download a file the job wrote.

    Example:

        agora market get 2 result.txt -o result.txt --dev-key bob
    """
    key = _key(wallet, dev_key, password_file)

    async def main() -> None:
        async with Tenant(key, LedgerClient(node)) as tenant:
            data = await tenant.file(lease, path)
        if output is None:
            sys.stdout.buffer.write(data)
        else:
            output.write_bytes(data)

    _run(main())


@market_app.command("status")
def market_status(
    lease: Annotated[int, typer.Argument(help="Lease id.")],
    node: NodeOption = DEFAULT_URL,
) -> None:
    """A lease on the ledger: paid so far, escrow left, the block it runs out, why it closed.

    Example:

        agora market status 2
    """

    async def main() -> None:
        async with LedgerClient(node) as ledger:
            found = await ledger.market_lease(lease)
        console.print_json(found.model_dump_json())

    _run(main())


@market_app.command("close")
def market_close(
    lease: Annotated[int, typer.Argument(help="Lease id.")],
    wallet: WalletOption = None,
    dev_key: DevKeyOption = None,
    password_file: PasswordOption = None,
    node: NodeOption = DEFAULT_URL,
) -> None:
    """End a lease now: the provider is paid through the previous block, the rest comes back.

    Example:

        agora market close 2 --wallet bob
    """
    key = _key(wallet, dev_key, password_file)

    async def main() -> None:
        async with Tenant(key, LedgerClient(node)) as tenant:
            closed = await tenant.close(lease)
        console.print(
            f"lease {lease} closed in block {closed.closed_at}: paid {format_amount(closed.paid)}"
            f", refunded {format_amount(closed.refunded)}",
            highlight=False,
        )

    _run(main())


@market_app.command("challenge")
def market_challenge(
    lease: Annotated[int, typer.Argument(help="Lease id.")],
    size: Annotated[int, typer.Option(help="Matrix size, a power of two.")] = 64,
    wallet: WalletOption = None,
    dev_key: DevKeyOption = None,
    password_file: PasswordOption = None,
    node: NodeOption = DEFAULT_URL,
) -> None:
    """Challenge the lease's provider to a seeded matrix product (bond: 0.1 token).

    Example:

        agora market challenge 2 --dev-key bob --size 256
    """
    key = _key(wallet, dev_key, password_file)

    async def main() -> None:
        async with Tenant(key, LedgerClient(node)) as tenant:
            info = await tenant.challenge(lease, size)
        console.print(f"challenge posted in block {info.height}")

    _run(main())


@market_app.command("ray")
def market_ray(
    order: Annotated[int, typer.Argument(help="Order whose leases form the cluster.")],
    wallet: WalletOption = None,
    dev_key: DevKeyOption = None,
    password_file: PasswordOption = None,
    node: NodeOption = DEFAULT_URL,
) -> None:
    """Form a Ray cluster over the order's leases (providers started with --ray); prints the
    environment a job needs to join it (the head's address and the cluster's auth token).

    Example:

        agora market ray 3 --dev-key bob
    """
    key = _key(wallet, dev_key, password_file)

    async def main() -> None:
        async with Tenant(key, LedgerClient(node)) as tenant:
            address, token = await tenant.ray_cluster(order)
        console.print(f"RAY_ADDRESS={address}")
        console.print("RAY_AUTH_MODE=token")
        console.print(f"RAY_AUTH_TOKEN={token}")

    _run(main())
