"""The --cheat miners really cheat: served through the miner's real app (guard, batching,
receipts) over an ASGI transport, each answers with valid signed receipts under the honest
model id, and with answers that differ from the honest model's."""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from agora.crypto.keys import Keypair
from agora.miner import MinerClient, MinerConfig, MinerConfigError
from agora.miner.adversary import (
    CHEAT_MODES,
    COPY_PROMPTS,
    SLOW_REQUEST_S,
    CachedAnswers,
    CopiedAnswers,
    LazyAnswers,
    RandomAnswers,
    SlowAnswers,
    TruncatedAnswers,
    load_cheat_engine,
)
from agora.miner.app import create_app
from agora.miner.core import MinerCore
from agora.miner.schema import Health
from agora.models import BatchedEngine, Engine, load_engine
from agora.net import GuardConfig, RequestGuard, StaticStanding

pytestmark = pytest.mark.anyio

MINER = Keypair.from_name("test/miner/cheat")
CALLER = Keypair.from_name("test/miner/validator")
TEXTS = ["the validator asks this", "and something else entirely, about cooking pasta"]
PROMPTS = ["Is this miner honest?", "A completely different prompt"]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cheats")


@pytest.fixture(scope="module")
def honest_embed(data_dir: Path) -> Iterator[Engine]:
    engine = asyncio.run(load_engine("embed:minilm", data_dir))
    yield engine
    asyncio.run(engine.close())


@pytest.fixture(scope="module")
def honest_tiny(data_dir: Path) -> Iterator[Engine]:
    engine = asyncio.run(load_engine("generate:tiny", data_dir))
    yield engine
    asyncio.run(engine.close())


@contextlib.asynccontextmanager
async def serving(engine: Engine) -> AsyncIterator[MinerClient]:
    """``engine`` behind the miner's real app, batched as a miner batches it."""
    batched = BatchedEngine(engine)
    core = MinerCore(batched, MINER, 1, 1_000_000)
    guard = RequestGuard(GuardConfig(hotkey=MINER.address), StaticStanding({CALLER.address: 0}))

    def health(_: object) -> Health:  # pragma: no cover  (not called here)
        raise NotImplementedError

    app = create_app(core, guard, health)
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://miner")
    try:
        async with MinerClient(http, CALLER, MINER.address) as client:
            yield client
    finally:
        await http.aclose()
        await batched.embed_batcher.aclose()
        await batched.generate_batcher.aclose()


def cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    return dot / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))


async def test_random_mode_serves_noise_under_the_honest_id(
    honest_embed: Engine, honest_tiny: Engine
) -> None:
    reference = await honest_embed.embed(TEXTS)
    async with serving(RandomAnswers(honest_embed)) as cheat:
        answer, receipt = await cheat.embed(TEXTS)
    assert receipt.model_id == answer.model == honest_embed.model_id
    for honest, served in zip(reference, answer.embeddings, strict=True):
        assert abs(sum(x * x for x in served) - 1) < 1e-6  # it looks like an embedding
        assert abs(cosine(honest, served)) < 0.4  # but it is noise

    greedy = await honest_tiny.generate(PROMPTS[0], 24)
    async with serving(RandomAnswers(honest_tiny)) as cheat:
        answer, receipt = await cheat.generate(PROMPTS[0], 24)
        again, _ = await cheat.generate(PROMPTS[0], 24)
    assert receipt.model_id == honest_tiny.model_id and answer.seed is None
    assert answer.token_ids != greedy.token_ids
    assert again.token_ids != answer.token_ids  # greedy decoding would repeat itself
    assert receipt.prompt_tokens == greedy.prompt_tokens  # it charges like an honest miner


