"""EZKL proofs of the iris classifier against honest and cheating miners (``make bench-verify``).

Honest answers: one proof per dataset row (all 150 iris rows in the full run, 5 with
``--quick``), each verified as a validator does (`agora.zk.proof.verify_classification`, with
the verification key the validator set up itself). False positives: the target is zero.

Adversaries, each made from those honest answers (no extra proving) unless said otherwise:

- ``forged-proof``: one random byte of the proof flipped;
- ``truncated-proof``: the proof cut at a random length;
- ``padded-proof``: zero bytes appended (halo2 alone would accept it: it ignores trailing bytes);
- ``replayed-proof``: the answer to another row, sent for this one (a cached answer);
- ``rewritten-input``: that replayed proof with its public input edited to the row asked;
- ``forged-output``: the scores changed to make another label win, in the answer *and* in the
  proof's public output, so that they agree with each other;
- ``wrong-label``: an honest proof with another label in the answer;
- ``other-model (perturb-5%)``: a miner that serves weights with 5% noise and proves honestly
  with its own circuit (its own keys);
- ``other-srs``: the right weights set up with another (testing) SRS, so another key.

Verification cost is the validator's time to verify over the miner's time to prove (witness
plus proof); proof size is per answer (one classification; the column says "per token").

Run alone for the setup figures next to ENVIRONMENT.md's reference (a 16-32-32-4 MLP: about
4 s setup, 6 s to prove, 0.03 s to verify, 3 KB proofs): ``python -m bench.verify_zk [--quick]``.
"""

from __future__ import annotations

import copy
import random
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from agora.zk.circuit import Circuit, build_circuit, ensure_circuit
from agora.zk.dataset import Weights, train
from agora.zk.errors import ProofRejected
from agora.zk.proof import (
    Classification,
    int_to_felt,
    prove_classification,
    quantize_row,
    verify_classification,
)
from bench.verify_common import VerifyRow

LAYER = "zk"
SEED = 20261122


def _proof_bytes(answer: Classification) -> int:
    return len(bytes.fromhex(answer.proof["proof"])) + 32 * len(answer.proof["instances"][0])


def _rejects(circuit: Circuit, row: list[float], answer: dict[str, Any]) -> bool:
    try:
        verify_classification(circuit, row, answer["label"], answer["scores"], answer["proof"])
    except ProofRejected:
        return True
    return False


def _perturbed(weights: Weights, fraction: float, rng: np.random.RandomState) -> Weights:
    def noisy(array: np.ndarray) -> np.ndarray:
        changed = array * (1.0 + fraction * rng.randn(*array.shape))
        return (np.round(changed * 256) / 256).astype(np.float32)

    return Weights(noisy(weights.w1), noisy(weights.b1), noisy(weights.w2), noisy(weights.b2))


class _Run:
    """The honest circuit, its proofs and timings, shared by every adversary."""

    def __init__(self, data_dir: Path, count: int) -> None:
        began = time.perf_counter()
        self.circuit = ensure_circuit(data_dir, "iris")
        self.setup_s = time.perf_counter() - began
        data = self.circuit.data
        self.rows = [
            [float(v) for v in data.features[i]] for i in range(min(count, len(data.labels)))
        ]
        self.answers: list[Classification] = []
        self.prove_s: list[float] = []
        self.verify_s: list[float] = []
        for row in self.rows:
            began = time.perf_counter()
            self.answers.append(prove_classification(self.circuit, row))
            self.prove_s.append(time.perf_counter() - began)

    def honest(self) -> VerifyRow:
        rejected = 0
        for row, answer in zip(self.rows, self.answers, strict=True):
            began = time.perf_counter()
            rejected += _rejects(self.circuit, row, answer.to_dict())
            self.verify_s.append(time.perf_counter() - began)
        cost = sum(self.verify_s) / sum(self.prove_s)
        size = sum(_proof_bytes(a) for a in self.answers) / len(self.answers)
        return VerifyRow(
            LAYER,
            "honest",
            len(self.rows),
            rejected,
            verify_cost=cost,
            proof_bytes_per_token=size,
            note=f"{self.circuit.model_id}; bytes per answer; SRS FOR TESTING ONLY",
        )

    def tampered(
        self, name: str, change: Callable[[int, dict[str, Any]], dict[str, Any]]
    ) -> VerifyRow:
        caught = 0
        for index, row in enumerate(self.rows):
            answer = change(index, copy.deepcopy(self.answers[index].to_dict()))
            caught += _rejects(self.circuit, row, answer)
        return VerifyRow(LAYER, name, len(self.rows), caught)


