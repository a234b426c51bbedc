"""ZK classifiers (agora.zk): real training, ONNX export, EZKL setup, proofs and verification,
then a miner process answering ``/v1/classify`` and a validator's probe checking the proof.

One circuit is set up per test session and as few proofs are made as cover the cases (each
proof takes about half a second). The SRS here is generated locally: FOR TESTING ONLY.
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from agora.chain.client import LedgerClient
from agora.chain.testing import free_port, wait_until_ready
from agora.crypto.keys import Keypair
from agora.crypto.signing import sign_transaction
from agora.models import InvalidRequest, InvalidSpec, load_engine, parse_model_id, parse_spec
from agora.zk.circuit import Circuit, ensure_circuit
from agora.zk.dataset import forward, load_dataset, train
from agora.zk.errors import (
    BadFeatures,
    InvalidProof,
    MalformedProof,
    SrsError,
    WrongInput,
    WrongOutput,
)
from agora.zk.export import onnx_bytes
from agora.zk.proof import (
    MAX_FEATURE,
    Classification,
    felt_to_int,
    int_to_felt,
    prove_classification,
    quantize_row,
    verify_classification,
)
from agora.zk.srs import is_testing

#: SHA-256 of the iris ONNX file: the same on every machine (numpy's frozen RandomState stream,
#: float64 training, weights rounded onto EZKL's 2**-8 grid).
IRIS_ONNX_SHA256 = "c8a3f5ebfdee465a358bf9b2d0408877b49feeee7ea19d588e3fc8312317b81f"


@pytest.fixture(scope="session")
def zk_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("zk")


@pytest.fixture(scope="session")
def circuit(zk_dir: Path) -> Circuit:
    return ensure_circuit(zk_dir, "iris")


@pytest.fixture(scope="session")
def row(circuit: Circuit) -> list[float]:
    return circuit.data.holdout(0)


@pytest.fixture(scope="session")
def honest(circuit: Circuit, row: list[float]) -> Classification:
    return prove_classification(circuit, row)


def check(circuit: Circuit, row: list[float], answer: Classification) -> None:
    verify_classification(circuit, row, answer.label, answer.scores, answer.proof)


# -- training, export, setup ------------------------------------------------------------------


def test_training_is_deterministic_and_the_onnx_bytes_are_pinned() -> None:
    data, first = train("iris")
    _, second = train("iris")
    a, b = onnx_bytes(first, "iris"), onnx_bytes(second, "iris")
    assert a == b
    assert hashlib.sha256(a).hexdigest() == IRIS_ONNX_SHA256
    # the weights sit on EZKL's 2**-8 grid, so the circuit's parameters are exactly these
    for array in first.arrays().values():
        assert np.array_equal(np.round(array * 256) / 256, array)
    # held-out rows are never trained on, and the classifier is good on them
    assert not set(data.holdout_rows) & set(data.train_rows)
    predicted = forward(first, data.features[data.holdout_rows]).argmax(axis=1)
    assert (predicted == data.labels[data.holdout_rows]).mean() >= 0.9


def test_the_circuit_is_cached_and_its_id_commits_to_onnx_settings_and_vk(
    circuit: Circuit, zk_dir: Path
) -> None:
    assert circuit.folder.parent == zk_dir.resolve() / "models" / "iris"
    assert parse_model_id(circuit.model_id).task == "classify"
    assert circuit.model_id == f"classify:iris@{circuit.model_hash[:16]}"
    assert circuit.testing_srs and is_testing(circuit.srs)
    assert "FOR TESTING ONLY" in circuit.srs_note()
    settings = json.loads(circuit.settings.read_text())
    assert settings["timestamp"] == 0
    assert settings["run_args"]["input_visibility"] == "Public"
    assert settings["run_args"]["param_visibility"] == "Fixed"
    again = ensure_circuit(zk_dir, "iris")  # from the cache
    assert again.model_hash == circuit.model_hash and again.folder == circuit.folder
    # the hash covers exactly the three committed files: change one and the id changes
    from agora.models.naming import model_files

    assert [name for name, _ in model_files(circuit.folder)] == [
        "network.onnx",
        "settings.json",
        "vk.key",
    ]


def test_the_same_srs_elsewhere_gives_the_same_circuit(circuit: Circuit, tmp_path: Path) -> None:
    """A validator that runs the setup itself from the same spec and SRS gets the same id."""
    mine = ensure_circuit(tmp_path, "iris", srs=circuit.srs)
    assert mine.model_hash == circuit.model_hash
    assert mine.vk.read_bytes() == circuit.vk.read_bytes()
    assert mine.settings.read_bytes() == circuit.settings.read_bytes()


def test_bad_srs_files_are_refused(tmp_path: Path) -> None:
    with pytest.raises(SrsError, match="no SRS file"):
        ensure_circuit(tmp_path, "iris", srs=tmp_path / "missing.srs")
    junk = tmp_path / "junk.srs"
    junk.write_bytes(b"\x0b\x00\x00\x00" + b"x" * 100)
    with pytest.raises(SrsError, match="not a KZG SRS file"):
        ensure_circuit(tmp_path, "iris", srs=junk)
    import ezkl

    small = tmp_path / "k8.srs"
    ezkl.gen_srs(str(small), 8)
    with pytest.raises(SrsError, match="needs 2\\*\\*11"):
        ensure_circuit(tmp_path, "iris", srs=small)
    assert not (tmp_path / "models" / "iris").exists() or not any(
        p.name[0] != "." for p in (tmp_path / "models" / "iris").iterdir()
    )


# -- proofs -----------------------------------------------------------------------------------


def test_an_honest_proof_verifies(
    circuit: Circuit, row: list[float], honest: Classification
) -> None:
    check(circuit, row, honest)
    data = load_dataset("iris")
    assert honest.label == data.labels[data.holdout_rows[0]]
    assert honest.label_name == circuit.label_names[honest.label]
    _, weights = train("iris")
    floats = forward(weights, np.asarray([row]))[0]
    assert np.allclose(honest.scores, floats, atol=0.1)  # fixed point vs float
    assert len(bytes.fromhex(honest.proof["proof"])) < 8192


def test_a_row_that_float32_rounds_differently_still_verifies(circuit: Circuit) -> None:
    """EZKL reads the input as float32 before quantizing: 614.4999999 / 256 is 2.4003906 in
    float64 (quantized 614) but 2.400390625 in float32 (quantized 615, half away from zero).
    The verifier must quantize the same way or it rejects an honest proof."""
    x = (614.5 - 1e-9) / 256
    assert round(x * 256) == 614
    row = [x, 3.0, 1.0, 0.5]
    assert quantize_row(circuit, row)[0] == 615
    answer = prove_classification(circuit, row)
    assert felt_to_int(answer.proof["instances"][0][0]) == 615
    check(circuit, row, answer)


def test_rows_at_the_edge_of_the_accepted_range_prove(circuit: Circuit) -> None:
    """Every feature may be anywhere in ±MAX_FEATURE: the circuit's range checks cover it."""
    row = [MAX_FEATURE, -MAX_FEATURE, MAX_FEATURE, -MAX_FEATURE]
    answer = prove_classification(circuit, row)
    check(circuit, row, answer)
    _, weights = train("iris")
    assert np.allclose(answer.scores, forward(weights, np.asarray([row]))[0], atol=0.5)


