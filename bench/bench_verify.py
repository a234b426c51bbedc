"""``make bench-verify``: every adversary against every verification layer, in one table.

Each module ``bench/verify_*.py`` (``verify_toploc``, ``verify_spotcheck``, ``verify_zk``, ...)
exposes ``rows(quick: bool) -> list[VerifyRow]``. This gathers them in file-name order, skips a
module that cannot be imported or fails (saying why), and prints one table with the targets of
issue #5 next to the figures:

- every adversary above int8 quantisation detected with probability >= 0.99 per audited answer;
- zero false positives over at least 1,000 honest answers;
- verification at most 10% of the generation cost.

Usage::

    python -m bench verify             # the full run (several minutes)
    python -m bench.bench_verify --quick   # a smaller sample, as a smoke test
    python -m bench.bench_verify --quick toploc   # only bench/verify_toploc.py
"""

from __future__ import annotations

import argparse
import importlib
import math
import sys
import time
import traceback
from pathlib import Path

from bench.verify_common import VerifyRow

TARGET_DETECTION = 0.99
TARGET_COST = 0.10
TARGET_HONEST = 1000
#: Adversaries the targets do not require to be caught (at or below int8 quantisation).
EXEMPT = ("int8", "fp16", "bf16")


def discover() -> list[str]:
    """Module names ``bench.verify_*`` next to this file, sorted (verify_common excluded)."""
    here = Path(__file__).parent
    return sorted(f"bench.{p.stem}" for p in here.glob("verify_*.py") if p.stem != "verify_common")


def collect(quick: bool, only: list[str]) -> tuple[list[VerifyRow], list[str]]:
    """Rows of every module that imports and runs, and a line per module that did not."""
    rows: list[VerifyRow] = []
    problems: list[str] = []
    for name in discover():
        short = name.removeprefix("bench.verify_")
        if only and short not in only:
            continue
        try:
            module = importlib.import_module(name)
        except Exception as exc:  # a broken or half-written layer must not hide the others
            problems.append(f"skipped {name}: cannot import ({type(exc).__name__}: {exc})")
            continue
        if not callable(getattr(module, "rows", None)):
            problems.append(f"skipped {name}: it has no rows(quick) function")
            continue
        began = time.perf_counter()
        print(f"running {name} ...", file=sys.stderr, flush=True)
        try:
            produced = list(module.rows(quick))
        except Exception as exc:
            traceback.print_exc()
            problems.append(f"skipped {name}: rows() failed ({type(exc).__name__}: {exc})")
            continue
        print(
            f"  {name}: {len(produced)} rows in {time.perf_counter() - began:.0f} s",
            file=sys.stderr,
            flush=True,
        )
        rows += [r for r in produced if isinstance(r, VerifyRow)]
    return rows, problems


def _is_honest(row: VerifyRow) -> bool:
    return row.adversary.startswith("honest")


def _target(row: VerifyRow) -> tuple[str, bool | None]:
    """The target this row is held to, and whether it meets it (None: no target)."""
    if _is_honest(row):
        return "0 false positives", row.detected == 0
    if any(row.adversary.startswith(e) for e in EXEMPT):
        return "(not required)", None
    return f">= {TARGET_DETECTION}", row.audited > 0 and row.rate >= TARGET_DETECTION


def _fmt(value: float | None, spec: str) -> str:
    return (
        "-"
        if value is None or (isinstance(value, float) and math.isnan(value))
        else format(value, spec)
    )


def table(rows: list[VerifyRow]) -> str:
    """The rows as a Markdown table (pastes into the README as is)."""
    header = (
        "| layer | adversary | audited | detected | rate | target | ok "
        "| verify cost / gen cost | proof bytes/token | note |"
    )
    lines = [header, "|" + "---|" * 10]
    for row in rows:
        target, met = _target(row)
        ok = {True: "yes", False: "**NO**", None: ""}[met]
        cost = _fmt(row.verify_cost, ".3f")
        if row.verify_cost is not None and row.verify_cost > TARGET_COST:
            cost += " **(> 0.10)**"
        note = row.note.replace("|", "/")
        lines.append(
            f"| {row.layer} | {row.adversary} | {row.audited} | {row.detected} "
            f"| {_fmt(row.rate, '.3f')} | {target} | {ok} | {cost} "
            f"| {_fmt(row.proof_bytes_per_token, '.1f')} | {note} |"
        )
    return "\n".join(lines)


def summary(rows: list[VerifyRow]) -> list[str]:
    """The targets, each with the figure it is compared with."""
    honest = sum(r.audited for r in rows if _is_honest(r))
    false_positives = sum(r.detected for r in rows if _is_honest(r))
    required = [r for r in rows if _target(r)[1] is not None and not _is_honest(r)]
    missed = [r.adversary for r in required if not _target(r)[1]]
    costs = [r.verify_cost for r in rows if r.verify_cost is not None]
    return [
        f"honest answers: {honest} (target >= {TARGET_HONEST}); false positives: "
        f"{false_positives} (target 0)",
        f"adversaries above int8 detected at >= {TARGET_DETECTION}: "
        f"{len(required) - len(missed)} of {len(required)}"
        + (f"; below target: {', '.join(missed)}" if missed else ""),
        "verification cost / generation cost: "
        + (", ".join(f"{c:.3f}" for c in costs) if costs else "-")
        + f" (target <= {TARGET_COST})",
    ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench verify",
        description="Run every bench/verify_*.py layer against its adversaries and print one "
        "table with the targets of issue #5.",
        epilog="example: python -m bench.bench_verify --quick toploc",
    )
    parser.add_argument("--quick", action="store_true", help="a small sample (smoke test)")
    parser.add_argument("layers", nargs="*", help="only these modules (e.g. toploc, zk)")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    rows, problems = collect(args.quick, args.layers)
    for line in problems:
        print(line)
    if not rows:
        print("no verification rows were produced")
        return
    print()
    print(table(rows))
    print()
    for line in summary(rows):
        print(line)


if __name__ == "__main__":
    main()
