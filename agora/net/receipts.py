"""Receipts: a miner's signed statement of what it answered, for whom, and at what price.

A receipt is a JSON object with exactly these fields, and a signature by ``miner`` over
``signing_bytes(b"agora/receipt/v1", <every other field>)``::

    version            1
    request_hash       SHA-256 (hex) of the request body bytes, as the caller signed them
    response_hash      SHA-256 (hex) of the response content (below)
    model_id           the model that produced the answer
    prompt_tokens      integers >= 0
    completion_tokens
    price              what the call costs, in units (10^-9 token)
    timestamp          when the miner signed, milliseconds since the Unix epoch
    caller             hotkey that signed the request
    miner              hotkey that signs the receipt
    netuid             the subnet served
    nonce              the request's nonce, which ties the receipt to one signed request
    signature          128 hex characters

The response content that ``response_hash`` covers is, for a plain response, its body bytes; for
a JSON response that carries the receipt in its ``agora_receipt`` field, the normalized JSON of
the body without that field (sorted keys, no spaces, ASCII, as :func:`json_hash` writes it), so
that the hash survives re-serialization by a gateway; for an event stream, every byte sent before
the final ``agora-receipt`` event. A receipt travels in one of three ways:

    header   X-Agora-Receipt: base64url (no padding) of the receipt's canonical JSON
    field    {"...": ..., "agora_receipt": {...}}           (see embed_receipt)
    event    event: agora-receipt\\ndata: {...}\\n\\n       (the last event of a stream)
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import json
from collections.abc import AsyncIterable, AsyncIterator, Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from agora.crypto.keys import Keypair
from agora.net.errors import InvalidReceipt
from agora.net.signing import now_ms
from agora.protocol.codec import Json, canonical_bytes, is_hex, sha256_hex
from agora.protocol.receipts import (  # the ledger judges receipts by the same rules
    HEX_FIELDS,
    INT_FIELDS,
    MAX_INT,
    MAX_MODEL_ID,
    RECEIPT_DOMAIN,
    RECEIPT_VERSION,
    receipt_signature_valid,
    receipt_signing_bytes,
)

__all__ = [
    "RECEIPT_DOMAIN",
    "RECEIPT_EVENT",
    "RECEIPT_FIELD",
    "RECEIPT_HEADER",
    "RECEIPT_VERSION",
    "Receipt",
    "body_hash",
    "decode_receipt_header",
    "embed_receipt",
    "encode_receipt_header",
    "extract_receipt",
    "json_hash",
    "make_receipt",
    "read_receipt",
    "receipt_event",
    "split_embedded_receipt",
    "split_stream",
    "stream_with_receipt",
    "verify_receipt",
]

RECEIPT_HEADER = "X-Agora-Receipt"
RECEIPT_FIELD = "agora_receipt"
RECEIPT_EVENT = "agora-receipt"

_EVENT_PREFIX = b"event: " + RECEIPT_EVENT.encode() + b"\ndata: "
_MAX_INT = MAX_INT
_MAX_MODEL_ID = MAX_MODEL_ID
_HEX_FIELDS = HEX_FIELDS
_INT_FIELDS = INT_FIELDS


@dataclass(frozen=True)
class Receipt:
    """One signed receipt. Build it with :func:`make_receipt`, read it with :meth:`from_json`."""

    version: int
    request_hash: str
    response_hash: str
    model_id: str
    prompt_tokens: int
    completion_tokens: int
    price: int
    timestamp: int
    caller: str
    miner: str
    netuid: int
    nonce: str
    signature: str

    def to_json(self) -> dict[str, Json]:
        return asdict(self)

    def signed_fields(self) -> dict[str, Json]:
        """Everything the signature covers: every field but the signature."""
        fields = self.to_json()
        del fields["signature"]
        return fields

    @classmethod
    def from_json(cls, value: object) -> Receipt:
        """Read and check the format of a receipt (not its signature).

        Raises:
            InvalidReceipt: a field is missing, unknown, or not in its format.
        """
        if not isinstance(value, Mapping):
            raise InvalidReceipt(f"malformed: a receipt is a JSON object, not {_kind(value)}")
        expected = set(cls.__dataclass_fields__)
        missing = sorted(expected - set(value))
        if missing:
            raise InvalidReceipt(f"malformed: missing field(s) {', '.join(missing)}")
        unknown = sorted(str(k) for k in set(value) - expected)
        if unknown:
            raise InvalidReceipt(f"malformed: unknown field(s) {', '.join(unknown)}")
        for name, length in _HEX_FIELDS.items():
            if not is_hex(value[name], length):
                raise InvalidReceipt(
                    f"malformed: {name} must be {length} lowercase hex characters, "
                    f"got {_show(value[name])}"
                )
        for name in _INT_FIELDS:
            field = value[name]
            if isinstance(field, bool) or not isinstance(field, int) or not 0 <= field <= _MAX_INT:
                raise InvalidReceipt(
                    f"malformed: {name} must be an integer from 0 to 2^64-1, got {_show(field)}"
                )
        if value["version"] != RECEIPT_VERSION:
            raise InvalidReceipt(
                f"unsupported version {value['version']}; this tool reads version "
                f"{RECEIPT_VERSION}: upgrade agora"
            )
        model_id = value["model_id"]
        if not isinstance(model_id, str) or not 0 < len(model_id) <= _MAX_MODEL_ID:
            raise InvalidReceipt(
                f"malformed: model_id must be a string of 1 to {_MAX_MODEL_ID} characters, "
                f"got {_show(model_id)}"
            )
        return cls(**{name: value[name] for name in expected})


def _kind(value: object) -> str:
    return {list: "a list", str: "a string", type(None): "null"}.get(type(value), "that")


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def body_hash(data: bytes) -> str:
    """SHA-256 (hex) of raw bytes: a request body, a plain response, a stream's content."""
    return sha256_hex(data)