async def test_wrong_model_mode_serves_another_model(
    data_dir: Path, honest_embed: Engine, honest_tiny: Engine
) -> None:
    impostor = await load_cheat_engine("wrong-model", "generate:tiny", data_dir)
    greedy = [await honest_tiny.generate(p, 24) for p in PROMPTS]
    async with serving(impostor) as cheat:
        answers = [await cheat.generate(p, 24) for p in PROMPTS]
    for honest, (answer, receipt) in zip(greedy, answers, strict=True):
        assert receipt.model_id == answer.model == honest_tiny.model_id  # the claim
        assert answer.token_ids != honest.token_ids  # the truth
    assert impostor.model_hash == honest_tiny.model_hash

    impostor = await load_cheat_engine("wrong-model", "embed:minilm", data_dir)
    reference = await honest_embed.embed(TEXTS)
    async with serving(impostor) as cheat:
        answer, receipt = await cheat.embed(TEXTS)
    assert receipt.model_id == honest_embed.model_id
    for honest, served in zip(reference, answer.embeddings, strict=True):
        assert cosine(honest, served) < 0.95  # a validator comparing to 1e-5 sees it at once
    await impostor.close()


async def test_lazy_mode_answers_everything_with_its_first_answer(
    honest_embed: Engine, honest_tiny: Engine
) -> None:
    reference = await honest_embed.embed(TEXTS)
    async with serving(LazyAnswers(honest_embed)) as cheat:
        first, _ = await cheat.embed(TEXTS[:1])
        second, receipt = await cheat.embed(TEXTS[1:])
    assert second.embeddings == first.embeddings
    assert cosine(reference[1], second.embeddings[0]) < 0.9
    assert receipt.prompt_tokens == await honest_embed.count_tokens(TEXTS[1])

    greedy = await honest_tiny.generate(PROMPTS[1], 16)
    async with serving(LazyAnswers(honest_tiny)) as cheat:
        first_gen, _ = await cheat.generate(PROMPTS[0], 16)
        second_gen, _ = await cheat.generate(PROMPTS[1], 16)
        stream = cheat.stream(PROMPTS[1], 16)
        streamed = [event async for event in stream]
    assert second_gen.token_ids == first_gen.token_ids != greedy.token_ids
    assert stream.receipt is not None and len(streamed) == 1
    assert stream.token_ids == first_gen.token_ids


async def test_slow_mode_is_honest_but_late(honest_tiny: Engine) -> None:
    greedy = await honest_tiny.generate(PROMPTS[0], 8)
    async with serving(SlowAnswers(honest_tiny)) as cheat:
        started = time.perf_counter()
        answer, _ = await cheat.generate(PROMPTS[0], 8)
        elapsed = time.perf_counter() - started
    assert answer.token_ids == greedy.token_ids
    assert elapsed >= SLOW_REQUEST_S


async def test_cheat_modes_are_checked(data_dir: Path) -> None:
    with pytest.raises(MinerConfigError, match="unknown --cheat mode"):
        MinerConfig(netuid=1, cheat="evil")
    with pytest.raises(MinerConfigError, match="no impostor"):
        await load_cheat_engine("wrong-model", "generate:tiny-bad", data_dir)
    engine = await load_cheat_engine("random", "generate:tiny", data_dir)
    assert isinstance(engine, RandomAnswers)
    await engine.close()


# -- the adversaries of issue #5: what validators' audits must catch ------------------------------


async def test_cached_mode_answers_similar_prompts_from_its_cache(honest_tiny: Engine) -> None:
    first, similar = "Tell me about the river at dawn", "Tell me about the river at dusk"
    honest = await honest_tiny.generate(similar, 12)
    cached = CachedAnswers(honest_tiny)
    async with serving(cached) as cheat:
        answer_a, _ = await cheat.generate(first, 12)
        answer_b, receipt = await cheat.generate(similar, 12)
        distinct, _ = await cheat.generate("0123456789 zyxw", 12)  # nothing close: computed
    assert answer_b.token_ids == answer_a.token_ids != honest.token_ids
    assert receipt.prompt_tokens == honest.prompt_tokens and cached.hits == 1
    assert distinct.token_ids == (await honest_tiny.generate("0123456789 zyxw", 12)).token_ids


