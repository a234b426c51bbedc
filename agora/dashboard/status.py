"""``agora status``: the network on one screen, in the terminal.

What the dashboard's overview shows, for someone with a shell: the chain (height, block time,
how fresh the head is, issuance against the cap, the next halving), every subnet (neurons,
validators, the next epoch, what it pays, its top earner, validators' public APIs), and, when
a local network started by ``agora up`` is found (``<data-dir>/devnet.json``), whether each of
its services answers, with the gateway's traffic.

Everything is read from public APIs (the node's, the gateway's, validators'), the same way the
dashboard reads them; a service that does not answer is shown as down, never as an error.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from rich import box
from rich.console import Console, Group
from rich.panel import Panel
from rich.table import Table

from agora.chain.client import DEFAULT_URL, LedgerClient
from agora.chain.models import Metagraph, Status, Subnet
from agora.dashboard.validators import ValidatorDirectory
from agora.protocol.units import format_amount

__all__ = ["status"]

PROBE_TIMEOUT = 1.5


def _short(address: str) -> str:
    return f"{address[:8]}…{address[-4:]}"


def _tokens(units: int, decimals: int = 2) -> str:
    """Tokens with thousands separators, truncated to ``decimals`` (integers, no float)."""
    whole, _, frac = format_amount(units).partition(".")
    whole = f"{int(whole):,}"
    return whole if decimals == 0 else f"{whole}.{(frac + '0' * decimals)[:decimals]}"


async def _probe(client: httpx.AsyncClient, url: str) -> tuple[bool, Any]:
    try:
        response = await client.get(url, timeout=PROBE_TIMEOUT)
    except httpx.HTTPError as error:
        return False, type(error).__name__
    if response.status_code != 200:
        return False, f"HTTP {response.status_code}"
    try:
        return True, response.json()
    except ValueError:
        return True, None


async def _gather(node: str, devnet: dict[str, Any] | None) -> dict[str, Any]:
    async with LedgerClient(node) as ledger, httpx.AsyncClient() as http:
        info = await ledger.status()
        summaries = await ledger.subnets()
        subnets: list[Subnet] = await asyncio.gather(*(ledger.subnet(s.netuid) for s in summaries))
        graphs: list[Metagraph] = await asyncio.gather(
            *(ledger.metagraph(s.netuid) for s in summaries)
        )
        directory = ValidatorDirectory(node, http)
        validators = await asyncio.gather(*(directory.read(s.netuid) for s in summaries))
        services: list[tuple[str, str, bool, Any]] = []
        if devnet:
            checks: list[tuple[str, str, str]] = []
            if devnet.get("dashboard"):
                checks.append(
                    ("dashboard", devnet["dashboard"], devnet["dashboard"] + "/config.json")
                )
            if devnet.get("gateway"):
                base = str(devnet["gateway"]).removesuffix("/v1")
                checks.append(("gateway", base, base + "/v1/gateway/stats"))
            for name, url in sorted((devnet.get("miners") or {}).items()):
                checks.append((f"miner {name}", url, url + "/health"))
            for netuid, url in sorted((devnet.get("validator_apis") or {}).items()):
                checks.append((f"validator SN{netuid}", url, url + "/v1/validator"))
            results = await asyncio.gather(*(_probe(http, probe) for _, _, probe in checks))
            services = [
                (name, url, ok, data)
                for (name, url, _), (ok, data) in zip(checks, results, strict=True)
            ]
    return {
        "info": info,
        "subnets": list(zip(subnets, graphs, validators, strict=True)),
        "services": services,
    }


def _chain_table(info: Status, node: str) -> Table:
    table = Table(box=None, show_header=False, pad_edge=False, padding=(0, 2, 0, 0))
    table.add_column(style="dim")
    table.add_column()
    age = max(0.0, time.time() - info.head_timestamp / 1000)
    fresh = "green" if age < max(5.0, 5 * info.block_time) else "red"
    table.add_row(
        "node", f"{node}  ({info.role}{', from ' + info.upstream if info.upstream else ''})"
    )
    table.add_row(
        "height",
        f"[bold]{info.height:,}[/]  block every {info.block_time:g} s, "
        f"head [{fresh}]{age:.0f} s ago[/]",
    )
    share = info.total_issuance / info.supply_cap if info.supply_cap else 0.0
    table.add_row(
        "issuance",
        f"{_tokens(info.total_issuance)} of {_tokens(info.supply_cap, 0)} tokens "
        f"({share:.2%}), {_tokens(info.total_burned)} burned",
    )
    halving = (
        f", halves at {_tokens(info.next_halving_at, 0)} issued"
        if info.next_halving_at is not None
        else ""
    )
    table.add_row("block reward", f"{_tokens(info.block_reward, 4)} tokens{halving}")
    table.add_row("mempool", f"{info.mempool_size} pending")
    return table


def _subnets_table(
    rows: list[tuple[Subnet, Metagraph, tuple[int, dict[str, Any]]]], height: int
) -> Table:
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
    for column, right in (
        ("subnet", False),
        ("neurons", True),
        ("permits", True),
        ("serving", True),
        ("next epoch", True),
        ("pending", True),
        ("top earner (last epoch)", False),
        ("validator APIs", False),
    ):
        table.add_column(column, justify="right" if right else "left")
    for subnet, graph, (code, found) in rows:
        permits = sum(1 for n in graph.neurons if n.validator_permit)
        serving = sum(1 for n in graph.neurons if n.endpoint is not None)
        top = max(graph.neurons, key=lambda n: (n.emission, -n.uid), default=None)
        earner = (
            f"uid {top.uid} {_short(top.hotkey)} {_tokens(top.emission, 4)}"
            if top is not None and top.emission > 0
            else "[dim]none yet[/]"
        )
        apis = found.get("validators", []) if code == 200 else []
        up = [v for v in apis if not v.get("error")]
        measured = sum(len(v.get("scores", [])) for v in up)
        api_text = (
            f"{len(up)} up, {measured} miners scored" if up else "[dim]none announced[/]"
        ) + (f", [red]{len(apis) - len(up)} down[/]" if len(apis) > len(up) else "")
        table.add_row(
            f"SN{subnet.netuid}",
            f"{len(graph.neurons)}/{subnet.max_uids}",
            str(permits),
            str(serving),
            f"in {max(0, subnet.next_epoch_block - height)} blocks",
            _tokens(subnet.pending_emission, 4),
            earner,
            api_text,
        )
    return table


def _services_table(services: list[tuple[str, str, bool, Any]]) -> Table:
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
    table.add_column("service")
    table.add_column("url")
    table.add_column("state")
    table.add_column("detail")
    for name, url, ok, data in services:
        detail = ""
        if ok and name == "gateway" and isinstance(data, dict):
            requests = data.get("requests", {})
            detail = (
                f"{requests.get('total', 0)} requests, {requests.get('errors', 0)} errors, "
                f"{format_amount(data.get('spend_today', {}).get('total', 0))} spent today"
            )
        elif ok and name.startswith("miner") and isinstance(data, dict):
            detail = f"{data.get('model', '')} served {data.get('served', '?')}"
        elif ok and name.startswith("validator") and isinstance(data, dict):
            detail = f"round {data.get('round', 0)}, reference {data.get('model', '?')}"
        elif not ok:
            detail = str(data)
        table.add_row(name, url, "[green]up[/]" if ok else "[red]down[/]", detail)
    return table


def _load_devnet(data_dir: Path) -> dict[str, Any] | None:
    path = data_dir / "devnet.json"
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def status(
    node: Annotated[
        str | None,
        typer.Option(
            "--node",
            envvar="AGORA_NODE",
            help=f"URL of a ledger node (default: the local network's, else {DEFAULT_URL}).",
            show_default=False,
        ),
    ] = None,
    data_dir: Annotated[
        Path,
        typer.Option(
            "--data-dir", help="Where `agora up` keeps the local network (reads devnet.json)."
        ),
    ] = Path(".agora"),
) -> None:
    """One screen about the network: chain, height, issuance, subnets, and the local services.

    Reads the node's public API (and, for a network started by `agora up`, checks that its
    dashboard, gateway and miners answer; the gateway's traffic and spend come from its
    public figures). Validators that announce a public API show how many miners they scored.

    Examples:

        agora status

        agora status --node http://10.0.0.5:9944
    """
    from agora.ledger_cli import friendly_errors

    devnet = _load_devnet(data_dir)
    url = (node or (devnet or {}).get("node") or DEFAULT_URL).rstrip("/")
    console = Console()
    if not console.is_terminal:  # piped: do not squeeze the tables into 80 columns
        console = Console(width=max(console.width, 160))
    with friendly_errors(), Console(stderr=True).status(f"reading the network at {url}…"):
        found = asyncio.run(_gather(url, devnet))
    info: Status = found["info"]
    parts: list[Any] = [_chain_table(info, url)]
    if found["subnets"]:
        parts.append(_subnets_table(found["subnets"], info.height))
    else:
        parts.append("[dim]no subnet yet: create one with `agora subnet create --dev-key alice`[/]")
    if found["services"]:
        parts.append(_services_table(found["services"]))
    hints = []
    if devnet and devnet.get("dashboard"):
        hints.append(f"watch it live: {devnet['dashboard']}")
    elif not devnet:
        hints.append("no local network here (devnet.json): `agora up` starts one")
    if hints:
        parts.append("[dim]" + " · ".join(hints) + "[/]")
    console.print(
        Panel(Group(*parts), title=f"Agora network [bold]{info.chain_id}[/]", expand=False)
    )
