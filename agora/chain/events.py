"""An asyncio fan-out: every subscriber gets every event published after it subscribed.

Each subscriber has a bounded queue. One that falls ``maxsize`` events behind is cut off (its
stream ends) rather than slowing the node down or growing without bound; a client reconnects with
the last event id it saw and catches up from the store.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

__all__ = ["Broadcaster", "Subscription"]

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
