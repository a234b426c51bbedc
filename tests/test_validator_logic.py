"""The validator's pure parts: answer checks, scores, weights, probe seeds, and the score book."""

from __future__ import annotations

import copy
import dataclasses
import math
import random
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agora.protocol.errors import InvalidWeights
from agora.protocol.params import DEV_HYPERPARAMS, U16_MAX
from agora.protocol.units import TOKEN
from agora.protocol.weights import set_weights
from agora.validator import probes
from agora.validator.checks import (
    EMBED_MIN_COSINE,
    Verdict,
    check_embeddings,
    check_logprobs,
    first_divergence,
    judge_divergence,
)
from agora.validator.scoring import ProbeOutcome, ema, round_samples
from agora.validator.store import PendingCommit, ScoreBook
from agora.validator.weights import NoWeights, cap_shares, compute_weights
from tests.protocol_kit import Chain, key

# -- embeddings ----------------------------------------------------------------------------------


def unit_rows(rows: int, dim: int = 384, seed: int = 0) -> np.ndarray:
    matrix = np.random.default_rng(seed).standard_normal((rows, dim))
    return matrix / np.linalg.norm(matrix, axis=1, keepdims=True)


def test_embeddings_within_float_noise_pass() -> None:
    ref = unit_rows(6)
    noisy = ref + np.random.default_rng(1).normal(0, 2e-7, ref.shape)  # other batch sizes
    judgement = check_embeddings(ref.tolist(), noisy.tolist())
    assert judgement.ok and judgement.figure > 1 - 1e-6


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        (unit_rows(6, seed=7).tolist(), "cosine"),  # random vectors: cosine ~0
        (unit_rows(5).tolist(), "expected 6 vectors"),  # one missing
        (unit_rows(6, dim=383).tolist(), "expected 6 vectors of 384"),
        ([[float("nan")] * 384] * 6, "NaN"),
        ("not a matrix", "not a matrix"),
        ([[1.0, "x"]], "not a matrix"),
    ],
)
def test_wrong_embeddings_fail(answer: object, reason: str) -> None:
    judgement = check_embeddings(unit_rows(6).tolist(), answer)
    assert not judgement.ok and reason in judgement.reason


def test_the_vector_of_another_sentence_fails() -> None:
    ref = unit_rows(3)
    other = ref.copy()
    other[1] = 0.95 * ref[1] + 0.31 * ref[2]  # a near paraphrase: cosine about 0.95
    other[1] /= np.linalg.norm(other[1])
    judgement = check_embeddings(ref.tolist(), other.tolist())
    assert not judgement.ok and "vector 1" in judgement.reason
    assert 0.9 < judgement.figure < EMBED_MIN_COSINE


# -- generation ----------------------------------------------------------------------------------


def test_first_divergence() -> None:
    assert first_divergence([1, 2, 3], [1, 2, 3]) is None
    assert first_divergence([1, 2, 3], [1, 5, 3]) == 1
    assert first_divergence([1, 2], [1, 2, 3]) == 2
    assert first_divergence([], [4]) == 0


def test_same_tokens_pass() -> None:
    assert judge_divergence([1, 2], [-0.5, -0.7], [1, 2], [-0.5, -0.7]).ok


def test_a_near_tie_may_flip() -> None:
    ref_lp = [-0.5, -0.6931, -0.4, -0.3]
    miner_lp = [-0.5, -0.6934, -0.5, -0.2]  # token 1 lost a tie by 3e-4 nats
    judgement = judge_divergence([5, 6, 7, 8], ref_lp, [5, 9, 10, 11], miner_lp)
    assert judgement.ok and "near tie at token 1" in judgement.reason


def test_a_confident_divergence_fails() -> None:
    judgement = judge_divergence([5, 6, 7], [-0.5, -0.4, -0.3], [5, 9, 7], [-0.5, -6.0, -0.3])
    assert not judgement.ok and "token 1 is 9" in judgement.reason


def test_a_tie_then_unlikely_tokens_fails() -> None:
    judgement = judge_divergence(
        [5, 6, 7, 8], [-0.5, -0.69, -0.4, -0.3], [5, 9, 1, 1], [-0.5, -0.6901, -9.0, -9.0]
    )
    assert not judgement.ok and "averages" in judgement.reason


