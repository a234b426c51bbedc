"""The dashboard's server without a browser: its files, its config, and its read-only proxy.

A real node (in-process, blocks made on demand) and the dashboard both serve HTTP on loopback,
so the proxy is tested over real sockets, event stream included.
"""

from __future__ import annotations

import asyncio
import json
import re
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest
import typer
from fastapi import FastAPI
from typer.testing import CliRunner

from agora.chain.api import create_app as create_node_app
from agora.chain.client import iter_sse
from agora.chain.genesis import dev_genesis, dev_producer
from agora.chain.node import Node, NodeConfig
from agora.chain.testing import free_port, running_app
from agora.crypto.keys import Keypair
from agora.dashboard import DashboardConfig, create_app, dev_labels
from agora.dashboard.cli import app as dashboard_cli
from agora.dashboard.cli import dashboard as dashboard_command
from agora.dashboard.server import STATIC_DIR
from tests.conftest import Service

pytestmark = pytest.mark.anyio

IMPORT = re.compile(r"""^\s*(?:import|export)\s[^'"]*?from\s+["']([^"']+)["']""", re.M)


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[Node]:
    # A long block time: the tests make blocks themselves with produce_block().
    config = NodeConfig(data_dir=tmp_path / "node", block_time=3600.0, keepalive=0.2)
    node = await Node.create(config, genesis=dev_genesis(), producer=dev_producer())
    yield node
    await node.stop()


@pytest.fixture
async def node_url(node: Node) -> AsyncIterator[str]:
    async with running_app(create_node_app(node)) as url:
        yield url


@pytest.fixture
async def dashboard(node_url: str) -> AsyncIterator[str]:
    async with running_app(create_app(DashboardConfig(node_url=node_url))) as url:
        yield url


# -- the page's files ----------------------------------------------------------------------------


def static_files() -> list[Path]:
    return sorted(p for p in STATIC_DIR.rglob("*") if p.is_file())


async def test_the_page_and_every_module_it_imports_are_served(dashboard: str) -> None:
    async with httpx.AsyncClient(base_url=dashboard) as http:
        page = await http.get("/")
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        assert 'src="static/js/app.js"' in page.text
        assert 'href="static/style.css"' in page.text
        css = await http.get("/static/style.css")
        assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
        # Follow the ES module graph from app.js: every import resolves to a served file.
        seen: set[str] = set()
        todo = ["static/js/app.js"]
        while todo:
            path = todo.pop()
            if path in seen:
                continue
            seen.add(path)
            response = await http.get("/" + path)
            assert response.status_code == 200, path
            assert "javascript" in response.headers["content-type"], path
            base = path.rsplit("/", 1)[0]
            for target in IMPORT.findall(response.text):
                assert target.startswith("."), f"{path} imports {target}: only relative modules"
                parts: list[str] = []
                for part in f"{base}/{target}".split("/"):
                    if part == "..":
                        parts.pop()
                    elif part != ".":
                        parts.append(part)
                todo.append("/".join(parts))
        shipped = {
            str(p.relative_to(STATIC_DIR.parent)) for p in static_files() if p.suffix == ".js"
        }
        assert seen == shipped, "a module is shipped but never imported, or the other way round"


async def test_nothing_is_loaded_from_elsewhere(dashboard: str) -> None:
    for path in static_files():
        text = path.read_text()
        external = [
            url
            for url in re.findall(r"""(?:https?:)?//[a-z0-9.-]+\.[a-z]{2,}[^\s"')]*""", text)
            if "www.w3.org" not in url  # the SVG namespace of the favicon, not a download
        ]
        assert not external, f"{path.name} refers to {external}"
    async with httpx.AsyncClient(base_url=dashboard) as http:
        response = await http.get("/")
    policy = response.headers["content-security-policy"]
    assert "default-src 'self'" in policy and "connect-src 'self'" in policy
    assert response.headers["cache-control"] == "no-cache"


