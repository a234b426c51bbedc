"""Yuma consensus against subtensor's own scenarios (``tests/data/yuma``, see ORIGIN.md).

Each case runs through ``agora.sim.yuma_case.run_case_file``, i.e. the ledger's epoch, and every
bond and dividend the case lists must be within the case's tolerance (1e-3, the Rust test's
epsilon). The cases' bond targets were computed by subtensor with u16 bond storage, which Agora
does not round to, so a small difference (< 1e-4) is expected and pinned below.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from agora.sim.yuma_case import case_errors, render_table, run_case, run_case_file

DATA = Path(__file__).parent / "data" / "yuma"
CASES = sorted(DATA.glob("*.json"))


def load(path: Path) -> dict[str, Any]:
    case: dict[str, Any] = json.loads(path.read_text())
    return case


def test_vectors_are_present_with_their_origin() -> None:
    assert len(CASES) >= 2
    origin = (DATA / "ORIGIN.md").read_text()
    for path in CASES:
        assert path.name in origin
    assert "opentensor/subtensor" in origin and "14bc6f9" in origin


@pytest.mark.parametrize("path", CASES, ids=lambda p: p.stem)
def test_vector_reproduces_within_tolerance(path: Path) -> None:
    case = load(path)
    result = run_case_file(path)
    n = len(case["stakes"])
    assert len(result["epochs"]) == len(case["epochs"])
    for entry in result["epochs"]:
        assert set(entry) == {"incentive", "dividends", "bonds", "consensus"}
        for key in ("incentive", "dividends", "consensus"):
            assert len(entry[key]) == n
        assert len(entry["bonds"]) == n and all(len(row) == n for row in entry["bonds"])
        values = [*entry["incentive"], *entry["dividends"], *entry["consensus"]]
        values += [b for row in entry["bonds"] for b in row]
        assert all(math.isfinite(v) and 0.0 <= v <= 1.0 for v in values)

    for k, expected in enumerate(case["expected"]):
        got = result["epochs"][k]
        tolerance = case["tolerance"]
        uids = expected.get("dividends_uids", [])
        for uid, value in zip(uids, expected.get("dividends", []), strict=True):
            assert got["dividends"][uid] == pytest.approx(value, abs=tolerance), (k, uid)
        bond_rows = zip(expected.get("bonds_rows", []), expected.get("bonds", []), strict=True)
        for i, row in bond_rows:
            for j, value in zip(expected["bonds_cols"], row, strict=True):
                assert got["bonds"][i][j] == pytest.approx(value, abs=tolerance), (k, i, j)

    errors = [e for e in case_errors(result, case) if e is not None]
    assert len(errors) == len(case["expected"]) - 1  # every epoch but the setup one checks
    # A float64 port of epoch_dense is within 1.2e-4 of these targets; so must we be.
    assert max(errors) < 1.2e-4


@pytest.mark.parametrize("path", CASES, ids=lambda p: p.stem)
def test_setup_epoch_without_weights_is_all_zero(path: Path) -> None:
    first = run_case_file(path)["epochs"][0]
    assert not any(first["incentive"]) and not any(first["dividends"])
    assert not any(first["consensus"])
    assert not any(b for row in first["bonds"] for b in row)


def test_result_is_plain_json() -> None:
    result = run_case_file(CASES[0])
    assert json.loads(json.dumps(result)) == result


def test_render_table_shows_every_epoch_and_the_verdict() -> None:
    case = load(CASES[0])
    console = Console(record=True, width=200)
    console.print(render_table(run_case_file(CASES[0]), case))
    text = console.export_text()
    for k in range(len(case["epochs"])):
        assert f"epoch {k} " in text
    assert "within tolerance" in text and "OUTSIDE" not in text


def test_bonds_reset_zeroes_a_column_before_the_epoch() -> None:
    case = load(DATA / "yuma_3_kappa_moves_first.json")
    plain = run_case(case)
    case["epochs"][3]["reset_bonds_for"] = [4]
    reset = run_case(case)
    assert reset["epochs"][2] == plain["epochs"][2]
    # Validator 0 held a bond to uid 4 before epoch 3; after the reset it restarts from zero.
    assert plain["epochs"][2]["bonds"][0][4] > 0
    assert reset["epochs"][3]["bonds"][0][4] < plain["epochs"][3]["bonds"][0][4]
    for i in range(3):
        assert reset["epochs"][3]["bonds"][i][4] <= plain["epochs"][3]["bonds"][i][4]
        assert reset["epochs"][3]["bonds"][i][3] == plain["epochs"][3]["bonds"][i][3]


@pytest.mark.parametrize(
    ("mutate", "error"),
    [
        (lambda c: c.pop("params"), KeyError),
        (lambda c: c["epochs"][1].update(weights=[[0, 1]]), ValueError),
        (lambda c: c["epochs"][1].update(reset_bonds_for=[99]), ValueError),
        (lambda c: c["epochs"][1]["weights"][0].__setitem__(3, 70000), ValueError),
        (lambda c: c["params"].update(kappa=2.0), ValueError),
    ],
)
def test_bad_cases_are_rejected(mutate: Any, error: type[Exception]) -> None:
    case = load(CASES[0])
    mutate(case)
    with pytest.raises(error):
        run_case(case)


def test_bad_case_files_are_rejected(tmp_path: Path) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text('{"name": ')
    with pytest.raises(ValueError):
        run_case_file(broken)
    broken.write_text("[1, 2]")
    with pytest.raises(ValueError):
        run_case_file(broken)
    with pytest.raises(FileNotFoundError):
        run_case_file(tmp_path / "missing.json")
