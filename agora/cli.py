"""The ``agora`` command: one entry point, a sub-command per part of the network.

Sub-applications live next to the code they drive (``agora/wallet/cli.py``, ``agora/chain/cli.py``
...); this module only mounts them, so ``agora --help`` shows the whole map.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from agora.chain.cli import app as node_app
from agora.dashboard.cli import dashboard
from agora.dashboard.status import status
from agora.dispute_cli import dispute_app, subnet_audit
from agora.gateway.cli import app as gateway_app
from agora.ledger_cli import account_app, dev_app, subnet_app, tx_app
from agora.market.cli import market_app, provider_app
from agora.miner.cli import app as miner_app
from agora.net.cli import app as receipt_app
from agora.validator.cli import app as validator_app
from agora.wallet.cli import app as wallet_app


def _with_example(description: str, example: str) -> str:
    """A group's help: what it is for, then a call to copy (``agora --help`` lists only the
    first paragraph)."""
    return f"{description}\n\n    {example}"


app = typer.Typer(
    name="agora",
    help=(
        "Agora: an open network for AI work. Miners serve models, validators score them, and a "
        "ledger pays both in a token through Yuma consensus.\n\n"
        "Start here: `agora up` runs a whole local network; `agora COMMAND --help` explains "
        "each command with examples.\n\n"
        "    agora up\n\n"
        "    agora status"
    ),
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
)
GROUPS: list[tuple[typer.Typer, str, str, str]] = [
    (
        wallet_app,
        "wallet",
        "Create, import and inspect wallets (coldkey + hotkey).",
        "agora wallet new alice",
    ),
    (node_app, "node", "Run a ledger node, or follow one to audit it.", "agora node start --dev"),
    (
        tx_app,
        "tx",
        "Sign and send transactions: transfer, stake, unstake.",
        "agora tx transfer --wallet alice --to bob --amount 1.5",
    ),
    (
        subnet_app,
        "subnet",
        "Subnets: create, register, serve, weights, metagraph.",
        "agora subnet list",
    ),
    (
        dispute_app,
        "dispute",
        "Disputes: accuse a miner's receipt, vote, see outcomes.",
        "agora dispute list --status open",
    ),
    (
        account_app,
        "account",
        "Balances, nonces and stake of an account.",
        "agora account show alice",
    ),
    (dev_app, "dev", "Helpers for the local dev network (faucet).", "agora dev fund alice 100"),
    (
        receipt_app,
        "receipt",
        "Verify a miner's signed receipt offline.",
        "agora receipt verify receipt.json",
    ),
    (
        provider_app,
        "provider",
        "Offer CPUs and GPUs for rent on the marketplace.",
        'agora provider start --dev-key carol --offer "cpu=2,mem=8GiB,gpu=0,price=0.02/h"',
    ),
    (
        market_app,
        "market",
        "Rent compute: orders, bids, leases, workloads.",
        "agora market orders --status open",
    ),
    (
        miner_app,
        "miner",
        "Serve a model on a subnet and get paid for it.",
        "agora miner start --dev-key charlie --subnet 1 --model embed:minilm",
    ),
    (
        gateway_app,
        "gateway",
        "Sell inference through an OpenAI-compatible API.",
        "agora gateway start --dev-key gateway --node http://127.0.0.1:9944",
    ),
    (
        validator_app,
        "validator",
        "Score a subnet's miners and set weights.",
        "agora validator start --dev-key eve --subnet 1 --http-port 8071",
    ),
]
for group, group_name, description, example in GROUPS:
    app.add_typer(group, name=group_name, help=_with_example(description, example))
subnet_app.command("audit")(subnet_audit)
app.command("status")(status)
app.command("dashboard")(dashboard)

sim_app = typer.Typer(
    help="Simulators that run the ledger's own rules with no ledger.\n\n"
    "    agora sim yuma tests/data/yuma/yuma_3_stable_miner.json --table"
)
app.add_typer(sim_app, name="sim")


@sim_app.command("yuma")
def sim_yuma(
    case: Annotated[Path, typer.Argument(help="A case file (see tests/data/yuma/*.json).")],
    table: Annotated[
        bool, typer.Option("--table", help="Print a readable per-epoch table.")
    ] = False,
) -> None:
    """Run Yuma consensus on a case file and print the result of each epoch as JSON.

    The same epoch code the ledger runs, fed with the stakes and weights of the file:

        agora sim yuma tests/data/yuma/yuma_3_stable_miner.json
        agora sim yuma tests/data/yuma/yuma_3_stable_miner.json --table
    """
    from agora.sim.yuma_case import render_table, run_case_file

    try:
        result = run_case_file(case)
    except FileNotFoundError:
        typer.echo(f"error: no case file at {case}", err=True)
        raise typer.Exit(1) from None
    except (ValueError, KeyError, TypeError) as error:
        typer.echo(f"error: {case} is not a valid case file: {error}", err=True)
        raise typer.Exit(1) from None
    if table:
        case_data = json.loads(case.read_text())
        Console().print(render_table(result, case_data))
    else:
        typer.echo(json.dumps(result))


@app.command("up")
def up(
    data_dir: Annotated[
        Path, typer.Option("--data-dir", help="Where the local network keeps its data.")
    ] = Path(".agora"),
    port: Annotated[int, typer.Option(help="Port of the ledger node's API.")] = 9944,
    dashboard_port: Annotated[int, typer.Option(help="Port of the dashboard.")] = 8080,
    miner_port: Annotated[int, typer.Option(help="First miner port (one per miner).")] = 8091,
    validator_port: Annotated[
        int, typer.Option(help="First port of the validators' public APIs (one per subnet).")
    ] = 8071,
    gateway_port: Annotated[
        int, typer.Option(help="Port of the OpenAI-compatible gateway.")
    ] = 8000,
    block_time: Annotated[float, typer.Option(help="Seconds between blocks.")] = 1.0,
) -> None:
    """Run a whole local network on this machine and print where to look.

    A ledger node, an embedding subnet and a text-generation subnet, four miners (one of them
    deliberately bad), a validator, the OpenAI-compatible gateway with a demo API key, and the
    dashboard, each its own process. Data stays under
    --data-dir (.agora/ in the current directory), so a restart continues where it stopped;
    devnet.json there lists every URL.

        agora up
        agora up --data-dir /tmp/agora --port 9955 --dashboard-port 8088 --miner-port 8191
    """
    from agora.devnet import run_devnet

    run_devnet(
        data_dir=data_dir,
        port=port,
        block_time=block_time,
        dashboard_port=dashboard_port,
        miner_port=miner_port,
        validator_port=validator_port,
        gateway_port=gateway_port,
    )


def main() -> None:
    app()


if __name__ == "__main__":
    main()
