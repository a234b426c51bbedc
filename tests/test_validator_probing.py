"""Probing real HTTP miners on loopback: honest answers score, every kind of cheat scores zero.

Two kinds of miners: the real miner app (``agora.miner``: its routes, guard, receipts and its
``--cheat`` engines) and the validator's simulated miners (``agora.validator.sim``), which
misbehave in ways the real miner never does (no receipt, a forged receipt, errors, a wrong
/health). Reference and miner models are real (all-MiniLM-L6-v2, the tiny LM).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import numpy as np
import pytest

from agora.chain.testing import free_port, running_app
from agora.crypto.keys import Keypair
from agora.miner.app import InFlight, create_app
from agora.miner.core import MinerCore
from agora.miner.schema import Health
from agora.models import BatchedEngine, Engine, load_engine
from agora.net import GuardConfig, RequestGuard, StaticStanding
from agora.validator.checks import EMBED_MIN_COSINE, Verdict, check_embeddings
from agora.validator.prober import MinerClient, MinerTarget
from agora.validator.probes import round_seed
from agora.validator.scoring import round_samples
from agora.validator.sim import SimBehaviour, SimMiner, create_sim_app
from agora.validator.tasks import EmbedTask, GenerateTask, ProbeTask, run_round

pytestmark = pytest.mark.anyio

NETUID = 1
VALIDATOR = Keypair.from_name("test/validator/hot")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("models")


def _load(spec: str, data_dir: Path) -> Engine:
    return asyncio.run(load_engine(spec, data_dir))


@pytest.fixture(scope="module")
def minilm(data_dir: Path) -> Iterator[Engine]:
    engine = _load("embed:minilm", data_dir)
    yield engine
    asyncio.run(engine.close())


@pytest.fixture(scope="module")
def tiny(data_dir: Path) -> Iterator[Engine]:
    engine = _load("generate:tiny", data_dir)
    yield engine
    asyncio.run(engine.close())


def miner_key(i: int) -> Keypair:
    return Keypair.from_name(f"test/miner{i}/hot")


async def probe_all(
    task: ProbeTask,
    targets: list[MinerTarget],
    round_no: int = 1,
    timeout: float = 10.0,
    **options: int,
) -> list:
    client = MinerClient(VALIDATOR, NETUID, timeout=timeout, **options)
    try:
        plan = await task.prepare(
            round_seed("11" * 32, VALIDATOR.address, NETUID, round_no), round_no
        )
        return await run_round(task, client, targets, plan)
    finally:
        await client.aclose()


@asynccontextmanager
async def sim(
    engine: Engine, behaviours: list[SimBehaviour], **options: float
) -> AsyncIterator[list[MinerTarget]]:
    miners = [SimMiner(miner_key(i), b) for i, b in enumerate(behaviours)]
    app = create_sim_app(engine, miners, NETUID, **options)  # type: ignore[arg-type]
    async with running_app(app) as url:
        yield [MinerTarget(i, m.keypair.address, url) for i, m in enumerate(miners)]


@asynccontextmanager
async def real_miner(engine: Engine, hotkey: Keypair) -> AsyncIterator[str]:
    """The real miner's app (agora.miner) serving ``engine`` for ``hotkey``."""
    served = BatchedEngine(engine)
    core = MinerCore(served, hotkey, NETUID, price_per_1k=1000)
    guard = RequestGuard(GuardConfig(hotkey=hotkey.address), StaticStanding({VALIDATOR.address: 1}))

    def health(in_flight: InFlight) -> Health:
        return Health(
            status="ok",
            hotkey=hotkey.address,
            netuid=NETUID,
            model=served.model_id,
            model_hash=served.model_hash,
            task=served.task,
            price_per_1k_tokens=1000,
            in_flight=in_flight.count,
            served=core.served,
        )

    async with running_app(create_app(core, guard, health)) as url:
        yield url


# -- embeddings --------------------------------------------------------------------------------


