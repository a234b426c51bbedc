"""Ray Serve: one miner's model as two replicas on a local Ray instance.

One Ray instance for the whole module (about 5 s to start, 10 s to deploy). Skips with the
engine's own message when ``ray[serve]`` is not installed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from agora.models.base import Engine, GenerateRequest, torch_threads
from agora.models.errors import ContextTooLong, EngineClosed, EngineUnavailable, InvalidRequest
from agora.models.registry import load_engine

# Ray 2.60 itself uses pydantic v1-style Field arguments when imported; nothing we can fix.
pytestmark = [
    pytest.mark.anyio,
    pytest.mark.filterwarnings("ignore::pydantic.warnings.PydanticDeprecatedSince20"),
]


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread() -> Iterator[None]:
    # two threads on a shared 2-core machine wait on each other (docs/models.md, Figures)
    with torch_threads(1):
        yield


PROMPTS = [f"request {i}: " + "hello " * (i % 3) for i in range(8)]


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[None]:
    from agora.models.ray_serve import connect, import_ray

    try:
        ray, serve = import_ray()
    except EngineUnavailable as exc:
        pytest.skip(str(exc))
    started_here = not ray.is_initialized()  # else reuse the session's Ray instance
    connect("local", num_cpus=2)
    yield
    if started_here:
        serve.shutdown()
        ray.shutdown()


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("ray")


@pytest.fixture(scope="module")
def reference(data_dir: Path) -> Iterator[Engine]:
    engine = asyncio.run(load_engine("generate:tiny", data_dir))
    yield engine
    asyncio.run(engine.close())


async def test_two_replicas_answer_like_the_local_engine(
    ray_cluster: None, data_dir: Path, reference: Engine
) -> None:
    engine = await load_engine("generate:tiny;cpus=0.5", data_dir, ray="local", replicas=2)
    try:
        assert engine.engine_name == "ray"
        assert engine.model_id == reference.model_id
        assert engine.model_hash == reference.model_hash
        assert engine.context_length == reference.context_length

        results = await asyncio.gather(*(engine.generate(p, 12) for p in PROMPTS))
        expected = [await reference.generate(p, 12) for p in PROMPTS]
        assert [r.token_ids for r in results] == [e.token_ids for e in expected]
        assert [r.text for r in results] == [e.text for e in expected]

        sampled = await engine.generate_batch([GenerateRequest("hello", 12, 0.9, 42)] * 2)
        local = await reference.generate("hello", 12, 0.9, 42)
        assert [s.token_ids for s in sampled] == [local.token_ids] * 2

        chunks = [c async for c in engine.stream(PROMPTS[1], 12)]
        assert [t for c in chunks for t in c.token_ids] == expected[1].token_ids
        assert chunks[-1].finish_reason == expected[1].finish_reason

        scores = await engine.score(PROMPTS[0], expected[0].token_ids)
        local_scores = await reference.score(PROMPTS[0], expected[0].token_ids)
        assert max(abs(a - b) for a, b in zip(scores, local_scores, strict=True)) < 1e-5
        assert await engine.count_tokens("hello") == await reference.count_tokens("hello")

        # errors raised in a replica come back as themselves, not wrapped in Ray's types
        with pytest.raises(ContextTooLong):
            await engine.generate("x" * 600, 4)
        with pytest.raises(InvalidRequest):
            [c async for c in engine.stream("x" * 600, 4)]
        with pytest.raises(InvalidRequest):
            await engine.generate("hello", 0)
    finally:
        await engine.close()
    with pytest.raises(EngineClosed):
        await engine.generate("hello", 4)