def _adversaries(run: _Run, rng: random.Random) -> list[VerifyRow]:
    circuit = run.circuit
    width = circuit.width

    def flip(_: int, answer: dict[str, Any]) -> dict[str, Any]:
        data = bytearray(bytes.fromhex(answer["proof"]["proof"]))
        data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        answer["proof"]["proof"] = data.hex()
        return answer

    def pad(_: int, answer: dict[str, Any]) -> dict[str, Any]:
        answer["proof"]["proof"] += "00" * rng.randrange(1, 64)
        return answer

    def truncate(_: int, answer: dict[str, Any]) -> dict[str, Any]:
        text = answer["proof"]["proof"]
        answer["proof"]["proof"] = text[: 2 * rng.randrange(1, len(text) // 2)]
        return answer

    def other(index: int) -> dict[str, Any]:
        return copy.deepcopy(run.answers[(index + 1) % len(run.answers)].to_dict())

    def replay(index: int, _: dict[str, Any]) -> dict[str, Any]:
        return other(index)

    def rewrite(index: int, _: dict[str, Any]) -> dict[str, Any]:
        answer = other(index)
        felts = [int_to_felt(v) for v in quantize_row(circuit, run.rows[index])]
        answer["proof"]["instances"][0][:width] = felts
        return answer

    def forge_output(_: int, answer: dict[str, Any]) -> dict[str, Any]:
        scores = answer["scores"]
        target = (answer["label"] + 1) % len(scores)
        scores[target] = max(scores) + 1.0
        quantized = [round(s * 2**circuit.output_scale) for s in scores]
        answer["proof"]["instances"][0][width:] = [int_to_felt(q) for q in quantized]
        answer["scores"] = [q / 2**circuit.output_scale for q in quantized]
        answer["label"] = target
        return answer

    def relabel(_: int, answer: dict[str, Any]) -> dict[str, Any]:
        answer["label"] = (answer["label"] + 1) % len(answer["scores"])
        return answer

    return [
        run.tampered("forged-proof", flip),
        run.tampered("truncated-proof", truncate),
        run.tampered("padded-proof", pad),
        run.tampered("replayed-proof", replay),
        run.tampered("rewritten-input", rewrite),
        run.tampered("forged-output", forge_output),
        run.tampered("wrong-label", relabel),
    ]


def _other_circuit_row(
    run: _Run, rows: list[list[float]], name: str, circuit: Circuit, note: str
) -> VerifyRow:
    """A miner that proves honestly, but with another circuit than the subnet's."""
    caught = 0
    for row in rows:
        answer = prove_classification(circuit, row).to_dict()
        caught += _rejects(run.circuit, row, answer)
    return VerifyRow(LAYER, name, len(rows), caught, note=note)


def _summary(run: _Run) -> str:
    return (
        f"setup {run.setup_s:.2f} s (first use: training, a testing SRS, keys), "
        f"prove {np.median(run.prove_s):.3f} s, verify {np.median(run.verify_s) * 1000:.1f} ms "
        f"(medians), proof {np.mean([_proof_bytes(a) for a in run.answers]):.0f} bytes, "
        f"2**{run.circuit.logrows} rows"
    )


#: The setup and timing figures of the last `rows` call, for `main`.
LAST_SUMMARY: list[str] = []


def rows(quick: bool) -> list[VerifyRow]:
    """The honest row and one row per adversary (see the module docstring)."""
    count = 5 if quick else 150
    rng = random.Random(SEED)
    with tempfile.TemporaryDirectory(prefix="agora-bench-zk-") as tmp:
        base = Path(tmp)
        run = _Run(base / "validator", count)
        out = [run.honest(), *_adversaries(run, rng)]
        # cheaters with circuits of their own prove a sample: each of their proofs is real work
        sample = run.rows[: max(3, count // 5)]
        _, weights = train("iris")
        perturbed = _perturbed(weights, 0.05, np.random.RandomState(SEED))
        other_model = build_circuit(base / "perturbed", base / "cheater", "iris", perturbed)
        out.append(
            _other_circuit_row(run, sample, "other-model (perturb-5%)", other_model, "own keys")
        )
        other_srs = ensure_circuit(base / "other-srs", "iris")
        out.append(_other_circuit_row(run, sample, "other-srs", other_srs, "same weights"))
        LAST_SUMMARY[:] = [_summary(run)]
    return out


def main() -> None:
    quick = "--quick" in sys.argv[1:]
    produced = rows(quick)
    print(f"{'adversary':<26} {'audited':>7} {'detected':>8}  note")
    for row in produced:
        print(f"{row.adversary:<26} {row.audited:>7} {row.detected:>8}  {row.note}")
    honest = produced[0]
    print()
    print(f"this run:  {LAST_SUMMARY[0]}")
    print(
        "reference: ENVIRONMENT.md, a 16-32-32-4 MLP with EZKL's defaults: setup ~4 s, "
        "prove ~6 s, verify ~0.03 s, ~3 KB proofs"
    )
    print(
        f"verify / prove: {honest.verify_cost:.4f} (target <= 0.10); "
        f"proof + public instances: {honest.proof_bytes_per_token:.0f} bytes per answer"
    )
    print("SRS: generated locally, FOR TESTING ONLY")


if __name__ == "__main__":
    main()
