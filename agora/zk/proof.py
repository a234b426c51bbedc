"""Prove a classification, and check one: the answer, its proof, and what the proof says.

A miner answers with a `Classification`: the label, the scores (logits) and the proof. On the
wire the proof is ``{"instances": [[felt, ...]], "proof": "<hex>"}``: EZKL's public instances
(the input row, then the scores, as field elements in little-endian hex) and the proof bytes.

What a verified proof establishes: the committed circuit (these ONNX weights, these settings,
this verification key), run on *this* input row at EZKL's fixed-point precision, outputs *these*
scores. `verify_classification` checks, in order, with a distinct error for each failure:

1. the proof is well formed (`MalformedProof`: not the wire format, bad hex, not the length
   of this circuit's proofs: truncated or padded; halo2 itself ignores trailing bytes);
2. its public input is the row that was asked, quantized as EZKL does (`WrongInput`);
3. its public output is the answer's scores, and the label is their argmax (`WrongOutput`);
4. the proof verifies under the circuit's own verification key, which the verifier derived
   itself from the model spec (`InvalidProof`: forged, altered, or made for another circuit).

What it does not establish: that the row is what some user meant to send (a gateway in the
middle could change it; the receipt's request hash covers that), nor anything about the float
model beyond the circuit: scores are the circuit's fixed-point values, which differ from the
float network by ~1e-3.
"""

from __future__ import annotations

import json
import math
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from agora.zk.circuit import Circuit, ezkl_step, load_ezkl
from agora.zk.errors import BadFeatures, InvalidProof, MalformedProof, WrongInput, WrongOutput

__all__ = [
    "MAX_FEATURE",
    "Classification",
    "check_features",
    "felt_to_int",
    "int_to_felt",
    "prove_classification",
    "quantize_row",
    "verify_classification",
]

#: BN254's scalar field, in which EZKL's public instances live.
FIELD_MODULUS = 21888242871839275222246405745257275088548364400416034343698204186575808495617
#: Largest |feature| accepted: keeps every intermediate value inside the circuit's range checks
#: (scores at scale 2**24, decomposed in 4 legs of 2**10; ±1000 on every feature is tested).
MAX_FEATURE = 1000.0
_FELT_HEX = 64


@dataclass(frozen=True)
class Classification:
    """A proven answer. ``scores`` are exactly the proof's outputs (dequantized)."""

    label: int
    label_name: str
    scores: list[float]
    proof: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def felt_to_int(felt: str) -> int:
    """A field element as EZKL writes it (64 hex digits, little-endian) to a signed integer.
    Raises ValueError."""
    if not isinstance(felt, str) or len(felt) != _FELT_HEX:
        raise ValueError("a field element is 64 hex digits")
    value = int.from_bytes(bytes.fromhex(felt), "little")
    if value >= FIELD_MODULUS:
        raise ValueError("not a field element (not below the modulus)")
    return value - FIELD_MODULUS if value > FIELD_MODULUS // 2 else value


def int_to_felt(value: int) -> str:
    """A signed integer as EZKL writes a field element (the inverse of `felt_to_int`)."""
    return (value % FIELD_MODULUS).to_bytes(32, "little").hex()


def check_features(features: object, width: int) -> list[float]:
    """Validate one input row. Raises `BadFeatures` saying what is wrong."""
    if isinstance(features, str | bytes) or not isinstance(features, Sequence):
        raise BadFeatures(f"features must be a list of {width} numbers")
    row = list(features)
    if len(row) != width:
        raise BadFeatures(f"features must hold {width} numbers, not {len(row)}")
    out = []
    for value in row:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise BadFeatures(f"feature {value!r} is not a number")
        if not math.isfinite(value) or abs(value) > MAX_FEATURE:
            raise BadFeatures(f"each feature must be finite and within ±{MAX_FEATURE:g}")
        out.append(float(value))
    return out


def quantize_row(circuit: Circuit, row: Sequence[float]) -> list[int]:
    """The row as the proof's public input holds it: each value read as EZKL reads the model's
    input (float32 for these circuits: 2.40039062 and 2.400390625 are the same float32), times
    ``2**input_scale``, rounded half away from zero. Python's own ``round`` (half to even, on
    float64) would disagree on some rows and reject honest proofs."""
    ezkl = load_ezkl()
    kind = getattr(ezkl.PyInputType, circuit.input_type)
    return [felt_to_int(ezkl.float_to_felt(v, circuit.input_scale, kind)) for v in row]


def _label(scores: Sequence[int]) -> int:
    """Argmax, the first one on ties."""
    return max(range(len(scores)), key=lambda i: (scores[i], -i))


