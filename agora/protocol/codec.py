"""One canonical encoding for everything that is hashed or signed.

Canonical bytes are JSON with sorted keys, no whitespace and ASCII only, restricted to the types
that encode one way: ``None``, ``bool``, ``int``, ``str``, lists and string-keyed dicts. Floats are
refused because two machines may print them differently and money never needs them; byte strings
travel as lowercase hex. Every signature covers ``domain + b"\\n" + canonical_bytes(message)``, so
that a signature made for one purpose (a transaction) can never be replayed as another (a request,
a receipt, a block).
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from typing import Any

from nacl.exceptions import BadSignatureError
from nacl.signing import VerifyKey

Json = Any

TX_DOMAIN = b"agora/tx/v1"
BLOCK_DOMAIN = b"agora/block/v1"


class EncodingError(ValueError):
    """A value that has no canonical encoding (a float, bytes, a non-string key)."""


def _check(value: Json, path: str) -> None:
    if value is None or isinstance(value, (bool, int, str)):
        return
    if isinstance(value, float):
        raise EncodingError(f"{path}: floats have no canonical encoding; use integer units")
    if isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            _check(item, f"{path}[{index}]")
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise EncodingError(f"{path}: dict keys must be strings, got {key!r}")
            _check(item, f"{path}.{key}")
        return
    raise EncodingError(f"{path}: {type(value).__name__} has no canonical encoding")


def canonical_bytes(value: Json) -> bytes:
    """The one byte string that stands for ``value`` wherever it is hashed or signed."""
    _check(value, "$")
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def hash_value(value: Json) -> str:
    """Hex SHA-256 of the canonical bytes of ``value``."""
    return sha256_hex(canonical_bytes(value))


def signing_bytes(domain: bytes, message: Json) -> bytes:
    """What a signature covers: a domain tag, a newline, the canonical message."""
    return domain + b"\n" + canonical_bytes(message)


_LOWER_HEX = re.compile(r"[0-9a-f]*")


def is_hex(text: object, length: int) -> bool:
    """True for a lowercase hex string of exactly ``length`` characters."""
    if not isinstance(text, str) or len(text) != length:
        return False
    return _LOWER_HEX.fullmatch(text) is not None


@functools.lru_cache(maxsize=1 << 16)
def verify_signature(public_key_hex: str, message: bytes, signature_hex: str) -> bool:
    """Check an Ed25519 signature. Never raises: anything malformed is simply not valid.

    An empty or missing signature is invalid by construction (it is not 128 hex characters),
    which is the check Bittensor's SDK once forgot. The answer depends only on the three
    arguments, so it is memoised: a node checks a transaction when it enters the mempool and
    again when its block executes, and the second check is then free.
    """
    if not is_hex(public_key_hex, 64) or not is_hex(signature_hex, 128):
        return False
    try:
        VerifyKey(bytes.fromhex(public_key_hex)).verify(message, bytes.fromhex(signature_hex))
    except (BadSignatureError, ValueError, TypeError):
        return False
    return True
