"""The tiny model and the transformers causal-LM engine: determinism, sampling, streaming,
scoring, batching, and the "bad" variant an adversarial miner would serve."""

from __future__ import annotations

import asyncio
import hashlib
import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from agora.models.base import GenerateRequest, torch_threads
from agora.models.causal_lm import CausalLMEngine
from agora.models.errors import (
    ContextTooLong,
    EngineClosed,
    InvalidRequest,
    InvalidSpec,
    UnsupportedOperation,
)
from agora.models.naming import model_hash
from agora.models.tiny import ensure_tiny_model

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread() -> Iterator[None]:
    # two threads on a shared 2-core machine wait on each other (docs/models.md, Figures)
    with torch_threads(1):
        yield


#: SHA-256 of tiny's model.safetensors: the same on every machine (numpy's frozen RandomState
#: stream, safetensors' deterministic layout). If this changes, every node's tiny model changes.
TINY_WEIGHTS_SHA256 = "a89ddf7c9753a6638331612c1cce5b2b2649de31e0be1536eca4435e05f33e34"

PROMPTS = [
    "hello",
    "The quick brown fox jumps over the lazy dog",
    "a",
    "Validators re-run receipts: ünïcode ✓ 日本",
]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("tiny-data")


@pytest.fixture(scope="module")
def tiny(data_dir: Path) -> Iterator[CausalLMEngine]:
    engine = asyncio.run(CausalLMEngine.load(ensure_tiny_model(data_dir), name="tiny"))
    yield engine
    asyncio.run(engine.close())


@pytest.fixture(scope="module")
def tiny_bad(data_dir: Path) -> Iterator[CausalLMEngine]:
    path = ensure_tiny_model(data_dir, "tiny-bad")
    engine = asyncio.run(CausalLMEngine.load(path, name="tiny-bad"))
    yield engine
    asyncio.run(engine.close())


def test_tiny_builds_identically_and_idempotently(tmp_path: Path) -> None:
    first = ensure_tiny_model(tmp_path / "one")
    second = ensure_tiny_model(tmp_path / "two")
    assert model_hash(first) == model_hash(second)
    assert first == tmp_path / "one" / "models" / "tiny"

    weights = first / "model.safetensors"
    stamp = weights.stat().st_mtime_ns
    assert ensure_tiny_model(tmp_path / "one") == first
    assert weights.stat().st_mtime_ns == stamp  # reused, not rewritten

    expected = model_hash(first)
    (first / "config.json").write_text("{}")  # tampered or half-written
    weights.unlink()
    assert model_hash(ensure_tiny_model(tmp_path / "one")) == expected
    assert sorted(p.name for p in (tmp_path / "one" / "models").iterdir()) == ["tiny"]


def test_tiny_weights_are_the_same_on_every_machine(data_dir: Path) -> None:
    weights = (ensure_tiny_model(data_dir) / "model.safetensors").read_bytes()
    assert hashlib.sha256(weights).hexdigest() == TINY_WEIGHTS_SHA256


def test_unknown_variant() -> None:
    with pytest.raises(InvalidSpec, match="tiny-bad"):
        ensure_tiny_model("/nonexistent", "tiny-huge")


async def test_engine_describes_itself(tiny: CausalLMEngine, data_dir: Path) -> None:
    digest = model_hash(ensure_tiny_model(data_dir))
    assert tiny.model_hash == digest
    assert tiny.model_id == f"generate:tiny@{digest[:16]}"
    assert tiny.task == "generate"
    assert tiny.context_length == 512
    info = tiny.info()
    assert (info.engine, info.model_id) == ("transformers", tiny.model_id)
    assert await tiny.count_tokens("héllo") == 1 + len("héllo".encode())  # BOS + bytes


