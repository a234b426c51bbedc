"""``python -m agora.zk``: set up a ZK classifier, prove one answer, verify one answer.

Examples::

    python -m agora.zk setup --data-dir ~/.agora                    # testing SRS (FOR TESTING ONLY)
    python -m agora.zk setup --data-dir ~/.agora --srs ceremony.srs  # a real ceremony file
    python -m agora.zk prove --data-dir ~/.agora --features 5.1,3.5,1.4,0.2 --out answer.json
    python -m agora.zk verify --data-dir ~/.agora --features 5.1,3.5,1.4,0.2 --answer answer.json

``verify`` exits 0 when the answer checks, 1 with the reason when it does not, 2 on bad usage.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from agora.zk.circuit import Circuit, ensure_circuit
from agora.zk.dataset import DATASETS
from agora.zk.errors import ProofRejected, ZkError
from agora.zk.proof import prove_classification, verify_classification


def _features(text: str) -> list[float]:
    try:
        return [float(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--features takes comma-separated numbers, e.g. 5.1,3.5,1.4,0.2; not {text!r}"
        ) from None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m agora.zk",
        description="Zero-knowledge classifiers: set up the circuit, prove an answer, verify one.",
        epilog=__doc__.split("Examples::", 1)[1] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--data-dir", type=Path, default=Path("~/.agora").expanduser(),
                        help="where circuits are cached (default ~/.agora)")  # fmt: skip
    common.add_argument("--dataset", default="iris", choices=sorted(DATASETS))
    common.add_argument(
        "--srs", type=Path, default=None, help="KZG ceremony file (default: one FOR TESTING ONLY)"
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("setup", parents=[common], help="train, export and set up the circuit")
    prove = commands.add_parser("prove", parents=[common], help="classify one row with a proof")
    prove.add_argument("--features", type=_features, required=True)
    prove.add_argument("--out", type=Path, help="write the answer (JSON) here")
    verify = commands.add_parser("verify", parents=[common], help="check an answer's proof")
    verify.add_argument("--features", type=_features, required=True)
    verify.add_argument("--answer", type=Path, required=True, help="the answer JSON to check")
    return parser


def _describe(circuit: Circuit, seconds: float) -> None:
    print(f"model id: {circuit.model_id}")
    print(f"circuit:  {circuit.folder} (2**{circuit.logrows} rows, ready in {seconds:.1f} s)")
    print(f"SRS:      {circuit.srs_note()}")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        began = time.perf_counter()
        circuit = ensure_circuit(args.data_dir, args.dataset, args.srs)
        _describe(circuit, time.perf_counter() - began)
        if args.command == "prove":
            began = time.perf_counter()
            answer = prove_classification(circuit, args.features)
            print(f"label:    {answer.label} ({answer.label_name}), scores {answer.scores}")
            print(f"proof:    {len(answer.proof['proof']) // 2} bytes in "
                  f"{time.perf_counter() - began:.2f} s")  # fmt: skip
            if args.out is not None:
                args.out.write_text(json.dumps(answer.to_dict()) + "\n")
                print(f"answer written to {args.out}")
        elif args.command == "verify":
            try:
                answer = json.loads(args.answer.read_text())
                label, scores, proof = answer["label"], answer["scores"], answer["proof"]
            except (OSError, ValueError, KeyError, TypeError) as error:
                print(f"cannot read the answer {args.answer}: {error}", file=sys.stderr)
                return 2
            began = time.perf_counter()
            try:
                verify_classification(circuit, args.features, label, scores, proof)
            except ProofRejected as error:
                print(f"REJECTED ({error.reason}): {error}")
                return 1
            print(f"ok: the proof verifies ({(time.perf_counter() - began) * 1000:.1f} ms)")
    except ZkError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
