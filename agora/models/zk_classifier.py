"""``classify:<dataset>``: a small classifier whose every answer carries an EZKL proof.

    engine = await ZkClassifierEngine.load(data_dir, "iris")  # or load_engine("classify:iris")
    answer = await engine.classify([5.1, 3.5, 1.4, 0.2])
    # {"label": 0, "label_name": "setosa", "scores": [...], "proof": {"instances", "proof"}}

The circuit (trained weights, settings, keys) comes from `agora.zk.circuit.ensure_circuit`,
cached under ``<data_dir>/models/<dataset>/``; the model id ``classify:<dataset>@<16 hex>``
commits to the ONNX weights, the settings and the verification key. Proving runs on the
engine's one model thread (about 0.5 s per answer for iris), so requests queue rather than
compete for the two cores. The SRS comes from ``srs=PATH`` in the spec; without it a locally
generated one is used, and `engine_name` says **FOR TESTING ONLY** wherever it is printed.

Token counts for pricing: a row counts as ``width`` tokens (one per feature).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agora.models.base import Engine, EngineInfo, ModelWorker
from agora.models.errors import EngineUnavailable, InvalidRequest, InvalidSpec, ModelError

if TYPE_CHECKING:
    from agora.zk.circuit import Circuit

__all__ = ["ZkClassifierEngine"]


class ZkClassifierEngine(Engine):
    """Classifies rows of features and proves each answer (see the module docstring)."""

    task = "classify"

    def __init__(self, circuit: Circuit) -> None:
        self.circuit = circuit
        self.model_id = circuit.model_id
        self.model_hash = circuit.model_hash
        self.context_length = circuit.width
        self.dimension = len(circuit.label_names)
        testing = " with a TESTING-ONLY SRS" if circuit.testing_srs else ""
        self.engine_name = f"ezkl{testing}"
        self._worker = ModelWorker("zk")

    @classmethod
    async def load(
        cls, data_dir: Path | str, name: str = "iris", srs: Path | str | None = None
    ) -> ZkClassifierEngine:
        """Build or load the circuit for dataset ``name``. Raises `InvalidSpec` (unknown
        dataset), `EngineUnavailable` (EZKL missing, a setup step failed, a bad SRS)."""
        try:
            from agora.zk.circuit import ensure_circuit
            from agora.zk.dataset import DATASETS
            from agora.zk.errors import ZkError
        except ImportError as error:  # pragma: no cover - ezkl and onnx are dependencies
            raise EngineUnavailable(f"ZK classifiers need ezkl and onnx: {error}") from None
        if name not in DATASETS:
            raise InvalidSpec(f"unknown ZK dataset {name!r}; known: {', '.join(DATASETS)}")
        try:
            circuit = await asyncio.to_thread(ensure_circuit, data_dir, name, srs)
        except ZkError as error:
            raise EngineUnavailable(f"cannot set up the {name} circuit: {error}") from None
        return cls(circuit)

    def info(self) -> EngineInfo:
        info = super().info()
        info.extra.update(
            srs=str(self.circuit.srs),
            testing_srs=self.circuit.testing_srs,
            labels=list(self.circuit.label_names),
        )
        return info

    async def classify(self, features: Sequence[float]) -> dict[str, Any]:
        """Label, scores and proof for one row. Raises `InvalidRequest` (bad features),
        `ModelError` (proving failed), `EngineClosed`."""
        from agora.zk.errors import BadFeatures, ZkError
        from agora.zk.proof import check_features, prove_classification

        try:
            row = check_features(features, self.circuit.width)
        except BadFeatures as error:
            raise InvalidRequest(str(error)) from None
        try:
            answer = await self._worker.run(prove_classification, self.circuit, row)
        except ZkError as error:
            raise ModelError(f"proving failed: {error}") from None
        return answer.to_dict()

    async def count_tokens(self, text: str) -> int:
        return int(self.circuit.width)

    async def close(self) -> None:
        self._worker.close()
