"""Subnets, registration by burn, pruning, endpoints and stake."""

from __future__ import annotations

import dataclasses
import itertools

import pytest

from agora.protocol.errors import (
    InsufficientBalance,
    InsufficientStake,
    InvalidParameter,
    MalformedTransaction,
    NotOwner,
    NotRegistered,
    UnknownSubnet,
)
from agora.protocol.params import DEV_HYPERPARAMS
from agora.protocol.registry import current_burn
from agora.protocol.units import TOKEN
from tests.protocol_kit import Chain, key

ALICE, BOB, CAROL = key("alice"), key("bob"), key("carol")
HOT = [key(f"hot{i}") for i in range(8)]
# Epochs run when (block + netuid + 1) % (tempo + 1) == 0; a long tempo keeps them out of the way.
QUIET = dataclasses.replace(DEV_HYPERPARAMS, tempo=1000)


def new_chain(**changes: int) -> Chain:
    chain = Chain.new(hyperparams=dataclasses.replace(QUIET, **changes))
    chain.do(ALICE, "create_subnet")
    return chain


def test_create_subnet_locks_the_cost_and_takes_netuid_1() -> None:
    chain = new_chain()
    subnet = chain.state.subnets[1]
    assert subnet.owner == ALICE.address
    lock = chain.state.params.subnet_lock_cost
    assert subnet.locked == lock
    assert chain.state.balance(ALICE.address) == 10_000 * TOKEN - lock
    chain.do(BOB, "create_subnet")
    assert sorted(chain.state.subnets) == [1, 2]


def test_only_the_owner_tunes_hyperparameters_within_bounds() -> None:
    chain = new_chain()
    chain.do(ALICE, "set_hyperparams", netuid=1, changes={"tempo": 50, "kappa": 40000})
    assert chain.state.subnets[1].hyperparams.tempo == 50
    with pytest.raises(NotOwner):
        chain.do(BOB, "set_hyperparams", netuid=1, changes={"tempo": 5})
    for changes in (
        {"tempo": 0},
        {"kappa": 70000},
        {"nope": 1},
        {"yuma_version": 4},
        {"liquid_alpha_enabled": 1},
        {"max_validators": 10_000},
    ):
        with pytest.raises(InvalidParameter):
            chain.do(ALICE, "set_hyperparams", netuid=1, changes=changes)
    with pytest.raises(UnknownSubnet):
        chain.do(ALICE, "set_hyperparams", netuid=9, changes={"tempo": 5})
    assert chain.state.subnets[1].hyperparams.tempo == 50


def test_registration_burns_a_rising_then_decaying_price() -> None:
    chain = new_chain()
    subnet = chain.state.subnets[1]
    block = chain.state.height + 1
    price = current_burn(subnet, block)
    assert price == subnet.hyperparams.min_burn
    issued_before = chain.state.total_issuance
    chain.do(BOB, "register", netuid=1, hotkey=HOT[0].address)
    assert chain.state.total_burned == price
    assert chain.state.balance(BOB.address) == 10_000 * TOKEN - price
    assert chain.state.total_issuance == issued_before
    after = current_burn(chain.state.subnets[1], chain.state.height + 1)
    assert after > price  # rises with each registration
    half_life = subnet.hyperparams.burn_half_life
    later = current_burn(chain.state.subnets[1], chain.state.height + half_life)
    assert later < after  # and decays with time
    assert current_burn(chain.state.subnets[1], chain.state.height + 100 * half_life) == price


def test_burn_decay_is_continuous_and_monotone() -> None:
    chain = new_chain(max_burn=1000 * TOKEN, min_burn=1)
    subnet = chain.state.subnets[1]
    subnet.burn_base = 1000 * TOKEN
    prices = [current_burn(subnet, subnet.burn_base_block + t) for t in range(0, 400)]
    assert all(a >= b for a, b in itertools.pairwise(prices))
    assert prices[subnet.hyperparams.burn_half_life] == 500 * TOKEN


