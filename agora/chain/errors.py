"""Every error the node (and its client) raises on purpose, drawn once.

    AgoraError                          (agora.protocol.errors)
    └── ChainError                      something went wrong in the node, not in the rules
        ├── StoreError                  the block store cannot be used
        │   ├── StoreCorrupted          the database is damaged, truncated or inconsistent
        │   └── GenesisMismatch         the data directory holds another chain
        ├── Refused                     the mempool will not take a transaction (rules not run)
        │   ├── PayloadTooLarge         the request body is over the size limit
        │   ├── TooManyPending          the sender already has the maximum of pending transactions
        │   ├── SenderRateLimited       the sender submits faster than its token bucket allows
        │   └── MempoolFull             the node holds as many pending transactions as it may
        ├── FollowerDiverged            a block from the upstream node does not verify
        └── NodeError                   the node answered an API call with an error (client side)
            ├── TransactionRejected     submit_and_wait: the transaction was left out of a block
            └── NodeUnreachable         no node answers at that URL

A transaction the *rules* reject raises the protocol's InvalidTransaction subclasses
(BadSignature, BadNonce, InsufficientBalance ...), never one of these. ``code`` is the class name
in snake case everywhere, except for NodeError, which carries the code the node sent.
"""

from __future__ import annotations

from agora.protocol.errors import AgoraError


class ChainError(AgoraError):
    """Base of every node error."""


class StoreError(ChainError):
    pass


class StoreCorrupted(StoreError):
    pass


class GenesisMismatch(StoreError):
    pass


class Refused(ChainError):
    """The node will not hold the transaction right now; it was not judged by the rules."""


class PayloadTooLarge(Refused):
    pass


class TooManyPending(Refused):
    pass


class SenderRateLimited(Refused):
    pass


class MempoolFull(Refused):
    pass


class FollowerDiverged(ChainError):
    """The upstream served a block that does not verify. ``height`` names it."""

    def __init__(self, height: int, message: str) -> None:
        super().__init__(message)
        self.height = height


class NodeError(ChainError):
    """An error response from a node: its ``code``, its message and the HTTP status."""

    def __init__(self, code: str, message: str, status: int = 0) -> None:
        super().__init__(message)
        self._code = code
        self.message = message
        self.status = status

    @property
    def code(self) -> str:
        return self._code


class TransactionRejected(NodeError):
    """The node dropped the transaction; ``code`` and ``message`` say which rule refused it."""


class NodeUnreachable(NodeError):
    def __init__(self, url: str, reason: str) -> None:
        super().__init__(
            "node_unreachable",
            f"no Agora node answers at {url} ({reason}); start one with `agora node start --dev`",
        )
        self.url = url
