"""ZK subnets on a local network (``agora up``): one circuit and one SRS for every process.

A miner and a validator each derive the circuit from the model spec; their verification keys
(and so their model ids) agree only if they use the same SRS file. On a local network there is
no ceremony file, so `shared_specs` sets the circuit up once (generating a testing SRS) and
hands every process the spec with ``srs=<that file>``. That SRS is FOR TESTING ONLY.
"""

from __future__ import annotations

from pathlib import Path

from agora.zk.circuit import ensure_circuit

__all__ = ["shared_specs"]


def shared_specs(specs: dict[int, str], data_dir: Path) -> dict[int, str]:
    """``specs`` (netuid -> model spec) with ``;srs=PATH`` added to each ``classify:`` spec
    that names none, after building its circuit under ``data_dir`` (about 3 s the first time).

    Raises `agora.zk.errors.ZkError` if the circuit cannot be set up.
    """
    out = {}
    for netuid, spec in specs.items():
        if spec.startswith("classify:") and ";srs=" not in spec:
            name = spec.removeprefix("classify:").split(";")[0]
            circuit = ensure_circuit(data_dir, name)
            spec = f"{spec};srs={circuit.srs}"
        out[netuid] = spec
    return out