def test_field_elements_round_trip() -> None:
    for value in (0, 1, -1, 615, -(2**40), 2**100):
        assert felt_to_int(int_to_felt(value)) == value
    for bad in ("00", "zz" * 32, "ff" * 32):
        with pytest.raises(ValueError):
            felt_to_int(bad)


def test_the_cli_proves_and_verifies(
    zk_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from agora.zk.__main__ import main

    answer = tmp_path / "answer.json"
    features = "6.3,2.5,5.0,1.9"
    assert (
        main(["prove", "--data-dir", str(zk_dir), "--features", features, "--out", str(answer)])
        == 0
    )
    out = capsys.readouterr().out
    assert "FOR TESTING ONLY" in out and "classify:iris@" in out
    assert (
        main(["verify", "--data-dir", str(zk_dir), "--features", features, "--answer", str(answer)])
        == 0
    )
    assert "ok: the proof verifies" in capsys.readouterr().out
    other = "6.3,2.5,5.0,2.0"
    assert (
        main(["verify", "--data-dir", str(zk_dir), "--features", other, "--answer", str(answer)])
        == 1
    )
    assert "REJECTED (wrong_input)" in capsys.readouterr().out


@pytest.mark.parametrize(
    "cut", [lambda p: p[: len(p) // 3], lambda p: p[:-2], lambda p: p + "00" * 32]
)
def test_a_truncated_or_padded_proof_is_malformed(
    circuit: Circuit, row: list[float], honest: Classification, cut: Any
) -> None:
    """halo2 accepts a proof with bytes appended; the length check refuses it."""
    assert circuit.proof_bytes == len(bytes.fromhex(honest.proof["proof"]))
    proof = {**honest.proof, "proof": cut(honest.proof["proof"])}
    with pytest.raises(MalformedProof, match="truncated or padded"):
        verify_classification(circuit, row, honest.label, honest.scores, proof)


@pytest.mark.parametrize(
    "proof",
    [
        "not a dict",
        {"proof": "00"},
        {"instances": [["00"]], "proof": "00"},
        {"instances": "x", "proof": "00"},
    ],
)
def test_proofs_not_in_the_wire_format_are_malformed(
    circuit: Circuit, row: list[float], honest: Classification, proof: object
) -> None:
    with pytest.raises(MalformedProof):
        verify_classification(circuit, row, honest.label, honest.scores, proof)


def test_bad_hex_is_malformed(circuit: Circuit, row: list[float], honest: Classification) -> None:
    proof = {**honest.proof, "proof": "zz" + honest.proof["proof"][2:]}
    with pytest.raises(MalformedProof, match="hex"):
        verify_classification(circuit, row, honest.label, honest.scores, proof)


def test_a_forged_proof_is_invalid(
    circuit: Circuit, row: list[float], honest: Classification
) -> None:
    data = bytearray(bytes.fromhex(honest.proof["proof"]))
    data[len(data) // 2] ^= 0x01
    proof = {**honest.proof, "proof": data.hex()}
    with pytest.raises(InvalidProof, match="does not verify"):
        verify_classification(circuit, row, honest.label, honest.scores, proof)


def test_a_proof_for_another_input_is_rejected(circuit: Circuit, honest: Classification) -> None:
    other = circuit.data.holdout(1)
    with pytest.raises(WrongInput, match="not the row asked"):
        verify_classification(circuit, other, honest.label, honest.scores, honest.proof)


def test_rewriting_the_public_input_breaks_the_proof(
    circuit: Circuit, honest: Classification
) -> None:
    """A cheat that edits the proof's public input to match another row is caught by the
    cryptography rather than by the comparison."""
    other = circuit.data.holdout(1)
    proof = copy.deepcopy(honest.proof)
    proof["instances"][0][: circuit.width] = [int_to_felt(v) for v in quantize_row(circuit, other)]
    with pytest.raises(InvalidProof):
        verify_classification(circuit, other, honest.label, honest.scores, proof)


def test_an_answer_that_is_not_the_proven_output_is_rejected(
    circuit: Circuit, row: list[float], honest: Classification
) -> None:
    wrong_label = (honest.label + 1) % len(circuit.label_names)
    with pytest.raises(WrongOutput, match="not the argmax"):
        verify_classification(circuit, row, wrong_label, honest.scores, honest.proof)
    scores = list(honest.scores)
    scores[wrong_label] += 100.0
    with pytest.raises(WrongOutput, match="not the proof's outputs"):
        verify_classification(circuit, row, honest.label, scores, honest.proof)
    with pytest.raises(WrongOutput):
        verify_classification(circuit, row, honest.label, honest.scores[:2], honest.proof)


def test_a_proof_under_another_verification_key_is_invalid(
    circuit: Circuit, row: list[float], tmp_path: Path
) -> None:
    """Same weights, another SRS: another verification key, another model id."""
    other = ensure_circuit(tmp_path, "iris")  # its own testing SRS
    assert other.model_hash != circuit.model_hash
    theirs = prove_classification(other, row)
    check(other, row, theirs)
    with pytest.raises(InvalidProof, match=circuit.model_id):
        check(circuit, row, theirs)


@pytest.mark.parametrize(
    "features",
    [[1.0, 2.0, 3.0], [1.0, 2.0, 3.0, float("nan")], [1, 2, 3, "4"], "1234", [1, 2, 3, 1e9]],
)
def test_bad_features_are_refused_before_any_work(circuit: Circuit, features: object) -> None:
    with pytest.raises(BadFeatures):
        prove_classification(circuit, features)  # type: ignore[arg-type]


# -- the engine --------------------------------------------------------------------------------


def test_classify_specs_parse_with_clear_errors() -> None:
    spec = parse_spec("classify:iris;srs=/tmp/ceremony.srs")
    assert spec.kind == "classify" and spec.options == {"srs": "/tmp/ceremony.srs"}
    with pytest.raises(InvalidSpec, match="unknown ZK classifier"):
        parse_spec("classify:mnist")
    with pytest.raises(InvalidSpec, match="srs= applies to classify"):
        parse_spec("embed:minilm;srs=/x")
    with pytest.raises(InvalidSpec, match="only srs= applies"):
        parse_spec("classify:iris;ray=local")


@pytest.mark.anyio
async def test_the_engine_classifies_with_a_proof(circuit: Circuit, zk_dir: Path) -> None:
    engine = await load_engine("classify:iris", zk_dir)
    try:
        assert engine.task == "classify" and engine.model_id == circuit.model_id
        assert "TESTING-ONLY SRS" in engine.engine_name
        row = circuit.data.holdout(2)
        answer = await engine.classify(row)
        verify_classification(circuit, row, answer["label"], answer["scores"], answer["proof"])
        with pytest.raises(InvalidRequest, match="4 numbers"):
            await engine.classify([1.0])
        with pytest.raises(Exception, match="cannot embed"):
            await engine.embed(["x"])
    finally:
        await engine.close()


# -- a miner process and a validator's probe ----------------------------------------------------

VALIDATOR = Keypair.from_name("bob/hot")


async def _send(client: LedgerClient, key: Keypair, kind: str, body: dict[str, object]) -> None:
    chain_id = (await client.status()).chain_id
    nonce = await client.next_nonce(key.address)
    tx = sign_transaction(key, chain_id, kind, nonce, body)
    info = await client.wait_for_tx(await client.submit(tx), timeout=30)
    assert info.status == "included", info


async def _subnet(url: str) -> int:
    async with LedgerClient(url) as client:
        await _send(client, Keypair.from_name("alice"), "create_subnet", {})
        netuid = (await client.subnets())[-1].netuid
        await _send(
            client,
            Keypair.from_name("bob"),
            "register",
            {"netuid": netuid, "hotkey": VALIDATOR.address},
        )
        return netuid


@pytest.fixture(scope="module")
def zk_miner(
    zk_dir: Path, circuit: Circuit, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, int, str]]:
    """A ledger node and a miner process serving classify:iris (sharing the circuit's cache)."""
    logs = tmp_path_factory.mktemp("zk-net")
    node_port, miner_port = free_port(), free_port()
    node_log = (logs / "node.log").open("wb")
    node = subprocess.Popen(
        [sys.executable, "-m", "agora.chain", "start", "--dev", "--data-dir",
         str(logs / "node"), "--port", str(node_port), "--block-time", "0.2"],
        stdout=node_log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    node_url = f"http://127.0.0.1:{node_port}"
    miner_log = (logs / "miner.log").open("wb")
    miner: subprocess.Popen[bytes] | None = None
    try:
        wait_until_ready(f"{node_url}/v1/status", 30, node)
        netuid = asyncio.run(_subnet(node_url))
        miner = subprocess.Popen(
            [sys.executable, "-m", "agora.miner", "start", "--dev-key", "charlie",
             "--subnet", str(netuid), "--model", "classify:iris", "--port", str(miner_port),
             "--node", node_url, "--data-dir", str(zk_dir)],
            stdout=miner_log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        miner_url = f"http://127.0.0.1:{miner_port}"
        wait_until_ready(f"{miner_url}/health", 120, miner)
        yield miner_url, netuid, (logs / "miner.log").read_text(errors="replace")
    finally:
        for proc in (miner, node):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                proc.wait(30)
        node_log.close()
        miner_log.close()


@pytest.mark.slow
@pytest.mark.anyio
async def test_a_miner_answers_classify_with_a_proof_the_validator_verifies(
    zk_miner: tuple[str, int, str], zk_dir: Path, circuit: Circuit, tmp_path: Path
) -> None:
    from agora.validator.checks import Verdict
    from agora.validator.prober import MinerClient, MinerTarget
    from agora.validator.tasks import ClassifyTask, task_for

    url, netuid, _ = zk_miner
    engine = await load_engine("classify:iris", zk_dir)  # the validator's own circuit
    client = MinerClient(VALIDATOR, netuid, timeout=60)
    try:
        task = task_for(engine)
        assert isinstance(task, ClassifyTask)
        target = MinerTarget(0, Keypair.from_name("charlie/hot").address, url)
        health = await client.health(target)
        assert health.task == "classify" and health.model == circuit.model_id
        row = circuit.data.holdout(3)
        answer = await client.classify(target, row)  # the receipt is checked in there
        assert answer.receipt.model_id == circuit.model_id == answer.payload.model
        verify_classification(
            circuit, row, answer.payload.label, answer.payload.scores, answer.payload.proof
        )
        plan = await task.prepare(b"\x01" * 32, 1)
        outcome = await task.probe(client, target, plan)
        assert outcome.verdict == Verdict.OK, outcome.reason
        # a validator whose circuit has another verification key (its own testing SRS) sees
        # another model hash in /health: the miner does not serve the circuit it checks against
        other = await load_engine("classify:iris", tmp_path)
        try:
            outcome = await ClassifyTask(other).probe(client, target, plan)
        finally:
            await other.close()
        assert outcome.verdict == Verdict.WRONG_MODEL, outcome.reason
        # a bad request gets a clear error and no receipt
        with pytest.raises(Exception, match="4 numbers"):
            await client.classify(target, [1.0, 2.0])
    finally:
        await client.aclose()
        await engine.close()
