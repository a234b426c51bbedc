"""Signing ledger transactions and blocks with a :class:`Keypair`."""

from __future__ import annotations

from typing import Any

from agora.crypto.keys import Keypair
from agora.protocol.block import Block, Header, header_signing_bytes, tx_root
from agora.protocol.state import State, state_root
from agora.protocol.transactions import Transaction, tx_signing_bytes


def sign_transaction(
    keypair: Keypair, chain_id: str, kind: str, nonce: int, body: dict[str, Any]
) -> Transaction:
    """A transaction of ``kind`` from ``keypair``'s address, signed for ``chain_id``."""
    unsigned = Transaction(kind, keypair.address, nonce, body, "")
    return Transaction(
        kind, keypair.address, nonce, body, keypair.sign(tx_signing_bytes(chain_id, unsigned))
    )


def seal_block(
    producer: Keypair, parent: State, new_state: State, txs: list[Transaction], timestamp: int
) -> Block:
    """Header and signature for a block whose body was executed into ``new_state``."""
    header = Header(
        chain_id=parent.chain_id,
        height=parent.height + 1,
        parent_hash=parent.last_block_hash,
        timestamp=timestamp,
        producer=producer.address,
        tx_root=tx_root(txs),
        state_root=state_root(new_state),
    )
    return Block(header, tuple(txs), producer.sign(header_signing_bytes(header)))