async def test_the_config_tells_the_page_where_to_read(node_url: str) -> None:
    labels = dev_labels()
    assert labels[Keypair.from_name("alice").address] == "alice"
    assert labels[Keypair.from_name("alice/hot").address] == "alice/hot"
    config = DashboardConfig(node_url=node_url, refresh_seconds=2.5, labels=labels)
    async with (
        running_app(create_app(config)) as url,
        httpx.AsyncClient(base_url=url) as http,
    ):
        data = (await http.get("/config.json")).json()
    assert data["node"] == {"base": "node", "url": node_url}
    assert data["gateway"] is None and data["market"] is None
    assert data["refresh_seconds"] == 2.5
    assert data["labels"] == labels


# -- the proxy -----------------------------------------------------------------------------------


async def test_the_proxy_relays_the_public_api(dashboard: str, node_url: str, node: Node) -> None:
    await node.produce_block()
    await node.produce_block()
    async with httpx.AsyncClient(base_url=dashboard) as http:
        status = await http.get("/node/v1/status")
        assert status.status_code == 200
        assert status.json()["chain_id"] == "agora-dev" and status.json()["height"] == 2
        blocks = (await http.get("/node/v1/blocks", params={"start": 1, "limit": 1})).json()
        assert [b["height"] for b in blocks["blocks"]] == [1]
        direct = (await http.get(f"{node_url}/v1/blocks/2")).content
        assert (await http.get("/node/v1/blocks/2")).content == direct
        # The node's errors come through unchanged.
        missing = await http.get("/node/v1/blocks/99")
        assert missing.status_code == 404
        assert missing.json()["error"]["code"] == "unknown_block"


async def test_the_proxy_only_reads(dashboard: str, node: Node) -> None:
    alice = Keypair.from_name("alice")
    async with httpx.AsyncClient(base_url=dashboard) as http:
        for method in ("POST", "PUT", "DELETE"):
            response = await http.request(method, "/node/v1/transactions", json={})
            assert response.status_code == 405
            assert response.json()["error"]["code"] == "method_not_allowed"
        for path in ("/node/docs", "/node/openapi.json", "/node/v1/../docs", "/node/"):
            response = await http.get(path)
            assert response.status_code == 404, path
    assert len(node.mempool) == 0
    assert node.mempool.pending_nonce(alice.address) == 0


async def test_an_unreachable_node_is_a_clear_502() -> None:
    nowhere = f"http://127.0.0.1:{free_port()}"
    async with (
        running_app(create_app(DashboardConfig(node_url=nowhere))) as url,
        httpx.AsyncClient(base_url=url) as http,
    ):
        response = await http.get("/node/v1/status")
        page = await http.get("/")
    assert response.status_code == 502
    error = response.json()["error"]
    assert error["code"] == "upstream_unreachable" and nowhere in error["message"]
    assert page.status_code == 200  # the page itself still loads, and says what is wrong


async def test_the_event_stream_is_relayed_live_and_replays(dashboard: str, node: Node) -> None:
    await node.produce_block()
    headers = {"Accept": "text/event-stream"}
    async with (
        httpx.AsyncClient(base_url=dashboard, timeout=10) as http,
        http.stream("GET", "/node/v1/events", headers=headers) as stream,
    ):
        assert stream.status_code == 200
        assert stream.headers["content-type"].startswith("text/event-stream")
        assert "content-length" not in stream.headers
        events = iter_sse(stream)
        await asyncio.sleep(0.2)  # the node has subscribed us
        await node.produce_block()
        event, data = await asyncio.wait_for(anext(events), 5)
        assert event == "block" and json.loads(data)["height"] == 2
    # Reconnecting with Last-Event-ID replays what was missed (the header is forwarded).
    await node.produce_block()
    async with (
        httpx.AsyncClient(base_url=dashboard, timeout=10) as http,
        http.stream("GET", "/node/v1/events", headers={**headers, "Last-Event-ID": "1"}) as stream,
    ):
        events = iter_sse(stream)
        heights = [json.loads((await asyncio.wait_for(anext(events), 5))[1])["height"]]
        heights.append(json.loads((await asyncio.wait_for(anext(events), 5))[1])["height"])
    assert heights == [2, 3]


