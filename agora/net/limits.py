"""The guard's two memories, both bounded: nonces seen recently and one token bucket per caller.

:class:`NonceCache` remembers each ``(caller, nonce)`` until the request could no longer pass the
freshness check, and never forgets one earlier: when it is full of nonces that are still fresh it
refuses new requests (:class:`ReplayCacheFull`, 503) rather than risk accepting a replay.
:class:`TokenBuckets` allows ``burst`` requests at once and ``rate`` per second after that.
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Callable

from agora.net.errors import ReplayCacheFull, ReusedNonce

__all__ = ["NonceCache", "TokenBuckets"]


class NonceCache:
    """``(caller, nonce)`` pairs, each kept until its expiry (in wall-clock milliseconds)."""

    def __init__(self, capacity: int = 100_000) -> None:
        if capacity < 1:
            raise ValueError("a nonce cache needs room for at least one nonce")
        self.capacity = capacity
        self._expiry: dict[tuple[str, str], int] = {}
        self._heap: list[tuple[int, tuple[str, str]]] = []

    def __len__(self) -> int:
        return len(self._expiry)

    def __contains__(self, key: object) -> bool:
        return key in self._expiry

    def _purge(self, now_ms: int) -> None:
        while self._heap and self._heap[0][0] <= now_ms:
            _, key = heapq.heappop(self._heap)
            del self._expiry[key]

    def add(self, caller: str, nonce: str, expires_at_ms: int, now_ms: int) -> None:
        """Remember ``nonce`` for ``caller`` until ``expires_at_ms``.

        Raises:
            ReusedNonce: the pair is already remembered.
            ReplayCacheFull: the cache is full of unexpired nonces.
        """
        self._purge(now_ms)
        key = (caller, nonce)
        if key in self._expiry:
            raise ReusedNonce(
                f"nonce {nonce} was already used by {caller}: this is a replay; "
                "every request needs a fresh random nonce"
            )
        if len(self._expiry) >= self.capacity:
            wait_s = (self._heap[0][0] - now_ms) / 1000
            raise ReplayCacheFull(
                "this server is remembering as many recent requests as it can; retry shortly",
                retry_after=wait_s,
            )
        self._expiry[key] = expires_at_ms
        heapq.heappush(self._heap, (expires_at_ms, key))


class TokenBuckets:
    """One token bucket per key: ``burst`` tokens at most, refilled at ``rate`` per second.

    Only the ``max_keys`` most recently seen keys are kept; a key that is dropped comes back with a
    full bucket, so ``max_keys`` should exceed the number of callers that can be active at once (the
    guard only reaches the buckets for registered callers with enough stake).
    """

    def __init__(
        self,
        rate: float,
        burst: int,
        *,
        max_keys: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("a token bucket needs a positive rate and a burst of at least 1")
        self.rate = rate
        self.burst = burst
        self.max_keys = max_keys
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # insertion order = recency

    def __len__(self) -> int:
        return len(self._buckets)

    def take(self, key: str) -> float:
        """Take one token for ``key``: 0.0 if there was one, else the seconds until there is."""
        now = self._clock()
        tokens, last = self._buckets.pop(key, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + max(0.0, now - last) * self.rate)
        wait = 0.0
        if tokens >= 1.0:
            tokens -= 1.0
        else:
            wait = (1.0 - tokens) / self.rate
        self._buckets[key] = (tokens, now)
        while len(self._buckets) > self.max_keys:
            del self._buckets[next(iter(self._buckets))]
        return wait
