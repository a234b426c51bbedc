"""The wire: signed requests between network participants, the guard that checks them, and the
receipts miners sign for their answers.

    # client (a gateway or validator calling a miner)
    client = httpx.AsyncClient(base_url=url, auth=AgoraAuth(my_hotkey, miner_address))

    # server (a miner)
    guard = RequestGuard(GuardConfig(hotkey=me.address, min_stake=...), CachedStanding(fetch))
    app.add_middleware(AgoraGuardMiddleware, guard=guard, public_paths={"/health"})

The format of headers, signed messages and receipts is in ``docs/wire.md``; the errors are drawn
in :mod:`agora.net.errors`.
"""

from agora.net.errors import (
    BodyTooLarge,
    CallerNotRegistered,
    FutureTimestamp,
    InvalidReceipt,
    InvalidSignature,
    MalformedHeaders,
    MissingSignature,
    ReplayCacheFull,
    RequestRejected,
    ReusedNonce,
    StakeTooLow,
    StaleTimestamp,
    StandingUnavailable,
    TooManyRequests,
    WireError,
    WrongCallee,
)
from agora.net.guard import AgoraGuardMiddleware, GuardConfig, RequestGuard, verified_request
from agora.net.limits import NonceCache, TokenBuckets
from agora.net.receipts import (
    RECEIPT_DOMAIN,
    RECEIPT_EVENT,
    RECEIPT_FIELD,
    RECEIPT_HEADER,
    Receipt,
    body_hash,
    decode_receipt_header,
    embed_receipt,
    encode_receipt_header,
    extract_receipt,
    json_hash,
    make_receipt,
    read_receipt,
    receipt_event,
    split_embedded_receipt,
    split_stream,
    stream_with_receipt,
    verify_receipt,
)
from agora.net.signing import (
    REQUEST_DOMAIN,
    SIGNED_HEADERS,
    AgoraAuth,
    SignedRequest,
    sign_request,
    verify_request,
)
from agora.net.standing import CachedStanding, CallerStanding, Standing, StaticStanding

__all__ = [
    "RECEIPT_DOMAIN",
    "RECEIPT_EVENT",
    "RECEIPT_FIELD",
    "RECEIPT_HEADER",
    "REQUEST_DOMAIN",
    "SIGNED_HEADERS",
    "AgoraAuth",
    "AgoraGuardMiddleware",
    "BodyTooLarge",
    "CachedStanding",
    "CallerNotRegistered",
    "CallerStanding",
    "FutureTimestamp",
    "GuardConfig",
    "InvalidReceipt",
    "InvalidSignature",
    "MalformedHeaders",
    "MissingSignature",
    "NonceCache",
    "Receipt",
    "ReplayCacheFull",
    "RequestGuard",
    "RequestRejected",
    "ReusedNonce",
    "SignedRequest",
    "StakeTooLow",
    "StaleTimestamp",
    "Standing",
    "StandingUnavailable",
    "StaticStanding",
    "TokenBuckets",
    "TooManyRequests",
    "WireError",
    "WrongCallee",
    "body_hash",
    "decode_receipt_header",
    "embed_receipt",
    "encode_receipt_header",
    "extract_receipt",
    "json_hash",
    "make_receipt",
    "read_receipt",
    "receipt_event",
    "sign_request",
    "split_embedded_receipt",
    "split_stream",
    "stream_with_receipt",
    "verified_request",
    "verify_receipt",
    "verify_request",
]