def json_hash(value: Any) -> str:
    """SHA-256 (hex) of normalized JSON: sorted keys, no spaces, ASCII, no NaN.

    Unlike the ledger's canonical bytes this accepts floats (embeddings are floats), written as
    Python writes them: the shortest text that reads back as the same double.
    """
    text = json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    )
    return sha256_hex(text.encode())


def make_receipt(
    keypair: Keypair,
    *,
    request_hash: str,
    response_hash: str,
    model_id: str,
    prompt_tokens: int,
    completion_tokens: int,
    price: int,
    caller: str,
    netuid: int,
    nonce: str,
    timestamp_ms: int | None = None,
) -> Receipt:
    """A receipt signed by ``keypair`` (the miner's hotkey).

    ``request_hash`` is the :attr:`SignedRequest.body_sha256` the guard computed; ``nonce`` and
    ``caller`` come from the same request; ``response_hash`` from :func:`body_hash` or
    :func:`json_hash`.

    Raises:
        InvalidReceipt: a field is not in its format (nothing is signed then).
    """
    fields: dict[str, Json] = {
        "version": RECEIPT_VERSION,
        "request_hash": request_hash,
        "response_hash": response_hash,
        "model_id": model_id,
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "price": price,
        "timestamp": now_ms() if timestamp_ms is None else timestamp_ms,
        "caller": caller,
        "miner": keypair.address,
        "netuid": netuid,
        "nonce": nonce,
    }
    Receipt.from_json({**fields, "signature": "0" * 128})  # check formats before signing
    return Receipt.from_json({**fields, "signature": keypair.sign(receipt_signing_bytes(fields))})


def verify_receipt(
    receipt: Receipt | Mapping[str, Any],
    request_body: bytes | None = None,
    response_body: bytes | None = None,
    *,
    miner: str | None = None,
) -> None:
    """Check a receipt: its format, the miner's signature, and, for each one given, that the
    request body and the response are the ones it was issued for. ``miner``, when given, is the
    hotkey the receipt must come from (a receipt proves only who signed it: that the signer is a
    miner of the subnet is for the metagraph to say).

    ``response_body`` is what was received: plain bytes, a JSON body with the receipt in its
    field, or a stream ending with the receipt event all match (see the module docstring).

    Raises:
        InvalidReceipt: with the reason, the first check that fails.
    """
    if not isinstance(receipt, Receipt):
        receipt = Receipt.from_json(receipt)
    if miner is not None and receipt.miner != miner:
        raise InvalidReceipt(f"wrong miner: issued by {receipt.miner}, expected {miner}")
    if not receipt_signature_valid(receipt.to_json()):
        raise InvalidReceipt(
            f"bad signature: the receipt was altered after signing, or not signed by its miner "
            f"{receipt.miner}"
        )
    if request_body is not None and body_hash(request_body) != receipt.request_hash:
        raise InvalidReceipt(
            f"request hash mismatch: this request body has sha256 {body_hash(request_body)}, "
            f"the receipt was issued for {receipt.request_hash}"
        )
    if response_body is not None:
        candidates = _response_hashes(response_body)
        if receipt.response_hash not in candidates:
            raise InvalidReceipt(
                f"response hash mismatch: this response has sha256 {candidates[0]}, "
                f"the receipt was issued for {receipt.response_hash}"
            )


def _response_hashes(body: bytes) -> list[str]:
    """Every reading of ``body`` the module docstring allows, raw bytes first."""
    hashes = [body_hash(body)]
    if _EVENT_PREFIX in body:
        try:
            content, _ = split_stream(body)
        except InvalidReceipt:
            pass
        else:
            hashes.append(body_hash(content))
    try:
        parsed = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return hashes
    if isinstance(parsed, dict):
        parsed.pop(RECEIPT_FIELD, None)
        with contextlib.suppress(ValueError):  # NaN or infinity: no normalized JSON
            hashes.append(json_hash(parsed))
    return hashes


def encode_receipt_header(receipt: Receipt) -> str:
    """The ``X-Agora-Receipt`` value: base64url without padding of the canonical JSON."""
    return base64.urlsafe_b64encode(canonical_bytes(receipt.to_json())).rstrip(b"=").decode()


