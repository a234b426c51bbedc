"""The server side of the wire: every request is checked before any endpoint sees it.

Checks run in this order, cheapest first, and nothing is decided on a value the signature has not
covered except the size of the body (and nothing at all is *remembered* for a request whose
signature has not verified):

    1. body over ``max_body_bytes``             413 body_too_large
    2. an X-Agora-* header missing or empty      401 missing_signature
    3. an X-Agora-* header malformed or repeated 400 malformed_headers
    4. signed for another hotkey                 421 wrong_callee
    5. timestamp too old / too far ahead         401 stale_timestamp / future_timestamp
    6. signature does not verify                 401 invalid_signature
    7. nonce already used by this caller         409 reused_nonce       (then it is remembered)
    8. caller not registered / stake too low     403 caller_not_registered / stake_too_low
    9. caller's token bucket empty               429 too_many_requests  (with Retry-After)

plus two 503s when the server cannot decide: replay_cache_full and standing_unavailable.

Install it as ASGI middleware, and read the verified caller in endpoints::

    guard = RequestGuard(GuardConfig(hotkey=me.address, min_stake=10**9), standing)
    app.add_middleware(AgoraGuardMiddleware, guard=guard, public_paths={"/health"})

    @app.post("/v1/embeddings")
    async def embed(signed: Annotated[SignedRequest, Depends(verified_request)]) -> ...

Middleware rather than a FastAPI dependency because FastAPI reads the whole body before it runs
dependencies; only middleware can refuse a large body before reading more than the limit.

Nonces live in this process's memory: run one guarded process per hotkey (not several uvicorn
workers), and the guard refuses requests signed before it started, whose nonces it cannot know.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from agora.net.errors import (
    BodyTooLarge,
    CallerNotRegistered,
    RequestRejected,
    StakeTooLow,
    StandingUnavailable,
    TooManyRequests,
)
from agora.net.limits import NonceCache, TokenBuckets
from agora.net.signing import DEFAULT_WINDOW_MS, SignedRequest, now_ms, verify_request
from agora.net.standing import Standing

__all__ = [
    "STATE_KEY",
    "AgoraGuardMiddleware",
    "GuardConfig",
    "RequestGuard",
    "verified_request",
]

log = logging.getLogger(__name__)

STATE_KEY = "agora_request"
"""Where the middleware leaves the :class:`SignedRequest` in ``scope["state"]``."""


@dataclass(frozen=True)
class GuardConfig:
    """What one guarded server accepts.

    ``hotkey`` is this server's address (requests must be signed for it); ``min_stake`` is in
    units. ``rate_per_second`` and ``burst`` shape each caller's token bucket.
    """

    hotkey: str
    min_stake: int = 0
    window_ms: int = DEFAULT_WINDOW_MS
    max_body_bytes: int = 1 << 20
    rate_per_second: float = 10.0
    burst: int = 20
    nonce_capacity: int = 100_000
    max_callers: int = 10_000
    refuse_before_start: bool = True


class RequestGuard:
    """Checks 2 to 9 of the list above on a request whose body has been read (check 1 is the
    middleware's, which must stop reading at the limit); keeps the nonces and token buckets."""

    def __init__(
        self,
        config: GuardConfig,
        standing: Standing,
        *,
        clock: Callable[[], int] = now_ms,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self._standing = standing
        self._clock = clock
        self._nonces = NonceCache(config.nonce_capacity)
        self._buckets = TokenBuckets(
            config.rate_per_second, config.burst, max_keys=config.max_callers, clock=monotonic
        )
        self._started_ms = clock()
        self._latest_ms = self._started_ms

    def _now(self) -> int:
        # Never let the guard's clock run backwards: nonces are forgotten by this clock, and a
        # wall clock stepped back would make forgotten requests look fresh again.
        self._latest_ms = max(self._latest_ms, self._clock())
        return self._latest_ms

    @property
    def remembered_nonces(self) -> int:
        return len(self._nonces)

    async def check(
        self,
        method: str,
        path: str,
        headers: Iterable[tuple[str, str]],
        body: bytes,
    ) -> SignedRequest:
        """Admit or refuse one request. ``path`` is the raw target (path and query).

        Raises:
            BodyTooLarge, MissingSignature, MalformedHeaders, WrongCallee, StaleTimestamp,
            FutureTimestamp, InvalidSignature, ReusedNonce, ReplayCacheFull,
            StandingUnavailable, CallerNotRegistered, StakeTooLow, TooManyRequests.
        """
        config = self.config
        if len(body) > config.max_body_bytes:
            raise _too_large(config.max_body_bytes)
        now = self._now()
        signed = verify_request(
            list(headers),
            method,
            path,
            body,
            me=config.hotkey,
            now_ms=now,
            window_ms=config.window_ms,
            not_before_ms=self._started_ms if config.refuse_before_start else None,
        )
        # Only now, with the signature checked, is the nonce remembered, until the request could
        # no longer pass the freshness check (timestamp + window); then it may be forgotten.
        self._nonces.add(signed.caller, signed.nonce, signed.timestamp + config.window_ms + 1, now)
        registered, stake = await self._standing_of(signed.caller)
        if not registered:
            raise CallerNotRegistered(
                f"{signed.caller} is not registered on this subnet; register the hotkey "
                "(agora subnet register) before calling its miners"
            )
        if stake < config.min_stake:
            raise StakeTooLow(
                f"{signed.caller} has {stake} units staked; this server serves callers with at "
                f"least {config.min_stake}: add stake to the hotkey"
            )
        wait = self._buckets.take(signed.caller)
        if wait > 0:
            raise TooManyRequests(
                f"too many requests from {signed.caller}: at most {config.burst} at once and "
                f"{config.rate_per_second:g} per second; retry after {wait:.2f} s",
                retry_after=wait,
            )
        return signed

    async def _standing_of(self, hotkey: str) -> tuple[bool, int]:
        try:
            registered, stake = await self._standing(hotkey)
        except RequestRejected:
            raise
        except Exception as exc:  # whatever the injected source raises: refuse, do not crash
            log.warning("standing lookup for %s failed: %r", hotkey, exc)
            raise StandingUnavailable(
                "the caller's standing cannot be checked right now; retry shortly",
                retry_after=1.0,
            ) from exc
        return bool(registered), int(stake)


def _too_large(limit: int) -> BodyTooLarge:
    return BodyTooLarge(f"the body is over this server's limit of {limit} bytes; send less")


class _Disconnected(Exception):
    """The client went away while its body was being read."""


async def _read_body(scope: Scope, receive: Receive, limit: int) -> bytes:
    """The whole body, never reading more than one message past ``limit`` bytes."""
    for name, value in scope.get("headers", ()):
        if name == b"content-length" and value.isdigit() and int(value) > limit:
            raise _too_large(limit)
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _Disconnected
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _target(scope: Scope) -> str:
    """The request target as the client sent it: raw path, then ``?`` and the query if any."""
    raw_path = scope.get("raw_path")
    if raw_path is None:
        raw_path = (scope.get("root_path", "") + scope["path"]).encode()
    query: bytes = scope.get("query_string", b"")
    target: bytes = raw_path + b"?" + query if query else raw_path
    return target.decode("latin-1")


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that hands the already-read body to the app, then defers to the server."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


async def _refuse(exc: RequestRejected, scope: Scope, receive: Receive, send: Send) -> None:
    headers = {}
    retry_after = exc.retry_after_header()
    if retry_after is not None:
        headers["Retry-After"] = retry_after
    if exc.status == 401:
        headers["WWW-Authenticate"] = 'AgoraSignature domain="agora/request/v1"'
    response = JSONResponse(exc.to_json(), status_code=exc.status, headers=headers)
    await response(scope, receive, send)


class AgoraGuardMiddleware:
    """ASGI middleware that lets a request through only if :class:`RequestGuard` admits it.

    Paths in ``public_paths`` (exact matches, e.g. ``/health``) pass unchecked; lifespan events
    pass; websockets are refused unless public.
    """

    def __init__(
        self, app: ASGIApp, guard: RequestGuard, public_paths: Collection[str] = ()
    ) -> None:
        self.app = app
        self.guard = guard
        self.public_paths = frozenset(public_paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or scope["path"] in self.public_paths:
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        try:
            body = await _read_body(scope, receive, self.guard.config.max_body_bytes)
            headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]]
            signed = await self.guard.check(scope["method"], _target(scope), headers, body)
        except _Disconnected:
            return
        except RequestRejected as exc:
            log.debug("refused %s %s: %s", scope["method"], scope["path"], exc.code)
            await _refuse(exc, scope, receive, send)
            return
        state: dict[str, Any] = scope.setdefault("state", {})
        state[STATE_KEY] = signed
        await self.app(scope, _replay(body, receive), send)


def verified_request(request: Request) -> SignedRequest:
    """FastAPI dependency: the :class:`SignedRequest` the guard admitted for this request."""
    signed = request.scope.get("state", {}).get(STATE_KEY)
    if not isinstance(signed, SignedRequest):
        raise RuntimeError(
            "no verified request: this path is public or AgoraGuardMiddleware is not installed"
        )
    return signed
