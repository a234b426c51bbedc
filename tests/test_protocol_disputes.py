"""Spot checks and disputes on the ledger: the audit draw, the honesty condition, and the rules
of dispute_open / dispute_vote / resolution, with real signatures and real blocks.

Properties (hypothesis) over random histories of disputes, votes, stake moves and waiting:
supply is conserved (a slash only burns or moves), nobody is slashed without a stake majority of
guilty votes, a deposit is taken once and returned or forfeited once, no dispute resolves twice,
and replaying the blocks gives the same state.
"""

from __future__ import annotations

import dataclasses
from fractions import Fraction
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from agora.crypto.keys import Keypair
from agora.net.receipts import Receipt, make_receipt
from agora.protocol.audit import (
    DEFAULT_ECONOMICS,
    audit_draw,
    deciding_height,
    honesty_report,
    is_audited,
    min_stake_for_honesty,
    required_audit_rate,
)
from agora.protocol.block import apply_block, apply_transaction
from agora.protocol.dispute_state import (
    BLOCK_TIMES_KEPT,
    MAX_DISPUTE_WINDOW,
    OPEN,
    REJECTED,
    UPHELD,
    DisputeState,
)
from agora.protocol.disputes import MAX_FUTURE_MS, tally
from agora.protocol.errors import (
    BadSignature,
    InsufficientBalance,
    InsufficientStake,
    InvalidDispute,
    InvalidParameter,
    InvalidTransaction,
    MalformedTransaction,
    NotRegistered,
    NoValidatorPermit,
)
from agora.protocol.params import DEV_HYPERPARAMS, MAINNET_HYPERPARAMS
from agora.protocol.receipts import receipt_hash, receipt_signing_bytes
from agora.protocol.state import State, state_root
from agora.protocol.transactions import parse_transaction
from agora.protocol.units import TOKEN
from tests.protocol_kit import Chain, key

ALICE, CAROL = key("alice"), key("carol")  # alice owns the subnet and the validators
VALIDATORS = [key(f"disputes/val{i}") for i in range(3)]
MINERS = [key(f"disputes/miner{i}") for i in range(2)]
EVIDENCE = {"kind": "embedding", "reason": "cosine 0.12 against the reference model"}
HYPER = dataclasses.replace(DEV_HYPERPARAMS, tempo=2, dispute_period=5, dispute_window=8)


def subnet_chain(stakes: tuple[int, ...] = (300, 200, 150), miner_stake: int = 40) -> Chain:
    """Subnet 1 owned by alice; three validators (alice's) with ``stakes`` tokens, two miners
    (carol's) with ``miner_stake`` tokens each, permits issued, validator hotkeys funded."""
    chain = Chain.new({"alice": 10_000, "carol": 1_000}, hyperparams=HYPER)
    chain.do(ALICE, "create_subnet")
    for hot in VALIDATORS:
        chain.do(ALICE, "register", netuid=1, hotkey=hot.address)
    for hot in MINERS:
        chain.do(CAROL, "register", netuid=1, hotkey=hot.address)
    for hot, tokens in zip(VALIDATORS, stakes, strict=True):
        chain.do(ALICE, "add_stake", hotkey=hot.address, amount=tokens * TOKEN)
        chain.do(ALICE, "transfer", to=hot.address, amount=5 * TOKEN)
    for hot in MINERS:
        chain.do(CAROL, "add_stake", hotkey=hot.address, amount=miner_stake * TOKEN)
    chain.advance(3)  # an epoch hands out permits
    subnet = chain.state.subnets[1]
    assert all(subnet.neurons[subnet.uid_of(v.address)].validator_permit for v in VALIDATORS)
    return chain


def receipt_for(chain: Chain, miner: Keypair = MINERS[0], *, nonce: int = 1, **over: Any) -> dict:
    """A receipt the miner signs now (before the next block), as JSON."""
    fields: dict[str, Any] = {
        "request_hash": "ab" * 32,
        "response_hash": "cd" * 32,
        "model_id": "all-MiniLM-L6-v2",
        "prompt_tokens": 7,
        "completion_tokens": 0,
        "price": 1000,
        "caller": ALICE.address,
        "netuid": 1,
        "nonce": f"{nonce:032x}",
        "timestamp_ms": chain.state.timestamp + 1,
    }
    fields.update(over)
    return make_receipt(miner, **fields).to_json()


