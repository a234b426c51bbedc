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
from agora.gateway.cli import app as gateway_app
from agora.ledger_cli import account_app, dev_app, status, subnet_app, tx_app
from agora.market.cli import market_app, provider_app
from agora.miner.cli import app as miner_app
from agora.net.cli import app as receipt_app
from agora.validator.cli import app as validator_app
from agora.wallet.cli import app as wallet_app

app = typer.Typer(
    name="agora",
    help=(
        "Agora: an open network for AI work. Miners serve models, validators score them, and a "
        "ledger pays both in a token through Yuma consensus.\n\n"
        "Start here: `agora up` runs a whole local network; `agora --help` lists the rest."
    ),
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
)
app.add_typer(
    wallet_app, name="wallet", help="Create, import and inspect wallets (coldkey + hotkey)."
)
app.add_typer(node_app, name="node", help="Run a ledger node, or follow one to audit it.")
app.add_typer(tx_app, name="tx", help="Sign and send transactions: transfer, stake, unstake.")
app.add_typer(
    subnet_app, name="subnet", help="Subnets: create, register, serve, weights, metagraph."
)
app.add_typer(account_app, name="account", help="Balances, nonces and stake of an account.")
app.add_typer(dev_app, name="dev", help="Helpers for the local dev network (faucet).")
app.add_typer(receipt_app, name="receipt", help="Verify a miner's signed receipt offline.")
app.add_typer(
    provider_app, name="provider", help="Offer CPUs and GPUs for rent on the marketplace."
)
app.add_typer(market_app, name="market", help="Rent compute: orders, bids, leases, workloads.")
app.add_typer(miner_app, name="miner", help="Serve a model on a subnet and get paid for it.")
app.add_typer(gateway_app, name="gateway", help="Sell inference through an OpenAI-compatible API.")
app.add_typer(validator_app, name="validator", help="Score a subnet's miners and set weights.")
app.command("status")(status)
app.command("dashboard")(dashboard)

sim_app = typer.Typer(help="Simulators that run the ledger's own rules with no ledger.")
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
        gateway_port=gateway_port,
    )


def main() -> None:
    app()


if __name__ == "__main__":
    main()
