"""The part of a miner's receipt the ledger must understand: its format, signed bytes and signature.

A dispute carries the miner's signed receipt onto the ledger, so the rules have to check it
exactly as every other tool does. The wire module (:mod:`agora.net.receipts`) builds, transports
and verifies receipts for services; it takes the field tables, the domain and the signed bytes
from here, so that the miner that signs and the ledger that judges can never disagree on what was
signed.

A receipt is a JSON object with exactly the fields of :data:`RECEIPT_FIELDS`; the signature by
``miner`` covers ``signing_bytes(RECEIPT_DOMAIN, <every field but the signature>)``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from agora.protocol.codec import hash_value, is_hex, signing_bytes, verify_signature

RECEIPT_DOMAIN = b"agora/receipt/v1"
RECEIPT_VERSION = 1
MAX_INT = 2**64 - 1
MAX_MODEL_ID = 256

HEX_FIELDS: dict[str, int] = {
    "request_hash": 64,
    "response_hash": 64,
    "caller": 64,
    "miner": 64,
    "nonce": 32,
    "signature": 128,
}
INT_FIELDS: tuple[str, ...] = (
    "version",
    "prompt_tokens",
    "completion_tokens",
    "price",
    "timestamp",
    "netuid",
)
RECEIPT_FIELDS: frozenset[str] = frozenset({*HEX_FIELDS, *INT_FIELDS, "model_id"})


def receipt_problem(value: object) -> str | None:
    """What is wrong with the format of ``value`` as a receipt, or None if nothing is.

    The same checks, in the same order, as ``agora.net.receipts.Receipt.from_json``; the
    signature is not checked here (see :func:`receipt_signature_valid`).
    """
    if not isinstance(value, Mapping):
        return "a receipt is a JSON object"
    missing = sorted(RECEIPT_FIELDS - set(value))
    if missing:
        return f"missing field(s) {', '.join(missing)}"
    unknown = sorted(str(k) for k in set(value) - RECEIPT_FIELDS)
    if unknown:
        return f"unknown field(s) {', '.join(unknown)}"
    for name, length in HEX_FIELDS.items():
        if not is_hex(value[name], length):
            return f"{name} must be {length} lowercase hex characters"
    for name in INT_FIELDS:
        field = value[name]
        if isinstance(field, bool) or not isinstance(field, int) or not 0 <= field <= MAX_INT:
            return f"{name} must be an integer from 0 to 2^64-1"
    if value["version"] != RECEIPT_VERSION:
        return f"unsupported version {value['version']}; the ledger reads {RECEIPT_VERSION}"
    model_id = value["model_id"]
    if not isinstance(model_id, str) or not 0 < len(model_id) <= MAX_MODEL_ID:
        return f"model_id must be a string of 1 to {MAX_MODEL_ID} characters"
    return None


def signed_fields(receipt: Mapping[str, Any]) -> dict[str, Any]:
    """Everything the miner's signature covers: every field but the signature."""
    return {name: value for name, value in receipt.items() if name != "signature"}


def receipt_signing_bytes(fields: Mapping[str, Any]) -> bytes:
    """The bytes a miner signs: the domain and the canonical JSON of ``fields`` (a receipt with
    or without its signature field, which is left out either way)."""
    return signing_bytes(RECEIPT_DOMAIN, signed_fields(fields))


def receipt_signature_valid(receipt: Mapping[str, Any]) -> bool:
    """True when ``receipt["signature"]`` is the ``miner``'s signature over the other fields.

    Never raises: a receipt whose fields are not hex simply does not verify.
    """
    miner, signature = receipt.get("miner"), receipt.get("signature")
    if not isinstance(miner, str) or not isinstance(signature, str):
        return False
    return verify_signature(miner, receipt_signing_bytes(receipt), signature)


def receipt_hash(receipt: Mapping[str, Any]) -> str:
    """The receipt's identity on the ledger: SHA-256 of its canonical JSON, signature included.

    The audit draw and the one-dispute-per-receipt rule both use it. Ed25519 signatures are
    deterministic, so a miner cannot sign one answer twice to get two identities; a different
    signature over the same fields does not verify anyway.
    """
    return hash_value(dict(receipt))
