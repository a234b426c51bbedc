"""The dynamic batcher: concurrent callers get exactly their own answers, batched."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from agora.models.base import Engine, GenerateRequest, torch_threads
from agora.models.batcher import BatchedEngine, DynamicBatcher
from agora.models.errors import EngineClosed, InvalidRequest, ModelError
from agora.models.registry import load_engine

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread() -> Iterator[None]:
    # two threads on a shared 2-core machine wait on each other (docs/models.md, Figures)
    with torch_threads(1):
        yield


class Recorder:
    """A batch function that doubles numbers, records its batches and can be told to fail."""

    def __init__(self, delay: float = 0.002) -> None:
        self.batches: list[list[int]] = []
        self.delay = delay

    async def __call__(self, items: list[int]) -> list[int]:
        self.batches.append(list(items))
        await asyncio.sleep(self.delay)
        if any(i < 0 for i in items):
            raise InvalidRequest("negative")
        if any(i == 13 for i in items):
            raise RuntimeError("unlucky")
        return [2 * i for i in items]


async def test_concurrent_callers_get_their_own_results_in_few_batches() -> None:
    run = Recorder()
    batcher = DynamicBatcher(run, max_batch_size=8, max_wait_ms=5)
    items = list(range(20, 120))
    random.Random(1).shuffle(items)

    async def call(i: int) -> int:
        await asyncio.sleep(random.random() * 0.01)
        return await batcher.submit(i)

    results = await asyncio.gather(*(call(i) for i in items))
    assert results == [2 * i for i in items]
    assert sorted(i for b in run.batches for i in b) == sorted(items)
    assert max(len(b) for b in run.batches) <= 8
    assert len(run.batches) < 40
    assert batcher.batch_sizes == [len(b) for b in run.batches]
    await batcher.aclose()


async def test_a_lone_request_waits_at_most_the_window() -> None:
    batcher = DynamicBatcher(Recorder(delay=0), max_batch_size=64, max_wait_ms=20)
    loop = asyncio.get_running_loop()
    start = loop.time()
    assert await batcher.submit(4) == 8
    assert loop.time() - start < 0.5
    await batcher.aclose()


async def test_weights_bound_the_batch_and_heavy_items_run_alone() -> None:
    seen: list[list[list[str]]] = []

    async def run(items: list[list[str]]) -> list[int]:
        seen.append(items)
        return [len(i) for i in items]

    batcher: DynamicBatcher[list[str], int] = DynamicBatcher(
        run, max_batch_size=4, max_wait_ms=10, weight=len
    )
    sizes = [1, 2, 1, 9, 3, 1]
    results = await asyncio.gather(*(batcher.submit(["x"] * n) for n in sizes))
    assert results == sizes
    for batch in seen:
        assert len(batch) == 1 or sum(len(i) for i in batch) <= 4
    await batcher.aclose()


async def test_an_invalid_request_fails_alone() -> None:
    run = Recorder()
    batcher = DynamicBatcher(run, max_batch_size=8, max_wait_ms=10)
    results = await asyncio.gather(
        *(batcher.submit(i) for i in (1, 2, -3, 4)), return_exceptions=True
    )
    assert results[0:2] == [2, 4] and results[3] == 8
    assert isinstance(results[2], InvalidRequest)
    await batcher.aclose()


async def test_other_errors_fail_the_whole_batch_then_recover() -> None:
    batcher = DynamicBatcher(Recorder(), max_batch_size=8, max_wait_ms=10)
    results = await asyncio.gather(*(batcher.submit(i) for i in (1, 13)), return_exceptions=True)
    assert all(isinstance(r, RuntimeError) for r in results)
    assert await batcher.submit(5) == 10
    await batcher.aclose()


async def test_wrong_result_count_is_an_error() -> None:
    async def run(items: list[int]) -> list[int]:
        return items[:-1]

    batcher = DynamicBatcher(run, max_batch_size=4, max_wait_ms=5)
    with pytest.raises(ModelError, match="returned"):
        await batcher.submit(1)
    await batcher.aclose()


async def test_cancelled_callers_are_dropped_and_others_answered() -> None:
    gate = asyncio.Event()
    run_batches: list[list[int]] = []

    async def run(items: list[int]) -> list[int]:
        run_batches.append(items)
        await gate.wait()
        return [i + 100 for i in items]

    batcher = DynamicBatcher(run, max_batch_size=1, max_wait_ms=0)
    first = asyncio.create_task(batcher.submit(1))  # occupies the batcher
    await asyncio.sleep(0.01)
    doomed = asyncio.create_task(batcher.submit(2))
    kept = asyncio.create_task(batcher.submit(3))
    await asyncio.sleep(0.01)
    doomed.cancel()
    gate.set()
    assert await first == 101 and await kept == 103
    assert [1] in run_batches and [3] in run_batches and [2] not in run_batches
    await batcher.aclose()


async def test_close_fails_waiting_requests_and_refuses_new_ones() -> None:
    gate = asyncio.Event()

    async def run(items: list[int]) -> list[int]:
        await gate.wait()
        return items

    batcher = DynamicBatcher(run, max_batch_size=1, max_wait_ms=0)
    tasks = [asyncio.create_task(batcher.submit(i)) for i in range(3)]
    await asyncio.sleep(0.01)
    await batcher.aclose()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert all(isinstance(r, EngineClosed) for r in results)
    with pytest.raises(EngineClosed):
        await batcher.submit(9)


async def test_the_next_call_takes_everything_that_queued_while_the_last_one_ran() -> None:
    gate = asyncio.Event()
    seen: list[list[int]] = []

    async def run(items: list[int]) -> list[int]:
        seen.append(items)
        await gate.wait()
        return items

    batcher = DynamicBatcher(run, max_batch_size=8, max_wait_ms=0)
    first = asyncio.create_task(batcher.submit(0))
    await asyncio.sleep(0.01)  # the first call is running
    rest = [asyncio.create_task(batcher.submit(i)) for i in range(1, 6)]
    await asyncio.sleep(0.01)
    assert seen == [[0]]
    gate.set()
    assert await first == 0 and await asyncio.gather(*rest) == [1, 2, 3, 4, 5]
    assert seen == [[0], [1, 2, 3, 4, 5]]
    assert batcher.batch_sizes == [1, 5]
    await batcher.aclose()


def test_bad_settings() -> None:
    async def run(items: list[int]) -> list[int]:
        return items

    with pytest.raises(ValueError):
        DynamicBatcher(run, max_batch_size=0)
    with pytest.raises(ValueError):
        DynamicBatcher(run, max_wait_ms=-1)


# -- with real engines ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("batcher")


@pytest.fixture(scope="module")
def tiny(data_dir: Path) -> Iterator[Engine]:
    engine = asyncio.run(load_engine("generate:tiny", data_dir))
    yield engine
    asyncio.run(engine.close())


@pytest.fixture(scope="module")
def minilm(data_dir: Path) -> Iterator[Engine]:
    engine = asyncio.run(load_engine("embed:minilm", data_dir))
    yield engine
    asyncio.run(engine.close())


async def test_batched_generation_equals_unbatched(tiny: Engine) -> None:
    requests = [
        GenerateRequest(f"prompt number {i} " * (i % 4 + 1), 8 + i % 5, 0.0 if i % 3 else 0.9, i)
        for i in range(12)
    ]
    expected = [await tiny.generate_batch([r]) for r in requests]
    batched = BatchedEngine(tiny, max_batch_size=6, max_wait_ms=20)
    results = await asyncio.gather(
        *(batched.generate(r.prompt, r.max_tokens, r.temperature, r.seed) for r in requests)
    )
    assert [r.token_ids for r in results] == [e[0].token_ids for e in expected]
    assert [r.seed for r in results] == [e[0].seed for e in expected]
    # the transformers engine batches continuously: the requests shared decoding steps there,
    # and nothing waited in the batcher in front of it
    assert tiny.continuous_batching and max(tiny._decoder.step_rows) > 1  # type: ignore[attr-defined]
    assert batched.generate_batcher.batch_sizes == []
    # a bad request among good ones fails alone
    mixed = await asyncio.gather(
        batched.generate("hello", 4), batched.generate("x" * 600, 4), return_exceptions=True
    )
    assert not isinstance(mixed[0], BaseException) and mixed[0].completion_tokens == 4
    assert isinstance(mixed[1], InvalidRequest)
    # streams and scores pass straight through
    chunks = [c async for c in batched.stream(requests[1].prompt, requests[1].max_tokens)]
    assert [c.token_ids[0] for c in chunks] == expected[1][0].token_ids
    assert await batched.score("hello", [5, 6]) == await tiny.score("hello", [5, 6])
    await batched.generate_batcher.aclose()  # leaves the shared engine open


async def test_batched_embeddings_equal_unbatched(minilm: Engine) -> None:
    groups = [
        [f"sentence {i}.{j} about topic {i % 3}" for j in range(i % 3 + 1)] for i in range(10)
    ]
    expected = [await minilm.embed(g) for g in groups]
    batched = BatchedEngine(minilm, max_embed_texts=8, max_wait_ms=20)
    results = await asyncio.gather(*(batched.embed(g) for g in groups))
    for got, want in zip(results, expected, strict=True):
        assert len(got) == len(want)
        assert np.abs(np.array(got) - np.array(want)).max() < 1e-5
    assert max(batched.embed_batcher.batch_sizes) > 1
    with pytest.raises(InvalidRequest):
        await batched.embed([])
    await batched.embed_batcher.aclose()
