"""The engine process: the same answers as the engine in-process, errors that keep their type,
and no hang and no orphan when either side goes away."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import pytest

from agora.miner.engine_host import EngineSpec, ProcessEngine
from agora.models import ContextTooLong, EngineClosed, GenerateRequest, InvalidSpec, load_engine

pytestmark = pytest.mark.anyio


async def test_engine_process_answers_like_in_process_and_dies_cleanly(tmp_path: Path) -> None:
    remote = await ProcessEngine.start(EngineSpec("generate:tiny", str(tmp_path)))
    local = await load_engine("generate:tiny", tmp_path)
    try:
        assert remote.model_id == local.model_id
        assert remote.task == "generate" and remote.context_length == 512
        requests = [GenerateRequest("one", 12), GenerateRequest("two", 12, 0.8, 7)]
        assert await remote.generate_batch(requests) == await local.generate_batch(requests)
        chunks = [c async for c in remote.stream("three", 10)]
        assert chunks == [c async for c in local.stream("three", 10)]
        ids = chunks[0].token_ids + chunks[1].token_ids
        assert await remote.score("three", ids) == await local.score("three", ids)
        counts = await asyncio.gather(*(remote.count_tokens(t) for t in ("a", "bb", "ccc")))
        assert counts == [2, 3, 4]  # BOS + one token per byte
        with pytest.raises(ContextTooLong):  # errors keep their type
            await remote.generate("x" * 600, 8)

        stream = remote.stream("stop me", 400)  # a caller that leaves early blocks nothing
        async for _ in stream:
            break
        await stream.aclose()
        assert len((await remote.generate("still here", 4)).token_ids) == 4

        os.kill(remote.pid, signal.SIGINT)  # ignored: only the miner stops its engine
        assert len((await remote.generate("alive", 3)).token_ids) == 3
        os.kill(remote.pid, signal.SIGKILL)
        with pytest.raises(EngineClosed):  # fails, does not hang
            await asyncio.wait_for(remote.generate("anyone there?", 3), 10)
    finally:
        await remote.close()
        await local.close()


async def test_loading_errors_keep_their_type(tmp_path: Path) -> None:
    with pytest.raises(InvalidSpec, match="valid engine specs"):
        await ProcessEngine.start(EngineSpec("generate:nonsense", str(tmp_path)))
