"""Every error the miner service raises on purpose, drawn once.

    AgoraError                          (agora.protocol.errors)
    └── MinerError                      anything the miner service or its client refuses
        ├── MinerConfigError            a setting cannot work: a bad price, an address that
        │                               cannot be announced, a port in use, an unknown cheat mode
        ├── LedgerSetupError            the ledger does not give the miner what it needs
        │   ├── SubnetNotFound          no subnet has that netuid
        │   ├── HotkeyNotRegistered     the hotkey has no uid and --no-register forbids paying
        │   ├── BurnTooHigh             registering costs more than --max-burn allows
        │   ├── CannotPayBurn           the coldkey's balance is below the registration burn
        │   └── TransactionFailed       a register or serve transaction was left out of a block
        └── MinerCallError              (client side) a miner answered a call with an error

Errors of the layers below pass through unchanged: ``NodeUnreachable``/``NodeError`` from the
ledger client, ``ModelError`` subclasses from loading the engine, ``WalletError`` subclasses from
opening keys. Every message says what to do next.
"""

from __future__ import annotations

from agora.protocol.errors import AgoraError

__all__ = [
    "BurnTooHigh",
    "CannotPayBurn",
    "HotkeyNotRegistered",
    "LedgerSetupError",
    "MinerCallError",
    "MinerConfigError",
    "MinerError",
    "SubnetNotFound",
    "TransactionFailed",
]


class MinerError(AgoraError):
    """Base of every miner-service error."""


class MinerConfigError(MinerError):
    pass


class LedgerSetupError(MinerError):
    pass


class SubnetNotFound(LedgerSetupError):
    pass


class HotkeyNotRegistered(LedgerSetupError):
    pass


class BurnTooHigh(LedgerSetupError):
    pass


class CannotPayBurn(LedgerSetupError):
    pass


class TransactionFailed(LedgerSetupError):
    """A transaction the miner sent was rejected; ``code`` is the ledger's reason."""

    def __init__(self, kind: str, code: str, message: str) -> None:
        super().__init__(f"the {kind} transaction was rejected: {code}: {message}")
        self.kind = kind
        self.reason = code


class MinerCallError(MinerError):
    """A miner refused a call: the HTTP ``status`` and the error ``code`` it sent (the guard's,
    e.g. ``caller_not_registered``, or the miner's, e.g. ``context_too_long``)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.reason = code
        self.message = message
