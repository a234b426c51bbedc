"""``agora receipt ...``: check a miner's receipt offline.

Exit status: 0 when the receipt holds, 1 when it does not (the reason is printed), 2 for a usage
error such as a file that does not exist.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from agora.net.errors import InvalidReceipt
from agora.net.receipts import Receipt, read_receipt, verify_receipt
from agora.protocol.units import format_amount

__all__ = ["app"]

app = typer.Typer(
    name="receipt",
    help="Receipts: what a miner signs for each answer (hashes, model, tokens, price).",
    no_args_is_help=True,
    add_completion=False,
)


@app.callback()
def _group() -> None:
    """Receipts: what a miner signs for each answer (hashes, model, tokens, price)."""


def _console() -> Console:
    console = Console()
    if not console.is_terminal:  # piped: do not fold 64-character hashes at 80 columns
        console = Console(width=max(console.width, 200))
    return console


def _when(timestamp_ms: int) -> str:
    try:
        moment = datetime.fromtimestamp(timestamp_ms / 1000, tz=UTC)
    except (OverflowError, OSError, ValueError):
        return f"{timestamp_ms} ms (out of range)"
    return f"{moment.isoformat(timespec='milliseconds')} ({timestamp_ms} ms)"


def _table(receipt: Receipt, checks: list[tuple[str, str]]) -> Table:
    table = Table(show_header=False, title="Receipt")
    table.add_column("field", style="bold")
    table.add_column("value", overflow="fold")
    table.add_row("miner", receipt.miner)
    table.add_row("caller", receipt.caller)
    table.add_row("subnet", str(receipt.netuid))
    table.add_row("model", receipt.model_id)
    table.add_row(
        "tokens", f"{receipt.prompt_tokens} prompt + {receipt.completion_tokens} completion"
    )
    table.add_row("price", f"{format_amount(receipt.price)} token ({receipt.price} units)")
    table.add_row("signed at", _when(receipt.timestamp))
    table.add_row("nonce", receipt.nonce)
    table.add_row("request hash", receipt.request_hash)
    table.add_row("response hash", receipt.response_hash)
    for name, verdict in checks:
        table.add_row(name, verdict)
    return table


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise InvalidReceipt(f"cannot read the {what} file {path}: {exc.strerror}") from None


@app.command("verify")
def verify(
    file: Annotated[
        Path,
        typer.Argument(
            metavar="FILE",
            help="The receipt: its JSON, an X-Agora-Receipt value, a JSON response with an "
            "agora_receipt field, or an event stream ending with the receipt event.",
            exists=True,
            dir_okay=False,
        ),
    ],
    request: Annotated[
        Path | None,
        typer.Option(
            "--request",
            help="The request body that was sent; checked against request_hash.",
            exists=True,
            dir_okay=False,
            show_default=False,
        ),
    ] = None,
    response: Annotated[
        Path | None,
        typer.Option(
            "--response",
            help="The response that was received; checked against response_hash. "
            "Default: FILE itself, when it is a whole response.",
            exists=True,
            dir_okay=False,
            show_default=False,
        ),
    ] = None,
    miner: Annotated[
        str | None,
        typer.Option(
            "--miner",
            help="Also require the receipt to be signed by this hotkey address.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Check one receipt offline: its format, the miner's signature, and that it was issued
    for this request and response.

    Exit status 0 if the receipt holds, 1 if not (with the reason).

    Example:

        agora receipt verify receipt.json --request req.json --response resp.json
    """
    console = _console()
    receipt: Receipt | None = None
    checks = [("signature", "[green]valid[/]")]
    try:
        receipt, embedded = read_receipt(_read(file, "receipt"))
        request_body = _read(request, "request") if request is not None else None
        response_body = _read(response, "response") if response is not None else embedded
        verify_receipt(receipt, request_body, response_body, miner=miner)
    except InvalidReceipt as exc:
        if receipt is not None:
            console.print(_table(receipt, []))
        console.print(f"[bold red]INVALID[/]: {exc.reason}", highlight=False)
        raise typer.Exit(1) from None
    if miner is not None:
        checks.append(("miner", "[green]as expected[/]"))
    checks.append(
        ("request", "[green]matches[/]" if request_body is not None else "[dim]not checked[/]")
    )
    checks.append(
        ("response", "[green]matches[/]" if response_body is not None else "[dim]not checked[/]")
    )
    console.print(_table(receipt, checks))
    console.print(f"[bold green]VALID[/]: signed by miner {receipt.miner}", highlight=False)
