"""The circuit of a ZK classifier: train, export, calibrate, compile, set up; cached on disk.

`ensure_circuit(data_dir, "iris")` returns a `Circuit` whose files live under
``<data_dir>/models/iris/<first 16 hex of the SRS's SHA-256>/``::

    network.onnx     the trained weights (agora.zk.export)          } covered by model_hash:
    settings.json    EZKL's circuit settings (scales, rows, ...)     } the model id commits to
    vk.key           the verification key                            } the circuit exactly
    .network.ezkl    the compiled circuit        (hidden: derived, not hashed)
    .pk.key          the proving key (8 MB)      (hidden: derived, not hashed)
    .proof-bytes     the length of every proof, from a self-test proof made after setup
    .calibration.json, .srs-path

The model hash is `agora.models.naming.model_hash` of that folder, so it commits to the ONNX
weights, the settings and the verification key (which itself depends on the SRS: another SRS
gives another id). The id is ``classify:<name>@<16 hex>``. A validator runs the same steps from
the same spec and compares hashes: it never takes a miner's key or settings on trust.

Circuit choices, and why:

- input and output **public**, parameters **fixed** (baked into the circuit, so the
  verification key commits to the weights). A public input means the proof is about the very
  row the user sent; a private input would prove only "some input gives this output".
- input and parameter scale 8 (values on a 2**-8 grid; the weights are trained onto it);
- ``decomp_base = 2**10`` with 4 legs instead of EZKL's default ``2**14`` with 2: the range-check
  table then fits 2**11 rows instead of 2**15 (16 times smaller keys, about 10 times faster
  proofs) and covers values up to 2**40 at scale. That range is what lets features reach
  ±1000 (`agora.zk.proof.MAX_FEATURE`): the scores sit at scale 2**24, and 3 legs (2**30)
  overflowed for rows with features of 20;
- ``calibrate_settings(..., "resources")`` on the training rows picks the smallest circuit;
- the settings' ``timestamp`` is zeroed, so the bytes are the same on every machine.

Setup takes about 1 s after training; the first use on a machine also generates the testing SRS
when none is given (about 1 s for 2**11 rows).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agora.models.naming import make_model_id, model_hash
from agora.zk.dataset import DATASETS, PARAM_SCALE, Dataset, Weights, load_dataset, train
from agora.zk.errors import CircuitError, SrsError
from agora.zk.export import onnx_bytes
from agora.zk.srs import (
    TESTING_WARNING,
    file_lock,
    is_testing,
    srs_digest,
    srs_logrows,
    testing_srs,
)

__all__ = [
    "DECOMP_BASE",
    "DECOMP_LEGS",
    "Circuit",
    "build_circuit",
    "ensure_circuit",
    "ezkl_step",
    "load_ezkl",
]

DECOMP_BASE = 1 << 10
DECOMP_LEGS = 4
ONNX, SETTINGS, VK = "network.onnx", "settings.json", "vk.key"
COMPILED, PK, CALIBRATION, SRS_NOTE = ".network.ezkl", ".pk.key", ".calibration.json", ".srs-path"
PROOF_BYTES = ".proof-bytes"


@dataclass(frozen=True)
class Circuit:
    """A set-up circuit: where its files are and what a verifier needs to know about it."""

    name: str
    folder: Path
    srs: Path
    testing_srs: bool
    model_hash: str
    model_id: str
    data: Dataset
    input_scale: int
    output_scale: int
    logrows: int
    #: how EZKL reads the input before quantizing it ("F32": rounded to float32 first)
    input_type: str = "F32"
    #: the length of every proof of this circuit (measured by a self-test proof at setup)
    proof_bytes: int = 0

    @property
    def onnx(self) -> Path:
        return self.folder / ONNX

    @property
    def settings(self) -> Path:
        return self.folder / SETTINGS

    @property
    def vk(self) -> Path:
        return self.folder / VK

    @property
    def pk(self) -> Path:
        return self.folder / PK

    @property
    def compiled(self) -> Path:
        return self.folder / COMPILED

    @property
    def width(self) -> int:
        return self.data.width

    @property
    def label_names(self) -> list[str]:
        return self.data.label_names

    def srs_note(self) -> str:
        """One line for CLI output: which SRS, and the warning if it is a testing one."""
        if self.testing_srs:
            return f"{self.srs} ({TESTING_WARNING})"
        return f"{self.srs} (given with srs=: as trustworthy as the ceremony that made it)"


def load_ezkl() -> Any:
    """The ezkl module, imported on first use (it is a 30 MB extension). Raises CircuitError."""
    try:
        import ezkl
    except ImportError as error:  # pragma: no cover - ezkl is a dependency
        raise CircuitError(f"EZKL is not installed ({error}); run: pip install ezkl") from None
    return ezkl


def ezkl_step(what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
    """Call one EZKL function; its errors (and a False result) become `CircuitError`."""
    try:
        result = fn(*args, **kwargs)
    except Exception as error:
        raise CircuitError(f"EZKL {what} failed: {error}") from None
    if result is False:
        raise CircuitError(f"EZKL {what} failed (it returned False)")
    return result


def _settings(folder: Path, data: Dataset) -> dict[str, Any]:
    """gen_settings + calibrate_settings into ``folder``; returns the normalized settings."""
    ezkl = load_ezkl()
    args = ezkl.PyRunArgs()
    args.input_visibility = "public"
    args.output_visibility = "public"
    args.param_visibility = "fixed"
    args.input_scale = PARAM_SCALE
    args.param_scale = PARAM_SCALE
    args.decomp_base = DECOMP_BASE
    args.decomp_legs = DECOMP_LEGS
    onnx_path, settings_path = str(folder / ONNX), str(folder / SETTINGS)
    ezkl_step("gen_settings", ezkl.gen_settings, onnx_path, settings_path, py_run_args=args)
    rows = data.features[data.train_rows].reshape(-1)
    (folder / CALIBRATION).write_text(json.dumps({"input_data": [[float(v) for v in rows]]}))
    ezkl_step(
        "calibrate_settings",
        ezkl.calibrate_settings,
        str(folder / CALIBRATION),
        onnx_path,
        settings_path,
        "resources",
        scales=[PARAM_SCALE],
    )
    settings: dict[str, Any] = json.loads((folder / SETTINGS).read_text())
    # Fields that differ between two runs on the same input: the timestamp, and the order of
    # the range checks (EZKL collects them in a hash set). The order decides how the tables are
    # laid out, hence the verification key, so it is fixed here before compiling.
    settings["timestamp"] = 0
    for key in ("required_range_checks", "required_lookups"):
        if isinstance(settings.get(key), list):
            settings[key] = sorted(settings[key], key=lambda item: json.dumps(item))
    (folder / SETTINGS).write_text(json.dumps(settings, sort_keys=True, separators=(",", ":")))
    return settings


def _resolve_srs(data_dir: Path, srs: Path | None, logrows: int) -> Path:
    if srs is None:
        return testing_srs(data_dir, logrows)
    srs = Path(srs).expanduser().resolve()
    if not srs.is_file():
        raise SrsError(
            f"no SRS file at {srs}; pass a KZG ceremony file, or omit srs= to "
            "generate one for testing"
        )
    k = srs_logrows(srs)
    if k < logrows:
        raise SrsError(
            f"the SRS at {srs} has 2**{k} rows; the circuit needs 2**{logrows}: use a larger one"
        )
    return srs


def _build(folder: Path, data_dir: Path, network: bytes, data: Dataset, srs: Path | None) -> Path:
    """Run every EZKL step in a fresh folder next to the cache; return the SRS used."""
    ezkl = load_ezkl()
    (folder / ONNX).write_bytes(network)
    settings = _settings(folder, data)
    srs_path = _resolve_srs(data_dir, srs, int(settings["run_args"]["logrows"]))
    ezkl_step(
        "compile_circuit",
        ezkl.compile_circuit,
        str(folder / ONNX),
        str(folder / COMPILED),
        str(folder / SETTINGS),
    )
    ezkl_step(
        "setup",
        ezkl.setup,
        str(folder / COMPILED),
        str(folder / VK),
        str(folder / PK),
        str(srs_path),
    )
    (folder / PROOF_BYTES).write_text(f"{_self_test(folder, srs_path, data)}\n")
    (folder / SRS_NOTE).write_text(str(srs_path) + "\n")
    return srs_path


def _self_test(folder: Path, srs: Path, data: Dataset) -> int:
    """Prove and verify one held-out row with the new keys; return the proof's length.

    Every proof of a circuit has the same length, and halo2 ignores bytes after the proof, so
    the verifier insists on this exact length (a padded or cut proof is refused as malformed).
    """
    ezkl = load_ezkl()
    with tempfile.TemporaryDirectory(prefix="agora-zk-") as tmp:
        work = Path(tmp)
        (work / "input.json").write_text(json.dumps({"input_data": [data.holdout(0)]}))
        ezkl_step("gen_witness", ezkl.gen_witness, str(work / "input.json"),
                  str(folder / COMPILED), str(work / "witness.json"))  # fmt: skip
        ezkl_step("prove", ezkl.prove, str(work / "witness.json"), str(folder / COMPILED),
                  str(folder / PK), str(work / "proof.json"), str(srs))  # fmt: skip
        ezkl_step("verify", ezkl.verify, str(work / "proof.json"), str(folder / SETTINGS),
                  str(folder / VK), str(srs))  # fmt: skip
        return len(json.loads((work / "proof.json").read_text())["proof"])


def _load(folder: Path, name: str, data: Dataset, srs: Path) -> Circuit:
    settings = json.loads((folder / SETTINGS).read_text())
    digest = model_hash(folder)
    return Circuit(
        name=name,
        folder=folder,
        srs=srs,
        testing_srs=is_testing(srs),
        model_hash=digest,
        model_id=make_model_id("classify", name, digest),
        data=data,
        input_scale=int(settings["model_input_scales"][0]),
        output_scale=int(settings["model_output_scales"][0]),
        logrows=int(settings["run_args"]["logrows"]),
        input_type=str(settings.get("input_types", ["F32"])[0]),
        proof_bytes=int((folder / PROOF_BYTES).read_text()),
    )


def _cached(folder: Path, network: bytes, version: str) -> bool:
    """Whether ``folder`` holds a complete circuit for exactly these weights and this EZKL."""
    try:
        if (folder / ONNX).read_bytes() != network:
            return False
        settings = json.loads((folder / SETTINGS).read_text())
        return settings.get("version") == version and all(
            (folder / f).is_file() for f in (VK, PK, COMPILED, PROOF_BYTES)
        )
    except (OSError, ValueError):
        return False


def ensure_circuit(data_dir: Path | str, name: str, srs: Path | str | None = None) -> Circuit:
    """The circuit for dataset ``name``, built on first use and cached (see the module
    docstring). ``srs`` is a ceremony file; None generates a testing one under the data dir.

    Raises `CircuitError` (unknown dataset, an EZKL step failed) or `SrsError`.
    """
    if name not in DATASETS:
        raise CircuitError(f"unknown ZK dataset {name!r}; known: {', '.join(sorted(DATASETS))}")
    data_dir = Path(data_dir).expanduser().resolve()
    data, weights = train(name)
    network = onnx_bytes(weights, name)
    ezkl = load_ezkl()
    version = str(getattr(ezkl, "__version__", ""))
    models = data_dir / "models" / name
    with file_lock(data_dir / "models" / f".{name}-zk.lock"):
        srs_path = Path(srs).expanduser().resolve() if srs is not None else None
        if srs_path is not None and srs_path.is_file():
            folder = models / srs_digest(srs_path)[:16]
            if _cached(folder, network, version):
                return _load(folder, name, data, srs_path)
        if srs_path is None:
            # the testing SRS's size is known only after calibration: look for a built one
            for candidate in sorted(models.glob("*/" + SRS_NOTE)) if models.is_dir() else []:
                used = Path(candidate.read_text().strip())
                if is_testing(used) and _cached(candidate.parent, network, version):
                    return _load(candidate.parent, name, data, used)
        models.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=".build-", dir=models))
        try:
            used = _build(work, data_dir, network, data, srs_path)
            work.chmod(0o755)  # mkdtemp makes it private; the cache is as readable as the dir
            final = models / srs_digest(used)[:16]
            if final.exists():
                shutil.rmtree(final)
            os.replace(work, final)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        return _load(final, name, data, used)


def build_circuit(
    folder: Path | str,
    data_dir: Path | str,
    name: str,
    weights: Weights,
    srs: Path | str | None = None,
) -> Circuit:
    """Set up a circuit for arbitrary ``weights`` of dataset ``name`` in ``folder``, uncached:
    the circuit a miner serving *another* model would prove with (the benchmark's adversaries).

    Raises `CircuitError` or `SrsError`.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    data = load_dataset(name)
    network = onnx_bytes(weights, name)
    used = _build(folder, Path(data_dir), network, data, Path(srs) if srs is not None else None)
    return _load(folder, name, data, used)