def test_registration_errors_change_nothing() -> None:
    chain = new_chain()
    chain.do(BOB, "register", netuid=1, hotkey=HOT[0].address)
    with pytest.raises(InvalidParameter, match="already registered"):
        chain.do(BOB, "register", netuid=1, hotkey=HOT[0].address)
    with pytest.raises(NotOwner):
        chain.do(ALICE, "register", netuid=1, hotkey=HOT[0].address)
    with pytest.raises(UnknownSubnet):
        chain.do(BOB, "register", netuid=7, hotkey=HOT[1].address)
    poor = key("poor")
    chain.do(BOB, "transfer", to=poor.address, amount=1)
    with pytest.raises(InsufficientBalance):
        chain.do(poor, "register", netuid=1, hotkey=HOT[1].address)
    assert [n.hotkey for n in chain.state.subnets[1].neurons] == [HOT[0].address]


def test_full_subnet_prunes_lowest_emission_outside_immunity() -> None:
    chain = new_chain(max_uids=3, immunity_period=5, max_validators=3)
    for hot in HOT[:3]:
        chain.do(BOB, "register", netuid=1, hotkey=hot.address)
    with pytest.raises(InvalidParameter, match="immunity"):
        chain.do(BOB, "register", netuid=1, hotkey=HOT[3].address)
    chain.advance(5)
    neurons = chain.state.subnets[1].neurons
    neurons[0].emission, neurons[1].emission, neurons[2].emission = 5, 0, 0
    # uid 1 and 2 tie on emission; uid 1 registered first, so it goes.
    chain.do(BOB, "register", netuid=1, hotkey=HOT[3].address)
    hotkeys = [n.hotkey for n in chain.state.subnets[1].neurons]
    assert hotkeys == [HOT[0].address, HOT[3].address, HOT[2].address]


def test_pruned_uid_starts_clean() -> None:
    chain = new_chain(max_uids=2, immunity_period=0)
    chain.do(BOB, "register", netuid=1, hotkey=HOT[0].address)
    chain.do(BOB, "register", netuid=1, hotkey=HOT[1].address)
    subnet = chain.state.subnets[1]
    subnet.neurons[0].weights = {1: 65535}
    subnet.neurons[0].bonds = {1: 123}
    subnet.neurons[0].emission = 10
    chain.do(BOB, "register", netuid=1, hotkey=HOT[2].address)
    subnet = chain.state.subnets[1]
    assert subnet.neurons[1].hotkey == HOT[2].address
    assert subnet.neurons[0].weights == {} and subnet.neurons[0].bonds == {}


def test_serve_announces_an_endpoint() -> None:
    chain = new_chain()
    chain.do(BOB, "register", netuid=1, hotkey=HOT[0].address)
    chain.do(HOT[0], "serve", netuid=1, ip="127.0.0.1", port=8091, protocol="http")
    endpoint = chain.state.subnets[1].neurons[0].endpoint
    assert endpoint is not None and (endpoint.ip, endpoint.port) == ("127.0.0.1", 8091)
    for body in (
        dict(ip="999.1.1.1", port=1, protocol="http"),
        dict(ip="::1", port=0, protocol="http"),
        dict(ip="::1", port=80, protocol="gopher"),
    ):
        with pytest.raises(MalformedTransaction):
            chain.do(HOT[0], "serve", netuid=1, **body)
    with pytest.raises(NotRegistered):
        chain.do(HOT[1], "serve", netuid=1, ip="::1", port=80, protocol="http")


def test_stake_and_unstake_with_delegation() -> None:
    chain = new_chain()
    chain.do(BOB, "register", netuid=1, hotkey=HOT[0].address)
    chain.do(BOB, "add_stake", hotkey=HOT[0].address, amount=100 * TOKEN)
    chain.do(ALICE, "add_stake", hotkey=HOT[0].address, amount=50 * TOKEN)  # delegation
    assert chain.state.hotkey_stake(HOT[0].address) == 150 * TOKEN
    chain.do(ALICE, "remove_stake", hotkey=HOT[0].address, amount=50 * TOKEN)
    assert chain.state.stakes[HOT[0].address] == {BOB.address: 100 * TOKEN}
    with pytest.raises(InsufficientStake):
        chain.do(ALICE, "remove_stake", hotkey=HOT[0].address, amount=1)
    with pytest.raises(NotRegistered):
        chain.do(ALICE, "add_stake", hotkey=HOT[5].address, amount=1)
    with pytest.raises(InsufficientBalance):
        chain.do(ALICE, "add_stake", hotkey=HOT[0].address, amount=10**18)
