"""Hugging Face models on a GPU with vLLM (``pip install vllm``; needs CUDA).

`VLLMEngine.load(path)` starts vLLM's asynchronous engine (``AsyncLLMEngine.from_engine_args``,
documented in vLLM's "AsyncLLMEngine" page) on a local model folder. vLLM batches concurrent
requests itself (continuous batching), so `generate_batch` just submits every request at once.

Prompts are encoded with the model's own Hugging Face tokenizer and passed as token ids
(``TokensPrompt``), so ``prompt_tokens`` and `score` positions agree with the transformers
engine. Greedy requests use ``temperature=0``; sampled ones pass the request's seed in
``SamplingParams(seed=...)`` (vLLM's per-request generator), with top-k and top-p left off.
`score` asks for ``prompt_logprobs=0``: the logprob of each prompt token, which for a prompt
followed by a continuation are exactly the continuation's logprobs.

Everything here is imported lazily; without vLLM or without a CUDA device, `load` raises
`EngineUnavailable` and says which.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

from agora.models.base import (
    Engine,
    GenerateRequest,
    GenerateResult,
    TokenChunk,
    check_token_ids,
    offline_mode,
)
from agora.models.errors import (
    ContextTooLong,
    EngineClosed,
    EngineUnavailable,
    InvalidRequest,
    ModelNotFound,
)
from agora.models.naming import make_model_id, model_hash


def import_vllm() -> Any:
    """The ``vllm`` module, if it is installed and a CUDA GPU is visible.

    Raises `EngineUnavailable` otherwise.
    """
    try:
        import torch
    except ImportError as exc:  # pragma: no cover  (a declared dependency)
        raise EngineUnavailable("vLLM needs torch: pip install torch") from exc
    if not torch.cuda.is_available():
        raise EngineUnavailable(
            "vLLM needs a CUDA GPU and this machine has none; serve with generate:<path> "
            "(transformers, CPU) or gguf:<file> (llama.cpp) instead"
        )
    try:
        import vllm
    except ImportError as exc:
        raise EngineUnavailable("vLLM is not installed: pip install vllm (needs CUDA)") from exc
    return vllm


class VLLMEngine(Engine):
    """Build with ``await VLLMEngine.load("/path/to/hf-model")``."""

    engine_name = "vllm"
    continuous_batching = True
    task = "generate"

    def __init__(self, engine: Any, tokenizer: Any, path: Path, digest: str, name: str) -> None:
        self._engine = engine
        self._tokenizer = tokenizer
        self.path = path
        self.model_hash = digest
        self.model_id = make_model_id("generate", name, digest)
        self.vocab_size = len(tokenizer)
        self._closed = False

    @classmethod
    async def load(
        cls,
        path: Path | str,
        *,
        name: str | None = None,
        max_model_len: int | None = None,
        gpu_memory_utilization: float = 0.9,
        tensor_parallel_size: int = 1,
    ) -> VLLMEngine:
        """Start vLLM on the model folder ``path``.

        Raises `EngineUnavailable` (no vLLM, no GPU) or `ModelNotFound`.
        """
        path = Path(path)
        vllm = import_vllm()
        if not (path / "config.json").is_file():
            raise ModelNotFound(f"{path} is not a Hugging Face model directory (no config.json)")
        digest = await asyncio.to_thread(model_hash, path)
        offline_mode()
        from transformers import AutoTokenizer
        from vllm.engine.arg_utils import AsyncEngineArgs

        tokenizer = await asyncio.to_thread(
            AutoTokenizer.from_pretrained, path, local_files_only=True
        )
        args = AsyncEngineArgs(
            model=str(path),
            tokenizer=str(path),
            max_model_len=max_model_len,
            gpu_memory_utilization=gpu_memory_utilization,
            tensor_parallel_size=tensor_parallel_size,
            seed=0,
        )
        engine = await asyncio.to_thread(vllm.AsyncLLMEngine.from_engine_args, args)
        loaded = cls(engine, tokenizer, path, digest, name or path.name)
        config = await loaded._model_config()
        loaded.context_length = int(config.max_model_len)
        return loaded

    async def _model_config(self) -> Any:
        get = self._engine.get_model_config
        config = get()
        return await config if asyncio.iscoroutine(config) else config

    # -- helpers ----------------------------------------------------------------------------

    def _prompt(self, prompt: str, extra: int) -> tuple[Any, list[int]]:
        from vllm.inputs import TokensPrompt

        if self._closed:
            raise EngineClosed("the vLLM engine is closed")
        ids = list(self._tokenizer.encode(prompt, add_special_tokens=True))
        if not ids:
            raise InvalidRequest("the prompt encodes to no tokens; give a non-empty prompt")
        if len(ids) + extra > self.context_length:
            raise ContextTooLong(
                f"prompt ({len(ids)} tokens) plus {extra} more exceeds the context length of "
                f"{self.context_length}"
            )
        return TokensPrompt(prompt_token_ids=ids), ids

    def _params(self, request: GenerateRequest, seed: int | None, kind: str) -> Any:
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        return SamplingParams(
            n=1,
            temperature=request.temperature,
            seed=seed,
            max_tokens=request.max_tokens,
            skip_special_tokens=True,
            output_kind=getattr(RequestOutputKind, kind),
        )

    # -- public API -------------------------------------------------------------------------

    async def count_tokens(self, text: str) -> int:
        if not isinstance(text, str):
            raise InvalidRequest("text must be a string")
        return len(await asyncio.to_thread(self._tokenizer.encode, text, add_special_tokens=True))

    async def generate_batch(self, requests: Sequence[GenerateRequest]) -> list[GenerateResult]:
        return list(await asyncio.gather(*(self._generate_one(r) for r in requests)))

    async def _generate_one(self, request: GenerateRequest) -> GenerateResult:
        prompt, ids = self._prompt(request.prompt, request.max_tokens)
        seed = request.resolved_seed()
        final = None
        async for output in self._engine.generate(
            prompt, self._params(request, seed, "FINAL_ONLY"), str(uuid.uuid4())
        ):
            final = output
        assert final is not None
        completion = final.outputs[0]
        tokens = [int(t) for t in completion.token_ids]
        return GenerateResult(
            token_ids=tokens,
            text=completion.text,
            prompt_tokens=len(ids),
            completion_tokens=len(tokens),
            finish_reason="stop" if completion.finish_reason == "stop" else "length",
            seed=seed,
            model_id=self.model_id,
        )

    async def stream(
        self,
        prompt: str,
        max_tokens: int = 64,
        temperature: float = 0.0,
        seed: int | None = None,
    ) -> AsyncIterator[TokenChunk]:
        request = GenerateRequest(prompt, max_tokens, temperature, seed)
        tokens_prompt, ids = self._prompt(request.prompt, request.max_tokens)
        used_seed = request.resolved_seed()
        count = 0
        async for output in self._engine.generate(
            tokens_prompt, self._params(request, used_seed, "DELTA"), str(uuid.uuid4())
        ):
            completion = output.outputs[0]
            count += len(completion.token_ids)
            finished = completion.finish_reason is not None
            yield TokenChunk(
                token_ids=[int(t) for t in completion.token_ids],
                text=completion.text,
                prompt_tokens=len(ids),
                completion_tokens=count,
                finish_reason=(
                    ("stop" if completion.finish_reason == "stop" else "length")
                    if finished
                    else None
                ),
                seed=used_seed,
            )

    async def score(self, prompt: str, continuation_token_ids: Sequence[int]) -> list[float]:
        from vllm import SamplingParams

        if not isinstance(prompt, str):
            raise InvalidRequest("prompt must be a string")
        continuation = check_token_ids(continuation_token_ids, self.vocab_size)
        if not continuation:
            return []
        _, ids = self._prompt(prompt, len(continuation))
        from vllm.inputs import TokensPrompt

        params = SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=0)
        final = None
        async for output in self._engine.generate(
            TokensPrompt(prompt_token_ids=ids + continuation), params, str(uuid.uuid4())
        ):
            final = output
        assert final is not None and final.prompt_logprobs is not None
        start = len(ids)
        return [
            float(final.prompt_logprobs[start + i][token].logprob)
            for i, token in enumerate(continuation)
        ]

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        shutdown = getattr(self._engine, "shutdown", None)
        if callable(shutdown):
            await asyncio.to_thread(shutdown)
