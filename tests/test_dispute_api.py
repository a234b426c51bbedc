"""Disputes through the node: the routes and LedgerClient in-process (a running node producing
blocks, its app over httpx.ASGITransport), and the ``agora dispute`` / ``agora subnet audit``
commands against a real node process."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from agora.chain.api import create_app
from agora.chain.client import LedgerClient, run
from agora.chain.errors import NodeError
from agora.chain.genesis import dev_genesis, dev_producer
from agora.chain.node import Node, NodeConfig
from agora.cli import app
from agora.crypto.keys import Keypair
from agora.crypto.signing import sign_transaction
from agora.net.receipts import make_receipt
from agora.protocol.audit import is_audited
from agora.protocol.params import DEV_HYPERPARAMS
from agora.protocol.receipts import receipt_hash
from agora.protocol.state import state_root
from agora.protocol.units import TOKEN

CHAIN = "agora-dev"
ALICE, DAVE = Keypair.from_name("alice"), Keypair.from_name("dave")
# Dev accounts as validator hotkeys (alice's), so they hold balance for deposits.
VALIDATORS = [Keypair.from_name(n) for n in ("bob", "charlie", "eve")]
VALIDATOR_STAKE = (300, 200, 150)
MINER = Keypair.from_name("dave/miner-hot")  # dave's miner


async def send_all(ledger: LedgerClient, txs: list[tuple[Keypair, str, dict[str, Any]]]) -> None:
    """Submit in order (nonces counted from the pending ones) and wait for each inclusion."""
    hashes = []
    for key, kind, body in txs:
        nonce = await ledger.next_nonce(key.address)
        hashes.append(await ledger.submit(sign_transaction(key, CHAIN, kind, nonce, body)))
    for tx_hash in hashes:
        info = await ledger.wait_for_tx(tx_hash, timeout=20)
        assert info.status == "included", info


async def make_subnet(ledger: LedgerClient) -> None:
    """Subnet 1: three staked validators with permits and one staked miner."""
    await send_all(ledger, [(ALICE, "create_subnet", {})])
    txs: list[tuple[Keypair, str, dict[str, Any]]] = [
        (ALICE, "register", {"netuid": 1, "hotkey": v.address}) for v in VALIDATORS
    ]
    txs.append((DAVE, "register", {"netuid": 1, "hotkey": MINER.address}))
    await send_all(ledger, txs)
    txs = [
        (ALICE, "add_stake", {"hotkey": v.address, "amount": tokens * TOKEN})
        for v, tokens in zip(VALIDATORS, VALIDATOR_STAKE, strict=True)
    ]
    txs.append((DAVE, "add_stake", {"hotkey": MINER.address, "amount": 40 * TOKEN}))
    await send_all(ledger, txs)
    for _ in range(400):  # the next epoch (tempo 10) hands out permits
        meta = await ledger.metagraph(1)
        if all(n.validator_permit for n in meta.neurons):
            return
        await asyncio.sleep(0.05)
    raise AssertionError("no validator permits after an epoch")


def signed_receipt(nonce: int = 1) -> dict[str, Any]:
    return make_receipt(
        MINER,
        request_hash="ab" * 32,
        response_hash="cd" * 32,
        model_id="all-MiniLM-L6-v2",
        prompt_tokens=5,
        completion_tokens=0,
        price=1000,
        caller=ALICE.address,
        netuid=1,
        nonce=f"{nonce:032x}",
    ).to_json()


async def deciding_block(ledger: LedgerClient, timestamp: int) -> Any:
    for _ in range(400):
        found = await ledger.block_after(timestamp)
        if found is not None:
            return found
        await asyncio.sleep(0.05)
    raise AssertionError("no block after the receipt")


@pytest.fixture
async def ledger(tmp_path: Path) -> AsyncIterator[LedgerClient]:
    node = await Node.create(
        NodeConfig(data_dir=tmp_path / "node", block_time=0.05),
        genesis=dev_genesis(),
        producer=dev_producer(),
    )
    await node.start()
    transport = httpx.ASGITransport(app=create_app(node))
    async with httpx.AsyncClient(transport=transport, base_url="http://node") as http:
        yield LedgerClient(http)
    await node.stop()


@pytest.mark.anyio
async def test_dispute_lifecycle_through_the_api(ledger: LedgerClient) -> None:
    await make_subnet(ledger)
    report = await ledger.audit_params(1)
    assert report.params["audit_rate_ppm"] == DEV_HYPERPARAMS.audit_rate_ppm
    miner_row = next(m for m in report.miners if m.hotkey == MINER.address)
    assert miner_row.stake == 40 * TOKEN and miner_row.slash == 20 * TOKEN and miner_row.holds
    poor = await ledger.audit_params(1, reward=10**6, honest_cost=10 * TOKEN)  # p must be 50%
    assert not next(m for m in poor.miners if m.hotkey == MINER.address).holds

    receipt = signed_receipt()
    assert await ledger.block_after(receipt["timestamp"] + 10**9) is None  # not yet decided
    block = await deciding_block(ledger, receipt["timestamp"])
    assert block.timestamp > receipt["timestamp"]
    before = await ledger.block(block.height - 1)
    assert before["header"]["timestamp"] <= receipt["timestamp"]  # the first one after it
    # Every validator computes the same draw from the deciding block's hash.
    drawn = is_audited(block.hash, receipt_hash(receipt), report.params["audit_rate_ppm"])
    assert drawn == is_audited(block.hash, receipt_hash(receipt), 100_000)

    evidence = {"kind": "embedding", "reason": "cosine 0.12 against the reference"}
    bob, charlie, eve = VALIDATORS
    bob_balance = (await ledger.account(bob.address)).balance
    info = await ledger.open_dispute(bob, 1, receipt, evidence)
    assert info.status == "included"
    [opened] = await ledger.disputes(status="open")
    assert opened.id == 1 and opened.miner == MINER.address and opened.receipt == receipt
    assert opened.tally is not None and opened.tally.total == 650 * TOKEN
    assert opened.tally.guilty == 300 * TOKEN and opened.tally.needed == 325 * TOKEN
    assert (await ledger.account(bob.address)).balance == bob_balance - opened.deposit

    with pytest.raises(NodeError) as duplicate:  # refused at the door, with the rule's reason
        await ledger.open_dispute(charlie, 1, receipt, evidence)
    assert duplicate.value.code == "invalid_dispute" and duplicate.value.status == 422
    assert "already disputed" in str(duplicate.value)
    with pytest.raises(NodeError) as no_permit:
        await ledger.vote_dispute(MINER, 1, False)
    assert no_permit.value.code == "no_validator_permit"

    miner_stake = (await ledger.metagraph(1)).neurons[3].stake
    await ledger.vote_dispute(charlie, 1, True)
    upheld = await ledger.dispute(1)
    assert upheld.status == "upheld" and upheld.tally is None
    assert upheld.slashed == miner_stake // 2 > 0
    assert {p.hotkey for p in upheld.payouts} == {bob.address, charlie.address}
    assert upheld.burned + sum(p.amount for p in upheld.payouts) == upheld.slashed
    assert upheld.deposit_to == bob.address
    assert [v.hotkey for v in upheld.votes] == [bob.address, charlie.address]
    meta = await ledger.metagraph(1)
    assert meta.neurons[3].incentive == 0
    with pytest.raises(NodeError) as closed:
        await ledger.vote_dispute(eve, 1, False)
    assert closed.value.code == "invalid_dispute" and "upheld" in str(closed.value)

    assert [d.id for d in await ledger.disputes(miner=MINER.address)] == [1]
    assert await ledger.disputes(netuid=2) == []
    assert await ledger.disputes(status="rejected") == []
    with pytest.raises(NodeError) as missing:
        await ledger.dispute(99)
    assert missing.value.status == 404
    with pytest.raises(NodeError) as bad:
        await ledger.disputes(miner="nothex")
    assert bad.value.status == 400
    with pytest.raises(NodeError) as unknown:
        await ledger.audit_params(7)
    assert unknown.value.code == "unknown_subnet"


@pytest.mark.anyio
async def test_disputes_survive_a_restart_with_the_same_state_root(tmp_path: Path) -> None:
    config = NodeConfig(data_dir=tmp_path / "node", block_time=0.05, snapshot_interval=7)
    node = await Node.create(config, genesis=dev_genesis(), producer=dev_producer())
    await node.start()
    try:
        transport = httpx.ASGITransport(app=create_app(node))
        async with httpx.AsyncClient(transport=transport, base_url="http://node") as http:
            ledger = LedgerClient(http)
            await make_subnet(ledger)
            receipt = signed_receipt(nonce=3)
            await deciding_block(ledger, receipt["timestamp"])
            evidence = {"kind": "generation", "reason": "token 4 outside the reference top-k"}
            await ledger.open_dispute(VALIDATORS[2], 1, receipt, evidence)
    finally:
        await node.stop()
    height, root = node.height, state_root(node.state)
    disputes = node.state.disputes.to_json()
    again = await Node.create(config, genesis=dev_genesis(), producer=dev_producer())
    try:
        assert again.height == height
        assert state_root(again.state) == root
        assert again.state.disputes.to_json() == disputes
        assert again.state.disputes.open_against(MINER.address) == [1]
    finally:
        await again.stop()


# -- the commands, against a real node process ------------------------------------------------

runner = CliRunner()


def agora(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args), env={"COLUMNS": "200"})
    return result.exit_code, result.output


def test_dispute_commands_against_a_node_process(
    start_node: Callable[..., Any], tmp_path: Path
) -> None:
    node = start_node(block_time=0.1)

    async def setup() -> dict[str, Any]:
        async with LedgerClient(node.url) as ledger:
            await make_subnet(ledger)
            receipt = signed_receipt(nonce=7)
            await deciding_block(ledger, receipt["timestamp"])
            return receipt

    receipt = run(setup())
    receipt_file = tmp_path / "receipt.json"
    receipt_file.write_text(json.dumps(receipt))

    code, text = agora("subnet", "audit", "1", "--node", node.url)
    assert code == 0, text
    assert "audit rate p      10% of receipts" in text and "50% of the miner's stake" in text
    assert "dispute deadline  30 blocks" in text and "p >= (C - c) / (d (R + S))" in text
    code, text = agora("subnet", "audit", "1", "--node", node.url, "--json")
    assert code == 0 and json.loads(text)["params"]["dispute_window"] == 600

    tampered = tmp_path / "tampered.json"
    tampered.write_text(json.dumps({**receipt, "price": 1}))
    code, text = agora(
        "dispute", "open", "--receipt", str(tampered), "--kind", "embedding",
        "--reason", "wrong", "--dev-key", "bob", "--node", node.url,
    )  # fmt: skip
    assert code == 1 and "bad signature" in text

    code, text = agora(
        "dispute", "open", "--receipt", str(receipt_file), "--kind", "embedding",
        "--reason", "cosine 0.1", "--dev-key", "bob", "--node", node.url,
    )  # fmt: skip
    assert code == 0 and "included" in text, text
    code, text = agora("dispute", "list", "--status", "open", "--node", node.url)
    assert code == 0 and "1 guilty / 0 not" in text, text
    code, text = agora(
        "dispute", "vote", "1", "--not-guilty", "--dev-key", "charlie", "--node", node.url
    )
    assert code == 0, text
    code, text = agora(
        "dispute", "vote", "1", "--not-guilty", "--dev-key", "eve", "--node", node.url
    )
    assert code == 0, text
    code, text = agora("dispute", "show", "1", "--node", node.url)
    assert code == 0 and "rejected" in text and "found the answer right" in text, text
    code, text = agora("dispute", "vote", "1", "--guilty", "--dev-key", "bob", "--node", node.url)
    assert code == 1 and "already rejected" in text, text
    code, text = agora("dispute", "show", "1", "--node", node.url, "--json")
    shown = json.loads(text)
    assert shown["status"] == "rejected" and shown["deposit_to"] == DAVE.address
