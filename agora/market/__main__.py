"""``python -m agora.market provider ...`` and ``python -m agora.market market ...``."""

from __future__ import annotations

import typer

from agora.market.cli import market_app, provider_app

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
app.add_typer(provider_app, name="provider")
app.add_typer(market_app, name="market")

if __name__ == "__main__":
    app()
