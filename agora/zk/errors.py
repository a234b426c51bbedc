"""The errors of :mod:`agora.zk`, drawn once::

ZkError
├── CircuitError          the circuit cannot be built or loaded (EZKL missing, a step failed)
│   └── SrsError          the structured reference string is missing, unreadable or too small
├── BadFeatures           the input is not a row of finite numbers of the model's width
└── ProofRejected         a proof (or the answer it comes with) does not check; ``reason`` is
    │                     a short code for logs and verdicts, the message says what is wrong
    ├── MalformedProof    not a proof at all: not JSON of the wire format, truncated, bad hex
    ├── WrongInput        a valid-looking proof for another input than the one asked
    ├── WrongOutput       the answer's label or scores are not the proof's public output
    └── InvalidProof      the proof does not verify under this circuit's verification key:
                          forged, altered, or made for another circuit (another key)
"""

from __future__ import annotations

__all__ = [
    "BadFeatures",
    "CircuitError",
    "InvalidProof",
    "MalformedProof",
    "ProofRejected",
    "SrsError",
    "WrongInput",
    "WrongOutput",
    "ZkError",
]


class ZkError(Exception):
    """Base class of everything :mod:`agora.zk` raises on purpose."""


class CircuitError(ZkError):
    """The circuit could not be built or loaded."""


class SrsError(CircuitError):
    """The structured reference string is missing, unreadable or too small for the circuit."""


class BadFeatures(ZkError):
    """The features are not a list of finite numbers of the model's width, within range."""


class ProofRejected(ZkError):
    """A proof that does not check. ``reason`` is a short machine-readable code."""

    reason = "rejected"


class MalformedProof(ProofRejected):
    reason = "malformed_proof"


class WrongInput(ProofRejected):
    reason = "wrong_input"


class WrongOutput(ProofRejected):
    reason = "wrong_output"


class InvalidProof(ProofRejected):
    reason = "invalid_proof"