async def test_greedy_generation_is_deterministic(tiny: CausalLMEngine) -> None:
    for prompt in PROMPTS:
        a = await tiny.generate(prompt, max_tokens=24)
        b = await tiny.generate(prompt, max_tokens=24)
        assert a == b
        assert a.seed is None
        assert a.prompt_tokens == await tiny.count_tokens(prompt)
        assert a.completion_tokens == len(a.token_ids) <= 24
        assert a.finish_reason == ("stop" if a.token_ids[-1] == 2 else "length")
        assert a.model_id == tiny.model_id


async def test_seeded_sampling_is_reproducible(tiny: CausalLMEngine) -> None:
    a = await tiny.generate("hello", max_tokens=32, temperature=1.0, seed=1234)
    b = await tiny.generate("hello", max_tokens=32, temperature=1.0, seed=1234)
    assert a.token_ids == b.token_ids and a.seed == 1234
    others = {
        tuple((await tiny.generate("hello", 32, 1.0, seed)).token_ids) for seed in range(1, 6)
    }
    assert len(others) > 1  # seeds matter
    greedy = await tiny.generate("hello", max_tokens=32)
    assert tuple(greedy.token_ids) != tuple(a.token_ids)
    # no seed given: one is drawn and reported, and replaying it gives the same tokens
    drawn = await tiny.generate("hello", max_tokens=16, temperature=0.8)
    assert drawn.seed is not None
    replay = await tiny.generate("hello", max_tokens=16, temperature=0.8, seed=drawn.seed)
    assert replay.token_ids == drawn.token_ids


@pytest.mark.parametrize(("temperature", "seed"), [(0.0, None), (0.9, 77)])
async def test_streaming_yields_the_same_tokens_and_text(
    tiny: CausalLMEngine, temperature: float, seed: int | None
) -> None:
    for prompt in PROMPTS:
        full = await tiny.generate(prompt, 40, temperature, seed)
        chunks = [c async for c in tiny.stream(prompt, 40, temperature, seed)]
        assert [t for c in chunks for t in c.token_ids] == full.token_ids
        assert "".join(c.text for c in chunks) == full.text
        assert [c.completion_tokens for c in chunks] == list(range(1, len(chunks) + 1))
        assert [c.finish_reason for c in chunks[:-1]] == [None] * (len(chunks) - 1)
        assert chunks[-1].finish_reason == full.finish_reason
        assert {c.seed for c in chunks} == {seed}


async def test_abandoned_stream_frees_the_engine(tiny: CausalLMEngine) -> None:
    stream = tiny.stream("hello", 200)
    first = [await stream.__anext__() for _ in range(3)]
    await stream.aclose()
    again = await tiny.generate("hello", 3)
    assert [c.token_ids[0] for c in first] == again.token_ids


async def test_score_prefers_the_models_own_greedy_tokens(tiny: CausalLMEngine) -> None:
    rng = random.Random(0)
    for prompt in PROMPTS:
        greedy = await tiny.generate(prompt, 24)
        own = await tiny.score(prompt, greedy.token_ids)
        noise = [rng.randrange(3, 259) for _ in greedy.token_ids]
        other = await tiny.score(prompt, noise)
        assert len(own) == len(other) == len(greedy.token_ids)
        assert all(x <= 0.0 for x in own + other)
        assert sum(own) / len(own) > sum(other) / len(other) + 1.0
    assert await tiny.score("hello", []) == []


async def test_batched_equals_unbatched(tiny: CausalLMEngine) -> None:
    requests = [GenerateRequest(p, max_tokens=20 + 3 * i) for i, p in enumerate(PROMPTS)]
    requests += [GenerateRequest(p, 16, temperature=0.9, seed=i) for i, p in enumerate(PROMPTS)]
    alone = [await tiny.generate_batch([r]) for r in requests]
    together = await tiny.generate_batch(requests)
    assert [r[0].token_ids for r in alone] == [r.token_ids for r in together]
    assert [r[0].text for r in alone] == [r.text for r in together]
    assert await tiny.generate_batch([]) == []


