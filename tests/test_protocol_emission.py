"""The block reward, its halvings, the split across subnets and the epoch payout."""

from __future__ import annotations

import dataclasses

from agora.protocol.emission import accrue_block_emission, block_reward, epoch_due
from agora.protocol.params import DEV_HYPERPARAMS
from agora.protocol.units import SUPPLY_CAP, TOKEN
from tests.protocol_kit import Chain, key

ALICE, BOB, CAROL = key("alice"), key("bob"), key("carol")
VAL, M1, M2 = key("val"), key("m1"), key("m2")


def test_halvings_at_each_half_of_what_remains() -> None:
    assert block_reward(TOKEN, SUPPLY_CAP, 0) == TOKEN
    assert block_reward(TOKEN, SUPPLY_CAP, 10_500_000 * TOKEN - 1) == TOKEN
    assert block_reward(TOKEN, SUPPLY_CAP, 10_500_000 * TOKEN) == TOKEN // 2
    assert block_reward(TOKEN, SUPPLY_CAP, 15_750_000 * TOKEN) == TOKEN // 4
    assert block_reward(TOKEN, SUPPLY_CAP, 18_375_000 * TOKEN) == TOKEN // 8
    assert block_reward(TOKEN, SUPPLY_CAP, SUPPLY_CAP - 3) == 0  # halved to nothing by then
    assert block_reward(TOKEN, 10, 7) == 3  # never above the cap
    assert block_reward(TOKEN, SUPPLY_CAP, SUPPLY_CAP) == 0


def test_no_subnet_no_emission() -> None:
    chain = Chain.new()
    issued = chain.state.total_issuance
    chain.advance(3)
    assert chain.state.total_issuance == issued and chain.state.pending_emission == {}


def test_split_across_subnets_by_stake_with_exact_remainders() -> None:
    chain = Chain.new(hyperparams=dataclasses.replace(DEV_HYPERPARAMS, tempo=1000))
    chain.do(ALICE, "create_subnet")
    chain.do(BOB, "create_subnet")
    state = chain.state.clone()
    state.pending_emission = {}
    accrue_block_emission(state)  # no stake anywhere: equal shares
    assert state.pending_emission == {1: TOKEN // 2, 2: TOKEN // 2}
    chain.do(ALICE, "register", netuid=1, hotkey=M1.address)
    chain.do(BOB, "register", netuid=2, hotkey=M2.address)
    chain.do(ALICE, "add_stake", hotkey=M1.address, amount=2 * TOKEN)
    chain.do(BOB, "add_stake", hotkey=M2.address, amount=1 * TOKEN)
    state = chain.state.clone()
    state.pending_emission = {}
    accrue_block_emission(state)
    assert state.pending_emission == {1: 666_666_667, 2: 333_333_333}


def test_epochs_are_staggered_by_netuid() -> None:
    assert [b for b in range(30) if epoch_due(1, 10, b)] == [9, 20]
    assert [b for b in range(30) if epoch_due(2, 10, b)] == [8, 19]


def test_epoch_pays_owner_miners_and_validators() -> None:
    """18% to the owner; the rest half to miners by incentive, half to validators by dividends."""
    hyper = dataclasses.replace(DEV_HYPERPARAMS, tempo=10, weights_rate_limit=0)
    chain = Chain.new({"alice": 10_000, "bob": 10_000, "carol": 10_000}, hyperparams=hyper)
    chain.do(ALICE, "create_subnet")
    for hot in (VAL, M1, M2):
        chain.do(BOB, "register", netuid=1, hotkey=hot.address)
    chain.do(CAROL, "add_stake", hotkey=VAL.address, amount=1000 * TOKEN)
    while not chain.state.subnets[1].neurons[0].validator_permit:
        chain.advance(1)
    chain.do(VAL, "set_weights", netuid=1, uids=[1, 2], weights=[3, 1])
    netuid, tempo = 1, hyper.tempo
    while not epoch_due(netuid, tempo, chain.state.height + 1):
        chain.advance(1)
    owner_before = chain.state.balance(ALICE.address)
    pool = chain.state.pending_emission[1] + TOKEN  # this block's reward still accrues first
    issued_before = chain.state.total_issuance
    chain.advance(1)
    subnet = chain.state.subnets[1]
    owner_cut = pool * 18 // 100
    assert chain.state.balance(ALICE.address) - owner_before == owner_cut
    miners = [subnet.neurons[1].emission, subnet.neurons[2].emission]
    assert miners[0] > miners[1] > 0
    assert abs(miners[0] - 3 * miners[1]) <= 2 * (pool // 10**6 + 1)
    validator = subnet.neurons[0].emission
    assert validator > 0
    rest = pool - owner_cut
    assert sum(miners) <= rest // 2 and rest // 2 - sum(miners) < 10
    assert chain.state.total_issuance - issued_before == owner_cut + sum(miners) + validator
    assert chain.state.pending_emission.get(1, 0) == 0
    # Miner emission is stake on its hotkey under its coldkey (bob).
    assert chain.state.stakes[M1.address][BOB.address] == miners[0]
    # Dividends: the hotkey owner's take, the rest to carol who staked.
    carol_gain = chain.state.stakes[VAL.address][CAROL.address] - 1000 * TOKEN
    bob_take = chain.state.stakes[VAL.address].get(BOB.address, 0)
    assert carol_gain + bob_take == validator
    assert bob_take >= validator * 18 // 100
