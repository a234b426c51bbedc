"""Hardware challenges: an honest provider always passes; a faking one is caught with the stated
probability 1 - (1 - f)^k; the ledger verifies every opened cell itself."""

from __future__ import annotations

import hashlib
import math
import random
from fractions import Fraction

import numpy as np
import pytest

from agora.market.prover import (
    IntMatrix,
    commit,
    exact_product,
    float32_product,
    float64_product,
    matrices,
    solve,
)
from agora.protocol.errors import InvalidParameter, MalformedTransaction, NotOwner
from agora.protocol.market_challenge import (
    PRIME,
    a_row,
    b_column,
    detection_probability,
    expected_cell,
    opened_cells,
    verify_opening,
)
from agora.protocol.market_state import MARKET
from tests.protocol_kit import Chain
from tests.test_protocol_market import ALICE, BOB, CAROL, PRICE, leased, rejected, supply_ok

K = MARKET.challenge_cells


def seed_of(label: str) -> str:
    return hashlib.sha256(label.encode()).hexdigest()


# -- the arithmetic ----------------------------------------------------------------------------


def test_the_ledger_and_the_prover_agree_on_the_matrices_and_the_product() -> None:
    seed = seed_of("agree")
    a, b = matrices(seed, 32)
    assert a[5].tolist() == a_row(seed, 32, 5) and b[:, 7].tolist() == b_column(seed, 32, 7)
    exact = (a.astype(object) @ b.astype(object)) % PRIME  # Python integers: no rounding
    assert (exact_product(a, b) == exact).all()
    assert int(exact[3, 9]) == expected_cell(seed, 32, 3, 9)


def test_exact_product_stays_exact_where_float64_rounds() -> None:
    seed = seed_of("rounding")
    a, b = matrices(seed, 256)
    exact = exact_product(a, b)
    rows = [0, 100, 255]
    reference = (a[rows].astype(object) @ b.astype(object)) % PRIME
    assert (exact[rows] == reference).all()
    assert (float64_product(a, b) != exact).mean() > 0.5  # sums pass 2^53 and round
    assert (float32_product(a, b) != exact).mean() > 0.99


@pytest.mark.parametrize("size", [16, 32, 64])
def test_an_honest_provider_always_passes(size: int) -> None:
    for trial in range(20):
        seed, open_seed = seed_of(f"honest-{size}-{trial}"), seed_of(f"open-{size}-{trial}")
        answer = solve(seed, size)
        values, proofs = answer.open(open_seed, K)
        assert verify_opening(seed, open_seed, size, K, answer.root, values, proofs) is None


def fake_rows(seed: str, size: int, wrong_rows: int, rng: random.Random) -> IntMatrix:
    """Compute all but ``wrong_rows`` rows and fill those at random (saving that share of work)."""
    a, b = matrices(seed, size)
    product = exact_product(a, b)
    for row in rng.sample(range(size), wrong_rows):
        product[row] = [rng.randrange(PRIME) for _ in range(size)]
    return product


@pytest.mark.parametrize("wrong_rows", [1, 2, 4])
def test_a_provider_faking_rows_is_caught_with_the_stated_probability(wrong_rows: int) -> None:
    size, trials = 16, 300
    f = Fraction(wrong_rows, size)
    expected = float(detection_probability(f, K))
    rng = random.Random(wrong_rows)  # fixed seeds: the test is reproducible
    caught = 0
    for trial in range(trials):
        seed, open_seed = seed_of(f"fake-{wrong_rows}-{trial}"), seed_of(f"o-{wrong_rows}-{trial}")
        answer = commit(fake_rows(seed, size, wrong_rows, rng))
        values, proofs = answer.open(open_seed, K)
        caught += verify_opening(seed, open_seed, size, K, answer.root, values, proofs) is not None
    sigma = math.sqrt(expected * (1 - expected) / trials)
    assert abs(caught / trials - expected) < 4 * sigma + 1e-9, (caught, trials, expected)


