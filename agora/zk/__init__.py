"""Zero-knowledge classifiers: answers that carry an EZKL proof anyone verifies in ~10 ms.

    circuit = ensure_circuit(data_dir, "iris")            # train, export, set up (cached)
    answer = prove_classification(circuit, [5.1, 3.5, 1.4, 0.2])
    verify_classification(circuit, row, answer.label, answer.scores, answer.proof)  # or raises

Modules, one job each: `dataset` (data and deterministic training), `export` (ONNX bytes),
`srs` (the structured reference string; a locally generated one is FOR TESTING ONLY),
`circuit` (EZKL settings, calibration, compile, keys, the model id), `proof` (prove, verify),
`errors` (the exception tree), `devnet` (one SRS for every process of ``agora up``). The engine
that miners serve is `agora.models.zk_classifier`. See ``docs/zk.md``.
"""

from agora.zk.circuit import Circuit, build_circuit, ensure_circuit
from agora.zk.errors import (
    BadFeatures,
    CircuitError,
    InvalidProof,
    MalformedProof,
    ProofRejected,
    SrsError,
    WrongInput,
    WrongOutput,
    ZkError,
)
from agora.zk.proof import Classification, prove_classification, verify_classification

__all__ = [
    "BadFeatures",
    "Circuit",
    "CircuitError",
    "Classification",
    "InvalidProof",
    "MalformedProof",
    "ProofRejected",
    "SrsError",
    "WrongInput",
    "WrongOutput",
    "ZkError",
    "build_circuit",
    "ensure_circuit",
    "prove_classification",
    "verify_classification",
]
