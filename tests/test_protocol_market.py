"""The compute market's rules: orders, bids, leases, escrow paid every block, slashing.

Every rejection is checked to move no money (the state root is unchanged but for the block).
"""

from __future__ import annotations

from typing import Any

import pytest

from agora.crypto.keys import Keypair
from agora.protocol.errors import (
    InsufficientBalance,
    InsufficientStake,
    InvalidParameter,
    InvalidTransaction,
    MalformedTransaction,
    NotOwner,
    NotRegistered,
)
from agora.protocol.market_state import MARKET, Hardware, MarketState
from agora.protocol.state import State, state_root
from agora.protocol.units import TOKEN
from tests.protocol_kit import Chain, key

ALICE, BOB, CAROL, DAVE, AUDITOR = (key(n) for n in ("alice", "bob", "carol", "dave", "auditor"))
STAKE = 20 * TOKEN
PRICE = 1_000
URL = "http://127.0.0.1:9000"


def hw(
    cpu: int = 4, mem: int = 8192, gpu: int = 0, model: str = "", region: str = ""
) -> dict[str, Any]:
    return {"cpu": cpu, "mem": mem, "gpu": gpu, "gpu_model": model, "region": region}


def new_chain() -> Chain:
    return Chain.new({"alice": 1000, "bob": 1000, "carol": 1000, "dave": 1000, "auditor": 10})


def register(chain: Chain, who: Keypair, stake: int = STAKE, **hardware: Any) -> None:
    chain.do(
        who,
        "market_register",
        **{**hw(), **hardware},
        price_info="0.02/h per core",
        url=URL,
        stake=stake,
    )


def order(
    chain: Chain,
    who: Keypair = ALICE,
    deposit: int = 10 * PRICE + 500,
    max_price: int = PRICE,
    count: int = 1,
    auditor: str = "",
    **need: Any,
) -> int:
    body = {**hw(cpu=1, mem=1024), **need}
    chain.do(
        who,
        "market_order",
        **body,
        max_price=max_price,
        deposit=deposit,
        count=count,
        auditor=auditor,
    )
    return chain.state.market.next_order_id - 1


def bid(chain: Chain, who: Keypair, order_id: int, price: int = PRICE, **offer: Any) -> int:
    chain.do(who, "market_bid", order=order_id, price=price, **{**hw(cpu=1, mem=1024), **offer})
    return chain.state.market.next_bid_id - 1


def lease(chain: Chain, bid_id: int, who: Keypair = ALICE) -> int:
    chain.do(who, "market_lease", bid=bid_id)
    return chain.state.market.next_lease_id - 1


def leased(deposit: int = 10 * PRICE + 500) -> tuple[Chain, int]:
    """alice leases 1 cpu from carol at PRICE per block (carol has not heartbeated yet)."""
    chain = new_chain()
    register(chain, CAROL)
    order_id = order(chain, deposit=deposit)
    bid_id = bid(chain, CAROL, order_id)
    lease_id = lease(chain, bid_id)
    return chain, lease_id


def rejected(
    chain: Chain, error: type[InvalidTransaction], who: Keypair, kind: str, **body: Any
) -> str:
    """Apply a transaction that must be refused; check it changed nothing. Returns the message."""
    before = chain.state.clone()
    with pytest.raises(error) as caught:
        chain.do(who, kind, **body)
    # the block still ran (the market paid leases); compare with an empty block on the old state
    replay = Chain(state=before)
    replay.block()
    assert state_root(replay.state) == state_root(chain.state)
    return str(caught.value)


def supply_ok(state: State) -> None:
    assert state.circulating() == state.total_issuance - state.total_burned
    assert all(v > 0 for v in state.balances.values())


# -- providers ---------------------------------------------------------------------------------


def test_registration_locks_the_stake_and_records_the_hardware() -> None:
    chain = new_chain()
    register(chain, CAROL, gpu=2, gpu_model="A100", region="eu-west")
    provider = chain.state.market.providers[CAROL.address]
    assert provider.stake == STAKE and provider.active
    assert provider.hardware == Hardware(4, 8192, 2, "A100", "eu-west")
    assert chain.state.balance(CAROL.address) == 1000 * TOKEN - STAKE
    supply_ok(chain.state)