def open_tx(chain: Chain, who: Keypair, receipt: dict, evidence: dict | None = None) -> Any:
    return chain.tx(who, "dispute_open", netuid=1, receipt=receipt, evidence=evidence or EVIDENCE)


def refused(state: State, tx: Any, error: type[InvalidTransaction]) -> InvalidTransaction:
    """Apply ``tx`` to a copy: it must raise ``error`` and leave the copy as it was."""
    copy = state.clone()
    with pytest.raises(error) as caught:
        apply_transaction(copy, tx, state.height + 1)
    assert copy.to_json() == state.to_json()
    return caught.value


def invariants(state: State) -> None:
    assert state.circulating() == state.total_issuance - state.total_burned
    assert all(v > 0 for v in state.balances.values())
    assert all(v > 0 for by_cold in state.stakes.values() for v in by_cold.values())


# -- the audit draw -------------------------------------------------------------------------


def test_audit_draw_is_deterministic_domain_separated_and_uniform() -> None:
    block, receipt = "11" * 32, "22" * 32
    assert audit_draw(block, receipt) == audit_draw(block, receipt)
    assert audit_draw(block, receipt) != audit_draw("12" + "11" * 31, receipt)
    draws = [audit_draw(f"{i:064x}", receipt) for i in range(20_000)]
    assert all(0 <= d < 1_000_000 for d in draws)
    audited = sum(is_audited(f"{i:064x}", receipt, 100_000) for i in range(20_000))
    assert 1_800 < audited < 2_200  # 10% of 20,000 (these inputs give a fixed count)
    assert not any(is_audited(f"{i:064x}", receipt, 0) for i in range(100))
    assert all(is_audited(f"{i:064x}", receipt, 1_000_000) for i in range(100))


@pytest.mark.parametrize(
    "args", [("zz" * 32, "22" * 32, 10), ("11" * 32, "22" * 31, 10), ("11" * 32, "22" * 32, -1)]
)
def test_audit_draw_refuses_bad_input(args: tuple[str, str, int]) -> None:
    with pytest.raises(ValueError):
        is_audited(*args)


def test_deciding_block_is_the_first_after_the_receipt() -> None:
    times = [1000, 2000, 2000, 3000]  # heights 5, 6, 7, 8
    assert deciding_height(times, 5, 999) == 5
    assert deciding_height(times, 5, 1000) == 6
    assert deciding_height(times, 5, 2500) == 8
    assert deciding_height(times, 5, 3000) is None


# -- the honesty condition ------------------------------------------------------------------


def test_required_audit_rate_is_exact() -> None:
    # p >= (C - c) / (d (R + S)) = 900 / (0.9 * 1000) = 1
    assert required_audit_rate(1000, 100, 900_000, 100, 900) == Fraction(1)
    assert required_audit_rate(3, 0, 1_000_000, 1, 8) == Fraction(1, 3)
    assert required_audit_rate(10, 10, 0, 0, 0) == 0  # cheating saves nothing
    assert required_audit_rate(10, 0, 0, 5, 5) is None  # nothing is ever detected
    assert required_audit_rate(10, 0, 990_000, 0, 0) is None  # nothing to lose
    with pytest.raises(ValueError):
        required_audit_rate(-1, 0, 1, 1, 1)


def test_presets_deter_the_stakes_their_docstrings_claim() -> None:
    """The numbers in params.py's comment, recomputed."""
    mainnet = min_stake_for_honesty(DEFAULT_ECONOMICS, 20_000, 100_000)
    assert mainnet is not None and 0.49 * TOKEN < mainnet < 0.5 * TOKEN
    dev = min_stake_for_honesty(
        DEFAULT_ECONOMICS, DEV_HYPERPARAMS.audit_rate_ppm, DEV_HYPERPARAMS.slash_ppm
    )
    assert dev is not None and 0.017 * TOKEN < dev < 0.019 * TOKEN
    report = honesty_report(
        MAINNET_HYPERPARAMS.audit_params(),
        [(0, "aa" * 32, 10 * TOKEN), (1, "bb" * 32, 0), (2, "cc" * 32, mainnet)],
    )
    by_uid = {m["uid"]: m for m in report["miners"]}
    assert by_uid[0]["holds"] and by_uid[0]["required_rate_ppm"] == 1010  # 0.1%, as documented
    assert not by_uid[1]["holds"] and by_uid[1]["required_rate_ppm"] is None  # no stake: p > 1
    assert by_uid[2]["holds"]
    below = honesty_report(MAINNET_HYPERPARAMS.audit_params(), [(0, "aa" * 32, mainnet - 20)])
    assert not below["miners"][0]["holds"]
    assert report["deterred"] == 2 and report["min_stake"] == mainnet