async def test_bad_variant_differs(tiny: CausalLMEngine, tiny_bad: CausalLMEngine) -> None:
    assert tiny_bad.model_hash != tiny.model_hash
    assert tiny_bad.model_id.startswith("generate:tiny-bad@")
    for prompt in PROMPTS:
        good = await tiny.generate(prompt, 24)
        bad = await tiny_bad.generate(prompt, 24)
        assert good.token_ids != bad.token_ids
        # what a validator does: score the miner's tokens under the reference model
        own = await tiny.score(prompt, good.token_ids)
        claimed = await tiny.score(prompt, bad.token_ids)
        assert sum(own) > sum(claimed)


async def test_bad_requests_change_nothing(tiny: CausalLMEngine) -> None:
    with pytest.raises(ContextTooLong):
        await tiny.generate("x" * 600, 8)
    with pytest.raises(ContextTooLong):
        await tiny.generate("x" * 400, 200)
    with pytest.raises(InvalidRequest):
        await tiny.generate("hello", 0)
    with pytest.raises(InvalidRequest):
        await tiny.score("hello", [259])
    with pytest.raises(InvalidRequest):
        [c async for c in tiny.stream("hello", temperature=-1)]
    with pytest.raises(UnsupportedOperation):
        await tiny.embed(["hello"])
    # one bad request does not poison the engine
    assert (await tiny.generate("hello", 4)).completion_tokens == 4


async def test_model_work_does_not_block_the_event_loop(tiny: CausalLMEngine) -> None:
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.001)
            ticks += 1

    task = asyncio.create_task(ticker())
    loop = asyncio.get_running_loop()
    start = loop.time()
    await tiny.generate_batch([GenerateRequest(p, 150) for p in PROMPTS * 2])
    elapsed = loop.time() - start
    task.cancel()
    assert ticks > 0.2 * elapsed / 0.001 or ticks > 50


async def test_closed_engine_refuses_work(data_dir: Path) -> None:
    engine = await CausalLMEngine.load(ensure_tiny_model(data_dir), name="tiny")
    engine._decoder.max_rows = 1  # one place in the batch: the first runs, the second waits
    running = asyncio.create_task(engine.generate("hello", 300))
    queued = asyncio.create_task(engine.generate("hello", 5))
    while not engine._decoder.step_rows:  # the first is being decoded
        await asyncio.sleep(0.001)
    await engine.close()
    assert (await running).completion_tokens > 0  # the call in progress finishes
    with pytest.raises(EngineClosed):
        await queued
    await engine.close()  # idempotent
    with pytest.raises(EngineClosed):
        await engine.generate("hello", 4)


async def test_a_request_joins_a_running_batch_and_leaves_when_done(data_dir: Path) -> None:
    """Continuous batching (agora.models.decoder): a short request that arrives while a long
    one is decoding shares its steps, is answered before it, and both answers (tokens and
    TOPLOC proofs) are the ones each gets alone."""
    from agora.verify.check import verify_generation

    engine = await CausalLMEngine.load(ensure_tiny_model(data_dir), name="tiny")
    try:
        long_prompt, short_prompt = "Once upon a time the network", "Hello"
        alone_long = await engine.generate(long_prompt, 120)
        alone_short = await engine.generate(short_prompt, 6, 0.9, 7)
        assert alone_long.completion_tokens == 120  # (no early end of sequence on this prompt)
        before = len(engine._decoder.step_rows)
        long_task = asyncio.create_task(engine.generate(long_prompt, 120))
        while len(engine._decoder.step_rows) < before + 3:  # the long one is decoding
            await asyncio.sleep(0.001)
        short = await engine.generate(short_prompt, 6, 0.9, 7)
        assert not long_task.done()
        long = await long_task
        assert max(list(engine._decoder.step_rows)[before:]) == 2
        assert short.token_ids == alone_short.token_ids and short.text == alone_short.text
        assert long.token_ids == alone_long.token_ids and long.text == alone_long.text
        for prompt, answer in ((long_prompt, long), (short_prompt, short)):
            verdict = verify_generation(engine, prompt, answer.token_ids, answer.proof)
            assert verdict.ok, verdict.reason
    finally:
        await engine.close()
