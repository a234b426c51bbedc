"""Every error the rules can raise, drawn once.

    AgoraError
    ├── InvalidTransaction            a transaction is rejected; the state is unchanged
    │   ├── MalformedTransaction      missing or ill-typed fields, unknown kind, oversized
    │   ├── BadSignature              the signature does not verify for the sender
    │   ├── BadNonce                  the nonce is not the sender's next one
    │   ├── InsufficientBalance       the sender cannot pay the amount (or burn, or lock)
    │   ├── UnknownSubnet             no subnet has that netuid
    │   ├── NotRegistered             the hotkey has no uid on that subnet
    │   ├── NotOwner                  the sender does not own the subnet or the hotkey
    │   ├── RateLimited               too soon since the last action of that kind
    │   ├── InvalidWeights            weights fail one of subtensor's checks
    │   ├── InvalidParameter          a hyperparameter outside its bounds
    │   ├── InsufficientStake         unstake more than staked, or stake below a minimum
    │   ├── NoValidatorPermit         a dispute opened or voted by a hotkey without a permit
    │   └── InvalidDispute            a bad receipt or evidence, a duplicate, too late, closed
    └── InvalidBlock                  a block breaks a rule: header, a transaction, or its root

Every error carries a short machine-readable ``code`` (the class name in snake case) and a message
that says what to do about it. The node turns them into JSON errors with the same code.
"""

from __future__ import annotations

import re


class AgoraError(Exception):
    """Base of every error Agora raises on purpose."""

    @property
    def code(self) -> str:
        return re.sub(r"(?<!^)(?=[A-Z])", "_", type(self).__name__).lower()


class InvalidTransaction(AgoraError):
    """A transaction was rejected. Nothing it touched has changed."""


class MalformedTransaction(InvalidTransaction):
    pass


class BadSignature(InvalidTransaction):
    pass


class BadNonce(InvalidTransaction):
    pass


class InsufficientBalance(InvalidTransaction):
    pass


class UnknownSubnet(InvalidTransaction):
    pass


class NotRegistered(InvalidTransaction):
    pass


class NotOwner(InvalidTransaction):
    pass


class RateLimited(InvalidTransaction):
    pass


class InvalidWeights(InvalidTransaction):
    pass


class InvalidParameter(InvalidTransaction):
    pass


class InsufficientStake(InvalidTransaction):
    pass


class NoValidatorPermit(InvalidTransaction):
    pass


class InvalidDispute(InvalidTransaction):
    pass


class InvalidBlock(AgoraError):
    """A block breaks a rule. The chain does not move to it."""