def test_audit_hyperparameters_are_bounded_and_owner_settable() -> None:
    chain = subnet_chain()
    chain.do(ALICE, "set_hyperparams", netuid=1, changes={"audit_rate_ppm": 50_000})
    assert chain.state.subnets[1].hyperparams.audit_rate_ppm == 50_000
    for bad in ({"slash_ppm": 1_000_001}, {"dispute_window": 5000}, {"dispute_period": 0}):
        with pytest.raises(InvalidParameter):
            chain.do(ALICE, "set_hyperparams", netuid=1, changes=bad)


# -- disputes -------------------------------------------------------------------------------


def test_upheld_dispute_slashes_pays_returns_deposit_and_zeroes_incentive() -> None:
    chain = subnet_chain()
    v0, v1, _ = VALIDATORS
    receipt = receipt_for(chain)
    chain.block()  # the receipt's deciding block
    before = chain.state
    chain.do(v0, "dispute_open", netuid=1, receipt=receipt, evidence=EVIDENCE)
    dispute = chain.state.disputes.disputes[1]
    assert dispute.status == OPEN and dispute.receipt_block == before.height
    assert chain.state.balance(v0.address) == before.balance(v0.address) - TOKEN
    invariants(chain.state)
    # 300 of 650 tokens is no majority; 300 + 200 is.
    miner_stake = chain.state.hotkey_stake(MINERS[0].address)
    burned = chain.state.total_burned
    chain.do(v1, "dispute_vote", dispute_id=1, guilty=True)
    dispute = chain.state.disputes.disputes[1]
    assert dispute.status == UPHELD and dispute.resolved_at == chain.state.height
    assert dispute.slashed == miner_stake // 2  # slash_ppm 50%
    assert chain.state.hotkey_stake(MINERS[0].address) == miner_stake - dispute.slashed
    paid = {p.hotkey: p.amount for p in dispute.payouts}
    pool = dispute.slashed - dispute.slashed // 2  # slash_burn_ppm 50%
    assert paid == {v0.address: pool * 300 // 500, v1.address: pool * 200 // 500}
    assert dispute.burned == dispute.slashed - sum(paid.values())
    assert chain.state.total_burned == burned + dispute.burned
    assert chain.state.balance(v0.address) == before.balance(v0.address) + paid[v0.address]
    invariants(chain.state)
    uid = chain.state.subnets[1].uid_of(MINERS[0].address)
    assert chain.state.subnets[1].neurons[uid].slashed
    # Every validator weights only the slashed miner and the other one: the next epochs give
    # the slashed one no incentive at all.
    other = chain.state.subnets[1].uid_of(MINERS[1].address)
    chain.block(
        [
            chain.tx(v, "set_weights", netuid=1, uids=[uid, other], weights=[65535, 100])
            for v in VALIDATORS
        ]
    )
    chain.advance(4)
    neurons = chain.state.subnets[1].neurons
    assert neurons[uid].incentive == 0 and neurons[other].incentive > 0
    invariants(chain.state)


def test_not_guilty_majority_rejects_and_the_deposit_goes_to_the_miner() -> None:
    chain = subnet_chain()
    v0, v1, v2 = VALIDATORS
    receipt = receipt_for(chain)
    chain.block()
    carol = chain.state.balance(CAROL.address)
    chain.do(v0, "dispute_open", netuid=1, receipt=receipt, evidence=EVIDENCE)
    chain.do(v1, "dispute_vote", dispute_id=1, guilty=False)
    assert chain.state.disputes.disputes[1].status == OPEN  # 200 of 650
    stake = chain.state.hotkey_stake(MINERS[0].address)
    chain.do(v2, "dispute_vote", dispute_id=1, guilty=False)  # 350 of 650
    dispute = chain.state.disputes.disputes[1]
    assert dispute.status == REJECTED and dispute.deposit_to == CAROL.address
    assert chain.state.balance(CAROL.address) == carol + TOKEN
    assert chain.state.hotkey_stake(MINERS[0].address) == stake  # nothing slashed
    assert not any(n.slashed for n in chain.state.subnets[1].neurons)
    refused(chain.state, chain.tx(v2, "dispute_vote", dispute_id=1, guilty=True), InvalidDispute)
    invariants(chain.state)


def test_deadline_without_majority_rejects_once() -> None:
    chain = subnet_chain()
    receipt = receipt_for(chain)
    chain.block()
    chain.do(VALIDATORS[2], "dispute_open", netuid=1, receipt=receipt, evidence=EVIDENCE)
    deadline = chain.state.disputes.disputes[1].deadline
    chain.advance(deadline - chain.state.height - 1)
    assert chain.state.disputes.disputes[1].status == OPEN
    late = chain.tx(VALIDATORS[0], "dispute_vote", dispute_id=1, guilty=True)
    chain.block()  # the deadline block
    dispute = chain.state.disputes.disputes[1]
    assert dispute.status == REJECTED and dispute.resolved_at == deadline
    assert "deadline" in dispute.reason
    refused(chain.state, late, InvalidDispute)
    carol = chain.state.balance(CAROL.address)
    chain.advance(3)
    assert chain.state.disputes.disputes[1] == dispute  # resolved once, never again
    assert chain.state.balance(CAROL.address) == carol


def test_a_validator_with_a_stake_majority_decides_alone() -> None:
    chain = subnet_chain(stakes=(700, 200, 100))
    receipt = receipt_for(chain)
    chain.block()
    chain.do(VALIDATORS[0], "dispute_open", netuid=1, receipt=receipt, evidence=EVIDENCE)
    assert chain.state.disputes.disputes[1].status == UPHELD


def test_accused_stake_is_locked_while_the_dispute_is_open() -> None:
    chain = subnet_chain()
    receipt = receipt_for(chain)
    chain.block()
    chain.do(VALIDATORS[0], "dispute_open", netuid=1, receipt=receipt, evidence=EVIDENCE)
    unstake = chain.tx(CAROL, "remove_stake", hotkey=MINERS[0].address, amount=TOKEN)
    error = refused(chain.state, unstake, InsufficientStake)
    assert "open dispute" in str(error)
    chain.do(VALIDATORS[1], "dispute_vote", dispute_id=1, guilty=False)
    chain.do(VALIDATORS[2], "dispute_vote", dispute_id=1, guilty=False)
    chain.do(CAROL, "remove_stake", hotkey=MINERS[0].address, amount=TOKEN)  # free again


def test_bad_disputes_are_refused_with_a_reason_and_change_nothing() -> None:
    chain = subnet_chain()
    v0, v1, _ = VALIDATORS
    receipt = receipt_for(chain)
    chain.block()
    state = chain.state
    tampered = {**receipt, "price": receipt["price"] + 1}
    refused(state, open_tx(chain, v0, tampered), BadSignature)
    refused(state, open_tx(chain, v0, {**receipt, "version": 2}), InvalidDispute)
    refused(
        state,
        open_tx(chain, v0, {k: v for k, v in receipt.items() if k != "nonce"}),
        InvalidDispute,
    )
    other_net = receipt_for(chain, netuid=2, nonce=9)
    refused(state, open_tx(chain, v0, other_net), InvalidDispute)
    stranger = receipt_for(chain, key("disputes/stranger"), nonce=3)
    refused(state, open_tx(chain, v0, stranger), NotRegistered)
    outsider = key("disputes/outsider")
    refused(state, open_tx(chain, outsider, receipt), NoValidatorPermit)  # no permit
    refused(state, open_tx(chain, MINERS[0], receipt), NoValidatorPermit)  # the accused
    undecided = receipt_for(chain, nonce=4, timestamp_ms=state.timestamp)  # no block after it
    assert "wait for the next block" in str(
        refused(state, open_tx(chain, v0, undecided), InvalidDispute)
    )
    for bad in (
        {"kind": "vibes", "reason": "x"},
        {"kind": "zk"},
        {"kind": "zk", "reason": "x", "reference": "not-a-hash"},
        {"kind": "zk", "reason": "x", "notes": "y" * 1200},
    ):
        refused(state, open_tx(chain, v0, receipt, bad), InvalidDispute)
    with pytest.raises(MalformedTransaction):  # the transaction's shape is checked first
        parse_transaction({**open_tx(chain, v0, receipt).to_json(), "body": {"netuid": 1}})
    poor = chain.tx(v0, "transfer", to=ALICE.address, amount=state.balance(v0.address))
    chain.block([poor])
    refused(chain.state, open_tx(chain, v0, receipt), InsufficientBalance)
    chain.do(v1, "dispute_open", netuid=1, receipt=receipt, evidence=EVIDENCE)
    error = refused(chain.state, open_tx(chain, VALIDATORS[2], receipt), InvalidDispute)
    assert "already disputed" in str(error)
    refused(chain.state, chain.tx(v1, "dispute_vote", dispute_id=1, guilty=True), InvalidDispute)
    refused(chain.state, chain.tx(v0, "dispute_vote", dispute_id=7, guilty=True), InvalidDispute)
    vote = chain.tx(MINERS[0], "dispute_vote", dispute_id=1, guilty=False)
    refused(chain.state, vote, NoValidatorPermit)
    with pytest.raises(MalformedTransaction):
        parse_transaction({**vote.to_json(), "body": {"dispute_id": 1, "guilty": 0}})


def test_a_receipt_past_its_window_cannot_be_disputed() -> None:
    chain = subnet_chain()
    receipt = receipt_for(chain)
    chain.block()
    decided = chain.state.height
    chain.advance(HYPER.dispute_window - 1)  # the next block is the window's last
    tx = open_tx(chain, VALIDATORS[0], receipt)
    copy = chain.state.clone()
    apply_transaction(copy, tx, chain.state.height + 1)  # still allowed
    assert copy.disputes.disputes[1].receipt_block == decided
    chain.block()
    error = refused(chain.state, open_tx(chain, VALIDATORS[0], receipt), InvalidDispute)
    assert "too late" in str(error)


def test_a_post_dated_receipt_cannot_escape_a_dispute() -> None:
    chain = subnet_chain()
    soon = receipt_for(chain, nonce=1, timestamp_ms=chain.state.timestamp + MAX_FUTURE_MS)
    later = receipt_for(chain, nonce=2, timestamp_ms=chain.state.timestamp + 10**12)
    error = refused(chain.state, open_tx(chain, VALIDATORS[0], soon), InvalidDispute)
    assert "wait for the next block" in str(error)
    chain.do(VALIDATORS[0], "dispute_open", netuid=1, receipt=later, evidence=EVIDENCE)
    assert chain.state.disputes.disputes[1].receipt_block == chain.state.height


def test_the_longest_window_is_decided_exactly_at_its_edge() -> None:
    """The ledger remembers MAX_DISPUTE_WINDOW + 1 block times: enough for the longest window.
    (Empty blocks are simulated by advancing the height and the block times directly.)"""
    chain = subnet_chain()
    chain.do(ALICE, "set_hyperparams", netuid=1, changes={"dispute_window": MAX_DISPUTE_WINDOW})
    receipt = receipt_for(chain)
    chain.block()
    decided = chain.state.height
    state = chain.state.clone()

    def empty_block() -> None:
        state.height += 1
        state.timestamp += 1000
        state.disputes.push_block_time(state.timestamp)

    for _ in range(MAX_DISPUTE_WINDOW - 1):
        empty_block()
    times = state.disputes
    assert len(times.block_times) == BLOCK_TIMES_KEPT
    assert times.times_text == ",".join(str(t) for t in times.block_times)
    assert State.from_json(state.to_json()).disputes.block_times == times.block_times
    tx = open_tx(chain, VALIDATORS[0], receipt)
    copy = state.clone()
    apply_transaction(copy, tx, state.height + 1)
    assert copy.disputes.disputes[1].receipt_block == decided  # the window's last block
    empty_block()
    assert "too late" in str(refused(state, tx, InvalidDispute))


def test_state_root_covers_disputes_and_replay_is_identical() -> None:
    chain = subnet_chain()
    receipt = receipt_for(chain)
    chain.block()
    chain.do(VALIDATORS[0], "dispute_open", netuid=1, receipt=receipt, evidence=EVIDENCE)
    chain.do(VALIDATORS[1], "dispute_vote", dispute_id=1, guilty=True)
    state = chain.state
    assert State.from_json(state.to_json()).to_json() == state.to_json()
    assert state_root(State.from_json(state.to_json())) == state_root(state)
    assert state.clone().disputes.by_receipt == {receipt_hash(receipt): 1}
    changed = state.clone()
    changed.disputes.put(dataclasses.replace(changed.disputes.disputes[1], reason="edited"))
    assert state_root(changed) != state_root(state)
    replayed = chain.genesis
    assert replayed is not None
    for block in chain.blocks:
        replayed = apply_block(replayed, block)
    assert replayed.to_json() == state.to_json()


def test_genesis_encodes_as_before_disputes_existed() -> None:
    chain = Chain.new()
    assert "disputes" not in chain.state.to_json()
    assert DisputeState().is_pristine()


def test_net_and_ledger_sign_the_same_bytes() -> None:
    receipt = Receipt.from_json(receipt_for(subnet_chain()))
    assert MINERS[0].sign(receipt_signing_bytes(receipt.to_json())) == receipt.signature


# -- properties -----------------------------------------------------------------------------

action = st.one_of(
    st.tuples(st.just("open"), st.integers(0, 2), st.integers(0, 1), st.integers(0, 5)),
    st.tuples(
        st.just("vote"), st.integers(0, 2), st.integers(1, 3), st.sampled_from([True, True, False])
    ),
    st.tuples(
        st.just("vote"), st.integers(0, 2), st.integers(1, 3), st.sampled_from([True, True, False])
    ),
    st.tuples(st.just("stake"), st.integers(0, 2), st.integers(-150, 150)),
    st.tuples(st.just("wait"), st.integers(1, 4)),
)


def _build(chain: Chain, step: tuple, receipts: dict[tuple[int, int], dict]) -> Any:  # type: ignore[type-arg]
    if step[0] == "open":
        _, v, m, r = step
        if (m, r) not in receipts:  # signed now, decided by the next block
            receipts[m, r] = receipt_for(chain, MINERS[m], nonce=r + 100)
            chain.block()
        return open_tx(chain, VALIDATORS[v], receipts[m, r])
    if step[0] == "vote":
        _, v, dispute_id, guilty = step
        return chain.tx(VALIDATORS[v], "dispute_vote", dispute_id=dispute_id, guilty=guilty)
    _, v, tokens = step
    kind = "add_stake" if tokens >= 0 else "remove_stake"
    return chain.tx(ALICE, kind, hotkey=VALIDATORS[v].address, amount=abs(tokens) * TOKEN + 1)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(action, min_size=1, max_size=25))
