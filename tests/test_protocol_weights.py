"""Weights: subtensor's checks, max-upscaled storage, and commit-reveal."""

from __future__ import annotations

import dataclasses

import pytest

from agora.protocol.errors import InvalidWeights, NotRegistered, RateLimited
from agora.protocol.params import DEV_HYPERPARAMS
from agora.protocol.units import TOKEN
from agora.protocol.weights import max_upscale, weights_commit_hash
from tests.protocol_kit import Chain, key

ALICE, BOB = key("alice"), key("bob")
VAL, M1, M2, M3 = (key(n) for n in ("val", "m1", "m2", "m3"))


def subnet_with_neurons(**changes: object) -> Chain:
    hyper = dataclasses.replace(DEV_HYPERPARAMS, tempo=1000, weights_rate_limit=2, **changes)
    chain = Chain.new(hyperparams=hyper)
    chain.do(ALICE, "create_subnet")
    for hot in (VAL, M1, M2, M3):
        chain.do(BOB, "register", netuid=1, hotkey=hot.address)
    chain.do(BOB, "add_stake", hotkey=VAL.address, amount=100 * TOKEN)
    chain.state.subnets[1].neurons[0].validator_permit = True  # as the next epoch would grant
    chain.advance(2)
    return chain


def test_weights_are_stored_max_upscaled() -> None:
    chain = subnet_with_neurons()
    chain.do(VAL, "set_weights", netuid=1, uids=[1, 2, 3], weights=[1, 2, 4])
    neuron = chain.state.subnets[1].neurons[0]
    assert neuron.weights == {1: 16384, 2: 32768, 3: 65535}
    assert neuron.last_update == chain.state.height
    assert max_upscale([0, 3]) == [0, 65535]


@pytest.mark.parametrize(
    ("uids", "weights", "match"),
    [
        ([1, 2], [1], "one weight per uid"),
        ([1, 1], [1, 1], "unique"),
        ([1, 9], [1, 1], "do not exist"),
        ([1, 2], [0, 0], "all zero"),
        ([], [], "no weights"),
    ],
)
def test_invalid_weights_are_rejected(uids: list[int], weights: list[int], match: str) -> None:
    chain = subnet_with_neurons()
    with pytest.raises(InvalidWeights, match=match):
        chain.do(VAL, "set_weights", netuid=1, uids=uids, weights=weights)
    assert chain.state.subnets[1].neurons[0].weights == {}


def test_permit_min_count_and_max_limit() -> None:
    chain = subnet_with_neurons(min_allowed_weights=2, max_weight_limit=40000)
    with pytest.raises(InvalidWeights, match="permit"):
        chain.do(M1, "set_weights", netuid=1, uids=[2], weights=[1])
    chain.do(M1, "set_weights", netuid=1, uids=[1], weights=[1])  # self-weight needs no permit
    with pytest.raises(InvalidWeights, match="at least 2"):
        chain.do(VAL, "set_weights", netuid=1, uids=[1], weights=[1])
    with pytest.raises(InvalidWeights, match="limit"):
        chain.do(VAL, "set_weights", netuid=1, uids=[1, 2], weights=[9, 1])
    chain.do(VAL, "set_weights", netuid=1, uids=[1, 2], weights=[1, 1])


def test_rate_limit_and_registration() -> None:
    chain = subnet_with_neurons()
    chain.do(VAL, "set_weights", netuid=1, uids=[1], weights=[1])
    with pytest.raises(RateLimited):
        chain.do(VAL, "set_weights", netuid=1, uids=[2], weights=[1])
    chain.advance(1)
    chain.do(VAL, "set_weights", netuid=1, uids=[2], weights=[1])
    with pytest.raises(NotRegistered):
        chain.do(ALICE, "set_weights", netuid=1, uids=[1], weights=[1])


def test_commit_then_reveal_in_its_window() -> None:
    chain = subnet_with_neurons(commit_reveal_enabled=True)
    tempo = chain.state.subnets[1].hyperparams.tempo
    chain.do(ALICE, "set_hyperparams", netuid=1, changes={"tempo": 5})
    assert tempo == 1000
    with pytest.raises(InvalidWeights, match="commit-reveal"):
        chain.do(VAL, "set_weights", netuid=1, uids=[1], weights=[1])
    digest = weights_commit_hash(1, VAL.address, [1, 2], [3, 1], "salt")
    chain.do(VAL, "commit_weights", netuid=1, commit_hash=digest)
    with pytest.raises(InvalidWeights, match="too early"):
        chain.do(VAL, "reveal_weights", netuid=1, uids=[1, 2], weights=[3, 1], salt="salt")
    chain.advance(3)
    with pytest.raises(InvalidWeights, match="do not match"):
        chain.do(VAL, "reveal_weights", netuid=1, uids=[1, 2], weights=[1, 3], salt="salt")
    chain.do(VAL, "reveal_weights", netuid=1, uids=[1, 2], weights=[3, 1], salt="salt")
    assert chain.state.subnets[1].neurons[0].weights == {1: 65535, 2: 21845}
    with pytest.raises(InvalidWeights, match="nothing to reveal"):
        chain.do(VAL, "reveal_weights", netuid=1, uids=[1, 2], weights=[3, 1], salt="salt")


def test_expired_commit_cannot_be_revealed() -> None:
    chain = subnet_with_neurons(commit_reveal_enabled=True)
    chain.do(ALICE, "set_hyperparams", netuid=1, changes={"tempo": 2})
    digest = weights_commit_hash(1, VAL.address, [1], [1], "s")
    chain.do(VAL, "commit_weights", netuid=1, commit_hash=digest)
    chain.advance(6)
    with pytest.raises(InvalidWeights, match="expired"):
        chain.do(VAL, "reveal_weights", netuid=1, uids=[1], weights=[1], salt="s")
