"""Unbonding: removed stake waits, stays slashable, and is paid once at its release block.

Real blocks with real signatures through tests/protocol_kit; the dispute set-up (subnet 1, three
validators with permits, two miners of carol's) is the one tests/test_protocol_disputes.py uses.
The node side (the account view, dispute outcomes in the event stream) runs a real node
in-process over httpx.ASGITransport.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from agora.chain.api import create_app
from agora.chain.client import LedgerClient, iter_sse
from agora.chain.genesis import dev_genesis, dev_producer
from agora.chain.node import Node, NodeConfig
from agora.chain.testing import running_app
from agora.cli import app
from agora.protocol.dispute_state import REJECTED, UPHELD
from agora.protocol.errors import InsufficientStake
from agora.protocol.stake import unbonding_delay
from agora.protocol.state import State, state_root
from agora.protocol.unbonding import Unbonding
from agora.protocol.units import TOKEN
from tests.protocol_kit import Chain, key
from tests.test_dispute_api import DAVE, deciding_block, make_subnet, send_all, signed_receipt
from tests.test_dispute_api import MINER as DEV_MINER
from tests.test_dispute_api import VALIDATORS as DEV_VALIDATORS
from tests.test_protocol_disputes import (
    ALICE,
    CAROL,
    EVIDENCE,
    HYPER,
    MINERS,
    VALIDATORS,
    invariants,
    receipt_for,
    refused,
    subnet_chain,
)

MINER = MINERS[0]
DELAY = 1 + HYPER.dispute_window + HYPER.dispute_period  # 14 blocks with HYPER


def entries(state: State) -> list[Unbonding]:
    return sorted(state.unbonding.entries.values(), key=lambda e: e.id)


def test_unstaking_a_registered_hotkey_waits_and_is_paid_once_at_its_block() -> None:
    chain = subnet_chain()
    supply = chain.state.circulating()
    carol = chain.state.balance(CAROL.address)
    chain.do(CAROL, "remove_stake", hotkey=MINER.address, amount=15 * TOKEN)
    removed_at = chain.state.height
    assert unbonding_delay(chain.state, MINER.address) == DELAY
    [entry] = entries(chain.state)
    assert entry == Unbonding(1, MINER.address, CAROL.address, 15 * TOKEN, removed_at,
                              removed_at + DELAY)  # fmt: skip
    # Off the stake at once (no weight, no emission), not yet in the balance, still in supply.
    assert chain.state.hotkey_stake(MINER.address) == 25 * TOKEN
    assert chain.state.balance(CAROL.address) == carol
    assert chain.state.circulating() == supply
    invariants(chain.state)
    while chain.state.height < entry.release_at - 1:
        chain.block()
        assert chain.state.balance(CAROL.address) == carol
        assert chain.state.unbonding.locked() == 15 * TOKEN
    chain.block()  # the release block
    assert chain.state.height == entry.release_at
    assert chain.state.balance(CAROL.address) == carol + 15 * TOKEN
    assert entries(chain.state) == []
    chain.advance(3)  # paid exactly once
    assert chain.state.balance(CAROL.address) == carol + 15 * TOKEN
    invariants(chain.state)


def test_the_delay_is_the_longest_dispute_span_of_the_subnets_it_serves() -> None:
    chain = subnet_chain()
    chain.do(ALICE, "create_subnet")
    chain.do(
        ALICE, "set_hyperparams", netuid=2, changes={"dispute_window": 40, "dispute_period": 9}
    )
    assert unbonding_delay(chain.state, MINER.address) == DELAY  # only on subnet 1
    chain.do(CAROL, "register", netuid=2, hotkey=MINER.address)
    assert unbonding_delay(chain.state, MINER.address) == 1 + 40 + 9
    chain.do(CAROL, "remove_stake", hotkey=MINER.address, amount=TOKEN)
    [entry] = entries(chain.state)
    assert entry.release_at - entry.created_at == 50


def test_stake_on_a_hotkey_registered_nowhere_returns_at_once() -> None:
    hyper = dataclasses.replace(HYPER, max_uids=1, max_validators=1, immunity_period=0)
    chain = Chain.new({"alice": 1_000, "carol": 1_000}, hyperparams=hyper)
    old, new = key("unbonding/old"), key("unbonding/new")
    chain.do(ALICE, "create_subnet")
    chain.do(CAROL, "register", netuid=1, hotkey=old.address)
    chain.do(CAROL, "add_stake", hotkey=old.address, amount=10 * TOKEN)
    chain.do(ALICE, "register", netuid=1, hotkey=new.address)  # the subnet is full: old pruned
    assert chain.state.subnets[1].uid_of(old.address) is None
    assert unbonding_delay(chain.state, old.address) == 0
    carol = chain.state.balance(CAROL.address)
    chain.do(CAROL, "remove_stake", hotkey=old.address, amount=10 * TOKEN)
    assert chain.state.balance(CAROL.address) == carol + 10 * TOKEN
    assert chain.state.unbonding.is_pristine()
    assert "unbonding" not in chain.state.to_json()  # encodes as before unbonding existed


def test_unstaking_more_than_bonded_is_refused_and_unbonding_does_not_count() -> None:
    chain = subnet_chain()
    chain.do(CAROL, "remove_stake", hotkey=MINER.address, amount=40 * TOKEN)
    assert MINER.address not in chain.state.stakes
    # What is unbonding cannot be unstaked a second time.
    refused(chain.state, chain.tx(CAROL, "remove_stake", hotkey=MINER.address, amount=1),
            InsufficientStake)  # fmt: skip


def cheat_then_unstake(chain: Chain, amount: int) -> dict[str, Any]:
    """The miner signs a receipt (the cheat), then its owner removes ``amount`` units."""
    receipt = receipt_for(chain)
    chain.do(CAROL, "remove_stake", hotkey=MINER.address, amount=amount)
    return receipt


def test_a_slash_reaches_stake_removed_after_the_cheat() -> None:
    chain = subnet_chain()
    receipt = cheat_then_unstake(chain, 40 * TOKEN)  # everything: nothing left bonded
    assert chain.state.hotkey_stake(MINER.address) == 0
    chain.advance(HYPER.dispute_window - 2)  # late, but inside the window
    chain.do(VALIDATORS[0], "dispute_open", netuid=1, receipt=receipt, evidence=EVIDENCE)
    chain.do(VALIDATORS[1], "dispute_vote", dispute_id=1, guilty=True)
    dispute = chain.state.disputes.disputes[1]
    assert dispute.status == UPHELD
    assert dispute.slashed == 40 * TOKEN * HYPER.slash_ppm // 1_000_000 == 20 * TOKEN
    [entry] = entries(chain.state)
    assert entry.amount == 20 * TOKEN
    carol = chain.state.balance(CAROL.address)
    chain.advance(entry.release_at - chain.state.height)
    assert chain.state.balance(CAROL.address) == carol + 20 * TOKEN
    invariants(chain.state)


def test_a_slash_takes_bonded_stake_first_then_entries_oldest_first_per_coldkey() -> None:
    chain = subnet_chain(miner_stake=40)
    chain.do(ALICE, "add_stake", hotkey=MINER.address, amount=10 * TOKEN)  # a nominator
    receipt = receipt_for(chain)
    chain.do(CAROL, "remove_stake", hotkey=MINER.address, amount=10 * TOKEN)
    chain.do(CAROL, "remove_stake", hotkey=MINER.address, amount=25 * TOKEN)
    chain.do(ALICE, "remove_stake", hotkey=MINER.address, amount=10 * TOKEN)
    assert chain.state.stakes[MINER.address] == {CAROL.address: 5 * TOKEN}
    chain.do(VALIDATORS[0], "dispute_open", netuid=1, receipt=receipt, evidence=EVIDENCE)
    chain.do(VALIDATORS[1], "dispute_vote", dispute_id=1, guilty=True)
    # carol: (5 bonded + 10 + 25 unbonding) / 2 = 20: the 5 bonded, then 10 (oldest), then 5.
    # alice: 10 unbonding / 2 = 5. Nobody pays for another's exposure.
    assert chain.state.disputes.disputes[1].slashed == 25 * TOKEN
    assert MINER.address not in chain.state.stakes
    assert [(e.coldkey, e.amount) for e in entries(chain.state)] == [
        (CAROL.address, 20 * TOKEN),
        (ALICE.address, 5 * TOKEN),
    ]
    invariants(chain.state)


def test_a_rejected_dispute_takes_nothing_from_unbonding() -> None:
    chain = subnet_chain()
    receipt = cheat_then_unstake(chain, 30 * TOKEN)
    chain.do(VALIDATORS[0], "dispute_open", netuid=1, receipt=receipt, evidence=EVIDENCE)
    chain.do(VALIDATORS[1], "dispute_vote", dispute_id=1, guilty=False)
    chain.do(VALIDATORS[2], "dispute_vote", dispute_id=1, guilty=False)
    assert chain.state.disputes.disputes[1].status == REJECTED
    assert [e.amount for e in entries(chain.state)] == [30 * TOKEN]


def test_an_entry_due_while_its_hotkey_is_accused_waits_for_the_verdict() -> None:
    # An owner may lengthen dispute_period after the stake was removed: the open dispute holds
    # the entry past its release block, and the verdict decides what is paid.
    chain = subnet_chain()
    chain.do(CAROL, "remove_stake", hotkey=MINER.address, amount=40 * TOKEN)  # all of it
    [entry] = entries(chain.state)
    chain.do(ALICE, "set_hyperparams", netuid=1, changes={"dispute_period": 40})
    chain.advance(entry.release_at - chain.state.height - 3)
    receipt = receipt_for(chain)
    chain.block()
    chain.do(VALIDATORS[0], "dispute_open", netuid=1, receipt=receipt, evidence=EVIDENCE)
    carol = chain.state.balance(CAROL.address)
    chain.advance(entry.release_at - chain.state.height + 5)
    assert chain.state.height > entry.release_at
    assert entries(chain.state) == [entry]  # held: its hotkey is accused
    assert chain.state.balance(CAROL.address) == carol
    chain.do(VALIDATORS[1], "dispute_vote", dispute_id=1, guilty=True)  # upheld in this block
    assert chain.state.disputes.disputes[1].resolved_at == chain.state.height
    assert entries(chain.state) == []
    assert chain.state.balance(CAROL.address) == carol + 20 * TOKEN  # half slashed, half paid
    invariants(chain.state)


def test_unbonding_is_encoded_cloned_and_in_the_state_root() -> None:
    chain = subnet_chain()
    before = state_root(chain.state)
    chain.do(CAROL, "remove_stake", hotkey=MINER.address, amount=TOKEN)
    state = chain.state
    doc = state.to_json()
    assert doc["unbonding"]["next_id"] == 2
    assert State.from_json(doc).to_json() == doc
    assert state_root(State.from_json(doc)) == state_root(state)
    copy = state.clone()
    copy.unbonding.entries.clear()
    assert state.unbonding.entries and state_root(copy) != state_root(state)
    assert before != state_root(state)


# -- the node: the account view and dispute outcomes as events ----------------------------


@pytest.fixture
async def ledger(tmp_path: Path) -> AsyncIterator[tuple[Node, LedgerClient, str]]:
    """A producing node served over real HTTP on loopback (event streams need a server)."""
    node = await Node.create(
        NodeConfig(data_dir=tmp_path / "node", block_time=0.05),
        genesis=dev_genesis(),
        producer=dev_producer(),
    )
    await node.start()
    try:
        async with running_app(create_app(node)) as url, LedgerClient(url) as client:
            yield node, client, url
    finally:
        await node.stop()


@pytest.mark.anyio
async def test_the_account_view_shows_pending_unbonding(
    ledger: tuple[Node, LedgerClient, str],
) -> None:
    node, client, url = ledger
    await make_subnet(client)
    await send_all(client, [(DAVE, "remove_stake", {"hotkey": DEV_MINER.address, "amount": TOKEN})])
    account = await client.account(DAVE.address)
    [entry] = account.unbonding
    hp = node.state.subnets[1].hyperparams
    assert (entry.hotkey, entry.coldkey, entry.amount) == (DEV_MINER.address, DAVE.address, TOKEN)
    assert entry.release_at == entry.created_at + 1 + hp.dispute_window + hp.dispute_period
    assert account.total_unbonding == TOKEN and account.total_staked == 39 * TOKEN
    assert (await client.account(DEV_MINER.address)).unbonding_behind == TOKEN
    # `agora account show` lists it (in a thread: the command runs its own event loop).
    runner = CliRunner()
    shown = await asyncio.to_thread(
        runner.invoke, app, ["account", "show", DAVE.address, "--node", url], env={"COLUMNS": "200"}
    )
    assert shown.exit_code == 0, shown.output
    assert f"paid in block {entry.release_at}" in shown.output and "unbonding" in shown.output


async def watch_until_dispute(
    url: str, connected: asyncio.Event
) -> list[tuple[str, dict[str, Any]]]:
    """Read the live event stream until the first ``dispute`` event; set ``connected`` once
    the first live block event arrived."""
    seen: list[tuple[str, dict[str, Any]]] = []
    timeout = httpx.Timeout(10.0, read=60.0)
    async with (
        httpx.AsyncClient(timeout=timeout) as http,
        http.stream("GET", f"{url}/v1/events") as response,
    ):
        async for name, data in iter_sse(response):
            seen.append((name, json.loads(data)))
            connected.set()
            if name == "dispute":
                return seen
    return seen


@pytest.mark.anyio
async def test_dispute_outcomes_come_as_events_live_and_replayed(
    ledger: tuple[Node, LedgerClient, str],
) -> None:
    node, client, url = ledger
    await make_subnet(client)
    receipt = signed_receipt(nonce=11)
    await deciding_block(client, receipt["timestamp"])
    bob, charlie, _ = DEV_VALIDATORS
    evidence = {"kind": "embedding", "reason": "cosine 0.12 against the reference"}
    await client.open_dispute(bob, 1, receipt, evidence)
    opened_at = node.height
    connected = asyncio.Event()
    watcher = asyncio.create_task(watch_until_dispute(url, connected))
    await asyncio.wait_for(connected.wait(), 30)  # streaming live before the vote is sent
    await client.vote_dispute(charlie, 1, True)
    seen = await asyncio.wait_for(watcher, 30)
    resolved = node.state.disputes.disputes[1].resolved_at
    name, outcome = seen[-1]
    assert name == "dispute" and outcome["id"] == 1 and outcome["status"] == "upheld"
    assert outcome["resolved_at"] == resolved and outcome["slashed"] == 20 * TOKEN
    assert outcome["miner"] == DEV_MINER.address and outcome["deposit_to"] == bob.address
    block_name, block = seen[-2]  # right after its block, which carries it too
    assert block_name == "block" and block["height"] == resolved
    assert block["disputes"] == [outcome]
    assert all("disputes" not in data for name, data in seen[:-2] if name == "block")

    replayed = None
    async for event in client.events(last_event_id=opened_at - 1):  # from the store
        if event["height"] == resolved:
            replayed = event
            break
        assert "disputes" not in event
    assert replayed is not None and replayed["disputes"] == [outcome]