@pytest.mark.parametrize(
    ("changes", "error", "match"),
    [
        ({"cpu": 0}, MalformedTransaction, "cpu=0 is impossible"),
        ({"mem": MARKET.max_mem + 1}, MalformedTransaction, "mem="),
        ({"gpu": 1}, MalformedTransaction, "which GPU model"),
        ({"gpu_model": "A100"}, MalformedTransaction, "but gpu=0"),
        ({"region": "eu west!"}, MalformedTransaction, "region"),
        ({"url": "ftp://x"}, MalformedTransaction, "http"),
        ({"stake": TOKEN}, InsufficientStake, "at least"),
        ({"stake": 10_000 * TOKEN}, InsufficientBalance, "stake"),
    ],
)
def test_bad_registrations_change_nothing(
    changes: dict[str, Any], error: type[InvalidTransaction], match: str
) -> None:
    chain = new_chain()
    body = {**hw(), "price_info": "", "url": URL, "stake": STAKE, **changes}
    assert match in rejected(chain, error, CAROL, "market_register", **body)


def test_deregistering_returns_the_stake_and_withdraws_bids_but_not_under_a_lease() -> None:
    chain, lease_id = leased()
    rejected(chain, InvalidParameter, CAROL, "market_deregister")
    chain.do(ALICE, "market_close", lease=lease_id)
    other = order(chain)
    bid(chain, CAROL, other)
    before = chain.state.balance(CAROL.address)
    chain.do(CAROL, "market_deregister")
    assert chain.state.balance(CAROL.address) == before + STAKE + MARKET.bid_deposit
    assert not chain.state.market.providers[CAROL.address].active
    rejected(chain, InvalidParameter, CAROL, "market_bid", order=other, price=PRICE, **hw(1, 1024))
    supply_ok(chain.state)


# -- orders, bids, leases ----------------------------------------------------------------------


def test_an_order_locks_its_escrow_and_bids_say_exactly_what_hardware() -> None:
    chain = new_chain()
    register(chain, CAROL)
    register(chain, DAVE)
    order_id = order(chain, deposit=5000, count=1)
    assert chain.state.balance(ALICE.address) == 1000 * TOKEN - 5000
    bid(chain, CAROL, order_id, price=900, cpu=2, mem=4096)
    bid(chain, DAVE, order_id, price=800)
    bids = chain.state.market.bids
    assert bids[1].hardware == Hardware(2, 4096) and bids[2].price == 800
    assert chain.state.market.orders[order_id].bids == (1, 2)
    supply_ok(chain.state)


@pytest.mark.parametrize(
    ("body", "error", "match"),
    [
        ({"cpu": 100_000}, MalformedTransaction, "impossible"),
        ({"cpu": 0}, MalformedTransaction, "impossible"),
        ({"mem": 0}, MalformedTransaction, "impossible"),
        ({"gpu": 10_000}, MalformedTransaction, "impossible"),
        ({"gpu_model": "H100"}, MalformedTransaction, "gpu=0"),
        ({"max_price": 0}, MalformedTransaction, "max_price"),
        ({"deposit": 10}, MalformedTransaction, "one block"),
        ({"count": 0}, MalformedTransaction, "count"),
        ({"count": MARKET.max_leases_per_order + 1}, MalformedTransaction, "count"),
        ({"auditor": "not-an-address"}, MalformedTransaction, "auditor"),
        ({"deposit": 10_000 * TOKEN}, InsufficientBalance, "escrow"),
    ],
)
def test_impossible_orders_are_refused_and_move_no_money(
    body: dict[str, Any], error: type[InvalidTransaction], match: str
) -> None:
    chain = new_chain()
    full = {**hw(1, 1024), "max_price": PRICE, "deposit": 5000, "count": 1, "auditor": "", **body}
    assert match in rejected(chain, error, ALICE, "market_order", **full)