def test_lower_precision_is_caught_as_the_formula_says_for_its_wrong_fraction() -> None:
    size, trials = 128, 200
    seed = seed_of("float64")
    a, b = matrices(seed, size)
    cheap = float64_product(a, b)
    f = Fraction(int((cheap != exact_product(a, b)).sum()), size * size)
    assert 0 < f < 1  # some sums round, some do not
    answer = commit(cheap)
    caught = 0
    for trial in range(trials):
        open_seed = seed_of(f"float64-open-{trial}")
        values, proofs = answer.open(open_seed, K)
        caught += verify_opening(seed, open_seed, size, K, answer.root, values, proofs) is not None
    expected = float(detection_probability(f, K))
    sigma = math.sqrt(expected * (1 - expected) / trials)
    assert abs(caught / trials - expected) < 4 * sigma + 0.01


def test_stated_detection_probabilities() -> None:
    assert float(detection_probability(Fraction(1, 10), 12)) == pytest.approx(0.7176, abs=1e-4)
    assert float(detection_probability(Fraction(1, 4), 12)) == pytest.approx(0.9683, abs=1e-4)
    assert float(detection_probability(Fraction(1, 2), 12)) == pytest.approx(0.99976, abs=1e-5)
    assert detection_probability(Fraction(1), 12) == 1


def test_openings_that_do_not_match_the_root_or_the_product_fail() -> None:
    seed, open_seed, size = seed_of("tamper"), seed_of("tamper-open"), 16
    answer = solve(seed, size)
    values, proofs = answer.open(open_seed, K)
    root = answer.root
    assert verify_opening(seed, open_seed, size, K, root, values, proofs) is None
    bad_value = [values[0] ^ 1, *values[1:]]
    assert "Merkle" in str(verify_opening(seed, open_seed, size, K, root, bad_value, proofs))
    assert "values" in str(verify_opening(seed, open_seed, size, K, root, values[:-1], proofs))
    assert "values" in str(verify_opening(seed, open_seed, size, K, root, values, proofs[:-1]))
    wrong = seed_of("another seed")  # a right tree of the wrong product
    other = solve(wrong, size)
    v2, p2 = other.open(open_seed, K)
    assert "has" in str(verify_opening(seed, open_seed, size, K, other.root, v2, p2))
    too_big = [PRIME, *values[1:]]
    assert "not a value" in str(verify_opening(seed, open_seed, size, K, root, too_big, proofs))


def test_opened_cells_cover_the_matrix_uniformly() -> None:
    size = 16
    counts = np.zeros(size * size)
    for trial in range(400):
        for row, column in opened_cells(seed_of(f"u{trial}"), size, K):
            counts[row * size + column] += 1
    mean = counts.mean()
    assert counts.min() > 0 and abs(counts.std() / mean - 1 / math.sqrt(mean)) < 0.1


# -- on the ledger -----------------------------------------------------------------------------


def challenged(size: int = 16) -> tuple[Chain, int, int]:
    chain, lease_id = leased(deposit=200 * PRICE)
    chain.do(CAROL, "market_heartbeat")
    chain.do(BOB, "market_challenge", lease=lease_id, size=size)
    return chain, lease_id, chain.state.market.next_challenge_id - 1


def test_the_seed_is_the_hash_of_the_block_that_included_the_challenge() -> None:
    chain, lease_id = leased()
    challenge_tx = chain.tx(BOB, "market_challenge", lease=lease_id, size=16)
    too_soon = chain.tx(CAROL, "market_commit", challenge=1, root="00" * 32)
    chain.block([challenge_tx, too_soon])
    assert "not known until the next block" in str(chain.last_rejected[0].error)
    posted_block = chain.blocks[-1]
    chain.block()
    assert chain.state.market.challenges[1].seed == posted_block.hash


def test_an_honest_provider_passes_on_the_ledger_and_earns_the_bond() -> None:
    chain, lease_id, challenge_id = challenged(size=32)
    seed = chain.blocks[-1].hash
    carol = chain.state.balance(CAROL.address)
    answer = solve(seed, 32)
    chain.do(CAROL, "market_commit", challenge=challenge_id, root=answer.root)
    values, proofs = answer.open(chain.blocks[-1].hash, K)
    chain.do(CAROL, "market_open", challenge=challenge_id, values=values, proofs=proofs)
    challenge = chain.state.market.challenges[challenge_id]
    assert challenge.status == "passed"
    assert chain.state.market.leases[lease_id].challenge == 0
    provider = chain.state.market.providers[CAROL.address]
    assert provider.history.challenges_passed == 1 and provider.history.failures == 0
    assert chain.state.balance(CAROL.address) == carol + MARKET.challenge_bond + 2 * PRICE
    supply_ok(chain.state)