def prove_classification(circuit: Circuit, features: Sequence[float]) -> Classification:
    """Run the circuit on one row and prove it (about 0.5 s for iris on a quiet machine).

    Raises `BadFeatures` or `CircuitError` (an EZKL step failed).
    """
    row = check_features(features, circuit.width)
    ezkl = load_ezkl()
    with tempfile.TemporaryDirectory(prefix="agora-zk-") as tmp:
        folder = Path(tmp)
        (folder / "input.json").write_text(json.dumps({"input_data": [row]}))
        ezkl_step(
            "gen_witness",
            ezkl.gen_witness,
            str(folder / "input.json"),
            str(circuit.compiled),
            str(folder / "witness.json"),
            vk_path=str(circuit.vk),
            srs_path=str(circuit.srs),
        )
        ezkl_step(
            "prove",
            ezkl.prove,
            str(folder / "witness.json"),
            str(circuit.compiled),
            str(circuit.pk),
            str(folder / "proof.json"),
            str(circuit.srs),
        )
        raw = json.loads((folder / "proof.json").read_text())
    instances = [[str(felt) for felt in raw["instances"][0]]]
    outputs = [felt_to_int(f) for f in instances[0][circuit.width :]]
    label = _label(outputs)
    return Classification(
        label=label,
        label_name=circuit.label_names[label],
        scores=[v / 2**circuit.output_scale for v in outputs],
        proof={"instances": instances, "proof": bytes(raw["proof"]).hex()},
    )


def _parse_proof(circuit: Circuit, proof: object) -> tuple[list[int], bytes, list[str]]:
    """The wire proof's instances (as integers and as felts) and bytes. Raises MalformedProof."""
    if not isinstance(proof, dict) or set(proof) != {"instances", "proof"}:
        raise MalformedProof('the proof must be {"instances": [[felt, ...]], "proof": "<hex>"}')
    instances, hex_proof = proof["instances"], proof["proof"]
    expected = circuit.width + len(circuit.label_names)
    if (
        not isinstance(instances, list)
        or len(instances) != 1
        or not isinstance(instances[0], list)
        or len(instances[0]) != expected
    ):
        raise MalformedProof(f"the proof must carry one list of {expected} public instances")
    try:
        values = [felt_to_int(felt) for felt in instances[0]]
    except (ValueError, TypeError) as error:
        raise MalformedProof(f"a public instance is not a field element: {error}") from None
    if not isinstance(hex_proof, str) or not hex_proof:
        raise MalformedProof("the proof bytes must be a non-empty hex string")
    try:
        data = bytes.fromhex(hex_proof)
    except ValueError:
        raise MalformedProof("the proof bytes are not valid hex") from None
    if len(data) != circuit.proof_bytes:
        raise MalformedProof(
            f"the proof has {len(data)} bytes; every proof of {circuit.model_id} has "
            f"{circuit.proof_bytes}: it is truncated or padded"
        )
    return values, data, list(instances[0])


def _ezkl_verify(circuit: Circuit, felts: list[str], data: bytes) -> None:
    """Raises InvalidProof."""
    ezkl = load_ezkl()
    with tempfile.TemporaryDirectory(prefix="agora-zk-") as tmp:
        path = Path(tmp) / "proof.json"
        path.write_text(json.dumps({"instances": [felts], "proof": list(data)}))
        try:
            ok = ezkl.verify(str(path), str(circuit.settings), str(circuit.vk), str(circuit.srs))
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as error:  # a Rust panic reaches Python as a BaseException
            text = str(error)
            raise InvalidProof(
                f"the proof does not verify under the verification key of {circuit.model_id} "
                f"(forged, altered, or made for another circuit): {text[:200]}"
            ) from None
    if ok is not True:
        raise InvalidProof(
            f"the proof does not verify under the verification key of {circuit.model_id} "
            "(forged, altered, or made for another circuit)"
        )


def verify_classification(
    circuit: Circuit,
    features: Sequence[float],
    label: object,
    scores: object,
    proof: object,
) -> None:
    """Check a miner's answer to ``features`` (see the module docstring; about 10 ms).

    Raises `BadFeatures` (the row asked is itself invalid), `MalformedProof`, `WrongInput`,
    `WrongOutput` or `InvalidProof`; returns None when everything checks.
    """
    row = check_features(features, circuit.width)
    values, data, felts = _parse_proof(circuit, proof)
    asked = quantize_row(circuit, row)
    proven_input = values[: circuit.width]
    if proven_input != asked:
        shown = [v / 2**circuit.input_scale for v in proven_input]
        raise WrongInput(f"the proof is for the input {shown}, not the row asked {row}")
    outputs = values[circuit.width :]
    proven = [v / 2**circuit.output_scale for v in outputs]
    if not isinstance(scores, list) or len(scores) != len(outputs):
        raise WrongOutput(f"the answer must carry {len(outputs)} scores, the proof's outputs")
    if [float(s) if isinstance(s, int | float) else None for s in scores] != proven:
        raise WrongOutput(f"the answer's scores {scores} are not the proof's outputs {proven}")
    if isinstance(label, bool) or label != _label(outputs):
        raise WrongOutput(
            f"label {label!r} is not the argmax of the proven scores ({_label(outputs)})"
        )
    _ezkl_verify(circuit, felts, data)
