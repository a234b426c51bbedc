"""Model hashes and ids, request validation, and the incremental detokenizer."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from agora.models.base import Detokenizer, GenerateRequest, check_texts, check_token_ids
from agora.models.errors import InvalidRequest, ModelNotFound
from agora.models.naming import make_model_id, model_files, model_hash, parse_model_id


def _model_dir(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "config.json").write_text('{"a": 1}')
    (root / "model.safetensors").write_bytes(b"\x00\x01weights")
    (root / "sub").mkdir(exist_ok=True)
    (root / "sub" / "tokenizer.json").write_text("{}")
    return root


def test_hash_is_independent_of_location_and_ignores_non_model_files(tmp_path: Path) -> None:
    a = _model_dir(tmp_path / "a")
    b = _model_dir(tmp_path / "elsewhere" / "b")
    assert model_hash(a) == model_hash(b)
    before = model_hash(a)
    (a / "README.md").write_text("docs")
    (a / ".gitattributes").write_text("*.bin lfs")
    (a / ".cache").mkdir()
    (a / ".cache" / "blob").write_bytes(b"x")
    (a / "__pycache__").mkdir()
    (a / "__pycache__" / "m.pyc").write_bytes(b"x")
    (a / "LICENSE").write_text("MIT")
    assert model_hash(a) == before
    assert [name for name, _ in model_files(a)] == [
        "config.json",
        "model.safetensors",
        "sub/tokenizer.json",
    ]


def test_hash_changes_with_any_model_byte_or_name(tmp_path: Path) -> None:
    a = _model_dir(tmp_path / "a")
    base = model_hash(a)
    (a / "model.safetensors").write_bytes(b"\x00\x01weightS")
    assert model_hash(a) != base
    _model_dir(a)
    assert model_hash(a) == base
    (a / "config.json").rename(a / "config2.json")
    assert model_hash(a) != base


def test_hash_follows_the_documented_framing(tmp_path: Path) -> None:
    a = tmp_path / "m"
    a.mkdir()
    (a / "w.bin").write_bytes(b"abc")
    expected = hashlib.sha256(
        b"agora-model-hash-v1\n" + (5).to_bytes(8, "big") + b"w.bin" + (3).to_bytes(8, "big")
    )
    expected.update(b"abc")
    assert model_hash(a) == expected.hexdigest()


def test_single_file_hash_ignores_the_file_name(tmp_path: Path) -> None:
    (tmp_path / "one.gguf").write_bytes(b"GGUF....")
    (tmp_path / "two.gguf").write_bytes(b"GGUF....")
    assert model_hash(tmp_path / "one.gguf") == model_hash(tmp_path / "two.gguf")


def test_missing_or_empty_model_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFound):
        model_hash(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "README.md").write_text("only docs")
    with pytest.raises(ModelNotFound):
        model_hash(tmp_path / "empty")


def test_model_ids_round_trip() -> None:
    digest = hashlib.sha256(b"x").hexdigest()
    model_id = make_model_id("embed", "MiniLM L6/v2", digest)
    assert model_id == f"embed:minilm-l6-v2@{digest[:16]}"
    parsed = parse_model_id(model_id)
    assert (parsed.task, parsed.name) == ("embed", "minilm-l6-v2")
    assert parsed.matches(digest)
    assert not parsed.matches(hashlib.sha256(b"y").hexdigest())
    for bad in (
        "embed:minilm",
        "chat:x@0123456789abcdef",
        "embed:x@0123",
        "embed:X@0123456789abcdef",
    ):
        with pytest.raises(InvalidRequest):
            parse_model_id(bad)
    with pytest.raises(InvalidRequest):
        make_model_id("chat", "x", digest)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_tokens": 0},
        {"max_tokens": True},
        {"max_tokens": 1.5},
        {"temperature": -0.1},
        {"temperature": float("nan")},
        {"temperature": "1"},
        {"seed": -1},
        {"seed": True},
        {"seed": 1 << 63},
    ],
)
def test_bad_generate_requests_are_rejected(kwargs: dict[str, object]) -> None:
    with pytest.raises(InvalidRequest):
        GenerateRequest("hi", **kwargs)  # type: ignore[arg-type]


def test_seed_resolution() -> None:
    assert GenerateRequest("hi").resolved_seed() is None
    assert GenerateRequest("hi", temperature=0.7, seed=5).resolved_seed() == 5
    drawn = GenerateRequest("hi", temperature=0.7).resolved_seed()
    assert isinstance(drawn, int) and 0 <= drawn < (1 << 63)


def test_input_checks() -> None:
    with pytest.raises(InvalidRequest):
        check_texts("one string")
    with pytest.raises(InvalidRequest):
        check_texts([])
    with pytest.raises(InvalidRequest):
        check_texts(["ok", 3])  # type: ignore[list-item]
    assert check_token_ids([0, 5], 6) == [0, 5]
    for bad in ([6], [-1], [True], [1.0]):
        with pytest.raises(InvalidRequest):
            check_token_ids(bad, 6)  # type: ignore[arg-type]


def test_detokenizer_holds_back_incomplete_characters() -> None:
    text = "héllo ✓ 日本"
    data = text.encode()

    def decode(ids: list[int]) -> str:
        return bytes(ids).decode("utf-8", errors="replace")

    detok = Detokenizer(decode)
    pieces = [detok.push([b]) for b in data]
    assert "".join(pieces) + detok.flush() == text
    assert all("\ufffd" not in p for p in pieces)
    # a dangling partial character at the very end comes out on flush
    detok = Detokenizer(decode)
    pieces = [detok.push([b]) for b in data[:-1]]
    assert "".join(pieces) + detok.flush() == decode(list(data[:-1]))