async def test_truncate_mode_stops_early_and_claims_to_be_done(honest_tiny: Engine) -> None:
    honest = await honest_tiny.generate(PROMPTS[0], 16)
    async with serving(TruncatedAnswers(honest_tiny)) as cheat:
        stopped, receipt = await cheat.generate(PROMPTS[0], 16)
        stream = cheat.stream(PROMPTS[0], 16)
        events = [event async for event in stream]
    assert stopped.token_ids == honest.token_ids[:8] and stopped.finish_reason == "stop"
    assert receipt.completion_tokens == 8  # charged for what it sent, so only audits see it
    assert stream.token_ids == honest.token_ids[:8] and events[-1].finish_reason == "length"


async def test_copy_mode_serves_real_answers_to_other_prompts(honest_tiny: Engine) -> None:
    copies = [await honest_tiny.generate(p, 10) for p in COPY_PROMPTS[:2]]
    async with serving(CopiedAnswers(honest_tiny)) as cheat:
        one, _ = await cheat.generate(PROMPTS[0], 10)
        two, _ = await cheat.generate(PROMPTS[0], 10)
    assert [one.token_ids, two.token_ids] == [c.token_ids for c in copies]
    assert one.token_ids != (await honest_tiny.generate(PROMPTS[0], 10)).token_ids


async def test_organic_only_mode_is_honest_to_validators_only(
    data_dir: Path, honest_tiny: Engine
) -> None:
    customer = Keypair.from_name("test/miner/gateway")
    impostor = await load_cheat_engine("organic-only", "generate:tiny", data_dir)

    async def is_validator(hotkey: str) -> bool:
        return hotkey == CALLER.address

    batched = BatchedEngine(honest_tiny)
    core = MinerCore(
        batched,
        MINER,
        1,
        1_000_000,
        organic_engine=impostor,
        is_validator=is_validator,
    )
    standing = StaticStanding({CALLER.address: 0, customer.address: 0})
    guard = RequestGuard(GuardConfig(hotkey=MINER.address), standing)
    app = create_app(core, guard, lambda _: None)  # type: ignore[arg-type,return-value]
    honest = await honest_tiny.generate(PROMPTS[0], 12)
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://miner")
    try:
        async with MinerClient(http, CALLER, MINER.address) as probe:
            probed, _ = await probe.generate(PROMPTS[0], 12)
        async with MinerClient(http, customer, MINER.address) as organic:
            served, receipt = await organic.generate(PROMPTS[0], 12)
    finally:
        await http.aclose()
        await batched.embed_batcher.aclose()
        await batched.generate_batcher.aclose()
        await impostor.close()
    assert probed.token_ids == honest.token_ids
    assert served.token_ids != honest.token_ids and receipt.model_id == honest_tiny.model_id


async def test_smaller_and_tampered_models_claim_the_honest_id(
    data_dir: Path, honest_tiny: Engine
) -> None:
    reference = await honest_tiny.generate(PROMPTS[1], 12)
    logprobs = await honest_tiny.score(PROMPTS[1], reference.token_ids)
    for mode in ("smaller-model", "perturb-1", "perturb-5", "int8", "int4"):
        engine = await load_cheat_engine(mode, "generate:tiny", data_dir)
        try:
            assert engine.model_id == honest_tiny.model_id, mode
            assert engine.model_hash == honest_tiny.model_hash, mode
            theirs = await engine.score(PROMPTS[1], reference.token_ids)
        finally:
            await engine.close()
        # other weights: the same tokens get other probabilities (int8 least of all)
        assert max(abs(a - b) for a, b in zip(theirs, logprobs, strict=True)) > 1e-4, mode


async def test_new_cheat_modes_are_known(data_dir: Path) -> None:
    for mode in ("cached", "truncate", "copy", "organic-only", "int4", "smaller-model"):
        assert mode in CHEAT_MODES
        MinerConfig(netuid=1, cheat=mode)  # accepted
    with pytest.raises(MinerConfigError, match="no smaller model"):
        await load_cheat_engine("smaller-model", "generate:tiny-bad", data_dir)
