"""The node: block store, mempool, block production, follower mode, HTTP API and its client.

Layer 3 of DESIGN.md. It drives the rules in ``agora.protocol`` through ``LedgerApp`` and
``apply_block`` and never changes them.
"""

from agora.chain.client import LedgerClient
from agora.chain.errors import NodeError, NodeUnreachable, TransactionRejected
from agora.chain.node import Node, NodeConfig

__all__ = [
    "LedgerClient",
    "Node",
    "NodeConfig",
    "NodeError",
    "NodeUnreachable",
    "TransactionRejected",
]
