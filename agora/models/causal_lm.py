"""A Hugging Face causal language model from a local directory, on CPU (or one GPU).

One decoding loop serves every path (single, batched, streamed), so they agree token for token:

- the prompt is encoded with the model's own tokenizer (special tokens included, e.g. BOS);
- prompts of a batch are left-padded, with an attention mask and explicit position ids, and
  decoded together with a KV cache;
- at each step, a greedy row takes the argmax (the lowest id on a tie); a sampling row draws
  ``u`` uniform in [0, 1) from ``torch.Generator().manual_seed(seed)`` (one draw per token, in
  float64) and takes the first token whose cumulative probability, softmax(logits /
  temperature) in float32, exceeds ``u`` times the total. Anyone with the model and the seed
  can replay it;
- a row stops at the model's end-of-sequence token (kept in ``token_ids``) or at
  ``max_tokens``.

Batched and unbatched greedy decoding give the same tokens unless two logits are within float
noise of each other (~1e-5 on CPU); `score` runs one full forward pass, so its logprobs match
those seen while decoding to about 1e-5, not bit for bit (see ``docs/models.md``).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

from agora.models.base import (
    Engine,
    GenerateRequest,
    GenerateResult,
    ModelWorker,
    TokenChunk,
    check_token_ids,
    offline_mode,
)
from agora.models.decoder import ContinuousDecoder, Row, deliver_to
from agora.models.errors import ContextTooLong, InvalidRequest, ModelNotFound
from agora.models.naming import make_model_id, model_hash

#: rows decoded together at most; more requests wait for a place (agora.models.decoder)
MAX_BATCH = 64


class CausalLMEngine(Engine):
    """Build with ``await CausalLMEngine.load(path)``.

    Raises `ModelNotFound` when ``path`` is not a loadable model directory.
    """

    engine_name = "transformers"
    continuous_batching = True
    task = "generate"

    def __init__(
        self, model: Any, tokenizer: Any, path: Path, digest: str, name: str, device: str
    ) -> None:
        import torch

        self._torch = torch
        self._model = model
        self._tokenizer = tokenizer
        self._device = device
        self.path = path
        self.model_hash = digest
        self.model_id = make_model_id("generate", name, digest)
        config = model.config
        self.vocab_size = int(config.vocab_size)
        self.context_length = int(
            getattr(config, "max_position_embeddings", None)
            or getattr(config, "n_positions", None)
            or tokenizer.model_max_length
        )
        # generation_config.json names every stop token (Llama 3 has several), config.json one
        eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
        if eos is None:
            eos = getattr(config, "eos_token_id", None)
        if eos is None:
            eos = tokenizer.eos_token_id
        self.eos_token_ids = frozenset(
            eos if isinstance(eos, list) else [eos] if eos is not None else []
        )
        pad = tokenizer.pad_token_id
        if pad is None:
            pad = min(self.eos_token_ids) if self.eos_token_ids else 0
        self.pad_token_id = int(pad)
        #: Build a TOPLOC activation proof for every completion (docs/verification.md).
        self.build_proofs = True
        self.worker = ModelWorker("causal-lm")
        self._decoder = ContinuousDecoder(self, max_rows=MAX_BATCH)

    @classmethod
    async def load(
        cls, path: Path | str, *, name: str | None = None, device: str = "cpu"
    ) -> CausalLMEngine:
        """Load the model at ``path`` (a directory with config, weights and tokenizer) on a
        background thread, in float32. ``name`` labels the model id (default: folder name)."""
        path = Path(path)
        return await asyncio.to_thread(cls._load_sync, path, name or path.name, device)

    @classmethod
    def _load_sync(cls, path: Path, name: str, device: str) -> CausalLMEngine:
        if not (path / "config.json").is_file():
            raise ModelNotFound(f"{path} is not a Hugging Face model directory (no config.json)")
        digest = model_hash(path)
        offline_mode()
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        model: Any
        try:
            tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
            model = AutoModelForCausalLM.from_pretrained(
                path, local_files_only=True, **_dtype_kwargs(torch.float32)
            )
        except (OSError, ValueError) as exc:
            raise ModelNotFound(f"cannot load a causal LM from {path}: {exc}") from exc
        model = model.to(device).eval()
        return cls(model, tokenizer, path, digest, name, device)

    # -- public API -------------------------------------------------------------------------

    async def count_tokens(self, text: str) -> int:
        if not isinstance(text, str):
            raise InvalidRequest("text must be a string")
        return len(await asyncio.to_thread(self._encode, text))

    async def generate_batch(self, requests: Sequence[GenerateRequest]) -> list[GenerateResult]:
        """Each request joins the running batch (`agora.models.decoder`); results in order."""
        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future[GenerateResult]] = []
        rows: list[Row] = []
        try:
            for request in requests:
                future: asyncio.Future[GenerateResult] = loop.create_future()
                row = Row(request, deliver_to(loop, future))
                self._decoder.add(row)
                futures.append(future)
                rows.append(row)
            return list(await asyncio.gather(*futures))
        finally:
            for row in rows:  # a caller that went away frees its place in the batch
                row.cancelled.set()

    async def stream(
        self,
        prompt: str,
        max_tokens: int = 64,
        temperature: float = 0.0,
        seed: int | None = None,
    ) -> AsyncIterator[TokenChunk]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[TokenChunk | None, BaseException | None]] = asyncio.Queue()

        def put(chunk: TokenChunk | None, error: BaseException | None) -> None:
            with contextlib.suppress(RuntimeError):  # the loop is already closed
                loop.call_soon_threadsafe(queue.put_nowait, (chunk, error))

        row = Row(
            GenerateRequest(prompt, max_tokens, temperature, seed),
            deliver=lambda _result, error: put(None, error),
            emit=lambda chunk: put(chunk, None),
        )
        self._decoder.add(row)
        try:
            while True:
                chunk, error = await queue.get()
                if error is not None:
                    raise error
                if chunk is None:
                    return
                yield chunk
        finally:
            row.cancelled.set()

    async def score(self, prompt: str, continuation_token_ids: Sequence[int]) -> list[float]:
        if not isinstance(prompt, str):
            raise InvalidRequest("prompt must be a string")
        continuation = check_token_ids(continuation_token_ids, self.vocab_size)
        return await self.worker.run(self._score_sync, prompt, continuation)

    async def close(self) -> None:
        """Requests still waiting fail with EngineClosed; the ones being decoded finish."""
        self._decoder.close()
        self.worker.close()
        self._decoder.finish_after_worker_closed()

    # -- on the worker thread ---------------------------------------------------------------

    def _encode(self, text: str) -> list[int]:
        return list(self._tokenizer.encode(text, add_special_tokens=True))

    @property
    def torch_model(self) -> Any:
        """The loaded Hugging Face model (validators recompute activations with it)."""
        return self._model

    @property
    def device(self) -> str:
        return self._device

    async def run_in_worker(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """Run ``fn`` on the engine's model thread, after what is queued there (a validator's
        activation recompute), so that calls into the model stay serialised."""
        return await self.worker.run(fn, *args, **kwargs)

    def encode_prompt(self, text: str) -> list[int]:
        """The prompt's token ids as generation sees them (special tokens included)."""
        return self._encode(text)

    def _decode(self, ids: list[int]) -> str:
        return str(self._tokenizer.decode(ids, skip_special_tokens=True))

    @property
    def torch(self) -> Any:
        return self._torch

    def decode(self, ids: list[int]) -> str:
        return self._decode(ids)

    def prompt_ids(self, request: GenerateRequest) -> list[int]:
        ids = self._encode(request.prompt)
        if not ids:
            raise InvalidRequest("the prompt encodes to no tokens; give a non-empty prompt")
        if len(ids) + request.max_tokens > self.context_length:
            raise ContextTooLong(
                f"prompt ({len(ids)} tokens) plus max_tokens ({request.max_tokens}) exceeds "
                f"the context length of {self.context_length}"
            )
        return ids

    def _score_sync(self, prompt: str, continuation: list[int]) -> list[float]:
        torch = self._torch
        prompt_ids = self._encode(prompt)
        if not prompt_ids:
            raise InvalidRequest("the prompt encodes to no tokens; give a non-empty prompt")
        if not continuation:
            return []
        ids = prompt_ids + continuation
        if len(ids) > self.context_length:
            raise ContextTooLong(
                f"prompt plus continuation ({len(ids)} tokens) exceeds the context length of "
                f"{self.context_length}"
            )
        with torch.inference_mode():
            logits = self._model(input_ids=torch.tensor([ids], device=self._device)).logits[0]
            logprobs = torch.log_softmax(logits.float(), dim=-1).cpu()
        start = len(prompt_ids) - 1
        rows = torch.arange(start, start + len(continuation))
        picked = logprobs[rows, torch.tensor(continuation)]
        return [float(x) for x in picked]


def pick_token(torch: Any, logits: Any, temperature: float, generator: Any) -> int:
    if generator is None:
        return int(torch.argmax(logits))
    probs = torch.softmax(logits / temperature, dim=-1)
    cdf = torch.cumsum(probs.double(), dim=0)
    u = torch.rand((), generator=generator, dtype=torch.float64)
    index = int(torch.searchsorted(cdf, u * cdf[-1], right=True))
    return min(index, int(logits.shape[0]) - 1)


def _dtype_kwargs(dtype: Any) -> dict[str, Any]:
    """transformers >= 4.56 calls it ``dtype``; older versions ``torch_dtype``."""
    import transformers

    major, minor = (int(x) for x in transformers.__version__.split(".")[:2])
    return {"dtype": dtype} if (major, minor) >= (4, 56) else {"torch_dtype": dtype}