def test_honest_minilm_is_far_above_the_threshold_and_a_cheaper_model_below(
    minilm: Engine, data_dir: Path
) -> None:
    """Calibration of EMBED_MIN_COSINE on the real model (see agora/validator/checks.py)."""
    from agora.miner.adversary import load_cheat_engine

    texts = [f"sentence {i}: the quick brown fox jumps over {i} lazy dogs" for i in range(16)]

    async def run() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        batch = np.array(await minilm.embed(texts))
        single = np.array([(await minilm.embed([t]))[0] for t in texts[:4]])
        cheap = await load_cheat_engine("wrong-model", "embed:minilm", data_dir)
        try:
            two_layers = np.array(await cheap.embed(texts))
        finally:
            await cheap.close()
        return batch, single, two_layers

    batch, single, two_layers = asyncio.run(run())
    honest = check_embeddings(batch[:4].tolist(), single.tolist())
    assert honest.ok and honest.figure > 1 - 1e-6
    wrong = check_embeddings(batch.tolist(), two_layers.tolist())
    assert not wrong.ok and wrong.figure < EMBED_MIN_COSINE - 0.01
    other = check_embeddings(batch[:8].tolist(), batch[8:].tolist())  # other sentences
    assert not other.ok


async def test_honest_sim_miners_pass_and_cheats_get_their_verdict(minilm: Engine) -> None:
    behaviours = [
        SimBehaviour.HONEST,
        SimBehaviour.HONEST,
        SimBehaviour.RANDOM,
        SimBehaviour.WRONG_MODEL,
        SimBehaviour.LAZY,
        SimBehaviour.NO_RECEIPT,
        SimBehaviour.BAD_RECEIPT,
        SimBehaviour.ERROR,
        SimBehaviour.STALE_HASH,
    ]
    expected = [
        Verdict.OK,
        Verdict.OK,
        Verdict.WRONG_OUTPUT,
        Verdict.WRONG_MODEL,
        Verdict.WRONG_OUTPUT,
        Verdict.NO_RECEIPT,
        Verdict.BAD_RECEIPT,
        Verdict.HTTP_ERROR,
        Verdict.WRONG_MODEL,
    ]
    async with sim(minilm, behaviours) as targets:
        outcomes = await probe_all(EmbedTask(minilm), targets)
    assert [o.verdict for o in outcomes] == expected, [(o.verdict, o.reason) for o in outcomes]
    for honest in outcomes[:2]:
        assert honest.latency is not None and honest.tokens > 0 and honest.reason == "ok"
    assert "cosine" in outcomes[2].reason and "bad signature" in outcomes[6].reason
    samples = round_samples(outcomes)
    assert samples[0] > 0.8 and samples[1] > 0.8
    assert all(samples[o.uid] == 0.0 for o in outcomes[2:])
    assert {o.uid for o in outcomes if o.proven} == {2, 3, 4, 6, 8}


async def test_a_miner_that_answers_too_late_times_out(minilm: Engine) -> None:
    async with sim(minilm, [SimBehaviour.SLOW], slow_seconds=60.0) as targets:
        started = asyncio.get_running_loop().time()
        outcomes = await probe_all(EmbedTask(minilm), targets, timeout=1.0)
        elapsed = asyncio.get_running_loop().time() - started
    assert outcomes[0].verdict is Verdict.TIMEOUT and "within 1 s" in outcomes[0].reason
    assert elapsed < 30


async def test_unreachable_and_misdirected_miners(minilm: Engine) -> None:
    async with sim(minilm, [SimBehaviour.HONEST]) as targets:
        stranger = MinerTarget(1, miner_key(99).address, targets[0].url)  # nobody serves it
        closed = MinerTarget(2, miner_key(2).address, f"http://127.0.0.1:{free_port()}")
        outcomes = await probe_all(EmbedTask(minilm), [targets[0], stranger, closed])
    assert [o.verdict for o in outcomes] == [Verdict.OK, Verdict.HTTP_ERROR, Verdict.UNREACHABLE]


async def test_answers_over_the_size_limit_are_cut_off(minilm: Engine) -> None:
    async with sim(minilm, [SimBehaviour.HONEST]) as targets:
        outcomes = await probe_all(EmbedTask(minilm), targets, max_response_bytes=2000)
    assert outcomes[0].verdict is Verdict.MALFORMED and "over 2000 bytes" in outcomes[0].reason


