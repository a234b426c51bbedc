"""Follower mode: download blocks from an upstream node, re-execute them, refuse any that lie.

The loop asks the upstream for block ``head + 1`` until it answers 404 (caught up), then waits
for the upstream's event stream to announce a new block (or polls, if the stream is not
available). Every block goes through ``Node.import_block``: ``apply_block`` checks the producer's
signature, the transaction root, every transaction and the resulting state root. The first block
that fails raises FollowerDiverged naming its height, which stops the node. An upstream that is
down is waited for, with a log line, not treated as an error.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable
from typing import TYPE_CHECKING, TypeVar

from agora.chain.client import LedgerClient
from agora.chain.errors import NodeError, NodeUnreachable

if TYPE_CHECKING:
    from agora.chain.node import Node

__all__ = ["follow"]

log = logging.getLogger(__name__)
T = TypeVar("T")

POLL_SECONDS = 1.0  # without an event stream; with one, a safety net
RETRY_MAX_SECONDS = 5.0


class _Stopped(Exception):
    pass


async def _unless_stopped(awaitable: Awaitable[T], stopping: asyncio.Event) -> T:
    """Await ``awaitable`` (network I/O only) unless the node is asked to stop first."""
    task = asyncio.ensure_future(awaitable)
    stop = asyncio.ensure_future(stopping.wait())
    try:
        await asyncio.wait({task, stop}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stop.cancel()
    if not task.done():
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
        raise _Stopped
    return task.result()


async def _watch(client: LedgerClient, announced: asyncio.Event) -> None:
    """Set ``announced`` whenever the upstream's event stream reports a block; reconnect."""
    while True:
        try:
            async for _ in client.events():
                announced.set()
        except NodeError as error:
            log.debug("upstream event stream unavailable (%s); polling", error)
        await asyncio.sleep(RETRY_MAX_SECONDS)


async def follow(node: Node, url: str, stopping: asyncio.Event) -> None:
    """Follow ``url`` until ``stopping`` is set. Raises FollowerDiverged on a bad block."""
    announced = asyncio.Event()
    async with LedgerClient(url, timeout=10.0) as client:
        watcher = asyncio.create_task(_watch(client, announced), name="agora-follower-events")
        retry = 0.5
        try:
            while not stopping.is_set():
                height = node.height + 1
                try:
                    data = await _unless_stopped(client.block(height), stopping)
                except _Stopped:
                    return
                except NodeUnreachable as error:
                    log.warning("%s; retrying in %.1fs", error.message, retry)
                    await _sleep_or_stop(retry, stopping)
                    retry = min(retry * 2, RETRY_MAX_SECONDS)
                    continue
                except NodeError as error:
                    if error.code != "unknown_block":
                        log.warning("upstream answered %s: %s; retrying", error.code, error)
                        await _sleep_or_stop(retry, stopping)
                        continue
                    announced.clear()  # caught up: wait for the next block
                    with contextlib.suppress(_Stopped, TimeoutError):
                        await _unless_stopped(
                            asyncio.wait_for(announced.wait(), POLL_SECONDS), stopping
                        )
                    continue
                retry = 0.5
                block = await node.import_block(data)  # raises FollowerDiverged
                log.debug("followed block %d %s", height, block.hash[:12])
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher


async def _sleep_or_stop(seconds: float, stopping: asyncio.Event) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stopping.wait(), seconds)
