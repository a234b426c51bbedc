"""The miner's engine in a child process of its own, so HTTP work and model work never queue
for the same GIL.

A CPU model's decoding loop runs a lot of Python between its tensor operations (the tiny LM
almost nothing else). In the process that also parses, verifies and signs requests, that loop
and the event loop take turns on one interpreter lock, and under load each waits for the other
(up to the 5 ms switch interval at a time): throughput falls by half or worse. Inference
servers split the two for this reason (vLLM's engine core runs in its own process); so does the
miner:

    miner process                                  engine process (this module's ``main``)
    uvicorn, guard, receipts                       load_engine(...) or the --cheat impostor
    BatchedEngine(ProcessEngine)  ── socketpair ──  one call per batch, streams chunk by chunk

The parent keeps batching (one message per batch, token counts of many requests in one
message too); the child runs each call on its engine as it arrives. Messages are length-prefixed
pickles over a Unix socket pair that only these two processes hold: the child is trusted code
this process started, never a peer on the network.

The child ignores SIGINT and SIGTERM (a Ctrl-C reaches the whole process group): it stops when
the parent says so, after the calls in flight, or when the parent's end of the socket closes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import pickle
import signal
import socket
import struct
import sys
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agora.models.base import Engine, GenerateRequest, GenerateResult, TokenChunk
from agora.models.batcher import DynamicBatcher
from agora.models.errors import EngineClosed, ModelError

__all__ = ["EngineSpec", "ProcessEngine", "load_raw_engine", "main"]

log = logging.getLogger(__name__)

_HEADER = struct.Struct("!I")
_READY, _OK, _ERROR, _CHUNK, _END = "ready", "ok", "error", "chunk", "end"
_CLOSE = "close"


@dataclass(frozen=True)
class EngineSpec:
    """What to load: ``model`` (a ``load_engine`` spec), under ``data_dir``, maybe through Ray,
    maybe a ``--cheat`` impostor, with ``threads`` torch threads (None: torch's default less
    one, at least one, leaving a core to the HTTP side)."""

    model: str
    data_dir: str
    cheat: str | None = None
    ray: str | None = None
    threads: int | None = None


async def load_raw_engine(spec: EngineSpec) -> Engine:
    """The engine a spec names, in this process (no batching).

    Raises ModelError subclasses and MinerConfigError (a cheat mode that does not apply).
    """
    if spec.ray is None:
        import torch

        # A model that takes every core starves the HTTP side, and torch's threads spin on
        # each other when another process holds a core: leave one core free by default.
        torch.set_num_threads(spec.threads or max(1, torch.get_num_threads() - 1))
    if spec.cheat is not None:
        from agora.miner.adversary import load_cheat_engine

        return await load_cheat_engine(spec.cheat, spec.model, spec.data_dir, ray=spec.ray)
    from agora.models.registry import load_engine

    return await load_engine(spec.model, spec.data_dir, ray=spec.ray)


def _frame(message: Any) -> bytes:
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return _HEADER.pack(len(data)) + data


async def _read(reader: asyncio.StreamReader) -> Any:
    """The next message, or None at the end of the stream."""
    try:
        (size,) = _HEADER.unpack(await reader.readexactly(_HEADER.size))
        return pickle.loads(await reader.readexactly(size))
    except (asyncio.IncompleteReadError, ConnectionError):
        return None


def _portable(error: BaseException) -> BaseException:
    """``error`` if it survives pickling, else a ModelError with its text."""
    try:
        pickle.loads(pickle.dumps(error))
    except Exception:
        return ModelError(f"{type(error).__name__}: {error}")
    return error


# -- the parent's side ---------------------------------------------------------------------------


class ProcessEngine(Engine):
    """An :class:`Engine` whose model runs in a child process. Start it with :meth:`start`."""

    engine_name = "process"

    def __init__(
        self,
        process: asyncio.subprocess.Process,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        info: dict[str, Any],
    ) -> None:
        self._process = process
        self._reader = reader
        self._writer = writer
        self.model_id = info["model_id"]
        self.model_hash = info["model_hash"]
        self.task = info["task"]
        self.context_length = info["context_length"]
        self.engine_name = f"{info['engine']} (engine process {process.pid})"
        self.dimension = info["dimension"]
        self.continuous_batching = info["continuous_batching"]
        self._next_id = 0
        self._calls: dict[int, asyncio.Future[Any]] = {}
        self._streams: dict[int, asyncio.Queue[tuple[str, Any]]] = {}
        self._closed = False
        self._failure: BaseException | None = None
        self._reading: asyncio.Task[None] | None = None
        #: called once if the child exits while this engine is open (the miner stops then)
        self.on_failure: Callable[[BaseException], None] | None = None
        #: token counts of concurrent requests travel in one message
        self.counter: DynamicBatcher[str, int] = DynamicBatcher(
            self._count_many, max_batch_size=1024, max_wait_ms=0
        )

    @property
    def pid(self) -> int:
        return self._process.pid

    @classmethod
    async def start(cls, spec: EngineSpec, *, timeout: float = 600.0) -> ProcessEngine:
        """Start the engine process and wait until its model is loaded.

        Raises what loading raised in the child (InvalidSpec, ModelNotFound, MinerConfigError
        ...), or EngineClosed if the child died without saying why.
        """
        parent, child = socket.socketpair()
        try:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "agora.miner.engine_host",
                "--fd",
                str(child.fileno()),
                "--spec",
                json.dumps(spec.__dict__),
                pass_fds=(child.fileno(),),
            )
        finally:
            child.close()
        reader, writer = await asyncio.open_unix_connection(sock=parent)
        try:
            message = await asyncio.wait_for(_read(reader), timeout)
        except BaseException:
            process.kill()
            writer.close()
            await process.wait()
            raise
        if message is None or message[1] != _READY:
            writer.close()
            code = await process.wait()
            if message is not None and message[1] == _ERROR:
                raise message[2]
            raise EngineClosed(f"the engine process exited with code {code} while loading")
        engine = cls(process, reader, writer, message[2])
        engine._reading = asyncio.create_task(engine._read_loop(), name="agora-engine-reader")
        return engine

    async def _read_loop(self) -> None:
        while (message := await _read(self._reader)) is not None:
            call_id, kind, payload = message
            if call_id in self._streams:
                self._streams[call_id].put_nowait((kind, payload))
                continue
            future = self._calls.pop(call_id, None)
            if future is None or future.done():
                continue
            if kind == _ERROR:
                future.set_exception(payload)
            else:
                future.set_result(payload)
        code = await self._process.wait()
        error = EngineClosed(f"the engine process exited (code {code})")
        self._fail(error)
        if not self._closed:
            log.error("the engine process exited unexpectedly (code %s)", code)
            if self.on_failure is not None:
                self.on_failure(error)

    def _fail(self, error: BaseException) -> None:
        self._failure = error
        for future in self._calls.values():
            if not future.done():
                future.set_exception(error)
        self._calls.clear()
        for queue in self._streams.values():
            queue.put_nowait((_ERROR, error))

    def _send(self, method: str, args: tuple[Any, ...]) -> int:
        if self._failure is not None:
            raise EngineClosed(str(self._failure))
        if self._closed:
            raise EngineClosed("the engine is closed")
        self._next_id += 1
        self._writer.write(_frame((self._next_id, method, args)))
        return self._next_id

    async def _call(self, method: str, *args: Any) -> Any:
        call_id = self._send(method, args)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._calls[call_id] = future
        return await future

    async def _count_many(self, texts: list[str]) -> list[int]:
        result: list[int] = await self._call("count_tokens_many", texts)
        return result

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        result: list[list[float]] = await self._call("embed", list(texts))
        return result

    async def generate(
        self,
        prompt: str,
        max_tokens: int = 64,
        temperature: float = 0.0,
        seed: int | None = None,
    ) -> GenerateResult:
        """One request, one message: an engine that batches continuously answers each as soon
        as it is done, instead of with the slowest of a batch."""
        request = GenerateRequest(prompt, max_tokens, temperature, seed)
        result: GenerateResult = await self._call("generate", request)
        return result

    async def generate_batch(self, requests: Sequence[GenerateRequest]) -> list[GenerateResult]:
        result: list[GenerateResult] = await self._call("generate_batch", list(requests))
        return result

    async def stream(
        self,
        prompt: str,
        max_tokens: int = 64,
        temperature: float = 0.0,
        seed: int | None = None,
    ) -> AsyncIterator[TokenChunk]:
        queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        call_id = self._send("stream", (prompt, max_tokens, temperature, seed))
        self._streams[call_id] = queue
        finished = False
        try:
            while True:
                kind, payload = await queue.get()
                if kind == _CHUNK:
                    yield payload
                elif kind == _END:
                    finished = True
                    return
                else:
                    finished = True
                    raise payload
        finally:
            self._streams.pop(call_id, None)
            if not finished and self._failure is None and not self._closed:
                with contextlib.suppress(Exception):  # the consumer left: stop the child's loop
                    self._send("cancel", (call_id,))

    async def score(self, prompt: str, continuation_token_ids: Sequence[int]) -> list[float]:
        result: list[float] = await self._call("score", prompt, list(continuation_token_ids))
        return result

    async def classify(self, features: Sequence[float]) -> dict[str, Any]:
        result: dict[str, Any] = await self._call("classify", list(features))
        return result

    async def count_tokens(self, text: str) -> int:
        return await self.counter.submit(text)

    async def close(self, timeout: float = 30.0) -> None:
        """Ask the child to finish its calls and exit; kill it if it does not in time."""
        if self._closed:
            return
        await self.counter.aclose()
        with contextlib.suppress(Exception):
            self._send(_CLOSE, ())
            await self._writer.drain()
        self._closed = True
        try:
            await asyncio.wait_for(self._process.wait(), timeout)
        except TimeoutError:
            self._process.kill()
            await self._process.wait()
        self._writer.close()
        if self._reading is not None:
            with contextlib.suppress(Exception):
                await self._reading


# -- the child's side ----------------------------------------------------------------------------


class _Host:
    """Runs the calls that arrive on the socket against one engine."""

    def __init__(self, engine: Engine, writer: asyncio.StreamWriter) -> None:
        self.engine = engine
        self.writer = writer
        self.tasks: dict[int, asyncio.Task[None]] = {}

    def send(self, call_id: int, kind: str, payload: Any) -> None:
        self.writer.write(_frame((call_id, kind, payload)))

    async def run(self, call_id: int, method: str, args: tuple[Any, ...]) -> None:
        engine = self.engine
        try:
            if method == "stream":
                async for chunk in engine.stream(*args):
                    self.send(call_id, _CHUNK, chunk)
                self.send(call_id, _END, None)
                return
            if method == "count_tokens_many":
                result: Any = list(await asyncio.gather(*(engine.count_tokens(t) for t in args[0])))
            elif method == "generate":
                request = args[0]
                result = await engine.generate(
                    request.prompt, request.max_tokens, request.temperature, request.seed
                )
            elif method in ("embed", "generate_batch", "score", "classify"):
                result = await getattr(engine, method)(*args)
            else:
                raise ModelError(f"the engine process does not know {method!r}")
            self.send(call_id, _OK, result)
        except asyncio.CancelledError:
            self.send(call_id, _END, None)
        except Exception as error:
            self.send(call_id, _ERROR, _portable(error))
        finally:
            self.tasks.pop(call_id, None)

    async def serve(self, reader: asyncio.StreamReader) -> None:
        while (message := await _read(reader)) is not None:
            call_id, method, args = message
            if method == _CLOSE:
                break
            if method == "cancel":
                task = self.tasks.get(args[0])
                if task is not None:
                    task.cancel()
                continue
            self.tasks[call_id] = asyncio.create_task(self.run(call_id, method, args))
        if self.tasks:  # the calls in flight finish first (the miner is draining)
            await asyncio.wait(list(self.tasks.values()))
        await self.writer.drain()


async def _child(fd: int, spec: EngineSpec) -> int:
    sock = socket.socket(fileno=fd)
    reader, writer = await asyncio.open_unix_connection(sock=sock)
    try:
        engine = await load_raw_engine(spec)
    except Exception as error:
        writer.write(_frame((0, _ERROR, _portable(error))))
        await writer.drain()
        writer.close()
        return 1
    info = {
        "model_id": engine.model_id,
        "model_hash": engine.model_hash,
        "task": engine.task,
        "context_length": engine.context_length,
        "engine": engine.engine_name,
        "dimension": getattr(engine, "dimension", None),
        "continuous_batching": engine.continuous_batching,
    }
    writer.write(_frame((0, _READY, info)))
    try:
        await _Host(engine, writer).serve(reader)
    finally:
        await engine.close()
        writer.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    """The child: ``python -m agora.miner.engine_host --fd N --spec JSON`` (started by
    :meth:`ProcessEngine.start`, not by people)."""
    parser = argparse.ArgumentParser(description="The miner's engine process (internal).")
    parser.add_argument("--fd", type=int, required=True)
    parser.add_argument("--spec", required=True)
    args = parser.parse_args(argv)
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)  # the parent decides when this process stops
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    logging.basicConfig(level=logging.WARNING, format="engine: %(levelname)s %(name)s: %(message)s")
    with contextlib.suppress(ImportError):
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    spec = EngineSpec(**json.loads(args.spec))
    Path(spec.data_dir).mkdir(parents=True, exist_ok=True)
    return asyncio.run(_child(args.fd, spec))


if __name__ == "__main__":
    sys.exit(main())
