"""Engine specs: parsing, clear errors listing the valid forms, and loading."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import agora.models
from agora.models.base import torch_threads
from agora.models.errors import EngineUnavailable, InvalidSpec, ModelNotFound
from agora.models.naming import model_hash
from agora.models.registry import SPEC_FORMS, EngineSpec, load_engine, parse_spec
from agora.models.tiny import ensure_tiny_model

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread() -> Iterator[None]:
    # two threads on a shared 2-core machine wait on each other (docs/models.md, Figures)
    with torch_threads(1):
        yield


def test_valid_specs_parse() -> None:
    assert parse_spec("embed:minilm") == EngineSpec("embed", "minilm")
    assert parse_spec("generate:tiny-bad") == EngineSpec("generate", "tiny-bad")
    spec = parse_spec("generate:/models/llama;ray=127.0.0.1:6379;replicas=3;cpus=0.5")
    assert spec.kind == "generate" and spec.path() == Path("/models/llama")
    assert spec.options == {"ray": "127.0.0.1:6379", "replicas": "3", "cpus": "0.5"}
    assert spec.base() == "generate:/models/llama"
    assert parse_spec("gguf:./m.gguf;device=cpu").base() == "gguf:./m.gguf;device=cpu"
    assert parse_spec("vllm:~/models/x").is_path
    assert parse_spec("gguf:/m.gguf;threads=1").options == {"threads": "1"}


@pytest.mark.parametrize(
    "spec",
    [
        "",
        "minilm",
        "embed:",
        "chat:tiny",
        "embed:bert",
        "generate:gpt5",
        "gguf:model",
        "vllm:llama",
        "generate:tiny;ray",
        "generate:tiny;colour=blue",
        "generate:tiny;replicas=0",
        "generate:tiny;replicas=two",
        "generate:tiny;cpus=-1",
        "generate:tiny;device=tpu",
        "generate:tiny;threads=0",
        "generate:tiny;cpus=inf",
    ],
)
def test_bad_specs_list_the_valid_forms(spec: str) -> None:
    with pytest.raises(InvalidSpec) as info:
        parse_spec(spec)
    message = str(info.value)
    assert all(form in message for form in SPEC_FORMS)
    assert "ray" in message


async def test_load_tiny_by_name_and_by_path(tmp_path: Path) -> None:
    engine = await load_engine("generate:tiny", tmp_path)
    try:
        digest = model_hash(tmp_path / "models" / "tiny")
        assert engine.model_id == f"generate:tiny@{digest[:16]}"
        by_path = await load_engine(f"generate:{tmp_path / 'models' / 'tiny'}", tmp_path)
        try:
            assert by_path.model_hash == engine.model_hash
            a = await engine.generate("hello", 8)
            b = await by_path.generate("hello", 8)
            assert a.token_ids == b.token_ids
        finally:
            await by_path.close()
    finally:
        await engine.close()


async def test_missing_models_are_not_found(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFound):
        await load_engine(f"generate:{tmp_path}/missing", tmp_path)
    with pytest.raises(ModelNotFound):
        await load_engine(f"embed:{tmp_path}/missing", tmp_path)
    with pytest.raises((ModelNotFound, EngineUnavailable)):
        await load_engine(f"gguf:{tmp_path}/missing.gguf", tmp_path)
    (tmp_path / "fake.gguf").write_bytes(b"not a gguf file")
    with pytest.raises((ModelNotFound, EngineUnavailable)):
        await load_engine(f"gguf:{tmp_path}/fake.gguf", tmp_path)


async def test_a_directory_that_is_not_a_model(tmp_path: Path) -> None:
    ensure_tiny_model(tmp_path)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text('{"model_type": "no-such-architecture"}')
    with pytest.raises(ModelNotFound):
        await load_engine(f"generate:{broken}", tmp_path)


def test_importing_the_package_is_cheap() -> None:
    code = (
        "import sys, agora.models; "
        "print(sorted(m for m in ('torch', 'transformers', 'sentence_transformers', 'ray', "
        "'llama_cpp', 'vllm') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    assert set(agora.models.__all__) >= {"Engine", "load_engine", "model_hash", "BatchedEngine"}
    assert all(hasattr(agora.models, name) for name in agora.models.__all__)
