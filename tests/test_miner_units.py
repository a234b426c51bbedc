"""The miner's small parts: prices in integer units, its settings, the JSON it signs, and who
may call it. No model, no ledger."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agora.crypto.keys import Keypair
from agora.miner import MinerConfig, MinerConfigError, answer_price, parse_price
from agora.miner.core import normalized_json, with_receipt
from agora.miner.ledger import ALLOWED_STAKE, CallerStandingWithAllowList
from agora.miner.pricing import format_price
from agora.net import CachedStanding, json_hash, make_receipt, verify_receipt

pytestmark = pytest.mark.anyio


def test_price_is_integer_units_rounded_up() -> None:
    assert parse_price("0.001") == 1_000_000  # units per 1,000 tokens
    assert parse_price("0") == 0
    assert parse_price("2") == 2 * 10**9
    assert answer_price(0, 1_000_000) == 0
    assert answer_price(1, 1_000_000) == 1_000
    assert answer_price(1, 1) == 1  # any work at a non-zero price costs at least a unit
    assert answer_price(1000, 1) == 1
    assert answer_price(1001, 1) == 2
    assert answer_price(1234, 1_000_000) == 1_234_000
    assert format_price(1_000_000) == "0.001 tokens per 1,000 tokens"
    for bad in ("-1", "abc", "0.0000000001", "1e30"):
        with pytest.raises(MinerConfigError, match="--price"):
            parse_price(bad)


def test_config_checks_what_it_can_before_anything_starts() -> None:
    config = MinerConfig(netuid=1)
    assert config.announced_ip() == "127.0.0.1"
    assert MinerConfig(netuid=1, host="localhost").announced_ip() == "127.0.0.1"
    wildcard = MinerConfig(netuid=1, host="0.0.0.0", external_ip="203.0.113.7")
    assert wildcard.announced_ip() == "203.0.113.7"
    with pytest.raises(MinerConfigError, match="--external-ip"):
        MinerConfig(netuid=1, host="0.0.0.0").announced_ip()
    with pytest.raises(MinerConfigError, match="not an IP address"):
        MinerConfig(netuid=1, external_ip="miner.example.org").announced_ip()
    with pytest.raises(MinerConfigError, match="--allow"):
        MinerConfig(netuid=1, allow=frozenset({"not-a-hotkey"}))
    with pytest.raises(MinerConfigError, match="--subnet"):
        MinerConfig(netuid=-1)
    with pytest.raises(MinerConfigError, match="--port"):
        MinerConfig(netuid=1, port=70000)


def test_receipt_spliced_into_normalized_json_verifies() -> None:
    miner, caller = Keypair.from_name("m"), Keypair.from_name("c")
    payload = {"model": "embed:x@0123456789abcdef", "embeddings": [[0.1, -2.5e-7, 1 / 3]], "u": "é"}
    payload_json = normalized_json(payload)
    assert json_hash(payload) == json_hash(json.loads(payload_json))
    receipt = make_receipt(
        miner,
        request_hash="00" * 32,
        response_hash=json_hash(payload),
        model_id=payload["model"],
        prompt_tokens=3,
        completion_tokens=0,
        price=3,
        caller=caller.address,
        netuid=1,
        nonce="11" * 16,
    )
    body = with_receipt(payload_json, receipt)
    parsed = json.loads(body)
    assert parsed["agora_receipt"] == receipt.to_json()
    verify_receipt(receipt, response_body=body, miner=miner.address)
    # a gateway that re-serializes the JSON keeps it valid
    verify_receipt(receipt, response_body=json.dumps(parsed, indent=2).encode())
    with pytest.raises(ValueError):
        with_receipt(b"{}", receipt)


async def test_allow_list_passes_unregistered_gateways() -> None:
    registered, gateway = Keypair.from_name("r").address, Keypair.from_name("g").address
    fetches = 0

    async def fetch() -> dict[str, int]:
        nonlocal fetches
        fetches += 1
        return {registered: 5}

    standing = CallerStandingWithAllowList(CachedStanding(fetch), allow={gateway})
    assert await standing(registered) == (True, 5)
    assert await standing(gateway) == (True, ALLOWED_STAKE)
    assert await standing(Keypair.from_name("x").address) == (False, 0)
    assert fetches == 1


def test_cli_opens_the_hotkey_now_and_the_coldkey_only_when_asked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from agora.miner.cli import _keys
    from agora.wallet import KDF_FOR_TESTS_ONLY, Wallet, WrongPassword

    monkeypatch.setenv("AGORA_HOME", str(tmp_path))
    monkeypatch.delenv("AGORA_PASSWORD", raising=False)
    wallet = Wallet.create("m1", "right", kdf=KDF_FOR_TESTS_ONLY)
    password_file = tmp_path / "pass"
    password_file.write_text("right\n")
    hotkey, coldkey = _keys("m1", None, password_file)
    assert hotkey.address == wallet.hotkey_address
    assert coldkey().address == wallet.coldkey_address
    password_file.write_text("wrong\n")
    with pytest.raises(WrongPassword):
        _keys("m1", None, password_file)
    hotkey, coldkey = _keys(None, "charlie", None)
    assert hotkey == Keypair.from_name("charlie/hot") and coldkey() == Keypair.from_name("charlie")
