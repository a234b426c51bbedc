"""The gateway's public aggregate figures (``GET /v1/gateway/stats``) the dashboard shows.

The real middleware and handler of :mod:`agora.gateway.stats` around a small Starlette app
whose routes answer as the gateway's do (a served answer, a refused one with the gateway's
error shape, a stream), driven through httpx's ASGI transport.
"""

from __future__ import annotations

from types import SimpleNamespace

import httpx
import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from agora.gateway.accounts import KeyState
from agora.gateway.stats import Traffic, TrafficCounter, stats_endpoint
from agora.gateway.store import EscrowRecord, KeyRecord

pytestmark = pytest.mark.anyio


def key(key_id: str, spent: int) -> KeyState:
    record = KeyRecord(key_id, "h" * 64, "a" * 64, 1, "", 0, 60.0, 10, None)
    return KeyState(record, EscrowRecord(1, spent, 0, 10**12, 100, False), spent)


async def embeddings(request: Request) -> Response:
    if request.headers.get("authorization") != "Bearer good":
        error = {
            "message": "no such key",
            "type": "invalid_request_error",
            "code": "invalid_api_key",
        }
        return JSONResponse({"error": error}, 401)
    return JSONResponse({"data": []})


async def chat(request: Request) -> Response:
    async def events() -> object:
        yield b"data: {}\n\n"
        yield b"data: [DONE]\n\n"

    return StreamingResponse(events(), media_type="text/event-stream")


async def test_answers_errors_and_spend_are_counted() -> None:
    traffic = Traffic()
    keys = {k.record.key_id: k for k in (key("key_b", 5), key("key_a", 7), key("key_idle", 0))}
    gateway = SimpleNamespace(accounts=SimpleNamespace(by_id=keys))
    app = Starlette(
        routes=[
            Route("/v1/embeddings", embeddings, methods=["POST"]),
            Route("/v1/chat/completions", chat, methods=["POST"]),
            Route("/v1/gateway/stats", stats_endpoint(gateway, traffic), methods=["GET"]),  # type: ignore[arg-type]
        ],
        middleware=[Middleware(TrafficCounter, traffic=traffic)],
    )
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
        for auth in ("good", "good", "bad"):
            await client.post("/v1/embeddings", headers={"authorization": f"Bearer {auth}"})
        stream = await client.post("/v1/chat/completions")
        assert stream.text.endswith("[DONE]\n\n")
        await client.post("/v1/completions")  # no such route here: a 404 is still an answer
        await client.get("/v1/gateway/stats")  # reads are not counted
        body = (await client.get("/v1/gateway/stats")).json()

    assert body["requests"] == {"total": 5, "ok": 3, "errors": 2}
    assert body["by_status"] == {"200": 3, "401": 1, "404": 1}
    assert body["by_route"] == {
        "/v1/chat/completions": 1,
        "/v1/completions": 1,
        "/v1/embeddings": 3,
    }
    assert body["errors"]["invalid_api_key"] == 1 and sum(body["errors"].values()) == 2
    assert body["spend_today"] == {
        "total": 12,
        "keys": [{"key_id": "key_a", "spent": 7}, {"key_id": "key_b", "spent": 5}],
        "more_keys": 0,
    }
    assert body["since_ms"] <= body["now_ms"]
    text = str(body)
    assert "a" * 64 not in text and "h" * 64 not in text  # no account, no key hash
