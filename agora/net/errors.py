"""Every error the wire raises, drawn once.

    AgoraError                          (agora.protocol.errors)
    └── WireError                       anything the wire layer refuses
        ├── RequestRejected             a request the guard refuses; carries an HTTP status
        │   ├── BodyTooLarge            413  the body is over the size limit
        │   ├── MissingSignature        401  an X-Agora-* header is absent or empty
        │   ├── MalformedHeaders        400  an X-Agora-* header is not in its exact format
        │   ├── WrongCallee             421  the request was signed for another hotkey
        │   ├── StaleTimestamp          401  signed too long ago (or before this server started)
        │   ├── FutureTimestamp         401  signed too far in the future
        │   ├── InvalidSignature        401  the signature does not verify for the caller
        │   ├── ReusedNonce             409  this caller already used this nonce
        │   ├── CallerNotRegistered     403  the caller has no uid on the subnet
        │   ├── StakeTooLow             403  the caller's stake is under the subnet minimum
        │   ├── TooManyRequests         429  the caller's token bucket is empty
        │   ├── ReplayCacheFull         503  too many fresh nonces to remember; retry later
        │   └── StandingUnavailable     503  the metagraph could not be read
        └── InvalidReceipt              a receipt is malformed, badly signed, or for other bytes

Every error has a machine-readable ``code`` (the class name in snake case, e.g.
``stale_timestamp``) and a message that says what to do about it. The guard sends rejections as
``{"error": {"code": ..., "message": ...}}`` with the status listed above.
"""

from __future__ import annotations

import math

from agora.protocol.errors import AgoraError

__all__ = [
    "BodyTooLarge",
    "CallerNotRegistered",
    "FutureTimestamp",
    "InvalidReceipt",
    "InvalidSignature",
    "MalformedHeaders",
    "MissingSignature",
    "ReplayCacheFull",
    "RequestRejected",
    "ReusedNonce",
    "StakeTooLow",
    "StaleTimestamp",
    "StandingUnavailable",
    "TooManyRequests",
    "WireError",
    "WrongCallee",
]


class WireError(AgoraError):
    """Base of every error raised by :mod:`agora.net`."""


class RequestRejected(WireError):
    """A request the guard refuses. ``status`` is the HTTP status it is answered with;
    ``retry_after`` (seconds), when set, becomes a ``Retry-After`` header."""

    status: int = 400

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after

    def retry_after_header(self) -> str | None:
        """Whole seconds, rounded up and at least 1, as ``Retry-After`` wants them."""
        if self.retry_after is None:
            return None
        return str(max(1, math.ceil(self.retry_after)))

    def to_json(self) -> dict[str, dict[str, str]]:
        return {"error": {"code": self.code, "message": self.message}}


class BodyTooLarge(RequestRejected):
    status = 413


class MissingSignature(RequestRejected):
    status = 401


class MalformedHeaders(RequestRejected):
    status = 400


class WrongCallee(RequestRejected):
    status = 421


class StaleTimestamp(RequestRejected):
    status = 401


class FutureTimestamp(RequestRejected):
    status = 401


class InvalidSignature(RequestRejected):
    status = 401


class ReusedNonce(RequestRejected):
    status = 409


class CallerNotRegistered(RequestRejected):
    status = 403


class StakeTooLow(RequestRejected):
    status = 403


class TooManyRequests(RequestRejected):
    status = 429


class ReplayCacheFull(RequestRejected):
    status = 503


class StandingUnavailable(RequestRejected):
    status = 503


class InvalidReceipt(WireError):
    """A receipt that does not hold. ``reason`` says which check failed, in words."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
