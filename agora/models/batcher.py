"""Dynamic batching: many concurrent requests, one model call.

`DynamicBatcher` collects items submitted by concurrent callers until the first of them has
waited ``max_wait_ms`` (or until ``max_batch_size`` worth of them are waiting), runs one batched
call, and resolves each caller's future with its own result. The window counts from the first
request's arrival, as Triton's queue delay does: requests that queued up while a batch was
running go to the engine the moment it ends, before the finished batch's answers are signed and
sent. Counting it from when the batcher took them instead left the engine idle 13-40 ms
between batches while the miner's event loop sent answers (the window's timer waits behind
that work), and the miner gave 70-72% of in-process throughput for 32 embedding clients; from
arrival it gave 88-91%, with 1 ms between batches (``bench/bench_miner.py``, same machine,
quiet). Engines that batch continuously (``Engine.continuous_batching``: the transformers
engine, vLLM) get their generation requests directly.

`BatchedEngine` puts one batcher in front of an engine's `embed` and another in front of its
`generate`, and is itself an `Engine`; the miner serves through it. Answers are the ones the
engine gives unbatched: token for token for greedy and seeded generation (each request keeps
its own seed), and within float noise (~1e-6, see `agora.models.embeddings`) for embeddings.

Failure isolation: if a batch fails with `InvalidRequest` (one caller's prompt is too long, say),
each of its items is rerun alone, so only the bad request fails. Any other error fails every
request of that batch. A caller that is cancelled while waiting is dropped from its batch.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, Generic, TypeVar

from agora.models.base import Engine, GenerateRequest, GenerateResult, TokenChunk, check_texts
from agora.models.errors import EngineClosed, InvalidRequest, ModelError

T = TypeVar("T")
R = TypeVar("R")
#: a queued request: the item, its caller's future, and when it was queued (the loop's clock)
_Entry = tuple[T, asyncio.Future[R], float]


class DynamicBatcher(Generic[T, R]):
    """Batch concurrent `submit` calls into calls of ``run_batch(items) -> results``.

    ``weight(item)`` is how much of ``max_batch_size`` an item uses (1 by default; the number
    of texts for embedding requests). An item heavier than the limit runs in a batch of its own.
    """

    def __init__(
        self,
        run_batch: Callable[[list[T]], Awaitable[list[R]]],
        *,
        max_batch_size: int = 16,
        max_wait_ms: float = 5.0,
        weight: Callable[[T], int] | None = None,
    ) -> None:
        if max_batch_size < 1:
            raise ValueError("max_batch_size must be at least 1")
        if max_wait_ms < 0:
            raise ValueError("max_wait_ms must not be negative")
        self._run_batch = run_batch
        self.max_batch_size = max_batch_size
        self.max_wait = max_wait_ms / 1000.0
        self._weight = weight or (lambda _item: 1)
        # entries are (item, its caller's future, when it was queued on the loop's clock)
        self._queue: asyncio.Queue[_Entry[T, R]] = asyncio.Queue()
        self._carry: _Entry[T, R] | None = None
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        #: sizes of the batches run so far, for tests and benchmarks
        self.batch_sizes: list[int] = []

    async def submit(self, item: T) -> R:
        """Queue ``item`` and wait for its result. Raises what the batch call raised, or
        `EngineClosed` if the batcher is closed before the item ran."""
        if self._closed:
            raise EngineClosed("the batcher is closed")
        loop = asyncio.get_running_loop()
        if self._task is None or self._task.done():
            self._task = loop.create_task(self._loop(), name="agora-batcher")
        future: asyncio.Future[R] = loop.create_future()
        self._queue.put_nowait((item, future, loop.time()))
        return await future

    async def aclose(self) -> None:
        """Stop the batcher; requests still waiting fail with `EngineClosed`. Idempotent."""
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        pending = [self._carry] if self._carry else []
        self._carry = None
        while not self._queue.empty():
            pending.append(self._queue.get_nowait())
        for _item, future, _queued in pending:
            if not future.done():
                future.set_exception(EngineClosed("the batcher was closed"))

    async def _next(self, timeout: float | None) -> _Entry[T, R] | None:
        if self._carry is not None:
            entry, self._carry = self._carry, None
            return entry
        if timeout is None:
            return await self._queue.get()
        if not self._queue.empty():
            return self._queue.get_nowait()
        if timeout <= 0:
            return None
        try:
            return await asyncio.wait_for(self._queue.get(), timeout)
        except TimeoutError:
            return None

    async def _collect(self) -> list[tuple[T, asyncio.Future[R]]]:
        loop = asyncio.get_running_loop()
        first = await self._next(None)
        assert first is not None
        batch = [first[:2]]
        size = self._weight(first[0])
        deadline = first[2] + self.max_wait
        while size < self.max_batch_size:
            entry = await self._next(deadline - loop.time())
            if entry is None:
                break
            weight = self._weight(entry[0])
            if size + weight > self.max_batch_size:
                self._carry = entry
                break
            batch.append(entry[:2])
            size += weight
        return batch

    async def _loop(self) -> None:
        while True:
            batch = [(item, fut) for item, fut in await self._collect() if not fut.done()]
            if batch:
                self.batch_sizes.append(len(batch))
                await self._run(batch)

    async def _run(self, batch: list[tuple[T, asyncio.Future[R]]]) -> None:
        try:
            results = await self._run_batch([item for item, _ in batch])
            if len(results) != len(batch):
                raise ModelError(f"a batch of {len(batch)} returned {len(results)} results")
        except InvalidRequest as exc:
            if len(batch) == 1:
                _fail(batch[0][1], exc)
            else:
                for entry in batch:  # find the bad one(s); the others still get answers
                    await self._run([entry])
        except asyncio.CancelledError:
            for _, future in batch:
                _fail(future, EngineClosed("the batcher was closed"))
            raise
        except Exception as exc:
            for _, future in batch:
                _fail(future, exc)
        else:
            for (_, future), result in zip(batch, results, strict=True):
                if not future.done():
                    future.set_result(result)


def _fail(future: asyncio.Future[Any], exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)


class BatchedEngine(Engine):
    """An engine whose `embed` and `generate` calls from concurrent callers are batched:
    up to ``max_batch_size`` generation requests, or ``max_embed_texts`` texts, per call.

    `stream`, `score` and `count_tokens` go straight to the wrapped engine. Closing it closes the
    wrapped engine too.
    """

    def __init__(
        self,
        engine: Engine,
        *,
        max_batch_size: int = 16,
        max_embed_texts: int = 64,
        max_wait_ms: float = 5.0,
    ) -> None:
        self.engine = engine
        self.model_id = engine.model_id
        self.model_hash = engine.model_hash
        self.task = engine.task
        self.context_length = engine.context_length
        self.engine_name = engine.engine_name
        self.continuous_batching = engine.continuous_batching
        self.dimension = getattr(engine, "dimension", None)
        self.embed_batcher: DynamicBatcher[list[str], list[list[float]]] = DynamicBatcher(
            self._embed_many, max_batch_size=max_embed_texts, max_wait_ms=max_wait_ms, weight=len
        )
        self.generate_batcher: DynamicBatcher[GenerateRequest, GenerateResult] = DynamicBatcher(
            engine.generate_batch, max_batch_size=max_batch_size, max_wait_ms=max_wait_ms
        )

    async def _embed_many(self, requests: list[list[str]]) -> list[list[list[float]]]:
        flat = [text for texts in requests for text in texts]
        vectors = await self.engine.embed(flat)
        out: list[list[list[float]]] = []
        start = 0
        for texts in requests:
            out.append(vectors[start : start + len(texts)])
            start += len(texts)
        return out

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        if self.task != "embed":
            return await self.engine.embed(texts)  # raises UnsupportedOperation
        return await self.embed_batcher.submit(check_texts(texts))

    async def generate(
        self,
        prompt: str,
        max_tokens: int = 64,
        temperature: float = 0.0,
        seed: int | None = None,
    ) -> GenerateResult:
        request = GenerateRequest(prompt, max_tokens, temperature, seed)
        if self.task != "generate" or self.engine.continuous_batching:
            return await self.engine.generate(prompt, max_tokens, temperature, seed)
        return await self.generate_batcher.submit(request)

    async def generate_batch(self, requests: Sequence[GenerateRequest]) -> list[GenerateResult]:
        if self.task != "generate" or self.engine.continuous_batching:
            return await self.engine.generate_batch(requests)
        return list(await asyncio.gather(*(self.generate_batcher.submit(r) for r in requests)))

    async def stream(
        self,
        prompt: str,
        max_tokens: int = 64,
        temperature: float = 0.0,
        seed: int | None = None,
    ) -> AsyncIterator[TokenChunk]:
        async for chunk in self.engine.stream(prompt, max_tokens, temperature, seed):
            yield chunk

    async def score(self, prompt: str, continuation_token_ids: Sequence[int]) -> list[float]:
        return await self.engine.score(prompt, continuation_token_ids)

    async def classify(self, features: Sequence[float]) -> dict[str, Any]:
        return await self.engine.classify(features)

    async def count_tokens(self, text: str) -> int:
        return await self.engine.count_tokens(text)

    async def close(self) -> None:
        await self.embed_batcher.aclose()
        await self.generate_batcher.aclose()
        await self.engine.close()
