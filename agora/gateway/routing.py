"""Choosing a miner: who serves the model, who is healthy, who is cheap, fast and trusted.

The router keeps, per subnet the gateway serves, the miners of its metagraph that announce an
endpoint (read every ``metagraph_refresh_s``) and what each says on its public ``/health`` (every
``health_interval_s``): status, hotkey, subnet, task, model and price. A miner is a *candidate*
for a model when its last health check passed (status ``ok``, the hotkey and subnet the
metagraph says, the route's task), its model id starts with the route's ``model_prefix``, and it
is not backing off after failures.

**Policy.** For each request, among the candidates not yet tried for it::

    score = (incentive + 1/n) / (price_ratio * latency_ratio * (1 + in_flight / 8))

- ``incentive`` is the miner's share of the subnet's incentive from the last epoch (Yuma
  consensus over the validators' scores, so correctness as validators measure it); ``1/n`` (n
  candidates) gives new miners, who have no incentive yet, a floor;
- ``price_ratio`` is its advertised price over the cheapest candidate's (>= 1);
- ``latency_ratio`` is its latency (an EWMA, alpha 0.2, of the time to a full answer or to the
  first token; unmeasured miners get the median of the measured ones) over the fastest's (>= 1);
- ``in_flight`` counts this gateway's requests at that miner now, which spreads load.

With probability ``exploration`` (5 %) the pick is uniform among candidates, so that latency
estimates stay current; otherwise it is drawn with probability proportional to the score (not
the arg max: under concurrency, sending everything to one miner would make it the slowest).

**Failures.** A failed or timed-out attempt (refused connection, 5xx, 429, a bad receipt ...)
marks the miner: after ``k`` consecutive failures it is skipped for ``min(60, 2^(k-1))`` seconds.
A success clears it. The gateway retries another candidate within the request's deadline and
charges only for the answer it returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from agora.chain.client import LedgerClient
from agora.chain.errors import NodeError
from agora.gateway.config import GatewayConfig, ModelRoute
from agora.gateway.httpclient import HttpPool, UpstreamError

__all__ = ["MinerInfo", "Router"]

log = logging.getLogger(__name__)

EWMA_ALPHA = 0.2
DEFAULT_LATENCY_MS = 50.0
MAX_BACKOFF_S = 60.0
HEALTH_TIMEOUT_S = 3.0


@dataclass
class MinerInfo:
    """One miner of a subnet as the router sees it."""

    netuid: int
    uid: int
    hotkey: str
    host: str
    port: int
    incentive: float = 0.0
    healthy: bool = False
    health_error: str = "not checked yet"
    model: str = ""
    price_per_1k: int = 0
    latency_ms: float | None = None
    in_flight: int = 0
    failures: int = 0
    down_until: float = 0.0
    served: int = 0
    failed: int = 0

    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self.port)

    def to_json(self) -> dict[str, object]:
        return {
            "uid": self.uid,
            "hotkey": self.hotkey,
            "endpoint": f"http://{self.host}:{self.port}",
            "incentive": self.incentive,
            "healthy": self.healthy,
            "health_error": None if self.healthy else self.health_error,
            "model": self.model,
            "price_per_1k_tokens": self.price_per_1k,
            "latency_ms": None if self.latency_ms is None else round(self.latency_ms, 2),
            "in_flight": self.in_flight,
            "consecutive_failures": self.failures,
            "served": self.served,
            "failed": self.failed,
        }


class Router:
    """Miners per subnet, their health, and the choice of one for a request."""

    def __init__(
        self,
        config: GatewayConfig,
        ledger: LedgerClient,
        pool: HttpPool,
        me: str,
        *,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.ledger = ledger
        self.pool = pool
        self.me = me
        self.rng = rng or random.Random()
        self.clock = clock
        self.netuids = sorted({route.netuid for route in config.models})
        self.miners: dict[int, dict[str, MinerInfo]] = {n: {} for n in self.netuids}
        self._tasks: list[asyncio.Task[None]] = []

    # -- knowing the miners -------------------------------------------------------------------

    async def refresh_metagraph(self, netuid: int) -> None:
        try:
            graph = await self.ledger.metagraph(netuid)
        except NodeError as error:
            log.warning("cannot read the metagraph of subnet %d: %s", netuid, error)
            return
        known = self.miners[netuid]
        seen = set()
        for neuron in graph.neurons:
            endpoint = neuron.endpoint
            if endpoint is None or neuron.hotkey == self.me or endpoint.protocol != "http":
                continue
            seen.add(neuron.hotkey)
            info = known.get(neuron.hotkey)
            if info is None or (info.host, info.port) != (endpoint.ip, endpoint.port):
                info = MinerInfo(netuid, neuron.uid, neuron.hotkey, endpoint.ip, endpoint.port)
                known[neuron.hotkey] = info
            info.uid = neuron.uid
            info.incentive = neuron.incentive_float
        for hotkey in list(known):
            if hotkey not in seen:
                del known[hotkey]

    async def check_health(self, info: MinerInfo, route: ModelRoute | None) -> None:
        try:
            response = await self.pool.request(
                info.host, info.port, "GET", "/health", (), b"", HEALTH_TIMEOUT_S
            )
            health = json.loads(response.body) if response.status == 200 else None
        except (UpstreamError, ValueError) as error:
            info.healthy, info.health_error = False, f"/health failed: {error}"
            return
        problem = _health_problem(health, info, route)
        info.healthy = problem is None
        info.health_error = problem or ""
        if health is not None and problem is None:
            info.model = str(health["model"])
            info.price_per_1k = int(health["price_per_1k_tokens"])

    async def refresh_health(self) -> None:
        checks: list[Awaitable[None]] = []
        for netuid, miners in self.miners.items():
            route = self._route_of(netuid)
            checks.extend(self.check_health(info, route) for info in list(miners.values()))
        if checks:
            await asyncio.gather(*checks)

    def _route_of(self, netuid: int) -> ModelRoute | None:
        for route in self.config.models:
            if route.netuid == netuid:
                return route
        return None

    async def refresh(self) -> None:
        """Read every metagraph, then check every miner's health (start-up and tests)."""
        await asyncio.gather(*(self.refresh_metagraph(n) for n in self.netuids))
        await self.refresh_health()

    async def _metagraph_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.metagraph_refresh_s)
            await asyncio.gather(*(self.refresh_metagraph(n) for n in self.netuids))

    async def _health_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.health_interval_s)
            await self.refresh_health()

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._metagraph_loop(), name="router-metagraph"),
            asyncio.create_task(self._health_loop(), name="router-health"),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # -- choosing -----------------------------------------------------------------------------

    def candidates(
        self, route: ModelRoute, exclude: set[str] | frozenset[str] = frozenset()
    ) -> list[MinerInfo]:
        now = self.clock()
        prefix = route.model_prefix or ""
        return [
            m
            for _, m in sorted(self.miners.get(route.netuid, {}).items())
            if m.healthy
            and m.down_until <= now
            and m.hotkey not in exclude
            and m.model.startswith(prefix)
        ]

    def scores(self, candidates: list[MinerInfo]) -> list[float]:
        n = len(candidates)
        cheapest = min(m.price_per_1k for m in candidates)
        measured = sorted(m.latency_ms for m in candidates if m.latency_ms is not None)
        typical = statistics.median(measured) if measured else DEFAULT_LATENCY_MS
        latencies = [m.latency_ms if m.latency_ms is not None else typical for m in candidates]
        fastest = max(min(latencies), 0.01)
        scores = []
        for miner, latency in zip(candidates, latencies, strict=True):
            price_ratio = (miner.price_per_1k + 1) / (cheapest + 1)
            latency_ratio = max(latency, 0.01) / fastest
            load = 1.0 + miner.in_flight / 8.0
            scores.append((miner.incentive + 1.0 / n) / (price_ratio * latency_ratio * load))
        return scores

    def pick(self, route: ModelRoute, exclude: set[str]) -> MinerInfo | None:
        """A miner for one attempt of a request (see the module docstring), or None."""
        candidates = self.candidates(route, exclude)
        if not candidates:
            return None
        if len(candidates) == 1:
            return candidates[0]
        if self.rng.random() < self.config.exploration:
            return self.rng.choice(candidates)
        return self.rng.choices(candidates, weights=self.scores(candidates))[0]

    def max_price(self, route: ModelRoute) -> int | None:
        """The highest price among the route's candidates (what a request reserves at), or None
        when there is no candidate."""
        candidates = self.candidates(route)
        return max((m.price_per_1k for m in candidates), default=None)

    # -- learning -----------------------------------------------------------------------------

    def succeeded(self, miner: MinerInfo, latency_s: float) -> None:
        ms = latency_s * 1000.0
        previous = miner.latency_ms
        miner.latency_ms = ms if previous is None else previous + EWMA_ALPHA * (ms - previous)
        miner.failures = 0
        miner.down_until = 0.0
        miner.served += 1

    def failed(self, miner: MinerInfo, reason: str) -> None:
        miner.failures += 1
        miner.failed += 1
        backoff = min(MAX_BACKOFF_S, 2.0 ** (miner.failures - 1))
        miner.down_until = self.clock() + backoff
        log.info(
            "miner uid %d (%s…) failed (%s); skipped for %.0f s",
            miner.uid,
            miner.hotkey[:12],
            reason,
            backoff,
        )

    def locate(self, hotkey: str) -> tuple[str, int] | None:
        """Where a miner answers, if any subnet's metagraph lists it."""
        for miners in self.miners.values():
            info = miners.get(hotkey)
            if info is not None:
                return info.address
        return None

    def describe(self) -> dict[str, list[dict[str, object]]]:
        return {
            str(netuid): [m.to_json() for _, m in sorted(miners.items())]
            for netuid, miners in self.miners.items()
        }


def _health_problem(health: object, info: MinerInfo, route: ModelRoute | None) -> str | None:
    if not isinstance(health, dict):
        return "/health did not answer 200 with JSON"
    try:
        if health["status"] != "ok":
            return f"status {health['status']}"
        if health["hotkey"] != info.hotkey:
            return "the endpoint serves another hotkey than the metagraph says"
        if health["netuid"] != info.netuid:
            return f"the endpoint serves subnet {health['netuid']}"
        if route is not None and health["task"] != route.task:
            return f"the endpoint serves task {health['task']}, not {route.task}"
        price = health["price_per_1k_tokens"]
        if isinstance(price, bool) or not isinstance(price, int) or price < 0:
            return "no valid price"
    except KeyError as error:
        return f"/health lacks {error}"
    return None
