"""``agora dispute ...`` (list, show, open, vote) and ``agora subnet audit NETUID``.

For validator operators: open a dispute against a miner's signed receipt, vote on others'
disputes, and read the numbers a subnet's spot checks run with. Disputes are signed by the
validator's *hotkey* (it needs a validator permit on the subnet); the deposit is paid from the
hotkey's own balance, so fund it first with ``agora tx transfer --to <hotkey>``.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from agora.chain.client import DEFAULT_URL, LedgerClient
from agora.chain.models import AuditReport, Dispute
from agora.ledger_cli import (
    DevKeyOption,
    NodeOption,
    PasswordFileOption,
    WaitOption,
    WalletOption,
    console,
    friendly_errors,
    resolve_address,
    send,
    signer,
)
from agora.protocol.disputes import EVIDENCE_KINDS
from agora.protocol.units import TOKEN, format_amount, parse_amount

dispute_app = typer.Typer(no_args_is_help=True)

JsonOption = Annotated[bool, typer.Option("--json", help="Print the node's JSON instead.")]


def _fetch(node: str, call: Any) -> Any:
    async def run() -> Any:
        async with LedgerClient(node) as client:
            return await call(client)

    with friendly_errors():
        return asyncio.run(run())


def _tokens(units: int) -> str:
    return format_amount(units)


@dispute_app.command("list")
def dispute_list(
    netuid: Annotated[int | None, typer.Option("--netuid", help="Only this subnet's.")] = None,
    miner: Annotated[
        str | None, typer.Option("--miner", help="Only against this miner (hotkey or wallet).")
    ] = None,
    status: Annotated[
        str | None, typer.Option("--status", help="open, upheld or rejected.")
    ] = None,
    limit: Annotated[int, typer.Option("--limit", help="At most this many.")] = 50,
    as_json: JsonOption = False,
    node: NodeOption = DEFAULT_URL,
) -> None:
    """List disputes, newest first: who accused which miner, the vote so far and the outcome.

    agora dispute list --status open
    agora dispute list --netuid 1 --miner 3f2a…(64 hex)
    """
    with friendly_errors():
        hotkey = resolve_address(miner, hotkey=True) if miner else None
    found: list[Dispute] = _fetch(
        node, lambda c: c.disputes(netuid=netuid, miner=hotkey, status=status, limit=limit)
    )
    if as_json:
        typer.echo(json.dumps([d.model_dump() for d in found], indent=2))
        return
    if not found:
        console.print("no disputes")
        return
    table = Table(title="Disputes", pad_edge=False)
    for column in ("id", "net", "status", "miner", "challenger", "votes", "deadline", "slashed"):
        table.add_column(column, no_wrap=True)
    for d in found:
        guilty = sum(1 for v in d.votes if v.guilty)
        table.add_row(
            str(d.id),
            str(d.netuid),
            d.status,
            d.miner[:12],
            d.challenger[:12],
            f"{guilty} guilty / {len(d.votes) - guilty} not",
            str(d.deadline),
            _tokens(d.slashed) if d.status == "upheld" else "-",
        )
    console.print(table)


@dispute_app.command("show")
def dispute_show(
    dispute_id: Annotated[int, typer.Argument(help="The dispute's id.")],
    as_json: JsonOption = False,
    node: NodeOption = DEFAULT_URL,
) -> None:
    """Show one dispute: receipt, evidence, each vote with its stake, and the outcome.

    agora dispute show 3
    """
    d: Dispute = _fetch(node, lambda c: c.dispute(dispute_id))
    if as_json:
        typer.echo(json.dumps(d.model_dump(), indent=2))
        return
    r = d.receipt
    console.print(f"[bold]dispute {d.id}[/] on subnet {d.netuid}: [bold]{d.status}[/]")
    console.print(f"  miner       {d.miner} (uid {d.miner_uid})")
    console.print(f"  challenger  {d.challenger}, deposit {_tokens(d.deposit)}")
    console.print(
        f"  receipt     {d.receipt_hash}  model {r.get('model_id')}  price {r.get('price')}  "
        f"decided by block {d.receipt_block}"
    )
    console.print(f"  evidence    {json.dumps(d.evidence)}")
    console.print(f"  opened      block {d.opened_at}; votes count until block {d.deadline}")
    for v in d.votes:
        verdict = "guilty" if v.guilty else "not guilty"
        note = "" if v.counts else "  (no permit now: not counted)"
        console.print(
            f"  vote        {v.hotkey[:12]} {verdict:<10} stake {_tokens(v.stake_now)} "
            f"(block {v.block}){note}"
        )
    if d.tally is not None:
        t = d.tally
        console.print(
            f"  tally       guilty {_tokens(t.guilty)} / not guilty {_tokens(t.not_guilty)} "
            f"of {_tokens(t.total)}; a side wins above {_tokens(t.needed)}"
        )
    else:
        console.print(f"  resolved    block {d.resolved_at}: {d.reason}")
        console.print(f"  slashed     {_tokens(d.slashed)} (burned {_tokens(d.burned)})")
        for p in d.payouts:
            console.print(f"  paid        {p.hotkey[:12]} {_tokens(p.amount)}")
        console.print(f"  deposit to  {d.deposit_to}")


@dispute_app.command("open")
def dispute_open(
    receipt: Annotated[
        Path,
        typer.Option(
            "--receipt",
            help="File with the miner's receipt: its JSON, a response carrying it, or a stream.",
        ),
    ],
    kind: Annotated[str, typer.Option("--kind", help=f"What failed: {', '.join(EVIDENCE_KINDS)}.")],
    reason: Annotated[str, typer.Option("--reason", help="One line: what you found.")],
    reference: Annotated[
        str | None,
        typer.Option("--reference", help="SHA-256 (hex) of your reference output, if any."),
    ] = None,
    netuid: Annotated[
        int | None, typer.Option("--netuid", help="Default: the receipt's subnet.")
    ] = None,
    wallet: WalletOption = None,
    dev_key: DevKeyOption = None,
    password_file: PasswordFileOption = None,
    node: NodeOption = DEFAULT_URL,
    wait: WaitOption = True,
) -> None:
    """Accuse a miner's receipt; your validator hotkey pays the deposit and votes guilty.

    Validators holding more than half of the subnet's validator stake must agree before the
    deadline for the miner to be slashed; otherwise the deposit goes to the miner.

    agora dispute open --wallet val --receipt answer.json --kind embedding --reason "cosine 0.1"
    """
    from agora.net.errors import InvalidReceipt
    from agora.net.receipts import read_receipt, verify_receipt

    with friendly_errors():
        try:
            parsed, _ = read_receipt(receipt.read_bytes())
            verify_receipt(parsed)
        except FileNotFoundError:
            raise ValueError(f"no receipt file at {receipt}") from None
        except InvalidReceipt as error:
            raise ValueError(f"{receipt}: {error}") from None
        evidence: dict[str, Any] = {"kind": kind, "reason": reason}
        if reference is not None:
            evidence["reference"] = reference
        key = signer(wallet, dev_key, password_file, hotkey=True)
    body = {
        "netuid": parsed.netuid if netuid is None else netuid,
        "receipt": parsed.to_json(),
        "evidence": evidence,
    }
    send(node, key, "dispute_open", body, wait)


@dispute_app.command("vote")
def dispute_vote(
    dispute_id: Annotated[int, typer.Argument(help="The dispute's id.")],
    guilty: Annotated[
        bool,
        typer.Option(
            "--guilty/--not-guilty", help="Your verdict after re-running the answer yourself."
        ),
    ],
    wallet: WalletOption = None,
    dev_key: DevKeyOption = None,
    password_file: PasswordFileOption = None,
    node: NodeOption = DEFAULT_URL,
    wait: WaitOption = True,
) -> None:
    """Vote on an open dispute with your validator hotkey (one vote, final).

    agora dispute vote 3 --guilty --wallet val
    agora dispute vote 3 --not-guilty --dev-key bob
    """
    with friendly_errors():
        key = signer(wallet, dev_key, password_file, hotkey=True)
    send(node, key, "dispute_vote", {"dispute_id": dispute_id, "guilty": guilty}, wait)


def subnet_audit(
    netuid: Annotated[int, typer.Argument(help="The subnet's netuid.")],
    reward: Annotated[
        str, typer.Option("--reward", help="R: what one answer pays, in tokens.")
    ] = "0.001",
    honest_cost: Annotated[
        str | None,
        typer.Option("--honest-cost", help="C: honest work per answer, tokens (default: R)."),
    ] = None,
    cheat_cost: Annotated[
        str, typer.Option("--cheat-cost", help="c: a cheat's cost per answer, in tokens.")
    ] = "0",
    detection: Annotated[
        float, typer.Option("--detection", help="d: probability an audit detects a cheat.")
    ] = 0.99,
    as_json: JsonOption = False,
    node: NodeOption = DEFAULT_URL,
) -> None:
    """Print the spot-check numbers a subnet runs with: audit rate p, slash, deposit, dispute
    period and window, and per neuron the honesty condition p >= (C - c) / (d (R + S)) with the
    stake it actually carries. A miner without stake is not deterred.

    agora subnet audit 1
    agora subnet audit 1 --reward 0.01 --honest-cost 0.008 --cheat-cost 0.001
    """
    with friendly_errors():
        if not 0 <= detection <= 1:
            raise ValueError("--detection is a probability between 0 and 1")
        economics = {
            "reward": parse_amount(reward),
            "cheat_cost": parse_amount(cheat_cost),
            "detection_ppm": round(detection * 1_000_000),
        }
        if honest_cost is not None:
            economics["honest_cost"] = parse_amount(honest_cost)
    report: AuditReport = _fetch(node, lambda c: c.audit_params(netuid, **economics))
    if as_json:
        typer.echo(json.dumps(report.model_dump(), indent=2))
        return
    p = report.params
    e = report.economics
    console.print(f"[bold]subnet {netuid}[/] spot checks at block {report.height}")
    console.print(f"  audit rate p      {p['audit_rate_ppm'] / 1e4:g}% of receipts")
    console.print(
        f"  slash             {p['slash_ppm'] / 1e4:g}% of the miner's stake, "
        f"{p['slash_burn_ppm'] / 1e4:g}% of it burned, the rest to the guilty voters"
    )
    console.print(f"  dispute deposit   {_tokens(p['dispute_deposit'])} tokens")
    console.print(f"  dispute deadline  {p['dispute_period']} blocks to reach a stake majority")
    console.print(f"  dispute window    {p['dispute_window']} blocks after a receipt's block")
    console.print(
        f"  condition         {report.condition} with R = {_tokens(e['reward'])}, "
        f"C = {_tokens(e['honest_cost'])}, c = {_tokens(e['cheat_cost'])}, "
        f"d = {e['detection_ppm'] / 1e6:g}"
    )
    least = "none suffices" if report.min_stake is None else f"{_tokens(report.min_stake)} tokens"
    console.print(f"  least miner stake {least} (for the condition to hold)")
    table = Table(title=f"{report.deterred} of {len(report.miners)} neurons deterred")
    for column in ("uid", "hotkey", "V", "stake", "S (slash)", "needs p", "holds"):
        table.add_column(column, no_wrap=True)
    for m in report.miners:
        needs = "impossible" if m.required_rate_ppm is None else f"{m.required_rate_ppm / 1e4:g}%"
        table.add_row(
            str(m.uid),
            m.hotkey[:12],
            "✓" if m.validator_permit else "",
            f"{m.stake / TOKEN:,.3f}",
            f"{m.slash / TOKEN:,.3f}",
            needs,
            "[green]yes[/]" if m.holds else "[red]no: stake more[/]",
        )
    console.print(table)
