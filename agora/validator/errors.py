"""Every error the validator raises on purpose, drawn once.

    AgoraError                          (agora.protocol.errors)
    └── ValidatorError                  the validator cannot start or go on
        ├── SetupFailed                 registering or staking at start failed (the message says
        │                               why: no coldkey to pay with, balance too low, refused)
        └── UnknownSubnetError          the subnet does not exist on this ledger

A miner's misbehaviour is never an error: it is a verdict (:mod:`agora.validator.checks`).
Ledger errors (``NodeUnreachable``, ``NodeError``) come through from :mod:`agora.chain.client`.
"""

from __future__ import annotations

from agora.protocol.errors import AgoraError

__all__ = ["SetupFailed", "UnknownSubnetError", "ValidatorError"]


class ValidatorError(AgoraError):
    """Base of every validator error."""


class SetupFailed(ValidatorError):
    pass


class UnknownSubnetError(ValidatorError):
    pass