@pytest.mark.parametrize(
    ("miner", "reason"), [([5, 6], "stopped after 2"), ([5, 6, 7, 8], "goes on after 3")]
)
def test_other_lengths_fail(miner: list[int], reason: str) -> None:
    lp = [-0.1] * len(miner)
    judgement = judge_divergence([5, 6, 7], [-0.1, -0.1, -0.1], miner, lp)
    assert not judgement.ok and reason in judgement.reason


def test_logprobs_within_tolerance() -> None:
    assert check_logprobs([-1.0, -2.0], [-1.0002, -1.9999]).ok
    assert not check_logprobs([-1.0, -2.0], [-1.0, -2.5]).ok
    assert not check_logprobs([-1.0, -2.0], [-1.0]).ok
    assert not check_logprobs([-1.0], [float("nan")]).ok
    assert not check_logprobs([-1.0], "x").ok


# -- scores --------------------------------------------------------------------------------------


def outcome(uid: int, verdict: Verdict = Verdict.OK, latency: float | None = 0.1) -> ProbeOutcome:
    return ProbeOutcome(uid, f"{uid:064x}", verdict, str(verdict), latency, tokens=10)


def test_quality_gates_speed() -> None:
    samples = round_samples(
        [
            outcome(0, latency=0.1),
            outcome(1, latency=0.2),
            outcome(2, Verdict.WRONG_OUTPUT, latency=0.01),  # fastest, but wrong
            outcome(3, Verdict.TIMEOUT, latency=None),
            outcome(4, Verdict.INCONCLUSIVE, latency=None),
        ],
        latency_weight=0.2,
    )
    assert samples[0] == pytest.approx(1.0)
    assert samples[1] == pytest.approx(0.9)
    assert samples[2] == 0.0 and samples[3] == 0.0
    assert 4 not in samples
    assert round_samples([outcome(0)], latency_weight=0.0)[0] == 1.0
    with pytest.raises(ValueError):
        round_samples([], latency_weight=1.5)


def test_ema_and_reset() -> None:
    assert ema(0.0, 1.0, 0.2) == pytest.approx(0.2)
    assert ema(0.5, 1.0, 0.5) == pytest.approx(0.75)
    assert ema(0.9, 1.0, 0.2, reset=True) == 0.0
    assert ema(1e-13, 0.0, 0.2) == 0.0
    with pytest.raises(ValueError):
        ema(0.0, 1.0, 0.0)
    assert ProbeOutcome(0, "", Verdict.BAD_RECEIPT, "").proven
    assert not ProbeOutcome(0, "", Verdict.TIMEOUT, "").proven
    assert outcome(0, latency=0.5).throughput == pytest.approx(20.0)


# -- weights -------------------------------------------------------------------------------------


def test_weights_are_proportional_and_skip_self_and_zeros() -> None:
    uids, weights = compute_weights({0: 0.5, 1: 1.0, 2: 0.0, 3: 0.25, 4: 0.9}, n=5, self_uid=4)
    assert uids == [0, 1, 3]
    assert sum(weights) <= U16_MAX
    assert weights[1] / weights[0] == pytest.approx(2.0, rel=1e-3)
    assert weights[0] / weights[2] == pytest.approx(2.0, rel=1e-3)


def test_no_positive_score_means_no_weights() -> None:
    with pytest.raises(NoWeights, match="positive"):
        compute_weights({0: 0.0, 1: float("nan")}, n=3)
    with pytest.raises(NoWeights, match="positive"):
        compute_weights({5: 1.0}, n=3)  # uid out of range