def test_bad_bids_are_refused_and_move_no_money() -> None:
    chain = new_chain()
    register(chain, CAROL, gpu=1, gpu_model="A100", region="eu")
    gpu_order = order(chain, gpu=1, gpu_model="A100")
    plain = order(chain)
    offer = hw(1, 1024, 1, "A100", "eu")
    cases: list[tuple[Keypair, type[InvalidTransaction], dict[str, Any], str]] = [
        (CAROL, InvalidParameter, {"order": plain, "price": PRICE + 1, **offer}, "max price"),
        (CAROL, InvalidParameter, {"order": plain, "price": 0, **offer}, "outside"),
        (CAROL, InvalidParameter, {"order": 99, "price": PRICE, **offer}, "no order 99"),
        (
            CAROL,
            InvalidParameter,
            {"order": gpu_order, "price": 1, **hw(1, 1024, 0, "", "eu")},
            "gpu=0",
        ),
        (
            CAROL,
            InvalidParameter,
            {"order": plain, "price": 1, **hw(8, 1024, 1, "A100", "eu")},
            "capacity",
        ),
        (
            CAROL,
            InvalidParameter,
            {"order": plain, "price": 1, **hw(1, 1024, 1, "H100", "eu")},
            "model",
        ),
        (
            CAROL,
            InvalidParameter,
            {"order": plain, "price": 1, **hw(1, 1024, 0, "", "us")},
            "region",
        ),
        (DAVE, NotRegistered, {"order": plain, "price": 1, **offer}, "not a provider"),
    ]
    for who, error, body, match in cases:
        assert match in rejected(chain, error, who, "market_bid", **body)
    bid(chain, CAROL, plain, **offer)
    assert "already has an open bid" in rejected(
        chain, InvalidParameter, CAROL, "market_bid", order=plain, price=1, **offer
    )


def test_bids_per_order_are_capped() -> None:
    providers = [key(f"p{i}") for i in range(MARKET.max_bids_per_order + 1)]
    chain = Chain.new({"alice": 100, **{f"p{i}": 100 for i in range(len(providers))}})
    chain.block(
        [
            chain.tx(p, "market_register", **hw(), price_info="", url=URL, stake=STAKE)
            for p in providers
        ]
    )
    order_id = order(chain)
    chain.block(
        [
            chain.tx(p, "market_bid", order=order_id, price=PRICE, **hw(1, 1024))
            for p in providers[:-1]
        ]
    )
    assert len(chain.state.market.orders[order_id].bids) == MARKET.max_bids_per_order
    assert "16 open bids" in rejected(
        chain, InvalidParameter, providers[-1], "market_bid", order=order_id, price=1, **hw(1, 1024)
    )


def test_leasing_refunds_losing_bids_and_refuses_withdrawn_ones() -> None:
    chain = new_chain()
    register(chain, CAROL)
    register(chain, DAVE)
    order_id = order(chain)
    carol_bid = bid(chain, CAROL, order_id)
    dave_bid = bid(chain, DAVE, order_id)
    dave_before = chain.state.balance(DAVE.address)
    chain.do(CAROL, "market_withdraw", bid=carol_bid)
    assert "withdrawn" in rejected(chain, InvalidParameter, ALICE, "market_lease", bid=carol_bid)
    assert "tenant" in rejected(chain, NotOwner, BOB, "market_lease", bid=dave_bid)
    lease_id = lease(chain, dave_bid)
    market = chain.state.market
    assert market.orders[order_id].status == "filled" and market.bids[dave_bid].status == "won"
    assert market.leases[lease_id].provider == DAVE.address
    # dave's bid deposit came back, plus the first block's pay
    assert chain.state.balance(DAVE.address) == dave_before + MARKET.bid_deposit + PRICE
    supply_ok(chain.state)


def test_an_order_for_several_providers_fills_then_refunds_the_other_bids() -> None:
    chain = new_chain()
    for who in (CAROL, DAVE, BOB):
        register(chain, who)
    order_id = order(chain, count=2)
    bids = [bid(chain, who, order_id) for who in (CAROL, DAVE, BOB)]
    lease(chain, bids[0])
    assert chain.state.market.orders[order_id].status == "open"
    lease(chain, bids[1])
    market = chain.state.market
    assert market.orders[order_id].status == "filled"
    assert market.bids[bids[2]].status == "lost"
    assert market.providers[BOB.address].open_bids == 0
    supply_ok(chain.state)


