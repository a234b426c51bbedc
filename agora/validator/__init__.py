"""The validator: probes a subnet's miners against a reference model, scores them, and sets
weights every tempo (layer 6 of DESIGN.md).

    validator = await Validator.create(ValidatorConfig(netuid=1, hotkey=hot, coldkey=cold))
    await validator.run()

Importing this package is cheap (no model is loaded until ``Validator.create``). The checks and
their thresholds are in :mod:`agora.validator.checks`, scoring in :mod:`agora.validator.scoring`,
weights in :mod:`agora.validator.weights`; ``docs`` of each module say why.
"""

from agora.validator.checks import PROVEN, Verdict
from agora.validator.errors import SetupFailed, UnknownSubnetError, ValidatorError
from agora.validator.prober import MinerClient, MinerTarget
from agora.validator.scoring import ProbeOutcome, round_samples
from agora.validator.service import Validator, ValidatorConfig
from agora.validator.store import ScoreBook
from agora.validator.weights import NoWeights, compute_weights

__all__ = [
    "PROVEN",
    "MinerClient",
    "MinerTarget",
    "NoWeights",
    "ProbeOutcome",
    "ScoreBook",
    "SetupFailed",
    "UnknownSubnetError",
    "Validator",
    "ValidatorConfig",
    "ValidatorError",
    "Verdict",
    "compute_weights",
    "round_samples",
]
