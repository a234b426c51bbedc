"""``agora dashboard``: serve the web page where a person watches the network.

    agora dashboard --node http://127.0.0.1:9944
    agora dashboard --node http://10.0.0.5:9944 --gateway http://10.0.0.5:8000 --port 8080

Also ``python -m agora.dashboard ...``. The page reads the node's public API through this
server (``/node/v1/...``), so it needs nothing but a browser that can reach the dashboard.
Exit codes: 0 after a clean stop (SIGTERM, Ctrl-C), 1 when it cannot start (port in use, bad URL).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
from collections.abc import Callable
from typing import Annotated

import httpx
import typer
from rich.console import Console

from agora.chain.client import DEFAULT_URL
from agora.chain.runner import bind, server_for
from agora.dashboard.server import DashboardConfig, create_app, dev_labels

__all__ = ["app", "dashboard", "serve"]

app = typer.Typer(
    name="dashboard",
    help="Serve the web page where a person watches the network: chain, subnets, accounts.",
    add_completion=False,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
)
console = Console(stderr=True)


def _fail(message: str) -> typer.Exit:
    console.print(f"[red]error:[/red] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(1)


def _check_url(url: str, what: str) -> str:
    if not url.startswith(("http://", "https://")):
        raise _fail(f"--{what} must be an http(s) URL such as http://127.0.0.1:9944, not {url!r}")
    return url.rstrip("/")


async def serve(
    config: DashboardConfig, sock: socket.socket, on_ready: Callable[[], None] | None = None
) -> int:
    """Serve the dashboard on ``sock`` until SIGTERM or SIGINT. Returns an exit code."""
    dashboard = create_app(config)
    server = server_for(dashboard, timeout_graceful_shutdown=2)
    loop = asyncio.get_running_loop()

    def request_stop() -> None:
        dashboard.state.stopping.set()  # ends relayed event streams, so connections close
        server.should_exit = True

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, request_stop)
    try:
        task = asyncio.create_task(server.serve(sockets=[sock]))
        while not server.started and not task.done():
            await asyncio.sleep(0.01)
        if server.started and on_ready is not None:
            on_ready()
        with contextlib.suppress(SystemExit):
            await task
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        await dashboard.state.http.aclose()
    return 0 if server.started else 1


def _probe(node_url: str) -> str | None:
    """Why the node does not answer right now, or None when it does."""
    try:
        response = httpx.get(f"{node_url}/v1/status", timeout=2.0)
    except httpx.HTTPError as error:
        return str(error) or type(error).__name__
    return None if response.status_code == 200 else f"HTTP {response.status_code}"


@app.callback(invoke_without_command=True)
def dashboard(
    node: Annotated[
        str, typer.Option("--node", envvar="AGORA_NODE", help="The ledger node's URL.")
    ] = DEFAULT_URL,
    gateway: Annotated[
        str | None,
        typer.Option("--gateway", envvar="AGORA_GATEWAY", help="The gateway's URL, if any."),
    ] = None,
    host: Annotated[str, typer.Option(help="Address the dashboard listens on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port of the dashboard.")] = 8080,
    refresh: Annotated[
        float,
        typer.Option(min=0.5, help="Seconds between refreshes of what blocks do not announce."),
    ] = 5.0,
    labels: Annotated[
        bool,
        typer.Option(
            "--dev-labels/--no-dev-labels",
            help="Name the dev network's well-known keys (alice, alice/hot ...) on agora-dev.",
        ),
    ] = True,
) -> None:
    """Serve the web page where a person watches the network, and print its address.

    The page shows the chain (height, block time, blocks, transactions, issuance, next halving),
    every subnet (metagraph, weights, emission over time, validators' measurements), the
    gateway (requests per second, errors, spend per key, receipts), the marketplace, and a page
    per account, miner, block, receipt and dispute, updated live from the node's event stream.

    Examples:

        agora dashboard --node http://127.0.0.1:9944

        agora dashboard --node http://10.0.0.5:9944 --gateway http://10.0.0.5:8000 --host 0.0.0.0
    """
    node_url = _check_url(node, "node")
    gateway_url = None if gateway is None else _check_url(gateway, "gateway")
    config = DashboardConfig(
        node_url=node_url,
        gateway_url=gateway_url,
        refresh_seconds=refresh,
        labels=dev_labels() if labels else {},
    )
    try:
        sock = bind(host, port)
    except OSError as error:
        raise _fail(
            f"cannot listen on {host}:{port} ({error.strerror}); is another dashboard running? "
            "Pick another port with --port"
        ) from None
    problem = _probe(node_url)
    if problem is not None:
        console.print(
            f"[yellow]warning:[/yellow] the node at {node_url} does not answer yet ({problem}); "
            "the page will keep retrying",
            highlight=False,
        )
    shown_host = f"[{host}]" if ":" in host else host

    def ready() -> None:
        console.print(
            f"[bold green]dashboard[/] at http://{shown_host}:{port}  "
            f"(node {node_url}{'' if gateway_url is None else f', gateway {gateway_url}'})",
            highlight=False,
        )

    with sock:
        code = asyncio.run(serve(config, sock, ready))
    raise typer.Exit(code)