def test_max_weight_limit_caps_and_redistributes() -> None:
    limit = U16_MAX // 2  # 50% at most
    uids, weights = compute_weights({0: 10.0, 1: 1.0, 2: 1.0}, n=3, max_weight_limit=limit)
    assert uids == [0, 1, 2]
    shares = [w / sum(weights) for w in weights]
    assert shares[0] <= 0.5 and shares[1] == pytest.approx(0.25, abs=1e-3)
    with pytest.raises(NoWeights, match="at least 3 miners"):
        compute_weights({0: 1.0, 1: 1.0}, n=3, max_weight_limit=U16_MAX // 3)


def test_min_allowed_weights_pads_with_zeros() -> None:
    uids, weights = compute_weights({2: 1.0}, n=5, self_uid=0, min_allowed_weights=3)
    assert uids == [1, 2, 3] and weights == [0, U16_MAX, 0]
    uids, _ = compute_weights({1: 1.0}, n=2, self_uid=0, min_allowed_weights=4)
    assert uids == [0, 1]  # min(min_allowed, n); self only as a last resort


def test_cap_shares_sum_to_one() -> None:
    shares = cap_shares([5.0, 1.0, 1.0, 1.0], 0.3)
    assert sum(shares) == pytest.approx(1.0) and max(shares) <= 0.3 + 1e-12


VAL = key("val")
N_MINERS = 9


@pytest.fixture(scope="module")
def weights_chain() -> Chain:
    hyper = dataclasses.replace(DEV_HYPERPARAMS, tempo=1000, weights_rate_limit=0)
    chain = Chain.new(hyperparams=hyper)
    chain.do(key("alice"), "create_subnet")
    for hot in [VAL, *(key(f"m{i}") for i in range(N_MINERS))]:
        chain.do(key("bob"), "register", netuid=1, hotkey=hot.address)
    chain.do(key("bob"), "add_stake", hotkey=VAL.address, amount=100 * TOKEN)
    chain.state.subnets[1].neurons[0].validator_permit = True
    return chain


@settings(max_examples=150, deadline=None)
@given(
    scores=st.dictionaries(
        st.integers(0, N_MINERS),
        st.one_of(st.floats(0, 1e6), st.just(float("nan"))),
        max_size=N_MINERS + 1,
    ),
    min_allowed=st.integers(0, N_MINERS + 3),
    limit=st.integers(1, U16_MAX),
)
def test_computed_weights_pass_the_ledger(
    weights_chain: Chain, scores: dict[int, float], min_allowed: int, limit: int
) -> None:
    """Whatever the scores and the subnet's limits, the weights pass the ledger's own checks,
    or the validator explains why it sets none (and then no split would pay only scorers)."""
    state = copy.deepcopy(weights_chain.state)
    subnet = state.subnets[1]
    subnet.hyperparams = dataclasses.replace(
        subnet.hyperparams, min_allowed_weights=min_allowed, max_weight_limit=limit
    )
    n = len(subnet.neurons)
    try:
        uids, weights = compute_weights(
            scores, n, self_uid=0, min_allowed_weights=min_allowed, max_weight_limit=limit
        )
    except NoWeights:
        positive = [u for u, s in scores.items() if 0 < u < n and math.isfinite(s) and s > 0]
        assert not positive or len(positive) * limit < U16_MAX + len(positive)
        return
    try:
        set_weights(state, VAL.address, 1, uids, weights, state.height + 1)
    except InvalidWeights as error:  # pragma: no cover - the assertion below explains
        pytest.fail(f"{uids} {weights} refused: {error}")
    assert all(scores.get(u, 0) > 0 for u, w in zip(uids, weights, strict=True) if w > 0)


# -- probes --------------------------------------------------------------------------------------


def test_probe_rounds_are_reproducible_and_unpredictable() -> None:
    a = probes.round_seed("ab" * 32, VAL.address, 1, 7)
    assert a == probes.round_seed("ab" * 32, VAL.address, 1, 7)
    others = {
        probes.round_seed("ac" * 32, VAL.address, 1, 7),
        probes.round_seed("ab" * 32, key("other").address, 1, 7),
        probes.round_seed("ab" * 32, VAL.address, 2, 7),
        probes.round_seed("ab" * 32, VAL.address, 1, 8),
    }
    assert a not in others and len(others) == 4
    pool = probes.embed_pool(a)
    assert pool == probes.embed_pool(a) and len(pool) == 16
    assert pool != probes.embed_pool(probes.round_seed("ab" * 32, VAL.address, 1, 8))
    shipped = set(probes.shipped_probes().embed)
    assert sum(text in shipped for text in pool) == 4
    prompts = probes.generate_pool(a)
    assert len(prompts) == 3 and prompts[-1] in probes.shipped_probes().generate


def test_each_miner_draws_its_own_batch() -> None:
    seed = probes.round_seed("00" * 32, VAL.address, 1, 1)
    draws = [probes.draw(seed, uid, 16, 3, 8) for uid in range(20)]
    assert all(3 <= len(d) <= 8 and len(set(d)) == len(d) for d in draws)
    assert len({tuple(d) for d in draws}) == 20
    assert probes.draw(seed, 3, 16, 3, 8) == draws[3]
    assert probes.draw(seed, 3, 2, 3, 8) in ([0, 1], [1, 0])


def test_synthetic_texts_vary() -> None:
    rng = random.Random(1)
    texts = {probes.synthetic_text(rng) for _ in range(200)}
    assert len(texts) == 200
    assert all(text.strip() for text in texts)


# -- the score book ------------------------------------------------------------------------------


def test_scores_survive_a_restart(tmp_path: Path) -> None:
    with ScoreBook.in_dir(tmp_path) as book:
        assert book.next_round(1) == 1
        outcomes = [outcome(0), outcome(1, Verdict.TIMEOUT, None), outcome(2, Verdict.WRONG_MODEL)]
        book.record(1, 1, outcomes, round_samples(outcomes), alpha=0.5)
        book.record(1, 2, [outcome(0)], {0: 1.0}, alpha=0.5)
    with ScoreBook.in_dir(tmp_path) as book:
        rows = book.scores(1)
        assert rows[0].score == pytest.approx(0.75) and rows[0].ok == 2 and rows[0].probes == 2
        assert rows[1].score == 0.0 and rows[1].failures == 1 and rows[1].last_verdict == "timeout"
        assert rows[2].proven == 1 and rows[2].last_verdict == "wrong_model"
        assert book.next_round(1) == 2 and book.next_round(2) == 1
        assert book.scores(2) == {}


def test_a_proven_misbehaviour_wipes_the_score(tmp_path: Path) -> None:
    with ScoreBook.in_dir(tmp_path) as book:
        for r in range(5):
            book.record(1, r, [outcome(0)], {0: 1.0})
        assert book.scores(1)[0].score > 0.6
        book.record(1, 6, [outcome(0, Verdict.TIMEOUT, None)], {0: 0.0})
        assert book.scores(1)[0].score > 0.5  # a failure only decays it
        book.record(1, 7, [outcome(0, Verdict.WRONG_OUTPUT)], {0: 0.0})
        assert book.scores(1)[0].score == 0.0


def test_a_new_hotkey_on_a_uid_starts_from_zero(tmp_path: Path) -> None:
    with ScoreBook.in_dir(tmp_path) as book:
        book.record(1, 1, [outcome(0), outcome(1)], {0: 1.0, 1: 1.0}, alpha=1.0)
        assert book.sync_hotkeys(1, {0: f"{0:064x}", 1: "ee" * 32}) == [1]
        assert set(book.scores(1)) == {0}
        fresh = ProbeOutcome(0, "dd" * 32, Verdict.OK, "ok", 0.1)
        book.record(1, 2, [fresh], {0: 1.0}, alpha=0.5)  # a new hotkey seen mid-round
        assert book.scores(1)[0].score == pytest.approx(0.5)
        assert book.scores(1)[0].probes == 1
        assert book.sync_hotkeys(1, {}) == [0]


def test_a_commit_survives_a_restart(tmp_path: Path) -> None:
    commit = PendingCommit(1, "aa" * 32, [1, 2], [3, 4], "salt", "bb" * 32, None, None, 5)
    with ScoreBook.in_dir(tmp_path) as book:
        book.save_commit(commit)
    with ScoreBook.in_dir(tmp_path) as book:
        assert book.pending_commit(1) == commit
        book.save_commit(dataclasses.replace(commit, block=9, tx_hash="cc" * 32))
        assert book.pending_commit(1).block == 9  # type: ignore[union-attr]
        book.clear_commit(1)
        assert book.pending_commit(1) is None
    assert (tmp_path / "validator.sqlite-wal").exists() or (tmp_path / "validator.sqlite").exists()
