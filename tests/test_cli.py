"""The ``agora`` command as a person uses it: against a real node process, with real keys."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from agora.cli import app
from agora.wallet import KDF_FOR_TESTS_ONLY, Wallet

REPO = Path(__file__).resolve().parents[1]
runner = CliRunner()


def agora(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    result = runner.invoke(app, list(args), env=env)
    return result.exit_code, result.output


def test_every_command_has_help_with_an_example() -> None:
    groups = ["wallet", "node", "tx", "subnet", "account", "dev", "receipt", "sim"]
    code, text = agora("--help")
    assert code == 0 and all(group in text for group in groups)
    for command in (["tx", "transfer"], ["subnet", "show"], ["sim", "yuma"], ["up"], ["status"]):
        code, text = agora(*command, "--help")
        assert code == 0, text
        assert "agora " in text  # an example of the command


def test_sim_yuma_prints_the_contract_json() -> None:
    case = REPO / "tests/data/yuma/yuma_3_kappa_moves_first.json"
    out = subprocess.run(
        [sys.executable, "-m", "agora.cli", "sim", "yuma", str(case)],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
    ).stdout
    result = json.loads(out)
    n = len(json.loads(case.read_text())["stakes"])
    assert len(result["epochs"]) == len(json.loads(case.read_text())["epochs"])
    for epoch in result["epochs"]:
        assert set(epoch) == {"incentive", "dividends", "bonds", "consensus"}
        assert len(epoch["incentive"]) == n and len(epoch["bonds"]) == n


def test_sim_yuma_explains_a_bad_case_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    code, text = agora("sim", "yuma", str(bad))
    assert code == 1 and "not a valid case file" in text
    code, text = agora("sim", "yuma", str(tmp_path / "missing.json"))
    assert code == 1 and "no case file" in text


def test_transfer_subnet_and_metagraph_through_a_real_node(
    start_node: Callable[..., object], tmp_path: Path
) -> None:
    node = start_node()
    env = {
        "AGORA_NODE": node.url,
        "AGORA_HOME": str(tmp_path / "home"),  # type: ignore[attr-defined]
        "COLUMNS": "160",
    }
    wallet = Wallet.create("carol", "pw", root=tmp_path / "home", kdf=KDF_FOR_TESTS_ONLY)
    password_file = tmp_path / "pw.txt"
    password_file.write_text("pw\n")

    code, text = agora("dev", "fund", "carol", "50", env=env)
    assert code == 0, text
    code, text = agora(
        "tx",
        "transfer",
        "--wallet",
        "carol",
        "--password-file",
        str(password_file),
        "--to",
        "dev:bob",
        "--amount",
        "1.25",
        env=env,
    )
    assert code == 0 and "included" in text, text
    code, text = agora("account", "show", "carol", env=env)
    assert code == 0 and "48.75" in text, text

    code, text = agora("subnet", "create", "--dev-key", "alice", env=env)
    assert code == 0, text
    code, text = agora(
        "subnet",
        "register",
        "--wallet",
        "carol",
        "--password-file",
        str(password_file),
        "--netuid",
        "1",
        env=env,
    )
    assert code == 0, text
    code, text = agora("subnet", "show", "1", env=env)
    assert code == 0 and wallet.hotkey_address[:8] in text, text

    code, text = agora(
        "tx",
        "transfer",
        "--wallet",
        "carol",
        "--password-file",
        str(password_file),
        "--to",
        "dev:bob",
        "--amount",
        "1000000",
        env=env,
    )
    assert code == 1 and "insufficient_balance" in text, text
    wrong = tmp_path / "wrong.txt"
    wrong.write_text("nope\n")
    code, text = agora(
        "tx",
        "transfer",
        "--wallet",
        "carol",
        "--password-file",
        str(wrong),
        "--to",
        "dev:bob",
        "--amount",
        "1",
        env=env,
    )
    assert code == 1 and "password" in text.lower(), text
    code, text = agora("status", env=env)
    assert code == 0 and "agora-dev" in text


def test_commands_say_what_to_do_when_the_node_is_down() -> None:
    code, text = agora("status", "--node", "http://127.0.0.1:9")
    assert code == 1 and "agora node start" in text, text


@pytest.mark.parametrize("amount", ["abc", "-1", "0.0000000001"])
def test_bad_amounts_are_refused_before_anything_is_sent(amount: str) -> None:
    code, text = agora(
        "tx",
        "transfer",
        "--dev-key",
        "alice",
        "--to",
        "dev:bob",
        "--amount",
        amount,
        "--node",
        "http://127.0.0.1:9",
    )
    assert code == 1, text
    assert "amount" in text.lower() or "unit" in text.lower(), text
