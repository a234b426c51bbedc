"""Genesis: the dev network's, and a small file format for any other network.

A genesis file is JSON::

    {
      "chain_id": "agora-testnet-1",
      "producer": "<64 hex: the address allowed to sign blocks>",
      "balances": {"<64 hex address>": 1000000000000, ...},   # in units (10^9 per token)
      "preset": "dev",                                         # a key of params.PRESETS
      "timestamp": 0                                           # optional, milliseconds
    }

The genesis *state* built from it is what a node stores and serves at ``GET /v1/genesis``; its
hash (``state.last_block_hash`` at height 0) names the chain, and a follower checks it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agora.crypto.keys import Keypair
from agora.protocol.block import genesis_state
from agora.protocol.codec import hash_value, is_hex
from agora.protocol.params import PRESETS
from agora.protocol.state import State
from agora.protocol.units import TOKEN

__all__ = [
    "DEV_ACCOUNTS",
    "DEV_CHAIN_ID",
    "DEV_PRODUCER_NAME",
    "GenesisSpec",
    "check_genesis_state",
    "dev_genesis",
    "dev_producer",
    "load_genesis",
    "save_genesis",
]

DEV_CHAIN_ID = "agora-dev"
DEV_PRODUCER_NAME = "agora-dev/producer"
# Well-known dev accounts (Keypair.from_name(name)) and what genesis gives them, in tokens.
DEV_ACCOUNTS: dict[str, int] = {
    "faucet": 1_000_000,
    "alice": 10_000,
    "bob": 10_000,
    "charlie": 10_000,
    "dave": 10_000,
    "eve": 10_000,
    "ferdie": 10_000,
}


@dataclass(frozen=True)
class GenesisSpec:
    """What a network starts from. ``to_state()`` builds the height-0 state."""

    chain_id: str
    producer: str
    balances: dict[str, int] = field(default_factory=dict)
    preset: str = "dev"
    timestamp: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.chain_id, str) or not self.chain_id or len(self.chain_id) > 64:
            raise ValueError("chain_id must be a non-empty string of at most 64 characters")
        if not is_hex(self.producer, 64):
            raise ValueError("producer must be an address (64 lowercase hex characters)")
        if self.preset not in PRESETS:
            raise ValueError(f"unknown preset {self.preset!r}; known: {', '.join(PRESETS)}")
        if not isinstance(self.timestamp, int) or self.timestamp < 0:
            raise ValueError("timestamp must be a non-negative integer (milliseconds)")
        for address, units in self.balances.items():
            if not is_hex(address, 64):
                raise ValueError(f"balance key {address!r} is not an address (64 lowercase hex)")
            if not isinstance(units, int) or isinstance(units, bool) or units < 0:
                raise ValueError(f"balance of {address[:12]}… must be a non-negative integer")

    def to_state(self) -> State:
        chain, hyper = PRESETS[self.preset]
        return genesis_state(
            self.chain_id, self.producer, dict(self.balances), chain, hyper, self.timestamp
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "chain_id": self.chain_id,
            "producer": self.producer,
            "balances": dict(sorted(self.balances.items())),
            "preset": self.preset,
            "timestamp": self.timestamp,
        }

    @classmethod
    def from_json(cls, data: Any) -> GenesisSpec:
        """Raises ValueError naming what is wrong."""
        if not isinstance(data, dict):
            raise ValueError("a genesis file holds a JSON object")
        allowed = {"chain_id", "producer", "balances", "preset", "timestamp"}
        unknown = sorted(set(data) - allowed)
        if unknown:
            raise ValueError(f"unknown genesis fields {unknown}; allowed: {sorted(allowed)}")
        missing = sorted({"chain_id", "producer"} - set(data))
        if missing:
            raise ValueError(f"genesis file lacks {missing}")
        balances = data.get("balances", {})
        if not isinstance(balances, dict):
            raise ValueError("balances must be an object of address -> units")
        return cls(
            chain_id=data["chain_id"],
            producer=data["producer"],
            balances=dict(balances),
            preset=data.get("preset", "dev"),
            timestamp=data.get("timestamp", 0),
        )


def load_genesis(path: Path) -> GenesisSpec:
    """Read a genesis file. Raises ValueError (with the path) if it is unreadable or invalid."""
    try:
        data = json.loads(Path(path).read_text())
    except OSError as error:
        raise ValueError(f"cannot read genesis file {path}: {error.strerror}") from None
    except json.JSONDecodeError as error:
        raise ValueError(f"genesis file {path} is not valid JSON: {error}") from None
    try:
        return GenesisSpec.from_json(data)
    except ValueError as error:
        raise ValueError(f"genesis file {path}: {error}") from None


def save_genesis(spec: GenesisSpec, path: Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(spec.to_json(), indent=2) + "\n")


def dev_producer() -> Keypair:
    """The dev network's block producer. Well known: never use it for anything real."""
    return Keypair.from_name(DEV_PRODUCER_NAME)


def dev_genesis() -> GenesisSpec:
    """chain ``agora-dev``, preset ``dev``, the faucet and alice ... ferdie funded."""
    balances = {
        Keypair.from_name(name).address: tokens * TOKEN for name, tokens in DEV_ACCOUNTS.items()
    }
    return GenesisSpec(DEV_CHAIN_ID, dev_producer().address, balances, "dev", 0)


def check_genesis_state(data: Any) -> State:
    """Rebuild a genesis state received as JSON and check that it hashes to its own name.

    ``genesis_state`` computes the hash over the state with ``last_block_hash`` still zero, then
    stores it there; this recomputes it the same way. Raises ValueError.
    """
    try:
        state = State.from_json(data)
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        raise ValueError(f"not a genesis state: {error!r}") from None
    if state.height != 0:
        raise ValueError(f"a genesis state is at height 0, this one is at {state.height}")
    claimed = state.last_block_hash
    state.last_block_hash = "0" * 64
    actual = hash_value({"genesis": state.to_json()})
    state.last_block_hash = claimed
    if actual != claimed:
        raise ValueError(f"genesis state hashes to {actual}, not to the {claimed} it claims")
    if state.to_json() != data:
        raise ValueError("genesis state does not survive a round trip; unknown or ill-typed fields")
    return state
