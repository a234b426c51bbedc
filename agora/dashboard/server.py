"""The dashboard's server: static files, a config for the page, and a read-only proxy.

    GET  /                    the page (index.html); routes inside it are hash routes (#/block/7)
    GET  /static/...          its JavaScript and CSS, shipped in this package (no CDN, no build)
    GET  /config.json         where the page reads from: {"node": {"base": "node", "url": ...}, ...}
    GET  /node/v1/...         the node's public API, forwarded (see agora.dashboard.proxy)
    GET  /gateway/v1/...      the gateway's, once one is connected (404 ``no_gateway`` until then)
    GET  /validators/{netuid} what the subnet's validators measured, read from the public APIs
                              they announce in the metagraph (see agora.dashboard.validators)

The page is same-origin with everything it reads, so neither the node nor the gateway needs CORS,
and a Content-Security-Policy of ``'self'`` proves that nothing is loaded from elsewhere.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from agora import __version__
from agora.dashboard.proxy import Upstream, error_response
from agora.dashboard.validators import ValidatorDirectory

__all__ = ["STATIC_DIR", "DashboardConfig", "SecurityHeaders", "create_app", "dev_labels"]

STATIC_DIR = Path(__file__).resolve().parent / "static"

CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "img-src 'self' data:",
        "style-src 'self' 'unsafe-inline'",  # style attributes for bars and swatches
        "script-src 'self'",
        "connect-src 'self'",
        "frame-ancestors 'none'",
        "base-uri 'none'",
    ]
)
NO_CACHE = "no-cache"  # revalidate with the ETag each time: an upgrade shows at once


@dataclass(frozen=True)
class DashboardConfig:
    """What the dashboard reads: the node (required) and the gateway (once there is one)."""

    node_url: str
    gateway_url: str | None = None
    refresh_seconds: float = 5.0
    labels: dict[str, str] = field(default_factory=dict)

    def page_config(self) -> dict[str, Any]:
        """What ``/config.json`` tells the page (``base`` is relative to the page)."""
        return {
            "version": __version__,
            "node": {"base": "node", "url": self.node_url},
            "gateway": None
            if self.gateway_url is None
            else {"base": "gateway", "url": self.gateway_url},
            "market": None,
            "refresh_seconds": self.refresh_seconds,
            "labels": self.labels,
        }


def dev_labels() -> dict[str, str]:
    """Names for the dev network's well-known keys (alice, alice/hot ...), by address.

    The page shows them only on the dev chain (``agora-dev``), where anyone can derive them.
    """
    from agora.chain.genesis import DEV_ACCOUNTS, DEV_PRODUCER_NAME
    from agora.crypto.keys import Keypair

    labels = {Keypair.from_name(DEV_PRODUCER_NAME).address: "producer"}
    # the dev accounts, and the key `agora up` runs its gateway with (agora.gateway.devnet)
    for name in (*DEV_ACCOUNTS, *(n for n in ("gateway",) if n not in DEV_ACCOUNTS)):
        labels[Keypair.from_name(name).address] = name
        labels[Keypair.from_name(name + "/hot").address] = name + "/hot"
    return labels


def create_app(config: DashboardConfig, client: httpx.AsyncClient | None = None) -> FastAPI:
    """The dashboard's app. ``client`` reaches the upstreams (tests hand one in); without it the
    app makes its own. Set ``app.state.stopping`` to end the event streams it relays."""
    app = FastAPI(
        title="Agora dashboard",
        version=__version__,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    http = client or httpx.AsyncClient(
        limits=httpx.Limits(max_connections=None, max_keepalive_connections=20),
        follow_redirects=False,
    )
    app.state.http = http
    app.state.stopping = asyncio.Event()
    node = Upstream("node", config.node_url, http)
    gateway = None if config.gateway_url is None else Upstream("gateway", config.gateway_url, http)
    page_config = config.page_config()

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html")

    @app.get("/config.json", include_in_schema=False)
    async def page_config_route() -> JSONResponse:
        return JSONResponse(page_config, headers={"Cache-Control": "no-store"})

    methods = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]

    @app.api_route("/node/{path:path}", methods=methods, include_in_schema=False)
    async def node_proxy(request: Request, path: str) -> Response:
        return await node.forward(request, path, app.state.stopping)

    @app.api_route("/gateway/{path:path}", methods=methods, include_in_schema=False)
    async def gateway_proxy(request: Request, path: str) -> Response:
        if gateway is None:
            return error_response(
                404,
                "no_gateway",
                "no gateway connected: start the dashboard with --gateway URL",
            )
        return await gateway.forward(request, path, app.state.stopping)

    validators = ValidatorDirectory(config.node_url, http)

    @app.get("/validators/{netuid}", include_in_schema=False)
    async def validator_scores(netuid: int) -> JSONResponse:
        status, body = await validators.read(netuid)
        return JSONResponse(body, status, headers={"Cache-Control": "no-store"})

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    app.add_middleware(SecurityHeaders)
    return app


class SecurityHeaders:
    """Adds the CSP and friends to every answer, and no-cache to the page's own files.

    Plain ASGI (not ``BaseHTTPMiddleware``) so that relayed event streams pass untouched.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope.get("path", "")
        own_file = path == "/" or path.startswith("/static/")

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
                headers.setdefault("X-Content-Type-Options", "nosniff")
                headers.setdefault("Referrer-Policy", "no-referrer")
                if own_file:
                    headers["Cache-Control"] = NO_CACHE
            await send(message)

        await self.app(scope, receive, send_with_headers)