def test_a_wrong_opening_is_refused_and_the_deadline_then_fails_the_provider() -> None:
    chain, lease_id, challenge_id = challenged()
    seed = chain.blocks[-1].hash
    rng = random.Random(0)
    answer = commit(fake_rows(seed, 16, 16, rng))  # faked everything
    chain.do(CAROL, "market_commit", challenge=challenge_id, root=answer.root)
    values, proofs = answer.open(chain.blocks[-1].hash, K)
    message = rejected(
        chain,
        InvalidParameter,
        CAROL,
        "market_open",
        challenge=challenge_id,
        values=values,
        proofs=proofs,
    )
    assert "A B mod" in message
    bob = chain.state.balance(BOB.address)
    while chain.state.market.challenges[challenge_id].status == "committed":
        chain.do(CAROL, "market_heartbeat")
        supply_ok(chain.state)
    challenge = chain.state.market.challenges[challenge_id]
    lease = chain.state.market.leases[lease_id]
    assert challenge.status == "failed" and lease.close_reason == "challenge"
    assert lease.closed_at == challenge.deadline
    assert lease.compensation == (lease.closed_at - challenge.posted_at) * PRICE
    provider = chain.state.market.providers[CAROL.address]
    penalty = provider.history.slashed - lease.compensation
    reward = penalty * MARKET.slash_reward_ppm // 1_000_000
    assert chain.state.balance(BOB.address) == bob + MARKET.challenge_bond + reward
    assert provider.history.challenges_failed == 1


def test_an_ignored_challenge_fails_at_its_deadline() -> None:
    chain, lease_id, challenge_id = challenged()
    deadline = chain.state.market.challenges[challenge_id].deadline
    while chain.state.height < deadline:
        chain.do(CAROL, "market_heartbeat")
    assert chain.state.market.challenges[challenge_id].status == "failed"
    assert chain.state.market.leases[lease_id].close_reason == "challenge"
    supply_ok(chain.state)


def test_a_challenge_on_a_lease_that_closes_is_void_and_the_bond_returned() -> None:
    chain, lease_id, challenge_id = challenged()
    bob = chain.state.balance(BOB.address)
    chain.do(ALICE, "market_close", lease=lease_id)
    assert chain.state.market.challenges[challenge_id].status == "void"
    assert chain.state.balance(BOB.address) == bob + MARKET.challenge_bond
    assert chain.state.market.deadlines == {} and chain.state.market.want_hash == {}
    supply_ok(chain.state)


def test_bad_challenges_are_refused() -> None:
    chain, lease_id, challenge_id = challenged()
    assert "pending" in rejected(
        chain, InvalidParameter, ALICE, "market_challenge", lease=lease_id, size=16
    )
    assert "itself" in rejected(
        chain, InvalidParameter, CAROL, "market_challenge", lease=lease_id, size=16
    )
    chain2, lease2 = leased()
    for size in (15, 8, 1024):
        assert "power of two" in rejected(
            chain2, MalformedTransaction, BOB, "market_challenge", lease=lease2, size=size
        )
    assert "for provider" in rejected(
        chain, NotOwner, BOB, "market_commit", challenge=challenge_id, root="00" * 32
    )


def test_the_largest_opening_fits_in_one_transaction() -> None:
    from agora.crypto.signing import sign_transaction
    from agora.protocol.codec import canonical_bytes
    from agora.protocol.params import DEV_CHAIN
    from agora.protocol.transactions import parse_transaction

    size = MARKET.challenge_max_size
    seed, open_seed = seed_of("largest"), seed_of("largest-open")
    values, proofs = solve(seed, size).open(open_seed, K)
    body = {"challenge": 2**40, "values": values, "proofs": proofs}
    tx = sign_transaction(CAROL, "agora-test", "market_open", 2**40, body)
    assert len(canonical_bytes(tx.to_json())) < DEV_CHAIN.max_tx_bytes
    assert parse_transaction(tx.to_json(), DEV_CHAIN.max_tx_bytes) == tx
