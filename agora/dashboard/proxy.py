"""A read-only reverse proxy: the page asks ``/node/v1/...`` and this forwards it to the node.

Only ``GET`` and ``HEAD`` pass, and only to the public API (``/v1/...``), so a dashboard on a
public address can neither submit transactions nor reach anything else on the node's host.
Ordinary answers are read whole and relayed with their status; an event stream
(``text/event-stream``) is relayed chunk by chunk until the browser goes away, the upstream
ends it, or the dashboard stops (``stopping`` is set). Errors have the node's shape,
``{"error": {"code", "message"}}``:

    404  not_found            the path is not under /v1, or no upstream of that name is set
    405  method_not_allowed   anything but GET and HEAD
    502  upstream_unreachable the upstream did not answer (down, wrong URL, timed out)
"""

from __future__ import annotations

import asyncio
import contextlib

import anyio
import httpx
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send

__all__ = ["Relay", "Upstream", "error_response"]

# Request headers worth passing on; everything else (cookies, auth of the dashboard ...) stays.
FORWARDED_REQUEST_HEADERS = ("accept", "last-event-id", "if-none-match", "cache-control")
# Response headers never relayed: hop-by-hop, or recomputed by our server.
DROPPED_RESPONSE_HEADERS = {
    "connection",
    "keep-alive",
    "transfer-encoding",
    "content-length",
    "content-encoding",
    "date",
    "server",
    "access-control-allow-origin",
}
ALLOWED_METHODS = ("GET", "HEAD")


def error_response(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status)


class Upstream:
    """One service the page may read through the proxy (the node, later the gateway)."""

    def __init__(
        self,
        name: str,
        base_url: str,
        client: httpx.AsyncClient,
        *,
        prefix: str = "v1/",
        timeout: float = 10.0,
    ) -> None:
        self.name = name
        self.base_url = base_url.rstrip("/")
        self.prefix = prefix
        self.client = client
        self.timeout = timeout

    async def forward(self, request: Request, path: str, stopping: asyncio.Event) -> Response:
        """Relay ``request`` (for ``path`` under this upstream) and return the answer."""
        if request.method not in ALLOWED_METHODS:
            return error_response(
                405,
                "method_not_allowed",
                f"the dashboard only reads: {request.method} is not forwarded to the {self.name}",
            )
        if not path.startswith(self.prefix) or ".." in path.split("/"):
            return error_response(
                404,
                "not_found",
                f"the dashboard forwards only the {self.name}'s public API (/{self.prefix}...)",
            )
        headers = {
            name: value
            for name in FORWARDED_REQUEST_HEADERS
            if (value := request.headers.get(name)) is not None
        }
        url = f"{self.base_url}/{path}"
        wants_stream = "text/event-stream" in headers.get("accept", "")
        timeout = httpx.Timeout(self.timeout, read=None if wants_stream else self.timeout)
        upstream_request = self.client.build_request(
            request.method, url, params=request.query_params, headers=headers, timeout=timeout
        )
        try:
            upstream = await self.client.send(upstream_request, stream=True)
        except httpx.HTTPError as error:
            return self._unreachable(error)
        relayed = {
            name: value
            for name, value in upstream.headers.items()
            if name.lower() not in DROPPED_RESPONSE_HEADERS
        }
        if upstream.headers.get("content-type", "").startswith("text/event-stream"):
            return Relay(upstream, relayed, stopping)
        try:
            body = await upstream.aread()
        except httpx.HTTPError as error:
            return self._unreachable(error)
        finally:
            await upstream.aclose()
        return Response(body, upstream.status_code, relayed)

    def _unreachable(self, error: Exception) -> JSONResponse:
        reason = str(error) or type(error).__name__
        return error_response(
            502,
            "upstream_unreachable",
            f"the {self.name} at {self.base_url} did not answer ({reason}); "
            "the page keeps retrying",
        )


class Relay(Response):
    """An upstream event stream relayed as it comes; the upstream is closed however it ends."""

    def __init__(
        self, upstream: httpx.Response, headers: dict[str, str], stopping: asyncio.Event
    ) -> None:
        # Not Response.__init__: that would declare an empty body (Content-Length: 0).
        self.status_code = upstream.status_code
        self.background = None
        self.init_headers(headers)
        self.upstream = upstream
        self.stopping = stopping

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await send(
                {
                    "type": "http.response.start",
                    "status": self.status_code,
                    "headers": self.raw_headers,
                }
            )
            async with anyio.create_task_group() as group:

                async def until_disconnect() -> None:
                    while (await receive())["type"] != "http.disconnect":
                        pass
                    group.cancel_scope.cancel()

                async def until_stopping() -> None:
                    await self.stopping.wait()
                    group.cancel_scope.cancel()

                group.start_soon(until_disconnect)
                group.start_soon(until_stopping)
                with contextlib.suppress(httpx.HTTPError):
                    async for chunk in self.upstream.aiter_raw():
                        await send({"type": "http.response.body", "body": chunk, "more_body": True})
                group.cancel_scope.cancel()
            with contextlib.suppress(OSError):
                await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            await self.upstream.aclose()
