"""Ed25519 key pairs.

An address is the lowercase hex of a 32-byte Ed25519 public key. A *coldkey* owns funds; a
*hotkey* runs a miner or validator and signs its traffic, so a stolen hotkey can be replaced
without the funds behind it being at risk (the split Bittensor makes).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from nacl.signing import SigningKey

from agora.protocol.codec import Json, signing_bytes, verify_signature


@dataclass(frozen=True)
class Keypair:
    """A private key and the address it signs for."""

    seed: bytes

    def __post_init__(self) -> None:
        if len(self.seed) != 32:
            raise ValueError("an Ed25519 seed is exactly 32 bytes")

    @classmethod
    def generate(cls) -> Keypair:
        return cls(bytes(SigningKey.generate()))

    @classmethod
    def from_seed_hex(cls, seed_hex: str) -> Keypair:
        return cls(bytes.fromhex(seed_hex))

    @classmethod
    def from_name(cls, name: str) -> Keypair:
        """A well-known key for tests and the dev network (like Substrate's //Alice). Never use
        one for real funds: anyone can derive it from its name."""
        import hashlib

        return cls(hashlib.sha256(b"agora/dev-key/" + name.encode()).digest())

    @cached_property
    def _signing_key(self) -> SigningKey:
        # Deriving the key costs a scalar multiplication (~36 µs); do it once per keypair.
        return SigningKey(self.seed)

    @cached_property
    def address(self) -> str:
        return bytes(self._signing_key.verify_key).hex()

    def sign(self, message: bytes) -> str:
        """Hex signature of raw bytes."""
        return self._signing_key.sign(message).signature.hex()

    def sign_message(self, domain: bytes, message: Json) -> str:
        """Hex signature over ``domain`` and the canonical bytes of ``message``."""
        return self.sign(signing_bytes(domain, message))

    def __repr__(self) -> str:  # never print the seed
        return f"Keypair(address={self.address[:12]}…)"


def verify(address: str, domain: bytes, message: Json, signature_hex: str) -> bool:
    """Check a signature made with :meth:`Keypair.sign_message`."""
    return verify_signature(address, signing_bytes(domain, message), signature_hex)
