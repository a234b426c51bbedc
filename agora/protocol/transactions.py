"""Transactions: their wire shape, the fields each kind carries, and the signature check.

A transaction is a JSON object::

    {"kind": "transfer", "sender": "<64 hex>", "nonce": 0,
     "body": {"to": "<64 hex>", "amount": 1000000000}, "signature": "<128 hex>"}

The signature covers ``TX_DOMAIN`` and the canonical bytes of every field but the signature, plus
the chain id, so a transaction signed for a test network can never be replayed on another.
Structure is checked here (types, sizes, known kinds); what a transaction may do given the state
is checked by the function that applies it.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any

from agora.protocol.codec import (
    TX_DOMAIN,
    EncodingError,
    canonical_bytes,
    hash_value,
    is_hex,
    signing_bytes,
    verify_signature,
)
from agora.protocol.errors import BadSignature, MalformedTransaction

ADDRESS = "address"
INT = "int"
BOOL = "bool"
STR = "str"
HASH = "hash"
U16_LIST = "u16_list"
UID_LIST = "uid_list"
DICT = "dict"
SIGNATURE = "signature"
INT_LIST = "int_list"  # non-negative integers below 2^63
HASH_LIST = "hash_list"  # SHA-256 hashes as hex

# The compute market's resources, shared by registrations, orders and bids.
_HARDWARE = {"cpu": INT, "mem": INT, "gpu": INT, "gpu_model": STR, "region": STR}

# kind -> {field: type}. Every field is required; no other field is allowed.
SCHEMAS: dict[str, dict[str, str]] = {
    "transfer": {"to": ADDRESS, "amount": INT},
    "create_subnet": {},
    "set_hyperparams": {"netuid": INT, "changes": DICT},
    "register": {"netuid": INT, "hotkey": ADDRESS},
    "serve": {"netuid": INT, "ip": STR, "port": INT, "protocol": STR},
    "add_stake": {"hotkey": ADDRESS, "amount": INT},
    "remove_stake": {"hotkey": ADDRESS, "amount": INT},
    "set_weights": {"netuid": INT, "uids": UID_LIST, "weights": U16_LIST},
    "commit_weights": {"netuid": INT, "commit_hash": HASH},
    "reveal_weights": {"netuid": INT, "uids": UID_LIST, "weights": U16_LIST, "salt": STR},
    "channel_open": {"payee": ADDRESS, "signer": ADDRESS, "amount": INT, "timeout": INT},
    "channel_top_up": {"channel": INT, "amount": INT, "extend": INT},
    "channel_redeem": {"channel": INT, "cumulative": INT, "voucher": SIGNATURE},
    "channel_close": {"channel": INT},
    # the compute market (rules in agora/protocol/market.py)
    "market_register": {**_HARDWARE, "price_info": STR, "url": STR, "stake": INT},
    "market_deregister": {},
    "market_attest": {"provider": ADDRESS, "attrs_hash": HASH},
    "market_order": {**_HARDWARE, "max_price": INT, "deposit": INT, "count": INT, "auditor": STR},
    "market_cancel": {"order": INT},
    "market_bid": {**_HARDWARE, "order": INT, "price": INT},
    "market_withdraw": {"bid": INT},
    "market_lease": {"bid": INT},
    "market_close": {"lease": INT},
    "market_top_up": {"lease": INT, "amount": INT},
    "market_heartbeat": {},
    "market_challenge": {"lease": INT, "size": INT},
    "market_commit": {"challenge": INT, "root": HASH},
    "market_open": {"challenge": INT, "values": INT_LIST, "proofs": HASH_LIST},
    # spot checks and disputes (rules in agora/protocol/disputes.py)
    "dispute_open": {"netuid": INT, "receipt": DICT, "evidence": DICT},
    "dispute_vote": {"dispute_id": INT, "guilty": BOOL},
}

MAX_LIST = 4096
MAX_STR = 256


@dataclass(frozen=True)
class Transaction:
    kind: str
    sender: str
    nonce: int
    body: dict[str, Any]
    signature: str

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "sender": self.sender,
            "nonce": self.nonce,
            "body": self.body,
            "signature": self.signature,
        }

    @cached_property
    def hash(self) -> str:
        return hash_value(self.to_json())


def unsigned_payload(
    chain_id: str, kind: str, sender: str, nonce: int, body: dict[str, Any]
) -> Any:
    return {"chain_id": chain_id, "kind": kind, "sender": sender, "nonce": nonce, "body": body}


def tx_signing_bytes(chain_id: str, tx: Transaction) -> bytes:
    return signing_bytes(
        TX_DOMAIN, unsigned_payload(chain_id, tx.kind, tx.sender, tx.nonce, tx.body)
    )


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_field(kind: str, name: str, expected: str, value: object) -> None:
    where = f"{kind}.{name}"
    if expected == ADDRESS and not is_hex(value, 64):
        raise MalformedTransaction(f"{where} must be an address (64 lowercase hex characters)")
    if expected == HASH and not is_hex(value, 64):
        raise MalformedTransaction(f"{where} must be a SHA-256 hash (64 lowercase hex characters)")
    if expected == SIGNATURE and not is_hex(value, 128):
        raise MalformedTransaction(f"{where} must be a signature (128 lowercase hex characters)")
    if expected == INT and (not _is_int(value) or value < 0):  # type: ignore[operator]
        raise MalformedTransaction(f"{where} must be a non-negative integer")
    if expected == STR and (not isinstance(value, str) or len(value) > MAX_STR):
        raise MalformedTransaction(f"{where} must be a string of at most {MAX_STR} characters")
    if expected == DICT and not isinstance(value, dict):
        raise MalformedTransaction(f"{where} must be an object")
    if expected == BOOL and not isinstance(value, bool):
        raise MalformedTransaction(f"{where} must be true or false")
    if expected in (U16_LIST, UID_LIST):
        if not isinstance(value, list) or len(value) > MAX_LIST:
            raise MalformedTransaction(f"{where} must be a list of at most {MAX_LIST} integers")
        high = 65535 if expected == U16_LIST else MAX_LIST - 1
        for item in value:
            if not _is_int(item) or not 0 <= item <= high:
                raise MalformedTransaction(f"{where} entries must be integers in [0, {high}]")
    if expected == INT_LIST and (
        not isinstance(value, list)
        or len(value) > MAX_LIST
        or not all(_is_int(item) and 0 <= item < 2**63 for item in value)
    ):
        raise MalformedTransaction(
            f"{where} must be a list of at most {MAX_LIST} integers in [0, 2^63)"
        )
    if expected == HASH_LIST and (
        not isinstance(value, list)
        or len(value) > MAX_LIST
        or not all(is_hex(item, 64) for item in value)
    ):
        raise MalformedTransaction(
            f"{where} must be a list of at most {MAX_LIST} SHA-256 hashes (64 lowercase hex)"
        )


def parse_transaction(data: object, max_bytes: int = 16_384) -> Transaction:
    """Check the shape of a transaction received as JSON. Raises MalformedTransaction."""
    if not isinstance(data, dict):
        raise MalformedTransaction("a transaction must be a JSON object")
    expected_keys = {"kind", "sender", "nonce", "body", "signature"}
    if set(data) != expected_keys:
        missing = sorted(expected_keys - set(data))
        extra = sorted(set(data) - expected_keys)
        raise MalformedTransaction(
            f"transaction fields wrong: missing {missing}, unexpected {extra}"
        )
    kind = data["kind"]
    if kind not in SCHEMAS:
        raise MalformedTransaction(f"unknown kind {kind!r}; known kinds: {', '.join(SCHEMAS)}")
    if not is_hex(data["sender"], 64):
        raise MalformedTransaction("sender must be an address (64 lowercase hex characters)")
    if not _is_int(data["nonce"]) or data["nonce"] < 0:
        raise MalformedTransaction("nonce must be a non-negative integer")
    if not isinstance(data["signature"], str) or not data["signature"]:
        raise BadSignature("the transaction is not signed")
    body = data["body"]
    if not isinstance(body, dict):
        raise MalformedTransaction("body must be an object")
    schema = SCHEMAS[kind]
    if set(body) != set(schema):
        raise MalformedTransaction(
            f"{kind} body needs exactly the fields {sorted(schema)}, got {sorted(body)}"
        )
    for name, expected in schema.items():
        _check_field(kind, name, expected, body[name])
    try:
        size = len(canonical_bytes(data))
    except EncodingError as error:
        raise MalformedTransaction(f"transaction cannot be encoded: {error}") from None
    if size > max_bytes:
        raise MalformedTransaction(f"transaction is {size} bytes; the limit is {max_bytes}")
    return Transaction(kind, data["sender"], data["nonce"], body, data["signature"])


def check_signature(chain_id: str, tx: Transaction) -> None:
    """Raises BadSignature unless the sender signed exactly this transaction for this chain."""
    if not verify_signature(tx.sender, tx_signing_bytes(chain_id, tx), tx.signature):
        raise BadSignature(
            f"signature does not verify for sender {tx.sender[:12]}… on chain {chain_id!r}"
        )
