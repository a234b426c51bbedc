"""Properties of the Yuma epoch over random subnets (hypothesis), its agreement with the float64
reference in ``bench/yuma_reference.py``, and the helpers it is built from.

- Incentive and dividends each sum to ONE (less at most n units of rounding) or are all zero.
- Nothing is negative; proportions stay in [0, ONE]; bonds stay in [0, ONE] (YC3 proportions,
  YC2 column max-upscaled with each column's largest bond exactly ONE).
- A uid nobody weights gets no incentive; a uid without a validator permit gets no dividends.
- An epoch with no weights gives all zeros, without a crash or a division by zero.
- On random small subnets every output is within 1e-6 of the float64 reference.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from agora.protocol import yuma
from agora.protocol.fixedpoint import (
    EXP_NEG_FRAC,
    EXP_NEG_INT,
    ONE,
    div,
    exp_neg_q31,
    mul,
    normalize,
    ratio_parts,
    to_float,
)
from agora.protocol.yuma import (
    EpochResult,
    YumaParams,
    apply_bonds,
    emission_split,
    epoch,
    liquid_alpha_table,
    normalize_stake,
    top_k_permits,
)
from bench.yuma_reference import epoch_reference

U16 = st.integers(0, 65535)
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@dataclass(frozen=True)
class Subnet:
    stake: list[int]
    weights: npt.NDArray[np.uint16]
    bonds: npt.NDArray[np.int64]
    last_update: list[int]
    registered: list[int]
    current_block: int
    cutoff: int
    permits: npt.NDArray[np.bool_]
    params: YumaParams

    def run(self, **changes: Any) -> EpochResult:
        fields = {**self.__dict__, **changes}
        return epoch(
            fields["stake"],
            fields["weights"],
            fields["bonds"],
            fields["last_update"],
            fields["registered"],
            fields["current_block"],
            fields["cutoff"],
            fields["permits"],
            fields["params"],
        )


params_strategy = st.builds(
    YumaParams,
    kappa=U16,
    bonds_penalty=st.one_of(st.sampled_from([0, 65535]), U16),
    bonds_moving_average=st.integers(0, 1_000_000),
    yuma3=st.booleans(),
    liquid_alpha=st.booleans(),
    alpha_low=U16,
    alpha_high=U16,
    alpha_sigmoid_steepness=st.integers(-(2**15), 2**15 - 1),
    tempo=st.integers(0, 120),
    stake_threshold=st.sampled_from([0, 0, 10, 10**6]),
)


@st.composite
def subnets(draw: Callable[..., Any], max_n: int = 9) -> Subnet:
    n = draw(st.integers(1, max_n))
    stake = draw(
        st.lists(
            st.one_of(st.just(0), st.integers(0, 2**54), st.integers(0, 100)),
            min_size=n,
            max_size=n,
        )
    )
    cell = st.one_of(st.just(0), st.just(65535), U16)
    weights = draw(arrays(np.uint16, (n, n), elements=cell))
    permits = top_k_permits(stake, draw(st.integers(0, n)))
    bonds = draw(arrays(np.int64, (n, n), elements=st.one_of(st.just(0), st.integers(0, ONE))))
    bonds[~permits] = 0  # as on chain: a uid without a permit has no bond row
    blocks = st.lists(st.integers(0, 100), min_size=n, max_size=n)
    return Subnet(
        stake=stake,
        weights=weights,
        bonds=bonds,
        last_update=draw(blocks),
        registered=draw(blocks),
        current_block=draw(st.integers(0, 200)),
        cutoff=draw(st.integers(0, 200)),
        permits=permits,
        params=draw(params_strategy),
    )


def assert_normalized(values: npt.NDArray[np.int64]) -> None:
    total = int(values.sum())
    assert total == 0 or ONE - len(values) <= total <= ONE, total


@SETTINGS
@given(subnets())
def test_incentive_and_dividends_sum_to_one_or_zero(subnet: Subnet) -> None:
    result = subnet.run()
    assert_normalized(result.incentive)
    assert_normalized(result.dividends)
    assert_normalized(result.pruning_score)
    assert np.array_equal(result.rank, result.incentive)


@SETTINGS
@given(subnets())
def test_nothing_is_negative_and_proportions_stay_in_range(subnet: Subnet) -> None:
    result = subnet.run()
    for name in (
        "stake",
        "active_stake",
        "rank",
        "trust",
        "consensus",
        "incentive",
        "dividends",
        "validator_trust",
        "server_emission",
        "validator_emission",
        "pruning_score",
        "bonds",
    ):
        values = getattr(result, name)
        assert values.dtype == np.int64, name
        assert not values.flags.writeable, name
        assert values.size == 0 or (values.min() >= 0 and values.max() <= ONE), name
    emission = int(result.server_emission.sum() + result.validator_emission.sum())
    assert emission == 0 or ONE - 2 * len(subnet.stake) <= emission <= ONE


@SETTINGS
@given(subnets())
def test_bonds_stay_in_range_and_yc2_columns_peak_at_one(subnet: Subnet) -> None:
    result = subnet.run()
    assert np.array_equal(result.bond_rows, np.flatnonzero(subnet.permits))
    bonds = result.bonds
    assert bonds.shape == (len(result.bond_rows), len(subnet.stake))
    assert bonds.size == 0 or (bonds.min() >= 0 and bonds.max() <= ONE)
    if not subnet.params.yuma3 and bonds.size:
        peaks = bonds.max(axis=0)
        assert np.all((peaks == ONE) | (peaks == 0)), peaks
    full = apply_bonds(subnet.bonds, result)
    assert np.array_equal(full[result.bond_rows], bonds)
    assert np.array_equal(full[~subnet.permits], subnet.bonds[~subnet.permits])


@SETTINGS
@given(subnets(), st.data())
def test_a_uid_nobody_weights_gets_no_incentive(subnet: Subnet, data: st.DataObject) -> None:
    j = data.draw(st.integers(0, len(subnet.stake) - 1))
    weights = subnet.weights.copy()
    weights[:, j] = 0
    result = subnet.run(weights=weights)
    assert result.incentive[j] == 0 and result.consensus[j] == 0 and result.trust[j] == 0


@SETTINGS
@given(subnets())
def test_a_uid_without_permit_gets_no_dividends(subnet: Subnet) -> None:
    result = subnet.run()
    assert not result.dividends[~subnet.permits].any()
    assert not result.validator_trust[~subnet.permits].any()


@SETTINGS
@given(subnets())
def test_no_weights_gives_all_zeros(subnet: Subnet) -> None:
    n = len(subnet.stake)
    result = subnet.run(
        weights=np.zeros((n, n), dtype=np.uint16), bonds=np.zeros((n, n), dtype=np.int64)
    )
    for name in ("rank", "trust", "consensus", "incentive", "dividends", "validator_trust"):
        assert not getattr(result, name).any(), name
    assert not result.bonds.any() and not result.server_emission.any()
    # With no emission to share, validators are weighted by (active) stake, as on chain.
    fallback = result.stake if not result.active_stake.any() else result.active_stake
    assert np.array_equal(result.validator_emission, fallback)


@SETTINGS
@given(subnets(), st.data())
def test_outdated_and_self_weights_are_ignored(subnet: Subnet, data: st.DataObject) -> None:
    n = len(subnet.stake)
    weights = subnet.weights.copy()
    np.fill_diagonal(weights, data.draw(U16))
    registered = list(subnet.registered)
    j = data.draw(st.integers(0, n - 1))
    registered[j] = max(subnet.last_update) + 1  # registered after every weight was set
    a = subnet.run(registered=registered)
    weights[:, j] = data.draw(arrays(np.uint16, (n,), elements=U16))
    b = subnet.run(weights=weights, registered=registered)
    for name in ("consensus", "incentive", "dividends", "bonds", "validator_trust"):
        assert np.array_equal(getattr(a, name), getattr(b, name)), name


def test_epoch_rejects_malformed_input() -> None:
    n = 3
    good: dict[str, Any] = {
        "stake": [1, 2, 3],
        "weights": np.zeros((n, n), dtype=np.uint16),
        "bonds": np.zeros((n, n), dtype=np.int64),
        "last_update": [0] * n,
        "block_at_registration": [0] * n,
        "current_block": 1,
        "activity_cutoff": 10,
        "permits": [True] * n,
        "params": YumaParams(),
    }
    epoch(**good)
    bad_cases: list[dict[str, Any]] = [
        {"weights": np.zeros((n, n + 1), dtype=np.uint16)},
        {"weights": np.full((n, n), 70000, dtype=np.int64)},
        {"weights": np.full((n, n), -1, dtype=np.int64)},
        {"weights": np.zeros((n, n), dtype=np.float64)},
        {"bonds": np.full((n, n), ONE + 1, dtype=np.int64)},
        {"bonds": np.full((n, n), -1, dtype=np.int64)},
        {"bonds": np.zeros((n, n), dtype=np.float64)},
        {"last_update": [0, 0]},
        {"block_at_registration": [0, -1, 0]},
        {"permits": [True]},
        {"stake": [1, -2, 3]},
        {"stake": [1.0, 2, 3]},
        {"current_block": -1},
    ]
    for change in bad_cases:
        with pytest.raises(ValueError):
            epoch(**{**good, **change})
    for params in ({"kappa": 65536}, {"bonds_moving_average": 1_000_001}, {"tempo": -1}):
        with pytest.raises(ValueError):
            YumaParams(**params)


# --- agreement with the float64 reference -------------------------------------------------------


def random_subnet(seed: int) -> tuple[tuple[Any, ...], npt.NDArray[np.bool_]]:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 24))
    stake = [int(s) if rng.random() < 0.75 else 0 for s in rng.integers(0, 10**15, n)]
    weights = rng.integers(0, 65536, (n, n)).astype(np.uint16)
    weights[rng.random((n, n)) < 0.4] = 0
    permits = top_k_permits(stake, int(rng.integers(1, n + 1)))
    yuma3 = bool(rng.integers(0, 2))
    bonds = rng.integers(0, ONE + 1, (n, n))
    bonds[rng.random((n, n)) < 0.3] = 0
    if not yuma3:  # YC2 keeps bonds column max-upscaled
        bonds[np.argmax(bonds, axis=0), np.arange(n)] = ONE
    bonds[~permits] = 0
    params = YumaParams(
        kappa=32767 if rng.random() < 0.7 else int(rng.integers(0, 65536)),
        bonds_penalty=int(rng.choice([0, 65535, int(rng.integers(0, 65536))])),
        bonds_moving_average=int(rng.integers(0, 990_001)),
        yuma3=yuma3,
        liquid_alpha=bool(rng.integers(0, 2)),
        alpha_low=int(rng.integers(1638, 40000)),
        alpha_high=int(rng.integers(40000, 65536)),
        alpha_sigmoid_steepness=int(rng.integers(-5000, 5000)),
        tempo=int(rng.integers(0, 50)),
    )
    args = (
        stake,
        weights,
        bonds,
        rng.integers(0, 100, n),
        rng.integers(0, 100, n),
        int(rng.integers(50, 150)),
        int(rng.integers(0, 100)),
        permits,
        params,
    )
    return args, permits


FIELDS = (
    "stake",
    "active_stake",
    "rank",
    "trust",
    "consensus",
    "incentive",
    "dividends",
    "validator_trust",
    "server_emission",
    "validator_emission",
    "pruning_score",
)


@pytest.mark.parametrize("first", range(0, 240, 40))
def test_matches_the_float64_reference(first: int) -> None:
    for seed in range(first, first + 40):
        args, _ = random_subnet(seed)
        fixed = epoch(*args)
        ref = epoch_reference(*args)
        for name in FIELDS:
            got = to_float(getattr(fixed, name))
            assert np.max(np.abs(got - ref[name])) < 1e-6, (seed, name)
        bonds = to_float(apply_bonds(args[2], fixed))
        assert np.max(np.abs(bonds - ref["bonds"])) < 1e-6, (seed, "bonds")


def test_column_blocks_do_not_change_the_result(monkeypatch: pytest.MonkeyPatch) -> None:
    """The epoch works on blocks of columns; any block width gives the same bits."""
    args, _ = random_subnet(7)
    variants = (args[-1], YumaParams(yuma3=True, liquid_alpha=True), YumaParams(yuma3=False))
    plain = [epoch(*args[:-1], params) for params in variants]
    monkeypatch.setattr(
        yuma, "_blocks", lambda rows, cols: [slice(i, min(i + 3, cols)) for i in range(0, cols, 3)]
    )
    blocked = [epoch(*args[:-1], params) for params in variants]
    for a, b in zip(plain, blocked, strict=True):
        for name in (*FIELDS, "bonds", "bond_rows"):
            assert np.array_equal(getattr(a, name), getattr(b, name)), name


# --- helpers ------------------------------------------------------------------------------------


def test_top_k_permits_follow_subtensor() -> None:
    assert top_k_permits([5, 0, 3, 9], 2).tolist() == [True, False, False, True]
    assert top_k_permits([5, 5, 5], 2).tolist() == [False, True, True]  # ties: higher uid wins
    assert top_k_permits([0, 0, 1], 3).tolist() == [False, False, True]  # zero stake: never
    assert top_k_permits([1, 2], 5).tolist() == [True, True]
    assert top_k_permits([1, 2], 0).tolist() == [False, False]
    # Two stakes whose Q32 shares round to the same value tie, as on chain.
    big = 2**62
    assert normalize_stake([big + 1, big, 2**64])[:2].tolist() == [715827882, 715827882]
    assert top_k_permits([big + 1, big, 2**64], 2).tolist() == [False, True, True]
    assert top_k_permits([5, 20, 7], 2, threshold=6).tolist() == [False, True, True]
    with pytest.raises(ValueError):
        top_k_permits([1], -1)


def test_normalize_stake_is_exact() -> None:
    assert normalize_stake([1, 1, 2]).tolist() == [ONE // 4, ONE // 4, ONE // 2]
    assert normalize_stake([0, 0]).tolist() == [0, 0]
    huge = [2**63 + 7, 3 * 10**20, 1]
    total = sum(huge)
    assert normalize_stake(huge).tolist() == [(s << 32) // total for s in huge]
    assert normalize_stake([np.int64(3), 1]).tolist() == [3 * ONE // 4, ONE // 4]
    for bad in ([-1, 2], [1.5, 2], [True, 2]):
        with pytest.raises(ValueError):
            normalize_stake(bad)


@given(st.integers(0, 2**32), st.integers(-(2**32), 2**32))
def test_mul_is_the_floored_product(a: int, b: int) -> None:
    assert int(mul(a, b)) == (a * b) >> 32
    assert int(mul(b, a)) == (a * b) >> 32


@given(st.integers(0, 2**40), st.integers(0, 2**46))
def test_div_and_ratio_parts_are_floored_quotients(a: int, b: int) -> None:
    expected = (a << 32) // b if b else 0
    assume(expected < 2**63)
    assert int(div(a, b)) == expected
    num = min(a, ONE)  # the precondition at shift 46: num * 2**30 < 2**63
    hi, lo = ratio_parts(num, b, shift=46)
    exact = (num << 46) // b if b else 0
    assert int(hi) * 2**16 + int(lo) == exact
    hi, lo = ratio_parts(a, b, round_up=True)
    exact_up = -((-a << 32) // b) if b else 0
    assert int(hi) * 2**16 + int(lo) == exact_up


def test_normalize_sums_to_one_less_rounding() -> None:
    x = np.array([1, 2, 3, 0, 7], dtype=np.int64)
    assert ONE - 5 <= int(normalize(x).sum()) <= ONE
    assert normalize(np.zeros(3, dtype=np.int64)).tolist() == [0, 0, 0]


def test_exp_is_accurate() -> None:
    xs = np.unique(
        np.concatenate(
            [
                np.arange(0, 40 << 31, (1 << 31) // 97, dtype=np.int64),
                np.array([0, 1, (1 << 23) - 1, 1 << 31, (22 << 31) + 5, 1 << 40]),
            ]
        )
    )
    got = exp_neg_q31(xs).astype(np.float64) / 2**31
    want = np.array([math.exp(-x / 2**31) for x in xs.tolist()])
    assert np.max(np.abs(got - want)) < 4e-9
    assert EXP_NEG_INT[0] == 1 << 31 and EXP_NEG_FRAC[0] == 1 << 31
    assert not EXP_NEG_INT.flags.writeable


@pytest.mark.parametrize("steepness", [1000, -1000, 50, 3000, 32767, 0])
def test_liquid_alpha_table_matches_the_sigmoid(steepness: int) -> None:
    low, high = 6553, 19660
    table, slope = liquid_alpha_table(steepness, low, high)
    d = np.arange(len(table)) / 2**16
    sigmoid = 1.0 / (1.0 + np.exp(steepness / -100.0 * (d - 0.5)))
    lo, hi = low / 65535, high / 65535
    want = np.clip(lo + sigmoid * (hi - lo), lo, hi)
    assert np.max(np.abs(table / 2**30 - want)) < 1e-8
    assert np.array_equal(slope[:-1], np.diff(table))
    assert not table.flags.writeable


def test_emission_split_rounds_down() -> None:
    args, _ = random_subnet(3)
    result = epoch(*args)
    amount = 10**9 + 7
    server, validator = emission_split(result, amount)
    n = len(args[0])
    assert amount - 2 * n <= sum(server) + sum(validator) <= amount
    assert server == [int(s) * amount // ONE for s in result.server_emission]
    with pytest.raises(ValueError):
        emission_split(result, -1)
