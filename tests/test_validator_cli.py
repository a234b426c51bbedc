"""``agora validator``: help, the scores table, and clear failures (no model is loaded here)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from agora.chain.testing import free_port
from agora.validator.checks import Verdict
from agora.validator.cli import app
from agora.validator.scoring import ProbeOutcome, round_samples
from agora.validator.store import ScoreBook

runner = CliRunner()


def fill(data_dir: Path) -> None:
    with ScoreBook.in_dir(data_dir) as book:
        book.next_round(1)
        outcomes = [
            ProbeOutcome(0, "aa" * 32, Verdict.OK, "ok", 0.05, tokens=40),
            ProbeOutcome(1, "bb" * 32, Verdict.WRONG_OUTPUT, "vector 2 has cosine 0.01"),
        ]
        book.record(1, 1, outcomes, round_samples(outcomes), alpha=0.5)
        book.set_meta(
            1,
            "last_weights",
            json.dumps({"block": 7, "uids": [0], "weights": [65535], "how": "set"}),
        )


def test_scores_table_and_json(tmp_path: Path) -> None:
    fill(tmp_path)
    result = runner.invoke(app, ["scores", "--subnet", "1", "--data-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "wrong_output" in result.output and "0.5000" in result.output
    assert "last weights (set in block 7): 0:65535" in result.output
    result = runner.invoke(app, ["scores", "--subnet", "1", "--data-dir", str(tmp_path), "--json"])
    data = json.loads(result.output)
    assert data["round"] == 1 and [row["uid"] for row in data["scores"]] == [0, 1]
    assert data["scores"][0]["throughput"] == 800.0


def test_scores_without_a_database_says_where_it_looked(tmp_path: Path) -> None:
    result = runner.invoke(app, ["scores", "--subnet", "1", "--data-dir", str(tmp_path)])
    assert result.exit_code == 1 and "no validator database" in result.output


def test_start_explains_itself_and_fails_clearly() -> None:
    result = runner.invoke(app, ["start", "--help"])
    assert result.exit_code == 0 and "--probe-interval" in result.output
    assert "agora validator start --dev-key eve" in result.output
    result = runner.invoke(app, ["start", "--subnet", "1"])
    assert result.exit_code == 1 and "--wallet NAME" in result.output
    result = runner.invoke(app, ["start", "--subnet", "1", "--dev-key", "eve", "--stake", "x"])
    assert result.exit_code == 1 and "--stake" in result.output


def test_python_m_agora_validator_with_no_node(tmp_path: Path) -> None:
    node = f"http://127.0.0.1:{free_port()}"
    done = subprocess.run(
        [sys.executable, "-m", "agora.validator", "start", "--subnet", "1", "--dev-key", "eve",
         "--node", node, "--data-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 1
    assert "no Agora node answers" in done.stderr + done.stdout
