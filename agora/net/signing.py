"""Signed requests: the caller's hotkey signs one canonical message per HTTP request.

What is signed is ``signing_bytes(b"agora/request/v1", message)`` where ``message`` is::

    {"method": "POST",                      # upper case, as on the request line
     "path": "/v1/embeddings?model=x",      # the request target: raw path and query, as sent
     "body_sha256": "<64 hex>",             # SHA-256 of the body bytes exactly as sent
     "caller": "<64 hex>",                  # the signer's hotkey address
     "callee": "<64 hex>",                  # the hotkey the request is meant for
     "nonce": "<32 hex>",                   # 128 random bits, never reused
     "timestamp": 1700000000000}            # milliseconds since the Unix epoch

The five values that are not part of the request itself travel in headers (see
:data:`SIGNED_HEADERS`). Every header has one exact format (lowercase hex of a fixed length, a
decimal integer without leading zeros), so that one request has one encoding and a header can
never be read two ways. A client signs with :class:`AgoraAuth`::

    async with httpx.AsyncClient(base_url=url, auth=AgoraAuth(hotkey, miner_hotkey)) as client:
        await client.post("/v1/embeddings", json={...})

and a server checks with :func:`verify_request` (the guard in :mod:`agora.net.guard` does this and
the rest: replay, standing, rate limits).
"""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Callable, Generator, Iterable, Mapping
from dataclasses import dataclass

import httpx

from agora.crypto.keys import Keypair
from agora.net.errors import (
    FutureTimestamp,
    InvalidSignature,
    MalformedHeaders,
    MissingSignature,
    StaleTimestamp,
    WrongCallee,
)
from agora.protocol.codec import Json, sha256_hex, signing_bytes, verify_signature

__all__ = [
    "CALLEE_HEADER",
    "CALLER_HEADER",
    "DEFAULT_WINDOW_MS",
    "NONCE_HEADER",
    "REQUEST_DOMAIN",
    "SIGNATURE_HEADER",
    "SIGNED_HEADERS",
    "TIMESTAMP_HEADER",
    "AgoraAuth",
    "SignedRequest",
    "new_nonce",
    "now_ms",
    "parse_signature_headers",
    "request_message",
    "request_target",
    "sign_request",
    "verify_request",
]

REQUEST_DOMAIN = b"agora/request/v1"

CALLER_HEADER = "X-Agora-Caller"
CALLEE_HEADER = "X-Agora-Callee"
NONCE_HEADER = "X-Agora-Nonce"
TIMESTAMP_HEADER = "X-Agora-Timestamp"
SIGNATURE_HEADER = "X-Agora-Signature"
SIGNED_HEADERS = (CALLER_HEADER, CALLEE_HEADER, NONCE_HEADER, TIMESTAMP_HEADER, SIGNATURE_HEADER)

DEFAULT_WINDOW_MS = 30_000
"""A request is fresh while its timestamp is within this many milliseconds of the server's."""

# fullmatch with explicit ASCII classes: ``$`` would accept a trailing newline and ``\d`` would
# accept non-ASCII digits, and either would give one request two encodings.
_FORMATS: dict[str, tuple[re.Pattern[str], str]] = {
    CALLER_HEADER: (re.compile(r"[0-9a-f]{64}"), "64 lowercase hex characters (a hotkey address)"),
    CALLEE_HEADER: (re.compile(r"[0-9a-f]{64}"), "64 lowercase hex characters (a hotkey address)"),
    NONCE_HEADER: (re.compile(r"[0-9a-f]{32}"), "32 lowercase hex characters (128 random bits)"),
    TIMESTAMP_HEADER: (
        re.compile(r"0|[1-9][0-9]{0,15}"),
        "milliseconds since the Unix epoch as a decimal integer without leading zeros",
    ),
    SIGNATURE_HEADER: (re.compile(r"[0-9a-f]{128}"), "128 lowercase hex characters (Ed25519)"),
}


def now_ms() -> int:
    """The wall clock in milliseconds since the Unix epoch."""
    return time.time_ns() // 1_000_000


def new_nonce() -> str:
    """128 random bits as 32 lowercase hex characters."""
    return secrets.token_hex(16)


def request_message(
    method: str,
    path: str,
    body_sha256: str,
    caller: str,
    callee: str,
    nonce: str,
    timestamp: int,
) -> dict[str, Json]:
    """The message a request signature covers (before the domain tag)."""
    return {
        "method": method,
        "path": path,
        "body_sha256": body_sha256,
        "caller": caller,
        "callee": callee,
        "nonce": nonce,
        "timestamp": timestamp,
    }


def request_target(url: httpx.URL) -> str:
    """The path and query of ``url`` exactly as httpx puts them on the request line."""
    return url.raw_path.decode("latin-1")


def sign_request(
    keypair: Keypair,
    callee: str,
    method: str,
    path: str,
    body: bytes = b"",
    *,
    timestamp_ms: int | None = None,
    nonce: str | None = None,
) -> dict[str, str]:
    """The ``X-Agora-*`` headers that sign one request from ``keypair`` to ``callee``.

    ``method`` is upper-cased, as HTTP clients send it. ``path`` is the request target as it goes
    on the wire: the raw (percent-encoded) path and, if there is one, ``?`` and the query.
    ``body`` is the body bytes exactly as sent.
    """
    timestamp = now_ms() if timestamp_ms is None else timestamp_ms
    nonce = new_nonce() if nonce is None else nonce
    message = request_message(
        method.upper(), path, sha256_hex(body), keypair.address, callee, nonce, timestamp
    )
    return {
        CALLER_HEADER: keypair.address,
        CALLEE_HEADER: callee,
        NONCE_HEADER: nonce,
        TIMESTAMP_HEADER: str(timestamp),
        SIGNATURE_HEADER: keypair.sign_message(REQUEST_DOMAIN, message),
    }


