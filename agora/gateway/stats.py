"""Public aggregate figures of a gateway: traffic by answer status, and spend per key today.

    GET /v1/gateway/stats   {"since_ms", "requests": {...}, "by_status": {...}, "by_route": {...},
                             "errors": {code: n}, "spend_today": {"total", "keys": [...]}}

Why public: people watching a network (the dashboard) want requests per second, errors and
what keys spend, and none of it needs a secret. Keys appear only by their ``key_id`` (the first
16 hex digits of the key's SHA-256, already how the gateway names keys in its errors), never by
the account that pays or the key itself. What a single key did, call by call, stays behind the
key (``GET /v1/usage``).

Counting is an ASGI middleware (:class:`TrafficCounter`) around the app: it sees each answer's
status as it starts, so it adds nothing to the request path but two dictionary increments, and
it counts answers the app refuses (401, 402, 429 ...) as well as those it serves. Counters live
in memory from the gateway's start (``since_ms``); rates are differences between two reads.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

if TYPE_CHECKING:
    from agora.gateway.service import Gateway

__all__ = ["COUNTED_ROUTES", "Traffic", "TrafficCounter", "stats_endpoint"]

#: the routes people pay for; key management and the public reads are not "requests"
COUNTED_ROUTES = ("/v1/embeddings", "/v1/chat/completions", "/v1/completions")
TOP_KEYS = 50


class Traffic:
    """Counters since ``since_ms``: answers by status and by route, errors by code."""

    def __init__(self) -> None:
        self.since_ms = int(time.time() * 1000)
        self.by_status: Counter[int] = Counter()
        self.by_route: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()

    def count(self, route: str, status: int, code: str | None = None) -> None:
        self.by_status[status] += 1
        self.by_route[route] += 1
        if status >= 400:
            self.errors[code or f"http_{status}"] += 1

    def to_json(self) -> dict[str, Any]:
        total = sum(self.by_status.values())
        failed = sum(n for status, n in self.by_status.items() if status >= 400)
        return {
            "since_ms": self.since_ms,
            "requests": {"total": total, "ok": total - failed, "errors": failed},
            "by_status": {str(s): n for s, n in sorted(self.by_status.items())},
            "by_route": dict(sorted(self.by_route.items())),
            "errors": dict(self.errors.most_common()),
        }


class TrafficCounter:
    """ASGI middleware counting the answers to :data:`COUNTED_ROUTES` into ``traffic``.

    The error code is read from the first body chunk of an error answer (the gateway's errors
    are small JSON objects sent in one piece); a streamed answer counts by its status only.
    """

    def __init__(self, app: ASGIApp, traffic: Traffic) -> None:
        self.app = app
        self.traffic = traffic

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or path not in COUNTED_ROUTES:
            await self.app(scope, receive, send)
            return
        status = 0
        counted = False

        async def counting_send(message: Message) -> None:
            nonlocal status, counted
            if message["type"] == "http.response.start":
                status = int(message["status"])
                if status < 400:
                    self.traffic.count(path, status)
                    counted = True
            elif message["type"] == "http.response.body" and not counted:
                counted = True
                self.traffic.count(path, status, _error_code(message.get("body", b"")))
            await send(message)

        try:
            await self.app(scope, receive, counting_send)
        finally:
            if not counted and status:
                self.traffic.count(path, status)


def _error_code(body: bytes) -> str | None:
    try:
        error = json.loads(body)["error"]
        code = error.get("code") or error.get("type")
    except (ValueError, KeyError, TypeError, AttributeError):
        return None
    return str(code) if code else None


def stats_endpoint(gateway: Gateway, traffic: Traffic) -> Any:
    """The handler of ``GET /v1/gateway/stats``."""

    async def stats(request: Request) -> Response:
        keys = sorted(
            (k for k in gateway.accounts.by_id.values() if k.spent_today > 0),
            key=lambda k: (-k.spent_today, k.record.key_id),
        )
        body = {
            **traffic.to_json(),
            "now_ms": int(time.time() * 1000),
            "spend_today": {
                "total": sum(k.spent_today for k in keys),
                "keys": [
                    {"key_id": k.record.key_id, "spent": k.spent_today} for k in keys[:TOP_KEYS]
                ],
                "more_keys": max(0, len(keys) - TOP_KEYS),
            },
        }
        return Response(
            json.dumps(body, separators=(",", ":")),
            media_type="application/json",
            headers={"Cache-Control": "no-store"},
        )

    return stats