async def test_the_real_miner_and_its_cheats(minilm: Engine, data_dir: Path) -> None:
    """The real miner app: honest passes; --cheat random, lazy and wrong-model are caught by
    their answers alone (they claim the honest model id and hash); slow is correct but scores
    less than honest."""
    from agora.miner.adversary import load_cheat_engine

    cheats = {
        mode: await load_cheat_engine(mode, "embed:minilm", data_dir)
        for mode in ("random", "lazy", "wrong-model", "slow")
    }
    keys = [miner_key(i) for i in range(5)]
    engines = [minilm, *cheats.values()]
    try:
        async with (
            real_miner(engines[0], keys[0]) as u0,
            real_miner(engines[1], keys[1]) as u1,
            real_miner(engines[2], keys[2]) as u2,
            real_miner(engines[3], keys[3]) as u3,
            real_miner(engines[4], keys[4]) as u4,
        ):
            targets = [
                MinerTarget(i, key.address, url)
                for i, (key, url) in enumerate(zip(keys, [u0, u1, u2, u3, u4], strict=True))
            ]
            task = EmbedTask(minilm)
            first = await probe_all(task, targets, round_no=1)
            second = await probe_all(task, targets, round_no=2)  # lazy has a cached answer now
    finally:
        for engine in cheats.values():
            await engine.close()
    for outcomes in (first, second):
        verdicts = [o.verdict for o in outcomes]
        assert verdicts[0] is Verdict.OK and verdicts[4] is Verdict.OK, outcomes
        assert verdicts[1] is Verdict.WRONG_OUTPUT and verdicts[3] is Verdict.WRONG_OUTPUT
    assert second[2].verdict is Verdict.WRONG_OUTPUT
    samples = round_samples(second)
    assert samples[0] > samples[4] > 0.0  # slow: right, but slower
    assert samples[1] == samples[2] == samples[3] == 0.0


# -- generation --------------------------------------------------------------------------------


@pytest.mark.parametrize("round_no", [1, 2], ids=["streamed", "whole"])
async def test_generation_probes(tiny: Engine, data_dir: Path, round_no: int) -> None:
    from agora.miner.adversary import load_cheat_engine

    cheats = {
        m: await load_cheat_engine(m, "generate:tiny", data_dir)
        for m in ("random", "wrong-model", "lazy")
    }
    keys = [miner_key(i) for i in range(4)]
    try:
        async with (
            real_miner(tiny, keys[0]) as u0,
            real_miner(cheats["random"], keys[1]) as u1,
            real_miner(cheats["wrong-model"], keys[2]) as u2,
            real_miner(cheats["lazy"], keys[3]) as u3,
            sim(
                tiny, [SimBehaviour.HONEST, SimBehaviour.WRONG_MODEL, SimBehaviour.NO_RECEIPT]
            ) as sims,
        ):
            targets = [
                MinerTarget(i, key.address, url)
                for i, (key, url) in enumerate(zip(keys, [u0, u1, u2, u3], strict=True))
            ]
            targets += [MinerTarget(4 + t.uid, t.hotkey, t.url) for t in sims]
            task = GenerateTask(tiny, max_tokens=12)
            # lazy caches its first answer: give it one, then probe it on another prompt
            await probe_all(task, targets[3:4], round_no=round_no + 10)
            outcomes = await probe_all(task, targets, round_no=round_no)
    finally:
        for engine in cheats.values():
            await engine.close()
    verdicts = [o.verdict for o in outcomes]
    assert verdicts == [
        Verdict.OK,
        Verdict.WRONG_OUTPUT,
        Verdict.WRONG_OUTPUT,
        Verdict.WRONG_OUTPUT,
        Verdict.OK,
        Verdict.WRONG_MODEL,
        Verdict.NO_RECEIPT,
    ], [(o.verdict, o.reason) for o in outcomes]
    assert outcomes[0].tokens > 12 and outcomes[0].latency is not None
    if round_no % 2 == 1:
        assert outcomes[0].first_token is not None
    assert "reference model picks" in outcomes[2].reason  # tiny-bad parts where tiny is sure
