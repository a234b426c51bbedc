"""Signed requests: the canonical message, a fixed test vector, the httpx auth, and the property
that any single-byte change to a signed request makes it fail."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import agora.net
from agora.crypto.keys import Keypair
from agora.net import (
    SIGNED_HEADERS,
    AgoraAuth,
    GuardConfig,
    RequestGuard,
    RequestRejected,
    StaticStanding,
    sign_request,
    verify_request,
)
from agora.net.errors import InvalidSignature, MissingSignature
from agora.net.signing import REQUEST_DOMAIN, request_message
from agora.protocol.codec import sha256_hex, signing_bytes

ALICE = Keypair.from_name("alice")
MINER = Keypair.from_name("miner")
T = 1_700_000_000_000
NONCE = "00112233445566778899aabbccddeeff"
PATH = "/v1/embeddings?model=minilm"
BODY = b'{"input":["hello"]}'

# The vector in docs/wire.md: anyone implementing the wire in another language can check it.
VECTOR_SIGNING_BYTES = (
    b"agora/request/v1\n"
    b'{"body_sha256":"dac5f69905764bd760daa916b925e0feff2f30ff9b8001d5d7af0fc64929ce40",'
    b'"callee":"539efa395864cbeda5a7bc2717c1ef47bfa9649d01d1678362264a2ba52ab5b9",'
    b'"caller":"ebda2ebfd1dfa4fca8bb36df5899377132c94ecd25ec1e8a693691b6c5a17bc0",'
    b'"method":"POST","nonce":"00112233445566778899aabbccddeeff",'
    b'"path":"/v1/embeddings?model=minilm","timestamp":1700000000000}'
)
VECTOR_SIGNATURE = (
    "14348f83a5dd90b1b9370f8efe6ead341eaaaf33f1fa9c11ac61b71d00b9719e"
    "c8e6801b5230a4ac1cbfb7cdbec3d4dd4276c64658cb11d3d2d107d3f9c17f06"
)


def vector_headers() -> dict[str, str]:
    return sign_request(ALICE, MINER.address, "POST", PATH, BODY, timestamp_ms=T, nonce=NONCE)


def test_public_surface_is_exactly_all() -> None:
    public = {name for name in dir(agora.net) if not name.startswith("_")}
    modules = {"cli", "errors", "guard", "limits", "receipts", "signing", "standing"}
    assert public - modules == set(agora.net.__all__)


def test_signing_vector() -> None:
    message = request_message(
        "POST", PATH, sha256_hex(BODY), ALICE.address, MINER.address, NONCE, T
    )
    assert signing_bytes(REQUEST_DOMAIN, message) == VECTOR_SIGNING_BYTES
    headers = vector_headers()
    assert headers == {
        "X-Agora-Caller": ALICE.address,
        "X-Agora-Callee": MINER.address,
        "X-Agora-Nonce": NONCE,
        "X-Agora-Timestamp": str(T),
        "X-Agora-Signature": VECTOR_SIGNATURE,
    }


def test_verify_request_returns_what_was_signed() -> None:
    signed = verify_request(vector_headers(), "POST", PATH, BODY, me=MINER.address, now_ms=T)
    assert (signed.caller, signed.callee, signed.nonce, signed.timestamp) == (
        ALICE.address,
        MINER.address,
        NONCE,
        T,
    )
    assert signed.body_sha256 == sha256_hex(BODY)


def test_header_names_are_case_insensitive() -> None:
    lowered = {k.lower(): v for k, v in vector_headers().items()}
    verify_request(lowered, "POST", PATH, BODY, me=MINER.address, now_ms=T)


def test_a_request_signature_is_not_a_signature_for_another_domain() -> None:
    """A request signed under another domain tag (say, a transaction's) does not verify."""
    message = request_message(
        "POST", PATH, sha256_hex(BODY), ALICE.address, MINER.address, NONCE, T
    )
    headers = {**vector_headers(), "X-Agora-Signature": ALICE.sign_message(b"agora/tx/v1", message)}
    with pytest.raises(InvalidSignature):
        verify_request(headers, "POST", PATH, BODY, me=MINER.address, now_ms=T)


def test_an_all_zero_signature_is_refused() -> None:
    headers = {**vector_headers(), "X-Agora-Signature": "0" * 128}
    with pytest.raises(InvalidSignature):
        verify_request(headers, "POST", PATH, BODY, me=MINER.address, now_ms=T)


def test_empty_headers_are_missing_not_malformed() -> None:
    headers = {name: "" for name in SIGNED_HEADERS}
    with pytest.raises(MissingSignature):
        verify_request(headers, "POST", PATH, BODY, me=MINER.address, now_ms=T)


def test_agora_auth_signs_what_httpx_sends() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        target = request.url.raw_path.decode()
        verify_request(
            request.headers.items(),
            request.method,
            target,
            request.content,
            me=MINER.address,
            now_ms=T,
        )
        return httpx.Response(204)

    auth = AgoraAuth(ALICE, MINER.address, clock=lambda: T)
    with httpx.Client(transport=httpx.MockTransport(handler), auth=auth) as client:
        client.post("http://m/v1/x", params={"a": "é&b"}, json={"k": [1, 2]})
        client.get("http://m/v1/y")
        client.post("http://m/v1/x", content=b"")
    assert len({r.headers["X-Agora-Nonce"] for r in seen}) == 3


# --- any single-byte change fails ------------------------------------------------------------

GUARD_CONFIG = GuardConfig(hotkey=MINER.address, max_body_bytes=4096, refuse_before_start=False)
FIELDS = ("body", "method", "path", *SIGNED_HEADERS)


def check(headers: dict[str, str], method: str, path: str, body: bytes) -> None:
    guard = RequestGuard(GUARD_CONFIG, StaticStanding({ALICE.address: 1}), clock=lambda: T)
    asyncio.run(guard.check(method, path, list(headers.items()), body))


def test_the_unchanged_request_passes_the_guard() -> None:
    check(vector_headers(), "POST", PATH, BODY)


@settings(max_examples=300, deadline=None)
@given(
    field=st.sampled_from(FIELDS),
    position=st.integers(min_value=0, max_value=200),
    replacement=st.integers(min_value=0, max_value=255),
    how=st.sampled_from(["replace", "insert", "delete"]),
)
def test_any_single_byte_change_fails(
    field: str, position: int, replacement: int, how: str
) -> None:
    headers = vector_headers()
    parts = {
        "body": BODY,
        "method": b"POST",
        "path": PATH.encode(),
        **{name: headers[name].encode("latin-1") for name in SIGNED_HEADERS},
    }
    original = parts[field]
    i = position % (len(original) + (1 if how == "insert" else 0))
    if how == "replace":
        if original[i] == replacement:
            replacement = (replacement + 1) % 256
        changed = original[:i] + bytes([replacement]) + original[i + 1 :]
    elif how == "insert":
        changed = original[:i] + bytes([replacement]) + original[i:]
    else:
        changed = original[:i] + original[i + 1 :]
    parts[field] = changed
    new_headers = {name: parts[name].decode("latin-1") for name in SIGNED_HEADERS}
    with pytest.raises(RequestRejected):
        check(
            new_headers,
            parts["method"].decode("latin-1"),
            parts["path"].decode("latin-1"),
            parts["body"],
        )
