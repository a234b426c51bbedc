"""Optional engines: llama.cpp (GGUF) and vLLM (GPU).

Each test skips, with the engine's own `EngineUnavailable` message as the reason, when its
library (llama-cpp-python and gguf; vllm) or its hardware (a CUDA GPU for vLLM) is missing.
When llama.cpp is there, it is checked against the transformers engine on the tiny model
converted to GGUF: same greedy tokens, same logprobs within 1e-2 (its KV cache is float16).
"""

from __future__ import annotations

import asyncio
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from agora.models.base import Engine, GenerateRequest, torch_threads
from agora.models.errors import EngineUnavailable, InvalidRequest, ModelNotFound
from agora.models.naming import model_hash
from agora.models.registry import load_engine
from agora.models.tiny import ensure_tiny_gguf, ensure_tiny_model

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread() -> Iterator[None]:
    # two threads on a shared 2-core machine wait on each other (docs/models.md, Figures)
    with torch_threads(1):
        yield


PROMPTS = ["hello", "The quick brown fox", "Validators check: ünïcode ✓"]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("engines")


@pytest.fixture(scope="module")
def reference(data_dir: Path) -> Iterator[Engine]:
    engine = asyncio.run(load_engine("generate:tiny", data_dir))
    yield engine
    asyncio.run(engine.close())


@pytest.fixture(scope="module")
def gguf_engine(data_dir: Path) -> Iterator[Engine]:
    try:
        path = ensure_tiny_gguf(data_dir)
        engine = asyncio.run(load_engine(f"gguf:{path}", data_dir))
    except EngineUnavailable as exc:
        pytest.skip(str(exc))
    yield engine
    asyncio.run(engine.close())


def test_tiny_gguf_is_deterministic(data_dir: Path, tmp_path: Path) -> None:
    try:
        a = ensure_tiny_gguf(data_dir)
        b = ensure_tiny_gguf(tmp_path)
    except EngineUnavailable as exc:
        pytest.skip(str(exc))
    assert model_hash(a) == model_hash(b)
    assert a.read_bytes()[:4] == b"GGUF"


async def test_llama_cpp_matches_transformers_greedy(
    gguf_engine: Engine, reference: Engine
) -> None:
    assert gguf_engine.model_id.startswith("generate:tiny@")
    assert gguf_engine.model_hash != reference.model_hash  # other files, other hash
    assert gguf_engine.context_length == 512
    for prompt in PROMPTS:
        assert await gguf_engine.count_tokens(prompt) == await reference.count_tokens(prompt)
        ours = await gguf_engine.generate(prompt, 24)
        theirs = await reference.generate(prompt, 24)
        assert ours.token_ids == theirs.token_ids
        assert ours.text == theirs.text
        scores = await gguf_engine.score(prompt, ours.token_ids)
        expected = await reference.score(prompt, ours.token_ids)
        # llama.cpp keeps its KV cache in float16: logprobs agree to a few 1e-3
        assert max(abs(x - y) for x, y in zip(scores, expected, strict=True)) < 1e-2


async def test_llama_cpp_stream_sampling_and_errors(gguf_engine: Engine) -> None:
    full = await gguf_engine.generate("hello", 20, temperature=0.9, seed=5)
    again = await gguf_engine.generate("hello", 20, temperature=0.9, seed=5)
    assert full.token_ids == again.token_ids and full.seed == 5
    chunks = [c async for c in gguf_engine.stream("hello", 20, temperature=0.9, seed=5)]
    assert [t for c in chunks for t in c.token_ids] == full.token_ids
    assert "".join(c.text for c in chunks) == full.text
    assert chunks[-1].finish_reason == full.finish_reason
    batch = await gguf_engine.generate_batch([GenerateRequest(p, 8) for p in PROMPTS])
    assert [r.token_ids for r in batch] == [
        (await gguf_engine.generate(p, 8)).token_ids for p in PROMPTS
    ]
    with pytest.raises(InvalidRequest):
        await gguf_engine.generate("x" * 600, 8)
    with pytest.raises(InvalidRequest):
        await gguf_engine.score("hello", [10_000])


async def test_vllm_needs_a_gpu_and_the_library(data_dir: Path, reference: Engine) -> None:
    path = ensure_tiny_model(data_dir)
    try:
        engine = await load_engine(f"vllm:{path}", data_dir)
    except EngineUnavailable as exc:
        message = str(exc)
        assert "GPU" in message or "pip install vllm" in message
        pytest.skip(message)
    try:  # pragma: no cover  (only on a machine with a GPU and vLLM)
        assert engine.model_hash == reference.model_hash
        for prompt in PROMPTS:
            ours = await engine.generate(prompt, 16)
            theirs = await reference.generate(prompt, 16)
            assert ours.token_ids == theirs.token_ids
            scores = await engine.score(prompt, ours.token_ids)
            expected = await reference.score(prompt, ours.token_ids)
            assert max(abs(x - y) for x, y in zip(scores, expected, strict=True)) < 1e-2
    finally:
        await engine.close()


async def test_vllm_missing_model_is_reported(tmp_path: Path) -> None:
    try:
        await load_engine(f"vllm:{tmp_path}/missing", tmp_path)
    except EngineUnavailable as exc:
        pytest.skip(str(exc))
    except ModelNotFound:
        return
    raise AssertionError("expected ModelNotFound")  # pragma: no cover


@pytest.mark.parametrize(
    ("module", "spec", "hint"),
    [
        ("llama_cpp", "gguf:{dir}/m.gguf", "pip install llama-cpp-python"),
        ("vllm", "vllm:{dir}", "vLLM"),
        ("ray", "generate:tiny;ray=local", 'pip install "ray[serve]"'),
    ],
)
async def test_missing_libraries_are_reported_clearly(
    module: str, spec: str, hint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # as if not installed
    (tmp_path / "m.gguf").write_bytes(b"GGUF")
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(EngineUnavailable, match=re.escape(hint)):
        await load_engine(spec.format(dir=tmp_path), tmp_path)
