"""Mempool admission (dedupe, nonce order, rules in advance, limits) and re-validation."""

from __future__ import annotations

import pytest

from agora.chain.errors import MempoolFull, SenderRateLimited, TooManyPending
from agora.chain.genesis import dev_genesis, dev_producer
from agora.chain.mempool import Mempool, MempoolLimits
from agora.chain.node import build_block
from agora.crypto.keys import Keypair
from agora.crypto.signing import sign_transaction
from agora.protocol.block import Rejected
from agora.protocol.errors import BadNonce, BadSignature, InsufficientBalance
from agora.protocol.state import State
from agora.protocol.transactions import Transaction
from agora.protocol.units import TOKEN

ALICE, BOB, CHARLIE = (Keypair.from_name(n) for n in ("alice", "bob", "charlie"))


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def state() -> State:
    return dev_genesis().to_state()


def transfer(
    sender: Keypair, nonce: int, tokens: int = 1, to: Keypair = BOB, chain: str = "agora-dev"
) -> Transaction:
    body = {"to": to.address, "amount": tokens * TOKEN}
    return sign_transaction(sender, chain, "transfer", nonce, body)


def test_admits_next_nonces_in_sequence_and_refuses_gaps_and_replays(state: State) -> None:
    pool = Mempool(state)
    for nonce in range(3):
        assert pool.add(transfer(ALICE, nonce)).status == "pending"
    assert pool.pending_nonce(ALICE.address) == 3
    with pytest.raises(BadNonce):
        pool.add(transfer(ALICE, 5))
    with pytest.raises(BadNonce):
        pool.add(transfer(ALICE, 1, tokens=2))  # a different transaction reusing nonce 1
    assert len(pool) == 3 and pool.pending_count(ALICE.address) == 3


def test_signature_must_verify_and_cannot_be_empty(state: State) -> None:
    pool = Mempool(state)
    good = transfer(ALICE, 0)
    forged = Transaction(good.kind, BOB.address, 0, good.body, good.signature)
    with pytest.raises(BadSignature):
        pool.add(forged)
    with pytest.raises(BadSignature):
        pool.add(Transaction(good.kind, good.sender, 0, good.body, ""))
    with pytest.raises(BadSignature):
        pool.add(transfer(ALICE, 0, chain="another-chain"))
    assert len(pool) == 0


def test_rules_run_against_pending_transactions(state: State) -> None:
    pool = Mempool(state)
    pool.add(transfer(ALICE, 0, tokens=6_000))
    with pytest.raises(InsufficientBalance):
        pool.add(transfer(ALICE, 1, tokens=6_000))
    # a rejected transaction leaves no trace: nonce 1 is still the next one
    assert pool.pending_nonce(ALICE.address) == 1
    pool.add(transfer(ALICE, 1, tokens=4_000))


def test_the_same_transaction_twice_is_held_once(state: State) -> None:
    pool = Mempool(state)
    tx = transfer(ALICE, 0)
    first = pool.add(tx)
    assert pool.add(tx) is first
    assert len(pool) == 1


def test_per_sender_pending_cap(state: State) -> None:
    pool = Mempool(state, MempoolLimits(max_per_sender=2))
    pool.add(transfer(ALICE, 0))
    pool.add(transfer(ALICE, 1))
    with pytest.raises(TooManyPending) as caught:
        pool.add(transfer(ALICE, 2))
    assert caught.value.code == "too_many_pending"
    pool.add(transfer(BOB, 0, to=ALICE))  # other senders are not affected


def test_token_bucket_per_sender(state: State) -> None:
    clock = Clock()
    pool = Mempool(state, MempoolLimits(rate=2.0, burst=3), clock=clock)
    for nonce in range(3):
        pool.add(transfer(ALICE, nonce))
    with pytest.raises(SenderRateLimited) as caught:
        pool.add(transfer(ALICE, 3))
    assert caught.value.code == "sender_rate_limited"
    pool.add(transfer(BOB, 0, to=ALICE))  # bob has his own bucket
    clock.now += 0.5  # one token back at 2 per second
    pool.add(transfer(ALICE, 3))
    with pytest.raises(SenderRateLimited):
        pool.add(transfer(ALICE, 4))


