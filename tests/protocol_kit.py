"""A tiny in-memory chain for testing the rules: sign, seal, apply, with no node and no I/O."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from agora.crypto.keys import Keypair
from agora.crypto.signing import seal_block, sign_transaction
from agora.protocol.block import Block, apply_block, execute, genesis_state
from agora.protocol.params import DEV_CHAIN, DEV_HYPERPARAMS, ChainParams, Hyperparams
from agora.protocol.state import State
from agora.protocol.transactions import Transaction
from agora.protocol.units import TOKEN

CHAIN_ID = "agora-test"
PRODUCER = Keypair.from_name("test/producer")


def key(name: str) -> Keypair:
    return Keypair.from_name("test/" + name)


@dataclass
class Chain:
    state: State
    blocks: list[Block] = field(default_factory=list)
    genesis: State | None = None

    @classmethod
    def new(
        cls,
        funded: dict[str, int] | None = None,
        params: ChainParams = DEV_CHAIN,
        hyperparams: Hyperparams = DEV_HYPERPARAMS,
    ) -> Chain:
        funded = funded if funded is not None else {"alice": 10_000, "bob": 10_000}
        balances = {key(name).address: tokens * TOKEN for name, tokens in funded.items()}
        state = genesis_state(CHAIN_ID, PRODUCER.address, balances, params, hyperparams)
        return cls(state=state, genesis=state)

    def tx(self, who: Keypair, kind: str, /, **body: Any) -> Transaction:
        nonce = self.state.nonce(who.address)
        return sign_transaction(who, self.state.chain_id, kind, nonce, body)

    def block(self, txs: list[Transaction] | None = None) -> Block:
        """Seal and apply a block of ``txs`` (invalid ones left out, as the producer would)."""
        txs = list(txs or [])
        timestamp = self.state.timestamp + 1000
        new, included, rejected = execute(self.state, txs, timestamp, skip_invalid=True)
        sealed = seal_block(PRODUCER, self.state, new, included, timestamp)
        self.state = apply_block(self.state, sealed)
        self.blocks.append(sealed)
        self.last_rejected = rejected
        return sealed

    last_rejected: list[Any] = field(default_factory=list)

    def do(self, who: Keypair, kind: str, /, **body: Any) -> None:
        """Apply one transaction in its own block; raise its error if it was rejected."""
        self.block([self.tx(who, kind, **body)])
        if self.last_rejected:
            raise self.last_rejected[0].error

    def advance(self, blocks: int) -> None:
        for _ in range(blocks):
            self.block()