class AgoraAuth(httpx.Auth):
    """Signs every request an httpx client sends, with a fresh nonce and timestamp each time
    (so a retried request is a new request, never a replay)::

        httpx.AsyncClient(base_url=miner_url, auth=AgoraAuth(my_hotkey, miner_hotkey_address))

    A streamed request body is read into memory first: it has to be hashed before it is sent.
    """

    requires_request_body = True

    def __init__(self, keypair: Keypair, callee: str, *, clock: Callable[[], int] = now_ms) -> None:
        self.keypair = keypair
        self.callee = callee
        self._clock = clock

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        headers = sign_request(
            self.keypair,
            self.callee,
            request.method,
            request_target(request.url),
            request.content,
            timestamp_ms=self._clock(),
        )
        request.headers.update(headers)
        yield request


@dataclass(frozen=True)
class SignedRequest:
    """A request whose signature has been checked, as the guard hands it to the endpoint."""

    method: str
    path: str
    body_sha256: str
    caller: str
    callee: str
    nonce: str
    timestamp: int
    signature: str


Headers = Mapping[str, str] | Iterable[tuple[str, str]]


def _header_values(headers: Headers) -> dict[str, list[str]]:
    wanted = {name.lower(): name for name in SIGNED_HEADERS}
    pairs = headers.items() if isinstance(headers, Mapping) else headers
    found: dict[str, list[str]] = {name: [] for name in SIGNED_HEADERS}
    for key, value in pairs:
        name = wanted.get(key.lower())
        if name is not None:
            found[name].append(value)
    return found


def parse_signature_headers(headers: Headers) -> dict[str, str]:
    """The five ``X-Agora-*`` values, each checked against its one exact format.

    Takes a mapping or, to see repeated headers, a list of ``(name, value)`` pairs.

    Raises:
        MissingSignature: a header is absent or empty.
        MalformedHeaders: a header is repeated or not in its format.
    """
    found = _header_values(headers)
    missing = [name for name, values in found.items() if not values or values == [""]]
    if missing:
        raise MissingSignature(
            f"unsigned request: {', '.join(missing)} missing or empty; sign every request with "
            "the caller's hotkey (agora.net.AgoraAuth does it for httpx clients)"
        )
    values: dict[str, str] = {}
    for name, given in found.items():
        if len(given) > 1:
            raise MalformedHeaders(f"{name} appears {len(given)} times; send it exactly once")
        pattern, expected = _FORMATS[name]
        if pattern.fullmatch(given[0]) is None:
            raise MalformedHeaders(f"{name} must be {expected}, got {given[0][:140]!r}")
        values[name] = given[0]
    return values


def verify_request(
    headers: Headers,
    method: str,
    path: str,
    body: bytes,
    *,
    me: str,
    now_ms: int,
    window_ms: int = DEFAULT_WINDOW_MS,
    not_before_ms: int | None = None,
) -> SignedRequest:
    """Check a request's signature headers, in order: present, well formed, meant for ``me``,
    fresh, correctly signed. Replay, standing and rate limits are the guard's business.

    ``method`` is taken as received (HTTP methods are case-sensitive), ``path`` is the request
    target as received (raw path and query), ``body`` the raw bytes.
    ``not_before_ms``, when given, also refuses requests signed before that instant (the guard
    passes the moment it started, because nonces seen before a restart are forgotten).

    Raises:
        MissingSignature, MalformedHeaders, WrongCallee, StaleTimestamp, FutureTimestamp,
        InvalidSignature: in that order of checking.
    """
    values = parse_signature_headers(headers)
    caller = values[CALLER_HEADER]
    callee = values[CALLEE_HEADER]
    if callee != me:
        raise WrongCallee(
            f"this request was signed for {callee}, but this server is {me}; look up the "
            "hotkey serving this address in the metagraph and sign for it"
        )
    timestamp = int(values[TIMESTAMP_HEADER])
    if timestamp < now_ms - window_ms:
        raise StaleTimestamp(
            f"signed {(now_ms - timestamp) / 1000:.1f} s ago; requests are accepted for "
            f"{window_ms / 1000:g} s: sign a new request, and check the caller's clock (NTP)"
        )
    if timestamp > now_ms + window_ms:
        raise FutureTimestamp(
            f"signed {(timestamp - now_ms) / 1000:.1f} s in the future; clocks may differ by "
            f"{window_ms / 1000:g} s at most: set the caller's clock right (NTP)"
        )
    if not_before_ms is not None and timestamp < not_before_ms:
        raise StaleTimestamp(
            "signed before this server started, so it cannot be told from a replay; "
            "sign a new request"
        )
    signed = SignedRequest(
        method=method,
        path=path,
        body_sha256=sha256_hex(body),
        caller=caller,
        callee=callee,
        nonce=values[NONCE_HEADER],
        timestamp=timestamp,
        signature=values[SIGNATURE_HEADER],
    )
    message = request_message(
        signed.method,
        signed.path,
        signed.body_sha256,
        signed.caller,
        signed.callee,
        signed.nonce,
        signed.timestamp,
    )
    if not verify_signature(caller, signing_bytes(REQUEST_DOMAIN, message), signed.signature):
        raise InvalidSignature(
            f"the signature does not match this request for caller {caller}: it must cover "
            "this exact method, path and query, body, callee, nonce and timestamp, signed by "
            "the caller's hotkey under the agora/request/v1 domain"
        )
    return signed