def decode_receipt_header(value: str) -> Receipt:
    """Read an ``X-Agora-Receipt`` value.

    Raises:
        InvalidReceipt: not base64url of a receipt.
    """
    text = value.strip()
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        parsed = json.loads(raw)
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise InvalidReceipt(
            f"malformed: the {RECEIPT_HEADER} value is not base64url-encoded JSON"
        ) from None
    return Receipt.from_json(parsed)


def embed_receipt(payload: Mapping[str, Any], receipt: Receipt) -> dict[str, Any]:
    """``payload`` with the receipt in its ``agora_receipt`` field. The receipt's
    ``response_hash`` must be ``json_hash(payload)``."""
    if RECEIPT_FIELD in payload:
        raise ValueError(f"the payload already has an {RECEIPT_FIELD!r} field")
    return {**payload, RECEIPT_FIELD: receipt.to_json()}


def split_embedded_receipt(body: Mapping[str, Any]) -> tuple[dict[str, Any], Receipt]:
    """The payload and the receipt of a JSON body made by :func:`embed_receipt`.

    Raises:
        InvalidReceipt: no receipt field, or a malformed one.
    """
    if RECEIPT_FIELD not in body:
        raise InvalidReceipt(f"no receipt: the JSON body has no {RECEIPT_FIELD!r} field")
    payload = {k: v for k, v in body.items() if k != RECEIPT_FIELD}
    return payload, Receipt.from_json(body[RECEIPT_FIELD])


def receipt_event(receipt: Receipt) -> bytes:
    """The server-sent event that ends a stream and carries its receipt."""
    return _EVENT_PREFIX + canonical_bytes(receipt.to_json()) + b"\n\n"


async def stream_with_receipt(
    chunks: AsyncIterable[bytes], finish: Callable[[str], Receipt]
) -> AsyncIterator[bytes]:
    """Pass ``chunks`` through, then the receipt event. ``finish`` gets the hash of everything
    passed through (call :func:`make_receipt` in it: token counts are known by then)."""
    hasher = hashlib.sha256()
    async for chunk in chunks:
        hasher.update(chunk)
        yield chunk
    yield receipt_event(finish(hasher.hexdigest()))


def split_stream(data: bytes) -> tuple[bytes, Receipt]:
    """The content of a whole received stream and the receipt of its final event.

    Raises:
        InvalidReceipt: the stream does not end with a well-formed receipt event.
    """
    start = data.rfind(_EVENT_PREFIX)
    if start < 0 or (start > 0 and data[start - 1 : start] != b"\n"):
        raise InvalidReceipt(f"no receipt: the stream has no final {RECEIPT_EVENT!r} event")
    event = data[start + len(_EVENT_PREFIX) :]
    if not event.endswith(b"\n\n") or b"\n" in event[:-2]:
        raise InvalidReceipt(
            f"malformed: the {RECEIPT_EVENT!r} event must be the last one, one data line, "
            "ending with a blank line"
        )
    try:
        parsed = json.loads(event[:-2])
    except (ValueError, UnicodeDecodeError):
        raise InvalidReceipt(f"malformed: the {RECEIPT_EVENT!r} event data is not JSON") from None
    return data[:start], Receipt.from_json(parsed)


def extract_receipt(headers: Mapping[str, str] | None = None, body: bytes | None = None) -> Receipt:
    """The receipt of a response: from its header, else its JSON body's field, else its stream's
    final event.

    Raises:
        InvalidReceipt: none of them holds a well-formed receipt.
    """
    if headers is not None:
        for name, value in headers.items():
            if name.lower() == RECEIPT_HEADER.lower():
                return decode_receipt_header(value)
    if body is not None:
        receipt, _ = read_receipt(body)
        return receipt
    raise InvalidReceipt(f"no receipt: no {RECEIPT_HEADER} header and no body")


def read_receipt(data: bytes) -> tuple[Receipt, bytes | None]:
    """A receipt from a file's bytes, and the response it came with if the file holds one.

    Accepts the receipt's JSON, an ``X-Agora-Receipt`` value, a JSON response with an
    ``agora_receipt`` field, or a stream ending with the receipt event.

    Raises:
        InvalidReceipt: none of those.
    """
    text = data.strip()
    if text.startswith(b"{"):
        try:
            parsed = json.loads(text)
        except (ValueError, UnicodeDecodeError):
            raise InvalidReceipt("malformed: the file starts like JSON but is not JSON") from None
        if isinstance(parsed, dict) and RECEIPT_FIELD in parsed:
            return split_embedded_receipt(parsed)[1], data
        return Receipt.from_json(parsed), None
    if _EVENT_PREFIX in data:
        return split_stream(data)[1], data
    try:
        return decode_receipt_header(text.decode("ascii")), None
    except UnicodeDecodeError:
        raise InvalidReceipt(
            "malformed: not a receipt (expected JSON, a header value or an event stream)"
        ) from None
