"""Inference backends: one `Engine` interface, several engines (layer 5 of DESIGN.md).

    engine = await load_engine("embed:minilm", data_dir)        # or generate:tiny, gguf:..., ...
    vectors = await engine.embed(["a sentence"])
    await engine.close()

Importing this package is cheap: torch, transformers, llama.cpp, vLLM and Ray are imported only
by the engines that need them. See ``docs/models.md``.
"""

from agora.models.base import (
    Engine,
    EngineInfo,
    GenerateRequest,
    GenerateResult,
    TokenChunk,
)
from agora.models.batcher import BatchedEngine, DynamicBatcher
from agora.models.errors import (
    ContextTooLong,
    EngineClosed,
    EngineUnavailable,
    InvalidRequest,
    InvalidSpec,
    ModelError,
    ModelNotFound,
    UnsupportedOperation,
)
from agora.models.naming import make_model_id, model_hash, parse_model_id
from agora.models.registry import SPEC_FORMS, load_engine, parse_spec
from agora.models.tiny import ensure_tiny_model

__all__ = [
    "SPEC_FORMS",
    "BatchedEngine",
    "ContextTooLong",
    "DynamicBatcher",
    "Engine",
    "EngineClosed",
    "EngineInfo",
    "EngineUnavailable",
    "GenerateRequest",
    "GenerateResult",
    "InvalidRequest",
    "InvalidSpec",
    "ModelError",
    "ModelNotFound",
    "TokenChunk",
    "UnsupportedOperation",
    "ensure_tiny_model",
    "load_engine",
    "make_model_id",
    "model_hash",
    "parse_model_id",
    "parse_spec",
]
