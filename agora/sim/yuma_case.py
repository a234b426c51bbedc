"""Run a Yuma case file through the ledger's own epoch (:func:`agora.protocol.yuma.epoch`).

A case file (format: ``tests/data/yuma/`` and ``../shared/vectors/yuma/README.md``) gives
stakes, hyperparameters and one full weight matrix per epoch. Each epoch runs at its own block
(``k + 2`` for epoch ``k``) with every uid registered at block 0, updated at the current block
and a tempo of 1, so no weight is outdated, every uid is active and no bond is reset except the
columns a case lists in ``reset_bonds_for``. Validator permits go to the
``max_allowed_validators`` largest stakes (:func:`agora.protocol.yuma.top_k_permits`). Bonds are
carried from epoch to epoch in Q32, as the ledger keeps them (subtensor also rounds stored bonds
down to u16; on the shipped cases that accounts for differences below 1e-4).

Public API: :func:`run_case` (a parsed case), :func:`run_case_file` (a path), both returning
``{"epochs": [{"incentive", "dividends", "bonds", "consensus"}, ...]}`` as floats (fixed point is
converted only here, at the output), :func:`case_errors` (the largest error per epoch against
the case's expectations) and :func:`render_table` (a readable ``rich`` table per epoch).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from agora.protocol.fixedpoint import to_float
from agora.protocol.yuma import (
    U16_MAX,
    YumaParams,
    apply_bonds,
    epoch,
    top_k_permits,
)

__all__ = ["case_errors", "case_params", "render_table", "run_case", "run_case_file"]

ACTIVITY_CUTOFF = 5000


def _fraction(value: float, name: str) -> Fraction:
    fraction = Fraction(value)
    if not 0 <= fraction <= 1:
        raise ValueError(f"params.{name} must be in [0, 1], got {value}")
    return fraction


def _u16_round(value: float, name: str) -> int:
    """A float that is ``u16 / 65535`` back to the u16 (kappa, bonds penalty)."""
    return round(_fraction(value, name) * U16_MAX)


def _u16_floor(value: float, name: str) -> int:
    """``floor(x * 65535)``, how the chain stores ``alpha_low`` and ``alpha_high``."""
    return int(_fraction(value, name) * U16_MAX)


def case_params(case: Mapping[str, Any]) -> tuple[YumaParams, int]:
    """The :class:`YumaParams` of a case and its ``max_allowed_validators``.

    Raises:
        KeyError: if a parameter is missing. ValueError: if one is out of range.
    """
    p = case["params"]
    params = YumaParams(
        kappa=_u16_round(p["kappa"], "kappa"),
        bonds_penalty=_u16_round(p["bonds_penalty"], "bonds_penalty"),
        bonds_moving_average=int(p["bonds_moving_average"]),
        yuma3=bool(p["yuma3"]),
        liquid_alpha=bool(p["liquid_alpha"]),
        alpha_low=_u16_floor(p["alpha_low"], "alpha_low"),
        alpha_high=_u16_floor(p["alpha_high"], "alpha_high"),
        alpha_sigmoid_steepness=int(p["alpha_sigmoid_steepness"]),
        tempo=1,
    )
    return params, int(p["max_allowed_validators"])


def run_case(case: Mapping[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """Run every epoch of a parsed case file, in order, carrying bonds from one to the next.

    Raises:
        KeyError: if a required field is missing. ValueError: if a field has the wrong shape or
        an out-of-range value.
    """
    params, max_validators = case_params(case)
    stakes = [int(s) for s in case["stakes"]]
    n = len(stakes)
    permits = top_k_permits(stakes, max_validators)
    bonds = np.zeros((n, n), dtype=np.int64)
    registered = np.zeros(n, dtype=np.int64)
    epochs: list[dict[str, Any]] = []
    for k, entry in enumerate(case["epochs"]):
        weights = np.asarray(entry["weights"], dtype=np.int64)
        if weights.shape != (n, n):
            raise ValueError(f"epochs[{k}].weights must be {n} x {n}")
        for uid in entry.get("reset_bonds_for", []):
            if not 0 <= int(uid) < n:
                raise ValueError(f"epochs[{k}].reset_bonds_for: no uid {uid}")
            bonds[:, int(uid)] = 0
        block = k + 2
        result = epoch(
            stakes,
            weights,
            bonds,
            np.full(n, block, dtype=np.int64),
            registered,
            block,
            ACTIVITY_CUTOFF,
            permits,
            params,
        )
        bonds = apply_bonds(bonds, result)
        epochs.append(
            {
                "incentive": to_float(result.incentive).tolist(),
                "dividends": to_float(result.dividends).tolist(),
                "bonds": to_float(bonds).tolist(),
                "consensus": to_float(result.consensus).tolist(),
            }
        )
    return {"epochs": epochs}


def run_case_file(path: str | Path) -> dict[str, list[dict[str, Any]]]:
    """:func:`run_case` on a JSON case file.

    Raises:
        FileNotFoundError: if there is no such file. ValueError (including
        ``json.JSONDecodeError``) or KeyError: if it is not a valid case.
    """
    case = json.loads(Path(path).read_text())
    if not isinstance(case, dict):
        raise ValueError("a case file holds one JSON object")
    return run_case(case)


def case_errors(result: Mapping[str, Any], case: Mapping[str, Any]) -> list[float | None]:
    """Largest ``|got - expected|`` per epoch over the bonds and dividends the case lists
    (``None`` for an epoch that checks nothing)."""
    errors: list[float | None] = []
    for got, expected in zip(result["epochs"], case.get("expected", []), strict=False):
        diffs: list[float] = []
        if "dividends" in expected:
            for uid, value in zip(expected["dividends_uids"], expected["dividends"], strict=True):
                diffs.append(abs(got["dividends"][uid] - value))
        if "bonds" in expected:
            for i, row in zip(expected["bonds_rows"], expected["bonds"], strict=True):
                for j, value in zip(expected["bonds_cols"], row, strict=True):
                    diffs.append(abs(got["bonds"][i][j] - value))
        errors.append(max(diffs) if diffs else None)
    return errors


def _fmt(value: float) -> str:
    return f"{value:.4f}"


def render_table(result: Mapping[str, Any], case: Mapping[str, Any]) -> RenderableType:
    """One table per epoch: per uid its stake share, consensus, incentive, dividends (with the
    expected value, when the case gives one) and its bond row; the caption shows the epoch's
    largest error against the case and whether it is within the case's tolerance."""
    stakes = [int(s) for s in case["stakes"]]
    total = sum(stakes) or 1
    expected: Sequence[Mapping[str, Any]] = case.get("expected", [])
    tolerance = float(case.get("tolerance", 0.0))
    errors = case_errors(result, case)
    n = len(stakes)
    tables: list[RenderableType] = [Text(f"{case.get('name', 'case')}: {n} uids", style="bold")]
    for k, entry in enumerate(result["epochs"]):
        exp = expected[k] if k < len(expected) else {}
        exp_div = dict(zip(exp.get("dividends_uids", []), exp.get("dividends", []), strict=False))
        error = errors[k] if k < len(errors) else None
        if error is None:
            caption = "nothing checked"
        else:
            verdict = "within" if error <= tolerance else "OUTSIDE"
            caption = f"max error {error:.2e} ({verdict} tolerance {tolerance:g})"
        table = Table(title=f"epoch {k} (rust epoch {exp.get('rust_epoch', '-')})", caption=caption)
        for column in ("uid", "stake", "consensus", "incentive", "dividends", "expected"):
            table.add_column(column, justify="right")
        table.add_column("bonds (uid:value)")
        for uid in range(n):
            bonds = entry["bonds"][uid]
            bond_text = " ".join(f"{j}:{_fmt(b)}" for j, b in enumerate(bonds) if b)
            table.add_row(
                str(uid),
                _fmt(stakes[uid] / total),
                _fmt(entry["consensus"][uid]),
                _fmt(entry["incentive"][uid]),
                _fmt(entry["dividends"][uid]),
                _fmt(exp_div[uid]) if uid in exp_div else "",
                bond_text,
            )
        tables.append(table)
    return Group(*tables)