def test_cancel_refunds_the_unused_escrow_and_the_bids() -> None:
    chain = new_chain()
    register(chain, CAROL)
    order_id = order(chain, deposit=5000, count=2)
    bid(chain, CAROL, order_id)
    assert "tenant" in rejected(chain, NotOwner, BOB, "market_cancel", order=order_id)
    chain.do(ALICE, "market_cancel", order=order_id)
    assert chain.state.balance(ALICE.address) == 1000 * TOKEN
    assert chain.state.market.providers[CAROL.address].open_bids == 0
    assert "already cancelled" in rejected(
        chain, InvalidParameter, ALICE, "market_cancel", order=order_id
    )
    supply_ok(chain.state)


# -- escrow, block by block --------------------------------------------------------------------


def test_escrow_pays_every_block_and_the_lease_closes_exactly_when_it_runs_out() -> None:
    chain, lease_id = leased(deposit=10 * PRICE + 500)
    opened = chain.state.market.leases[lease_id]
    assert opened.expires_at == opened.opened_at + 9
    carol = chain.state.balance(CAROL.address)
    alice = chain.state.balance(ALICE.address)
    remaining = [chain.state.market.leases[lease_id].remaining(chain.state.height)]
    while chain.state.market.leases[lease_id].status == "open":
        chain.do(CAROL, "market_heartbeat")
        remaining.append(chain.state.market.leases[lease_id].remaining(chain.state.height))
        supply_ok(chain.state)
    closed = chain.state.market.leases[lease_id]
    assert remaining == [10 * PRICE + 500 - k * PRICE for k in range(1, 10)] + [0]
    assert closed.closed_at == opened.expires_at and closed.close_reason == "expired"
    assert closed.paid == 10 * PRICE and closed.refunded == 500
    assert chain.state.balance(CAROL.address) == carol + 9 * PRICE  # block 1 was paid before
    assert chain.state.balance(ALICE.address) == alice + 500
    provider = chain.state.market.providers[CAROL.address]
    assert provider.rate == 0 and provider.open_leases == 0
    assert provider.history.leases_served == 1 and provider.history.blocks_served == 10
    chain.do(CAROL, "market_heartbeat")  # nothing more is paid
    assert chain.state.balance(CAROL.address) == carol + 9 * PRICE


def test_tenant_close_pays_through_the_previous_block_and_a_second_close_is_refused() -> None:
    chain, lease_id = leased()
    chain.do(CAROL, "market_heartbeat")
    chain.do(CAROL, "market_heartbeat")
    opened_at = chain.state.market.leases[lease_id].opened_at
    assert "tenant" in rejected(chain, NotOwner, BOB, "market_close", lease=lease_id)
    chain.do(ALICE, "market_close", lease=lease_id)
    closed = chain.state.market.leases[lease_id]
    served = closed.closed_at - opened_at
    assert closed.close_reason == "tenant" and closed.paid == served * PRICE
    assert closed.paid + closed.refunded == closed.deposit
    message = rejected(chain, InvalidParameter, ALICE, "market_close", lease=lease_id)
    assert "already closed" in message
    supply_ok(chain.state)


def test_top_up_extends_the_lease() -> None:
    chain, lease_id = leased(deposit=3 * PRICE)
    expires = chain.state.market.leases[lease_id].expires_at
    chain.do(ALICE, "market_top_up", lease=lease_id, amount=2 * PRICE)
    assert chain.state.market.leases[lease_id].expires_at == expires + 2
    assert chain.state.market.expiries.get(expires + 2) == [lease_id]
    supply_ok(chain.state)


# -- liveness and slashing ---------------------------------------------------------------------


def test_a_provider_that_stops_heartbeating_is_slashed_and_the_tenant_refunded() -> None:
    chain, lease_id = leased(deposit=100 * PRICE)
    chain.do(CAROL, "market_heartbeat")
    last_heartbeat = chain.state.height
    alice = chain.state.balance(ALICE.address)
    burned = chain.state.total_burned
    while chain.state.market.leases[lease_id].status == "open":
        chain.block()
        supply_ok(chain.state)
    closed = chain.state.market.leases[lease_id]
    assert closed.close_reason == "liveness"
    assert closed.closed_at == last_heartbeat + MARKET.liveness_window + 1
    lost = closed.closed_at - (last_heartbeat + 1)  # paid blocks since the last heartbeat
    assert closed.compensation == lost * PRICE
    stake_left = STAKE - lost * PRICE
    penalty = stake_left * MARKET.slash_ppm // 1_000_000
    reward = penalty * MARKET.slash_reward_ppm // 1_000_000
    assert chain.state.balance(ALICE.address) == alice + closed.refunded + lost * PRICE + reward
    assert chain.state.total_burned == burned + penalty - reward
    provider = chain.state.market.providers[CAROL.address]
    assert provider.stake == stake_left - penalty and provider.active
    history = provider.history
    assert history.failures == 1 and history.leases_failed == 1
    assert history.blocks_lost == lost and history.slashed == lost * PRICE + penalty
    assert history.uptime_ppm is not None and history.uptime_ppm < 1_000_000


