"""Continuous batching for the causal LM engine: requests join and leave the running batch
between decoding steps, as in Orca and vLLM.

Why: a static batch runs until its longest row ends, and a request that arrives meanwhile waits
for the whole batch. On CPU a decoding step of the tiny LM costs ~0.75 ms plus ~0.1 ms per row,
so a batch of 1 costs nearly as much per step as a batch of 30: a request that misses a batch by
a millisecond waits ~200 ms, and batches that start apart never merge (a miner's HTTP clients
come back one by one, after their answers are signed and sent). Here a request joins within
``JOIN_AFTER_STEPS`` steps (at once when the batch is idle or the newcomers are many), a row that
ends early frees its place, and its caller gets its answer at once.

How, all on the engine's model thread (`ModelWorker`):

- each step first admits waiting requests, up to ``max_rows`` active: one prefill of the new rows
  (left-padded, with a mask and explicit positions), whose KV cache is merged into the running
  one (both left-padded to the longer length; padding is masked, so it changes nothing but
  float noise, as within any left-padded batch);
- every active row picks its next token from its last logits (greedy, or its own seeded
  generator: `agora.models.causal_lm` describes the rule); finished rows leave, their callers
  get their results, and the cache drops their rows and any left columns no row needs;
- one forward pass feeds each remaining row its token; its last hidden states go to the rows'
  TOPLOC proof builders (`agora.verify.toploc`), as in a static batch.

A step is one job on the model thread and queues the next while rows remain, so other model
work (`score`, a validator's recompute) runs between two steps rather than after a whole batch.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from agora.models.base import Detokenizer, GenerateRequest, GenerateResult, TokenChunk
from agora.models.errors import EngineClosed
from agora.verify.toploc import ProofBuilder

if TYPE_CHECKING:
    from agora.models.causal_lm import CausalLMEngine

__all__ = ["ContinuousDecoder", "Row"]

#: hidden states of this many steps are copied to numpy at once (one copy, not one per step:
#: it matters for small models, whose step is ~1 ms)
PROOF_COPY_STEPS = 32
STEP_HISTORY = 10_000


#: Rows waiting to join a running batch wait at most this many steps, or until they are as
#: many as the running rows. Each join costs a prefill and a copy of the cache: joining at every
#: step made the tiny LM 11% slower (98 requests/s against 110 for 32 callers in process; 16
#: steps: 103), and a static batch makes a newcomer wait for the whole batch (64 steps here).
JOIN_AFTER_STEPS = 32


@dataclass(eq=False)
class Row:
    """One request in the decoder. ``deliver`` and ``emit`` are called on the model thread:
    ``deliver(result, error)`` once at the end, ``emit(chunk)`` per token for a stream."""

    request: GenerateRequest
    deliver: Callable[[GenerateResult | None, BaseException | None], None]
    emit: Callable[[TokenChunk], None] | None = None
    #: set from any thread when the caller has gone; the row leaves at the next step
    cancelled: threading.Event = field(default_factory=threading.Event)
    prompt: list[int] = field(default_factory=list)
    seed: int | None = None
    generator: Any = None
    tokens: list[int] = field(default_factory=list)
    proof: ProofBuilder | None = None
    text: Detokenizer | None = None

    @property
    def finished(self) -> bool:
        return len(self.tokens) >= self.request.max_tokens


class ContinuousDecoder:
    """The running batch of one `CausalLMEngine`. `add` from the event loop's thread; the steps
    run on the engine's model thread."""

    def __init__(self, engine: CausalLMEngine, max_rows: int) -> None:
        self.engine = engine
        self.max_rows = max_rows
        self._lock = threading.Lock()
        self._waiting: list[Row] = []
        self._scheduled = False
        self._closed = False
        self._held = 0  # steps run while rows were waiting to join
        self._job: concurrent.futures.Future[None] | None = None
        # state of the running batch (model thread only)
        self._rows: list[Row] = []
        self._cache: Any = None
        self._mask: Any = None  # [rows, columns] 1 where a column is a real token
        self._positions: Any = None  # [rows, 1] the position of each row's next token
        self._logits: Any = None  # [rows, vocab] each row's logits for its next token
        self._proof_steps: list[tuple[Any, list[Row]]] = []
        #: rows in each recent step, for tests and benchmarks (bounded: a miner runs for weeks)
        self.step_rows: collections.deque[int] = collections.deque(maxlen=STEP_HISTORY)

    # -- the event loop's side --------------------------------------------------------------

    def add(self, row: Row) -> None:
        """Queue ``row``; it joins the batch at the next step."""
        with self._lock:
            if self._closed:
                raise EngineClosed("the engine is closed")
            self._waiting.append(row)
            if self._scheduled:
                return
            self._scheduled = True
        self._schedule()

    def close(self) -> None:
        """Fail the rows still waiting with `EngineClosed`; the running rows finish (idempotent).

        Call it before closing the engine's worker, and `finish_after_worker_closed` after."""
        with self._lock:
            self._closed = True
            waiting, self._waiting = self._waiting, []
        for row in waiting:
            row.deliver(None, EngineClosed("the engine was closed before this request ran"))

    def finish_after_worker_closed(self) -> None:
        """If closing the worker dropped the next step, finish the running rows on a thread of
        their own (their callers are waiting for them)."""
        job = self._job
        if job is not None and job.cancelled():
            threading.Thread(target=self._run_until_done, name="agora-decoder-close").start()

    def _schedule(self) -> None:
        try:
            self._job = self.engine.worker.submit(self._step)
        except EngineClosed:
            threading.Thread(target=self._run_until_done, name="agora-decoder-close").start()

    # -- the model thread's side ------------------------------------------------------------

    def _step(self) -> None:
        self._one_step()
        with self._lock:
            if not (self._rows or self._waiting):
                self._scheduled = False
                return
        self._schedule()

    def _run_until_done(self) -> None:
        while self._rows:
            self._one_step()

    def _one_step(self) -> None:
        try:
            self._admit()
            self._pick()
            if self._rows:
                self._feed()
        except Exception as exc:  # the model failed: every row in the batch fails with it
            rows, self._rows = self._rows, []
            self._reset()
            for row in rows:
                row.deliver(None, exc)

    def _reset(self) -> None:
        self._cache = self._mask = self._positions = self._logits = None
        self._proof_steps = []

    def _admit(self) -> None:
        with self._lock:
            if not self._waiting:
                return
            # Joining costs a prefill and a copy of the cache: while a batch is running, let
            # new rows gather for up to JOIN_AFTER_STEPS steps, unless they are many already.
            self._held += 1
            few = len(self._waiting) < len(self._rows)
            if self._rows and self._held < JOIN_AFTER_STEPS and few:
                return
            self._held = 0
            room = self.max_rows - len(self._rows)
            new, self._waiting = self._waiting[:room], self._waiting[room:]
        admitted: list[Row] = []
        for row in new:
            if row.cancelled.is_set():
                continue
            try:
                self._prepare(row)
            except Exception as exc:  # this prompt only (too long, empty ...)
                row.deliver(None, exc)
                continue
            admitted.append(row)
        if admitted:
            try:
                self._prefill(admitted)
            except Exception as exc:  # these rows fail; the running batch goes on
                for row in admitted:
                    row.deliver(None, exc)

    def _prepare(self, row: Row) -> None:
        engine = self.engine
        row.prompt = engine.prompt_ids(row.request)
        row.seed = row.request.resolved_seed()
        if row.seed is not None:
            row.generator = engine.torch.Generator().manual_seed(row.seed)
        row.proof = ProofBuilder() if engine.build_proofs else None
        row.text = Detokenizer(engine.decode)

    def _prefill(self, rows: list[Row]) -> None:
        torch, engine = self.engine.torch, self.engine
        width = max(len(row.prompt) for row in rows)
        ids = torch.tensor(
            [[engine.pad_token_id] * (width - len(r.prompt)) + r.prompt for r in rows],
            dtype=torch.long,
        )
        mask = torch.tensor([[0] * (width - len(r.prompt)) + [1] * len(r.prompt) for r in rows])
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        proofs = engine.build_proofs
        with torch.inference_mode():
            out = engine.torch_model(
                input_ids=ids.to(engine.device),
                attention_mask=mask.to(engine.device),
                position_ids=positions.to(engine.device),
                use_cache=True,
                output_hidden_states=proofs,
            )
        if proofs:
            block = out.hidden_states[-1].detach().float().cpu().numpy()
            for row, hidden in zip(rows, block, strict=True):
                assert row.proof is not None
                row.proof.add_prefill(hidden[width - len(row.prompt) :])
        logits = out.logits[:, -1, :].float().cpu()
        self._join(rows, out.past_key_values, mask, positions[:, -1:] + 1, logits)

    def _join(self, rows: list[Row], cache: Any, mask: Any, positions: Any, logits: Any) -> None:
        """Merge a prefilled group into the running batch."""
        torch = self.engine.torch
        if not self._rows:
            self._rows, self._cache, self._mask = list(rows), cache, mask
            self._positions, self._logits = positions, logits
            return
        width = max(self._mask.shape[1], mask.shape[1])
        for running, joining in zip(self._cache.layers, cache.layers, strict=True):
            running.keys = torch.cat(
                [_pad_left(running.keys, width), _pad_left(joining.keys, width)]
            )
            running.values = torch.cat(
                [_pad_left(running.values, width), _pad_left(joining.values, width)]
            )
        self._mask = torch.cat([_pad_left(self._mask, width), _pad_left(mask, width)])
        self._positions = torch.cat([self._positions, positions])
        self._logits = torch.cat([self._logits, logits])
        self._rows.extend(rows)

    def _pick(self) -> None:
        """Every row's next token; finished and abandoned rows leave the batch."""
        from agora.models.causal_lm import pick_token

        torch, engine = self.engine.torch, self.engine
        keep: list[int] = []
        finished: list[Row] = []
        for i, row in enumerate(self._rows):
            if row.cancelled.is_set():
                continue
            token = pick_token(torch, self._logits[i], row.request.temperature, row.generator)
            row.tokens.append(token)
            done = token in engine.eos_token_ids or row.finished
            if row.emit is not None:
                row.emit(self._chunk(row, token, done))
            if done:
                finished.append(row)
            else:
                keep.append(i)
        self.step_rows.append(len(self._rows))
        if finished:
            self._copy_proof_steps()
            for row in finished:
                if row.emit is None:
                    row.deliver(self._result(row), None)
                else:
                    row.deliver(None, None)
        if len(keep) == len(self._rows):
            return
        if not keep:
            self._rows = []
            self._reset()
            return
        self._rows = [self._rows[i] for i in keep]
        index = torch.tensor(keep, dtype=torch.long)
        self._mask = self._mask[index]
        self._positions = self._positions[index]
        self._logits = self._logits[index]
        start = int(self._mask.any(dim=0).nonzero()[0])  # columns every row has as padding go
        self._mask = self._mask[:, start:]
        device_index = index.to(self.engine.device)
        for layer in self._cache.layers:
            layer.keys = layer.keys[device_index, :, start:]
            layer.values = layer.values[device_index, :, start:]

    def _feed(self) -> None:
        """One forward pass with each row's last token: the logits of the next step."""
        torch, engine = self.engine.torch, self.engine
        feed = torch.tensor([[row.tokens[-1]] for row in self._rows], dtype=torch.long)
        self._mask = torch.cat(
            [self._mask, torch.ones((len(self._rows), 1), dtype=self._mask.dtype)], dim=1
        )
        proofs = engine.build_proofs
        with torch.inference_mode():
            out = engine.torch_model(
                input_ids=feed.to(engine.device),
                attention_mask=self._mask.to(engine.device),
                position_ids=self._positions.to(engine.device),
                past_key_values=self._cache,
                use_cache=True,
                output_hidden_states=proofs,
            )
        self._cache = out.past_key_values
        self._logits = out.logits[:, -1, :].float().cpu()
        self._positions = self._positions + 1
        if proofs:
            self._proof_steps.append((out.hidden_states[-1][:, -1, :].detach(), list(self._rows)))
            if len(self._proof_steps) >= PROOF_COPY_STEPS:
                self._copy_proof_steps()

    def _copy_proof_steps(self) -> None:
        if not self._proof_steps:
            return
        torch = self.engine.torch
        block = torch.cat([hidden for hidden, _ in self._proof_steps]).float().cpu().numpy()
        at = 0
        for _, rows in self._proof_steps:
            for row in rows:
                assert row.proof is not None
                row.proof.add_step(block[at])
                at += 1
        self._proof_steps = []

    def _proof(self, row: Row) -> str | None:
        import base64

        if row.proof is None:
            return None
        return base64.b64encode(row.proof.finish(len(row.tokens))).decode("ascii")

    def _finish_reason(self, row: Row) -> Any:
        eos = row.tokens and row.tokens[-1] in self.engine.eos_token_ids
        return "stop" if eos else "length"

    def _result(self, row: Row) -> GenerateResult:
        assert row.text is not None
        text = "".join(row.text.push([token]) for token in row.tokens) + row.text.flush()
        return GenerateResult(
            token_ids=list(row.tokens),
            text=text,
            prompt_tokens=len(row.prompt),
            completion_tokens=len(row.tokens),
            finish_reason=self._finish_reason(row),
            seed=row.seed,
            model_id=self.engine.model_id,
            proof=self._proof(row),
        )

    def _chunk(self, row: Row, token: int, done: bool) -> TokenChunk:
        assert row.text is not None
        if done:
            self._copy_proof_steps()
        return TokenChunk(
            token_ids=[token],
            text=row.text.push([token]) + (row.text.flush() if done else ""),
            prompt_tokens=len(row.prompt),
            completion_tokens=len(row.tokens),
            finish_reason=self._finish_reason(row) if done else None,
            seed=row.seed,
            proof=self._proof(row) if done else None,
        )


def _pad_left(tensor: Any, width: int) -> Any:
    """``tensor`` with zero columns added on the left of its sequence axis, up to ``width``:
    axis -1 of a mask ``[rows, columns]``, axis -2 of keys and values ``[rows, heads, columns,
    dim]``."""
    import torch.nn.functional as functional

    missing = width - tensor.shape[-1 if tensor.dim() == 2 else -2]
    if missing <= 0:
        return tensor
    padding = (missing, 0) if tensor.dim() == 2 else (0, 0, missing, 0)
    return functional.pad(tensor, padding)


def deliver_to(
    loop: asyncio.AbstractEventLoop, future: asyncio.Future[Any]
) -> Callable[[Any, BaseException | None], None]:
    """A ``Row.deliver`` that resolves ``future`` on ``loop`` (from any thread)."""

    def resolve(result: Any, error: BaseException | None) -> None:
        if future.done():
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)

    def deliver(result: Any, error: BaseException | None) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is already closed
            loop.call_soon_threadsafe(resolve, result, error)

    return deliver