def test_random_dispute_histories_keep_every_promise(steps: list) -> None:  # type: ignore[type-arg]
    chain = subnet_chain()
    start = chain.state
    start_blocks = len(chain.blocks)
    funded = {v.address: start.balance(v.address) for v in VALIDATORS}
    carol = start.balance(CAROL.address)
    receipts: dict[tuple[int, int], dict] = {}
    seen: dict[int, Any] = {}
    for step in steps:
        if step[0] == "wait":
            chain.advance(step[1])
        else:
            chain.block([_build(chain, step, receipts)])
        state = chain.state
        invariants(state)
        for dispute_id, dispute in state.disputes.disputes.items():
            old = seen.get(dispute_id)
            if old is not None and old.status != OPEN:
                assert dispute == old  # resolved once, never touched again
            if dispute.status == UPHELD and (old is None or old.status == OPEN):
                guilty, _, total = tally(state, dispute)
                assert 2 * guilty > total  # nobody slashed without a stake majority
            seen[dispute_id] = dispute
        assert state.disputes.locked() == sum(
            d.deposit for d in state.disputes.disputes.values() if d.status == OPEN
        )
        upheld_miners = {d.miner for d in seen.values() if d.status == UPHELD}
        for neuron in state.subnets[1].neurons:
            assert not neuron.slashed or neuron.hotkey in upheld_miners
        # Each validator hotkey's balance is its funding, minus every deposit it paid once,
        # plus what came back: deposits of upheld disputes it opened, and its shares of slashes.
        for v in VALIDATORS:
            expected = funded[v.address]
            for d in seen.values():
                if d.challenger == v.address:
                    expected -= d.deposit
                    if d.deposit_to == v.address:
                        expected += d.deposit
                expected += sum(p.amount for p in d.payouts if p.hotkey == v.address)
            assert state.balance(v.address) == expected
        forfeited = sum(d.deposit for d in seen.values() if d.deposit_to == CAROL.address)
        assert state.balance(CAROL.address) == carol + forfeited
    for status in sorted({d.status for d in seen.values()}):
        event(f"a dispute ended {status}")
    replayed = start
    for block in chain.blocks[start_blocks:]:
        replayed = apply_block(replayed, block)
    assert replayed.to_json() == chain.state.to_json()
