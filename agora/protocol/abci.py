"""The rules shaped as a CometBFT ABCI 2.0 application.

An existing BFT engine drives an application through ``check_tx`` (admit to the mempool),
``prepare_proposal`` (the proposer picks transactions), ``process_proposal`` (everyone checks a
proposal), ``finalize_block`` (execute, return the app hash) and ``commit`` (make it durable and
current). Agora's built-in single-producer node drives the same five calls, so a network with
several operators can swap the driver and keep the rules. Time is the header's, never a clock's.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from agora.protocol.block import Block, Rejected, apply_block, execute
from agora.protocol.errors import BadNonce, InvalidBlock, InvalidTransaction
from agora.protocol.state import State, state_root
from agora.protocol.transactions import Transaction, check_signature


@dataclass
class Proposal:
    """A block body the proposer executed: what went in, what was left out and why."""

    state: State
    txs: list[Transaction]
    rejected: list[Rejected]
    app_hash: str


@dataclass
class LedgerApp:
    """The committed state and the one block being finalized on top of it."""

    state: State
    _finalized: State | None = field(default=None, repr=False)

    def check_tx(self, tx: Transaction, expected_nonce: int | None = None) -> None:
        """Cheap admission to the mempool: a valid signature and the sender's next nonce
        (``expected_nonce`` counts the sender's transactions already pending). The full rules
        run when the block executes. Raises BadSignature or BadNonce."""
        check_signature(self.state.chain_id, tx)
        expected = self.state.nonce(tx.sender) if expected_nonce is None else expected_nonce
        if tx.nonce != expected:
            raise BadNonce(f"nonce {tx.nonce} is not the sender's next nonce {expected}")

    def prepare_proposal(self, txs: list[Transaction], timestamp: int) -> Proposal:
        """Execute candidate transactions, leaving out the ones that fail."""
        new, included, rejected = execute(self.state, txs, timestamp, skip_invalid=True)
        return Proposal(new, included, rejected, state_root(new))

    def process_proposal(self, block: Block) -> bool:
        """Would this block be accepted? Never raises."""
        try:
            apply_block(self.state, block)
        except (InvalidBlock, InvalidTransaction):
            return False
        return True

    def finalize_block(self, block: Block) -> str:
        """Execute ``block`` and return the app hash (state root). Raises InvalidBlock."""
        self._finalized = apply_block(self.state, block)
        return block.header.state_root

    def commit(self) -> State:
        """Make the finalized state current (the caller has made the block durable)."""
        if self._finalized is None:
            raise InvalidBlock("commit without a finalized block")
        self.state, self._finalized = self._finalized, None
        return self.state