async def test_a_closed_browser_tab_releases_the_node_stream(dashboard: str, node: Node) -> None:
    async with (
        httpx.AsyncClient(base_url=dashboard, timeout=10) as http,
        http.stream("GET", "/node/v1/events", headers={"Accept": "text/event-stream"}),
    ):
        deadline = time.monotonic() + 5
        while len(node.events) == 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert len(node.events) == 1
    deadline = time.monotonic() + 5
    while len(node.events) > 0 and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert len(node.events) == 0


async def test_the_gateway_section_is_proxied_once_connected(node_url: str) -> None:
    gateway = FastAPI()

    @gateway.get("/v1/models")
    async def models() -> dict[str, object]:
        return {"object": "list", "data": [{"id": "embed:minilm"}]}

    async with (
        running_app(create_app(DashboardConfig(node_url=node_url))) as url,
        httpx.AsyncClient(base_url=url) as http,
    ):
        response = await http.get("/gateway/v1/models")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "no_gateway"

    async with (
        running_app(gateway) as gateway_url,
        running_app(create_app(DashboardConfig(node_url=node_url, gateway_url=gateway_url))) as url,
        httpx.AsyncClient(base_url=url) as http,
    ):
        config = (await http.get("/config.json")).json()
        response = await http.get("/gateway/v1/models")
    assert config["gateway"] == {"base": "gateway", "url": gateway_url}
    assert response.status_code == 200 and response.json()["data"][0]["id"] == "embed:minilm"


# -- the command ---------------------------------------------------------------------------------


def test_the_command_mounts_under_agora() -> None:
    """Either way the lead mounts it: as a sub-app, or the function as one command."""
    as_group = typer.Typer()
    as_group.add_typer(dashboard_cli, name="dashboard")
    as_command = typer.Typer()
    as_command.command("dashboard")(dashboard_command)
    for root in (as_group, as_command):

        @root.command()
        def other() -> None:  # a second command, so that `dashboard` is a real sub-command
            pass

        result = CliRunner().invoke(root, ["dashboard", "--help"])
        assert result.exit_code == 0
        assert "--node" in result.output and "--gateway" in result.output
        bad = CliRunner().invoke(root, ["dashboard", "--node", "127.0.0.1:9944"])
        assert bad.exit_code == 1
        assert "http(s) URL" in bad.output


def test_the_process_stops_promptly_with_a_stream_open(
    spawn_service: Callable[..., Service], start_node: Callable[..., Service], port: int
) -> None:
    node = start_node(block_time=0.5)
    url = f"http://127.0.0.1:{port}"
    service = spawn_service(
        [sys.executable, "-m", "agora.dashboard", "--node", node.url, "--port", str(port)],
        ready_url=f"{url}/config.json",
        name="dashboard",
    )
    assert "dashboard at http://127.0.0.1:" in service.output()
    with httpx.stream(
        "GET", f"{url}/node/v1/events", headers={"Accept": "text/event-stream"}, timeout=10
    ) as stream:
        lines = stream.iter_lines()
        assert any(
            line.startswith("event: block") for line, _ in zip(lines, range(20), strict=False)
        )
        started = time.monotonic()
        assert service.stop(signal.SIGTERM, timeout=10) == 0
    assert time.monotonic() - started < 2  # the open stream does not hold the exit up


def test_a_port_in_use_is_reported(spawn_service: Callable[..., Service], port: int) -> None:
    nowhere = f"http://127.0.0.1:{free_port()}"  # the dashboard starts without its node
    command = [sys.executable, "-m", "agora.dashboard", "--node", nowhere, "--port", str(port)]
    first = spawn_service(command, ready_url=f"http://127.0.0.1:{port}/config.json", name="first")
    assert "does not answer yet" in first.output()
    second = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert second.returncode == 1
    assert "cannot listen" in second.stderr and "--port" in second.stderr
