"""Who may call: a caller's standing on the subnet, from an injected source.

The guard asks a :class:`Standing` for ``(registered, stake)`` of each caller whose signature
verified. A miner backs it with the ledger's metagraph through :class:`CachedStanding` (one fetch
of ``{hotkey: stake}`` per refresh interval, shared by all requests); tests and the dev network use
:class:`StaticStanding`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import NamedTuple, Protocol

from agora.net.errors import StandingUnavailable

__all__ = ["CachedStanding", "CallerStanding", "Standing", "StaticStanding"]

log = logging.getLogger(__name__)


class CallerStanding(NamedTuple):
    registered: bool
    stake: int


class Standing(Protocol):
    """An async callable: hotkey address -> ``(registered, stake in units)``.

    It may raise :class:`StandingUnavailable`; the guard answers 503 to any error it raises.
    """

    def __call__(self, hotkey: str, /) -> Awaitable[tuple[bool, int]]: ...


class StaticStanding:
    """A fixed table ``{hotkey: stake}``: a hotkey is registered if it is in the table."""

    def __init__(self, stakes: Mapping[str, int]) -> None:
        self._stakes = dict(stakes)

    async def __call__(self, hotkey: str, /) -> CallerStanding:
        stake = self._stakes.get(hotkey)
        return CallerStanding(stake is not None, stake or 0)


class CachedStanding:
    """A metagraph snapshot ``{hotkey: stake}`` fetched by ``fetch`` and refreshed every
    ``refresh_s`` seconds, at most one fetch at a time.

    If a refresh fails, the last snapshot keeps serving while it is younger than ``max_stale_s``
    (and the fetch is retried at most every ``retry_s``); after that, or if there never was one,
    calls raise :class:`StandingUnavailable`.
    """

    def __init__(
        self,
        fetch: Callable[[], Awaitable[Mapping[str, int]]],
        *,
        refresh_s: float = 12.0,
        max_stale_s: float = 120.0,
        retry_s: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._fetch = fetch
        self.refresh_s = refresh_s
        self.max_stale_s = max_stale_s
        self.retry_s = retry_s
        self._clock = clock
        self._table: dict[str, int] | None = None
        self._fetched_at = 0.0
        self._next_try = 0.0
        self._lock = asyncio.Lock()

    def _fresh(self, now: float) -> bool:
        return self._table is not None and now - self._fetched_at < self.refresh_s

    def _fallback(self, now: float) -> dict[str, int]:
        if self._table is not None and now - self._fetched_at < self.max_stale_s:
            return self._table
        raise StandingUnavailable(
            "the metagraph cannot be read right now, so callers cannot be checked; retry shortly",
            retry_after=max(self._next_try - now, 1.0),
        )

    async def snapshot(self) -> dict[str, int]:
        """The current ``{hotkey: stake}`` table, fetching it if it is due.

        Raises:
            StandingUnavailable: no snapshot younger than ``max_stale_s`` can be had.
        """
        now = self._clock()
        if self._table is not None and self._fresh(now):
            return self._table
        if now < self._next_try:  # a refresh just failed: do not hammer the source
            return self._fallback(now)
        async with self._lock:
            now = self._clock()
            if self._table is not None and self._fresh(now):
                return self._table  # another request refreshed it while this one waited
            try:
                table = {str(k): int(v) for k, v in (await self._fetch()).items()}
            except Exception as exc:  # whatever the injected source raises: serve stale or 503
                log.warning("metagraph refresh failed: %r", exc)
                self._next_try = now + self.retry_s
                return self._fallback(now)
            self._table, self._fetched_at = table, now
            return table

    async def __call__(self, hotkey: str, /) -> CallerStanding:
        stake = (await self.snapshot()).get(hotkey)
        return CallerStanding(stake is not None, stake or 0)
