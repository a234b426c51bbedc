"""The guard: every rejection has its own status and code, in the documented order, and a
correctly signed request from a caller in good standing passes. Driven through the real ASGI app
with ``httpx.ASGITransport``, and once through a real uvicorn server on a loopback port."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Annotated, Any

import httpx
import pytest
import uvicorn
from fastapi import Depends, FastAPI, Request
from starlette.types import Message

from agora.crypto.keys import Keypair
from agora.net import (
    SIGNED_HEADERS,
    AgoraAuth,
    AgoraGuardMiddleware,
    CachedStanding,
    GuardConfig,
    NonceCache,
    ReplayCacheFull,
    RequestGuard,
    ReusedNonce,
    SignedRequest,
    StandingUnavailable,
    StaticStanding,
    TokenBuckets,
    sign_request,
    verified_request,
)
from agora.net.signing import (
    CALLEE_HEADER,
    CALLER_HEADER,
    NONCE_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
)

pytestmark = pytest.mark.anyio

MINER = Keypair.from_name("test/net/miner")
GATEWAY = Keypair.from_name("test/net/gateway")
POOR = Keypair.from_name("test/net/poor")
STRANGER = Keypair.from_name("test/net/stranger")
MIN_STAKE = 1_000
STAKES = {GATEWAY.address: 5_000, POOR.address: 999}
T0 = 1_700_000_000_000
LIMIT = 1024
BURST = 5


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Clock:
    """A wall clock in ms and a monotonic clock in s that only move when told to."""

    def __init__(self) -> None:
        self.ms = T0
        self.mono = 100.0

    def __call__(self) -> int:
        return self.ms

    def monotonic(self) -> float:
        return self.mono

    def advance(self, seconds: float) -> None:
        self.ms += int(seconds * 1000)
        self.mono += seconds


def make_app(guard: RequestGuard) -> FastAPI:
    app = FastAPI()

    @app.post("/v1/echo")
    async def echo(
        request: Request, signed: Annotated[SignedRequest, Depends(verified_request)]
    ) -> dict[str, Any]:
        return {"caller": signed.caller, "path": signed.path, "body": (await request.body()).hex()}

    @app.post("/v1/other")
    async def other(signed: Annotated[SignedRequest, Depends(verified_request)]) -> dict[str, str]:
        return {"caller": signed.caller}

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    app.add_middleware(AgoraGuardMiddleware, guard=guard, public_paths={"/health"})
    return app


@pytest.fixture
def clock() -> Clock:
    return Clock()


def make_guard(clock: Clock, standing: Any = None, **overrides: Any) -> RequestGuard:
    config = GuardConfig(
        hotkey=MINER.address,
        min_stake=MIN_STAKE,
        max_body_bytes=LIMIT,
        rate_per_second=1.0,
        burst=BURST,
        **overrides,
    )
    return RequestGuard(
        config,
        standing or StaticStanding(STAKES),
        clock=clock,
        monotonic=clock.monotonic,
    )


@pytest.fixture
def guard(clock: Clock) -> RequestGuard:
    return make_guard(clock)


@pytest.fixture
async def client(guard: RequestGuard) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=make_app(guard))
    async with httpx.AsyncClient(transport=transport, base_url="http://miner") as c:
        yield c


def signed(
    clock: Clock,
    path: str = "/v1/echo",
    body: bytes = b'{"input":"hello"}',
    *,
    key: Keypair = GATEWAY,
    callee: str = MINER.address,
    method: str = "POST",
    timestamp_ms: int | None = None,
    nonce: str | None = None,
) -> dict[str, str]:
    return sign_request(
        key,
        callee,
        method,
        path,
        body,
        timestamp_ms=clock() if timestamp_ms is None else timestamp_ms,
        nonce=nonce,
    )


def assert_refused(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code
    assert len(error["message"]) > 20


# --- requests that pass ----------------------------------------------------------------------


async def test_signed_request_passes_and_endpoint_sees_caller_and_body(
    guard: RequestGuard, clock: Clock
) -> None:
    transport = httpx.ASGITransport(app=make_app(guard))
    auth = AgoraAuth(GATEWAY, MINER.address, clock=clock)
    async with httpx.AsyncClient(transport=transport, base_url="http://miner", auth=auth) as c:
        response = await c.post("/v1/echo", params={"q": "a b/c"}, content=b"\x00\xffbytes")
    assert response.status_code == 200, response.text
    assert response.json() == {
        "caller": GATEWAY.address,
        "path": "/v1/echo?q=a+b%2Fc",
        "body": b"\x00\xffbytes".hex(),
    }


async def test_each_request_gets_a_fresh_nonce(guard: RequestGuard, clock: Clock) -> None:
    transport = httpx.ASGITransport(app=make_app(guard))
    auth = AgoraAuth(GATEWAY, MINER.address, clock=clock)
    async with httpx.AsyncClient(transport=transport, base_url="http://miner", auth=auth) as c:
        for _ in range(3):
            assert (await c.post("/v1/echo", json={"same": "body"})).status_code == 200
    assert guard.remembered_nonces == 3


async def test_public_path_needs_no_signature(client: httpx.AsyncClient) -> None:
    assert (await client.get("/health")).json() == {"status": "ok"}


async def test_timestamp_exactly_at_the_window_edge_passes(
    client: httpx.AsyncClient, clock: Clock
) -> None:
    clock.advance(60)  # the guard started at T0; stay after that
    for offset in (-30_000, 30_000):
        headers = signed(clock, timestamp_ms=clock() + offset)
        response = await client.post("/v1/echo", content=b'{"input":"hello"}', headers=headers)
        assert response.status_code == 200, response.text


# --- each rejection --------------------------------------------------------------------------

BODY = b'{"input":"hello"}'


async def test_missing_signature(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/echo", content=BODY)
    assert_refused(response, 401, "missing_signature")
    assert "WWW-Authenticate" in response.headers


@pytest.mark.parametrize("header", SIGNED_HEADERS)
async def test_each_header_is_required(
    client: httpx.AsyncClient, clock: Clock, header: str
) -> None:
    headers = signed(clock)
    del headers[header]
    response = await client.post("/v1/echo", content=BODY, headers=headers)
    assert_refused(response, 401, "missing_signature")
    assert header in response.json()["error"]["message"]


async def test_empty_signature(client: httpx.AsyncClient, clock: Clock) -> None:
    headers = {**signed(clock), SIGNATURE_HEADER: ""}
    assert_refused(
        await client.post("/v1/echo", content=BODY, headers=headers), 401, "missing_signature"
    )


@pytest.mark.parametrize(
    ("header", "value"),
    [
        (CALLER_HEADER, GATEWAY.address.upper()),
        (CALLER_HEADER, GATEWAY.address[:-2]),
        (CALLEE_HEADER, "0x" + MINER.address[2:]),
        (NONCE_HEADER, "ab" * 15),
        (NONCE_HEADER, "zz" * 16),
        (TIMESTAMP_HEADER, "0" + str(T0)),
        (TIMESTAMP_HEADER, "-" + str(T0)),
        (TIMESTAMP_HEADER, str(T0) + ".0"),
        (TIMESTAMP_HEADER, "1" * 17),
        (SIGNATURE_HEADER, "00" * 63),
        (SIGNATURE_HEADER, "g" * 128),
    ],
)
async def test_malformed_headers(
    client: httpx.AsyncClient, clock: Clock, header: str, value: str
) -> None:
    headers = {**signed(clock), header: value}
    response = await client.post("/v1/echo", content=BODY, headers=headers)
    assert_refused(response, 400, "malformed_headers")
    assert header in response.json()["error"]["message"]


async def test_repeated_header_is_malformed(client: httpx.AsyncClient, clock: Clock) -> None:
    headers = [*signed(clock).items(), (CALLER_HEADER, STRANGER.address)]
    response = await client.post("/v1/echo", content=BODY, headers=headers)
    assert_refused(response, 400, "malformed_headers")


async def test_wrong_callee(client: httpx.AsyncClient, clock: Clock) -> None:
    headers = signed(clock, callee=STRANGER.address)
    assert_refused(
        await client.post("/v1/echo", content=BODY, headers=headers), 421, "wrong_callee"
    )


async def test_stale_timestamp(client: httpx.AsyncClient, clock: Clock) -> None:
    clock.advance(31)
    headers = signed(clock, timestamp_ms=clock() - 30_001)
    assert_refused(
        await client.post("/v1/echo", content=BODY, headers=headers), 401, "stale_timestamp"
    )


async def test_future_timestamp(client: httpx.AsyncClient, clock: Clock) -> None:
    headers = signed(clock, timestamp_ms=clock() + 30_001)
    assert_refused(
        await client.post("/v1/echo", content=BODY, headers=headers), 401, "future_timestamp"
    )


async def test_request_signed_before_the_server_started_is_stale(
    client: httpx.AsyncClient, clock: Clock
) -> None:
    """Its nonce may have been used with the previous process, which this one cannot know."""
    headers = signed(clock, timestamp_ms=clock() - 1)
    response = await client.post("/v1/echo", content=BODY, headers=headers)
    assert_refused(response, 401, "stale_timestamp")
    assert "started" in response.json()["error"]["message"]


async def test_bad_signature(client: httpx.AsyncClient, clock: Clock) -> None:
    headers = signed(clock)
    sig = headers[SIGNATURE_HEADER]
    headers[SIGNATURE_HEADER] = ("0" if sig[0] != "0" else "1") + sig[1:]
    assert_refused(
        await client.post("/v1/echo", content=BODY, headers=headers), 401, "invalid_signature"
    )


async def test_signature_by_another_key(client: httpx.AsyncClient, clock: Clock) -> None:
    headers = {**signed(clock, key=STRANGER), CALLER_HEADER: GATEWAY.address}
    assert_refused(
        await client.post("/v1/echo", content=BODY, headers=headers), 401, "invalid_signature"
    )


async def test_tampered_body(client: httpx.AsyncClient, clock: Clock) -> None:
    headers = signed(clock, body=BODY)
    response = await client.post("/v1/echo", content=b'{"input":"hellO"}', headers=headers)
    assert_refused(response, 401, "invalid_signature")


@pytest.mark.parametrize("sent", ["/v1/other", "/v1/echo?x=1", "/v1/echo/", "/v1//echo"])
async def test_tampered_path(client: httpx.AsyncClient, clock: Clock, sent: str) -> None:
    headers = signed(clock, path="/v1/echo")
    assert_refused(await client.post(sent, content=BODY, headers=headers), 401, "invalid_signature")


async def test_tampered_query(client: httpx.AsyncClient, clock: Clock) -> None:
    headers = signed(clock, path="/v1/echo?model=small")
    response = await client.post("/v1/echo?model=large", content=BODY, headers=headers)
    assert_refused(response, 401, "invalid_signature")


async def test_tampered_method(client: httpx.AsyncClient, clock: Clock) -> None:
    headers = signed(clock, method="PUT")
    assert_refused(
        await client.post("/v1/echo", content=BODY, headers=headers), 401, "invalid_signature"
    )


async def test_reused_nonce(client: httpx.AsyncClient, clock: Clock) -> None:
    headers = signed(clock)
    assert (await client.post("/v1/echo", content=BODY, headers=headers)).status_code == 200
    clock.advance(5)
    assert_refused(
        await client.post("/v1/echo", content=BODY, headers=headers), 409, "reused_nonce"
    )


async def test_replay_to_another_endpoint_fails(client: httpx.AsyncClient, clock: Clock) -> None:
    headers = signed(clock, path="/v1/echo")
    assert (await client.post("/v1/echo", content=BODY, headers=headers)).status_code == 200
    response = await client.post("/v1/other", content=BODY, headers=headers)
    assert_refused(response, 401, "invalid_signature")


async def test_a_forged_request_does_not_burn_the_nonce(
    client: httpx.AsyncClient, clock: Clock
) -> None:
    nonce = "ab" * 16
    forged = {**signed(clock, key=STRANGER, nonce=nonce), CALLER_HEADER: GATEWAY.address}
    assert_refused(
        await client.post("/v1/echo", content=BODY, headers=forged), 401, "invalid_signature"
    )
    genuine = signed(clock, nonce=nonce)
    assert (await client.post("/v1/echo", content=BODY, headers=genuine)).status_code == 200


async def test_unregistered_caller(client: httpx.AsyncClient, clock: Clock) -> None:
    headers = signed(clock, key=STRANGER)
    response = await client.post("/v1/echo", content=BODY, headers=headers)
    assert_refused(response, 403, "caller_not_registered")


async def test_below_min_stake(client: httpx.AsyncClient, clock: Clock) -> None:
    headers = signed(clock, key=POOR)
    assert_refused(
        await client.post("/v1/echo", content=BODY, headers=headers), 403, "stake_too_low"
    )


async def test_oversized_body_by_content_length(client: httpx.AsyncClient, clock: Clock) -> None:
    body = b"x" * (LIMIT + 1)
    response = await client.post("/v1/echo", content=body, headers=signed(clock, body=body))
    assert_refused(response, 413, "body_too_large")


async def test_oversized_chunked_body(client: httpx.AsyncClient, clock: Clock) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(4):
            yield b"y" * 400

    response = await client.post("/v1/echo", content=chunks(), headers=signed(clock, body=b""))
    assert_refused(response, 413, "body_too_large")


async def test_body_at_the_limit_passes(client: httpx.AsyncClient, clock: Clock) -> None:
    body = b"z" * LIMIT
    response = await client.post("/v1/echo", content=body, headers=signed(clock, body=body))
    assert response.status_code == 200


async def test_guard_stops_reading_at_the_limit(guard: RequestGuard) -> None:
    """An endless body: the guard answers 413 after reading just past the limit."""
    received = 0

    async def receive() -> dict[str, Any]:
        nonlocal received
        received += 100
        return {"type": "http.request", "body": b"a" * 100, "more_body": True}

    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/v1/echo",
        "raw_path": b"/v1/echo",
        "query_string": b"",
        "headers": [],
    }
    await AgoraGuardMiddleware(make_app(guard), guard)(scope, receive, send)
    assert sent[0]["status"] == 413
    assert received <= LIMIT + 100


async def test_rate_limit(client: httpx.AsyncClient, clock: Clock) -> None:
    for _ in range(BURST):
        headers = signed(clock)
        assert (await client.post("/v1/echo", content=BODY, headers=headers)).status_code == 200
    response = await client.post("/v1/echo", content=BODY, headers=signed(clock))
    assert_refused(response, 429, "too_many_requests")
    assert response.headers["Retry-After"] == "1"
    clock.advance(1.0)  # one token back
    assert (await client.post("/v1/echo", content=BODY, headers=signed(clock))).status_code == 200


async def test_rate_limit_is_per_caller(guard: RequestGuard, clock: Clock) -> None:
    rich = Keypair.from_name("test/net/rich")
    standing = StaticStanding({**STAKES, rich.address: 10**12})
    app = make_app(make_guard(clock, standing))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://m") as c:
        for _ in range(BURST + 1):
            await c.post("/v1/echo", content=BODY, headers=signed(clock))
        response = await c.post("/v1/echo", content=BODY, headers=signed(clock, key=rich))
    assert response.status_code == 200


async def test_failing_standing_source_is_503(clock: Clock) -> None:
    async def broken(hotkey: str) -> tuple[bool, int]:
        raise ConnectionError("ledger down")

    app = make_app(make_guard(clock, broken))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://m") as c:
        response = await c.post("/v1/echo", content=BODY, headers=signed(clock))
    assert_refused(response, 503, "standing_unavailable")
    assert "Retry-After" in response.headers


async def test_full_nonce_cache_refuses_rather_than_forgets(clock: Clock) -> None:
    app = make_app(make_guard(clock, nonce_capacity=2))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://m") as c:
        for _ in range(2):
            assert (
                await c.post("/v1/echo", content=BODY, headers=signed(clock))
            ).status_code == 200
        response = await c.post("/v1/echo", content=BODY, headers=signed(clock))
        assert_refused(response, 503, "replay_cache_full")
        assert int(response.headers["Retry-After"]) >= 1
        clock.advance(31)  # the first two can no longer pass the freshness check: forgotten
        assert (await c.post("/v1/echo", content=BODY, headers=signed(clock))).status_code == 200


async def test_websocket_is_refused(guard: RequestGuard) -> None:
    sent: list[Message] = []

    async def receive() -> dict[str, Any]:
        return {"type": "websocket.connect"}

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {"type": "websocket", "path": "/v1/echo", "headers": []}
    await AgoraGuardMiddleware(make_app(guard), guard)(scope, receive, send)
    assert sent == [{"type": "websocket.close", "code": 1008}]


# --- the order of checks ---------------------------------------------------------------------


async def test_checks_run_in_the_documented_order(client: httpx.AsyncClient, clock: Clock) -> None:
    big = b"x" * (LIMIT + 1)
    # oversized and unsigned: the size is checked first
    assert_refused(await client.post("/v1/echo", content=big), 413, "body_too_large")
    # missing one header, another malformed
    headers = {**signed(clock), NONCE_HEADER: "nope"}
    del headers[SIGNATURE_HEADER]
    assert_refused(
        await client.post("/v1/echo", content=BODY, headers=headers), 401, "missing_signature"
    )
    # malformed and for another callee
    headers = {**signed(clock, callee=STRANGER.address), NONCE_HEADER: "nope"}
    assert_refused(
        await client.post("/v1/echo", content=BODY, headers=headers), 400, "malformed_headers"
    )
    # for another callee and stale
    headers = signed(clock, callee=STRANGER.address, timestamp_ms=clock() - 60_000)
    assert_refused(
        await client.post("/v1/echo", content=BODY, headers=headers), 421, "wrong_callee"
    )
    # stale and badly signed
    headers = {**signed(clock, timestamp_ms=clock() + 60_000), CALLER_HEADER: POOR.address}
    assert_refused(
        await client.post("/v1/echo", content=BODY, headers=headers), 401, "future_timestamp"
    )
    # badly signed and unregistered
    headers = {**signed(clock, key=GATEWAY), CALLER_HEADER: STRANGER.address}
    assert_refused(
        await client.post("/v1/echo", content=BODY, headers=headers), 401, "invalid_signature"
    )
    # replayed and unregistered: the nonce is remembered once the signature verifies
    headers = signed(clock, key=STRANGER)
    assert_refused(
        await client.post("/v1/echo", content=BODY, headers=headers), 403, "caller_not_registered"
    )
    assert_refused(
        await client.post("/v1/echo", content=BODY, headers=headers), 409, "reused_nonce"
    )


async def test_unregistered_callers_do_not_spend_a_registered_callers_tokens(
    client: httpx.AsyncClient, clock: Clock
) -> None:
    for _ in range(3 * BURST):
        headers = {**signed(clock, key=STRANGER), CALLER_HEADER: GATEWAY.address}
        await client.post("/v1/echo", content=BODY, headers=headers)
    assert (await client.post("/v1/echo", content=BODY, headers=signed(clock))).status_code == 200


async def test_wall_clock_stepped_back_does_not_reopen_replays(
    client: httpx.AsyncClient, clock: Clock
) -> None:
    headers = signed(clock)
    assert (await client.post("/v1/echo", content=BODY, headers=headers)).status_code == 200
    clock.advance(31)
    await client.post("/v1/echo", content=BODY, headers=signed(clock))  # purges the first nonce
    clock.ms -= 31_000  # the host clock is stepped back to when the first request was signed
    response = await client.post("/v1/echo", content=BODY, headers=headers)
    assert_refused(response, 401, "stale_timestamp")


# --- the bounded memories --------------------------------------------------------------------


def test_nonce_cache_forgets_only_after_expiry() -> None:
    cache = NonceCache(capacity=3)
    cache.add("a", "n1", expires_at_ms=100, now_ms=0)
    with pytest.raises(ReusedNonce):
        cache.add("a", "n1", expires_at_ms=100, now_ms=99)
    cache.add("b", "n1", expires_at_ms=100, now_ms=99)  # nonces are per caller
    cache.add("a", "n2", expires_at_ms=200, now_ms=99)
    with pytest.raises(ReplayCacheFull) as full:
        cache.add("a", "n3", expires_at_ms=200, now_ms=99)
    assert full.value.retry_after == pytest.approx(0.001)
    cache.add("a", "n3", expires_at_ms=200, now_ms=100)  # n1 of both callers expired
    assert len(cache) == 2
    cache.add("a", "n1", expires_at_ms=300, now_ms=100)


def test_nonce_cache_stays_bounded_under_a_flood() -> None:
    cache = NonceCache(capacity=1000)
    refused = 0
    for i in range(20_000):
        now = i  # one request per ms, each remembered for 500 ms
        try:
            cache.add("a", f"{i:032x}", expires_at_ms=now + 500, now_ms=now)
        except ReplayCacheFull:
            refused += 1
        assert len(cache) <= 1000
    assert refused == 0


def test_token_buckets() -> None:
    now = [0.0]
    buckets = TokenBuckets(rate=2.0, burst=2, max_keys=2, clock=lambda: now[0])
    assert buckets.take("a") == 0 and buckets.take("a") == 0
    assert buckets.take("a") == pytest.approx(0.5)
    now[0] += 0.5
    assert buckets.take("a") == 0
    buckets.take("b")
    buckets.take("c")
    assert len(buckets) == 2  # least recently seen dropped


async def test_cached_standing_refreshes_and_survives_a_failing_source() -> None:
    now = [0.0]
    calls: list[int] = []
    tables: list[dict[str, int] | Exception] = [
        {"a": 5},
        ConnectionError("down"),
        {"a": 7, "b": 1},
    ]

    async def fetch() -> dict[str, int]:
        calls.append(1)
        item = tables[min(len(calls) - 1, len(tables) - 1)]
        if isinstance(item, Exception):
            raise item
        return item

    standing = CachedStanding(fetch, refresh_s=10, max_stale_s=60, retry_s=5, clock=lambda: now[0])
    results = await asyncio.gather(*(standing("a") for _ in range(5)))
    assert set(results) == {(True, 5)} and len(calls) == 1  # one fetch for concurrent callers
    now[0] = 11
    assert await standing("a") == (True, 5)  # refresh failed: the last snapshot serves
    assert await standing("b") == (False, 0) and len(calls) == 2  # no retry before retry_s
    now[0] = 17
    assert await standing("b") == (True, 1) and len(calls) == 3


async def test_cached_standing_without_a_snapshot_is_unavailable() -> None:
    async def fetch() -> dict[str, int]:
        raise ConnectionError("down")

    with pytest.raises(StandingUnavailable):
        await CachedStanding(fetch)("a")


# --- a real server ---------------------------------------------------------------------------


@pytest.fixture
def live_server() -> Iterator[tuple[str, Clock]]:
    clock = Clock()
    clock.ms = time.time_ns() // 1_000_000 - 1000
    app = make_app(make_guard(clock))
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        app, log_level="warning", lifespan="off", ws="none", http="h11", access_log=False
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}", clock
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


async def test_real_server_over_loopback(live_server: tuple[str, Clock]) -> None:
    url, clock = live_server
    auth = AgoraAuth(GATEWAY, MINER.address, clock=clock)
    async with (
        httpx.AsyncClient(base_url=url, auth=auth) as signing,
        httpx.AsyncClient(base_url=url) as plain,
    ):
        response = await signing.post("/v1/echo", params={"k": "v"}, json={"input": "über"})
        assert response.status_code == 200, response.text
        assert response.json()["path"] == "/v1/echo?k=v"
        sent = response.request
        replay_headers = {name: sent.headers[name] for name in SIGNED_HEADERS}
        replay = await plain.post("/v1/echo?k=v", content=sent.content, headers=replay_headers)
        assert_refused(replay, 409, "reused_nonce")
        other = await plain.post("/v1/other?k=v", content=sent.content, headers=replay_headers)
        assert_refused(other, 401, "invalid_signature")
        big = await signing.post("/v1/echo", content=b"x" * (10 * LIMIT))
        assert_refused(big, 413, "body_too_large")
        unsigned = await plain.post("/v1/echo", content=BODY)
        assert_refused(unsigned, 401, "missing_signature")
        assert (await plain.get("/health")).json() == {"status": "ok"}