def test_badly_signed_transactions_do_not_drain_the_victims_bucket(state: State) -> None:
    pool = Mempool(state, MempoolLimits(rate=0.001, burst=2), clock=Clock())
    good = transfer(ALICE, 0)
    for _ in range(10):
        with pytest.raises(BadSignature):
            pool.add(Transaction(good.kind, good.sender, 0, good.body, "ab" * 64))
    pool.add(transfer(ALICE, 0))
    pool.add(transfer(ALICE, 1))


def test_pool_size_cap(state: State) -> None:
    pool = Mempool(state, MempoolLimits(max_size=2))
    pool.add(transfer(ALICE, 0))
    pool.add(transfer(BOB, 0, to=ALICE))
    with pytest.raises(MempoolFull):
        pool.add(transfer(CHARLIE, 0))


def test_batch_is_a_prefix_in_admission_order(state: State) -> None:
    pool = Mempool(state)
    txs = [transfer(ALICE, 0), transfer(BOB, 0, to=ALICE), transfer(ALICE, 1)]
    for tx in txs:
        pool.add(tx)
    assert pool.batch(2) == txs[:2]
    assert pool.batch(10) == txs


def test_after_block_drops_included_and_revalidates_the_rest(state: State) -> None:
    pool = Mempool(state)
    first = [transfer(ALICE, 0, tokens=100), transfer(BOB, 0, tokens=5, to=CHARLIE)]
    for tx in first:
        pool.add(tx)
    later = [transfer(ALICE, 1, tokens=9_000), transfer(ALICE, 2, tokens=1)]
    for tx in later:
        pool.add(tx)
    # Meanwhile a block (built elsewhere) spends alice's funds with her nonce-0 transaction and
    # another one she signed: her pending nonce-1 transaction can no longer pay.
    spend = transfer(ALICE, 1, tokens=9_800)
    block, new_state, rejected = build_block(dev_producer(), state, [first[0], spend], 1000)
    assert not rejected
    pool.after_block(new_state, block.txs, rejected)

    assert pool.status(first[0].hash).status == "included"  # type: ignore[union-attr]
    assert pool.status(first[0].hash).height == 1  # type: ignore[union-attr]
    assert pool.status(spend.hash).index == 1  # type: ignore[union-attr]
    dropped = pool.status(later[0].hash)
    assert dropped is not None and dropped.status == "rejected" and dropped.code == "bad_nonce"
    follower = pool.status(later[1].hash)
    assert follower is not None and follower.status == "rejected"
    assert "resubmit from nonce 1" in (follower.message or "")
    assert pool.batch(10) == [first[1]]  # bob's transfer still applies and stays
    assert pool.pending_nonce(ALICE.address) == 2


def test_rejected_by_the_producer_is_recorded(state: State) -> None:
    pool = Mempool(state)
    tx = transfer(ALICE, 0)
    pool.add(tx)
    _, new_state, _ = build_block(dev_producer(), state, [], 1000)
    pool.after_block(new_state, [], [Rejected(tx, InsufficientBalance("no funds"))])
    status = pool.status(tx.hash)
    assert status is not None and status.status == "rejected"
    assert status.code == "insufficient_balance" and status.message == "no funds"
    assert len(pool) == 0


def test_statuses_are_remembered_up_to_a_limit(state: State) -> None:
    pool = Mempool(state, MempoolLimits(remember=3))
    txs = [transfer(ALICE, n) for n in range(6)]
    for tx in txs:
        pool.add(tx)
    block, new_state, rejected = build_block(dev_producer(), state, txs, 1000)
    pool.after_block(new_state, block.txs, rejected)
    known = [tx for tx in txs if pool.status(tx.hash) is not None]
    assert known == txs[-3:]