def test_a_heartbeating_provider_is_never_slashed() -> None:
    chain, lease_id = leased(deposit=30 * PRICE)
    for _ in range(40):
        chain.do(CAROL, "market_heartbeat")
    assert chain.state.market.leases[lease_id].close_reason == "expired"
    assert chain.state.market.providers[CAROL.address].history.failures == 0


def test_a_provider_slashed_below_the_minimum_can_no_longer_win() -> None:
    chain = new_chain()
    register(chain, CAROL, stake=MARKET.min_provider_stake)
    order_id = order(chain, deposit=100 * PRICE)
    lease(chain, bid(chain, CAROL, order_id))
    chain.advance(MARKET.liveness_window + 2)
    provider = chain.state.market.providers[CAROL.address]
    assert not provider.active and provider.stake < MARKET.min_provider_stake
    other = order(chain)
    assert "inactive" in rejected(
        chain, InvalidParameter, CAROL, "market_bid", order=other, price=1, **hw(1, 1024)
    )


# -- auditors ----------------------------------------------------------------------------------


def test_an_order_can_require_attested_attributes() -> None:
    chain = new_chain()
    register(chain, CAROL)
    register(chain, DAVE)
    order_id = order(chain, auditor=AUDITOR.address)
    assert "attested" in rejected(
        chain, InvalidParameter, CAROL, "market_bid", order=order_id, price=1, **hw(1, 1024)
    )
    wrong = Hardware(8, 8192).hash
    assert "current attributes" in rejected(
        chain, InvalidParameter, AUDITOR, "market_attest", provider=CAROL.address, attrs_hash=wrong
    )
    good = chain.state.market.providers[CAROL.address].hardware.hash
    chain.do(AUDITOR, "market_attest", provider=CAROL.address, attrs_hash=good)
    bid_id = bid(chain, CAROL, order_id)
    # changing the attributes voids the attestation (it is of the old hash)
    register(chain, CAROL, stake=0, cpu=8)
    assert "changed" in rejected(chain, InvalidParameter, ALICE, "market_lease", bid=bid_id)


# -- encoding ----------------------------------------------------------------------------------


def test_a_chain_that_never_used_the_market_encodes_as_before() -> None:
    chain = new_chain()
    assert "market" not in chain.state.to_json()
    register(chain, CAROL)
    assert "market" in chain.state.to_json()


def test_the_market_survives_a_json_round_trip_with_its_indices() -> None:
    chain, lease_id = leased(deposit=50 * PRICE)
    chain.do(BOB, "market_challenge", lease=lease_id, size=16)
    chain.do(ALICE, "market_cancel", order=order(chain))
    decoded = State.from_json(chain.state.to_json())
    assert state_root(decoded) == state_root(chain.state)
    for name in ("expiries", "deadlines", "want_hash", "prune", "by_provider"):
        live = getattr(chain.state.market, name)
        rebuilt = getattr(decoded.market, name)
        assert {h: sorted(v) for h, v in rebuilt.items()} == {
            h: sorted(v) for h, v in live.items()
        }, name
    again = Chain(state=decoded)
    chain.advance(15)
    again.advance(15)
    assert state_root(again.state) == state_root(chain.state)


def test_closed_records_are_forgotten_after_the_retention_period() -> None:
    chain, lease_id = leased(deposit=2 * PRICE)
    chain.advance(2)
    assert chain.state.market.leases[lease_id].status == "closed"
    chain.advance(MARKET.retention)
    market = chain.state.market
    assert market.leases == {} and market.bids == {} and market.orders == {}
    assert market.prune == {} and market.providers[CAROL.address].history.leases_served == 1
    assert isinstance(market, MarketState)
