"""An asyncio fan-out: every subscriber gets every event published after it subscribed.

Each subscriber has a bounded queue. One that falls ``maxsize`` events behind is cut off (its
stream ends) rather than slowing the node down or growing without bound; a client reconnects with
the last event id it saw and catches up from the store.

A block event is ``{"height", "hash", "timestamp", "tx_count", "state_root"}`` plus
``"disputes"``, the outcomes of the disputes that block resolved (see :func:`dispute_outcome`),
only when there are some; the API sends each outcome again as its own ``dispute`` event right
after the block's, so a watcher sees "dispute N upheld" without polling.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from agora.protocol.dispute_state import OPEN, Dispute
from agora.protocol.state import State

__all__ = ["Broadcaster", "Subscription", "dispute_outcome", "outcomes_by_height", "resolved_in"]

_END = None


class Subscription:
    def __init__(self, owner: Broadcaster, maxsize: int) -> None:
        self._owner = owner
        self._queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue(maxsize)
        self.lagged = False

    def _offer(self, event: dict[str, Any] | None) -> bool:
        try:
            self._queue.put_nowait(event)
        except asyncio.QueueFull:
            self.lagged = True
            return False
        return True

    def _end(self) -> None:
        """Wake the reader so that it stops, even when the queue is full."""
        while True:
            try:
                self._queue.put_nowait(_END)
                return
            except asyncio.QueueFull:
                self._queue.get_nowait()

    async def get(self, timeout: float | None = None) -> dict[str, Any] | None:
        """The next event; None once the subscription has ended. TimeoutError after ``timeout``."""
        event = await asyncio.wait_for(self._queue.get(), timeout)
        if event is _END:
            self._owner.unsubscribe(self)
            self._end()  # keep answering None to later calls
        return event

    def close(self) -> None:
        self._owner.unsubscribe(self)

    async def __aiter__(self) -> AsyncIterator[dict[str, Any]]:
        while (event := await self.get()) is not None:
            yield event


def dispute_outcome(dispute: Dispute) -> dict[str, Any]:
    """What a watcher needs to know of a resolved dispute, as carried by block events."""
    return {
        "id": dispute.id,
        "netuid": dispute.netuid,
        "miner": dispute.miner,
        "status": dispute.status,
        "resolved_at": dispute.resolved_at,
        "slashed": dispute.slashed,
        "burned": dispute.burned,
        "deposit_to": dispute.deposit_to,
        "reason": dispute.reason,
    }


def resolved_in(parent: State, state: State) -> list[dict[str, Any]]:
    """Outcomes of the disputes resolved by the block that turned ``parent`` into ``state``, in
    id order: the ones open before it and those opened in it (a majority can decide at once)."""
    candidates = set(parent.disputes.open_ids) | set(
        range(parent.disputes.next_id, state.disputes.next_id)
    )
    found = (state.disputes.disputes.get(i) for i in sorted(candidates))
    return [
        dispute_outcome(d)
        for d in found
        if d is not None and d.status != OPEN and d.resolved_at == state.height
    ]


def outcomes_by_height(state: State, first: int, last: int) -> dict[int, list[dict[str, Any]]]:
    """Outcomes of disputes resolved in blocks ``first..last`` by height, from the records that
    ``state`` keeps forever (for replaying events to a client that reconnects)."""
    found: dict[int, list[dict[str, Any]]] = {}
    for dispute_id in sorted(state.disputes.disputes):
        dispute = state.disputes.disputes[dispute_id]
        if dispute.status != OPEN and first <= dispute.resolved_at <= last:
            found.setdefault(dispute.resolved_at, []).append(dispute_outcome(dispute))
    return found


class Broadcaster:
    def __init__(self, maxsize: int = 1024) -> None:
        self._maxsize = maxsize
        self._subscribers: set[Subscription] = set()
        self.closed = False

    def __len__(self) -> int:
        return len(self._subscribers)

    def subscribe(self) -> Subscription:
        subscription = Subscription(self, self._maxsize)
        if self.closed:
            subscription._end()
        else:
            self._subscribers.add(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        self._subscribers.discard(subscription)

    def publish(self, event: dict[str, Any]) -> None:
        for subscription in list(self._subscribers):
            if not subscription._offer(event):
                self.unsubscribe(subscription)
                subscription._end()

    def close(self) -> None:
        """End every stream (the node is stopping)."""
        self.closed = True
        for subscription in list(self._subscribers):
            subscription._end()
        self._subscribers.clear()
