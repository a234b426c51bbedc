"""The validator's public, read-only HTTP API: what it measured of each miner.

    GET /v1/validator          who this is: hotkey, subnet, reference model, round, last weights
    GET /v1/validator/scores   per uid: score, latency p50/p95, throughput, last probe, failures
    GET /health                {"status": "validator", ...}: not a miner (gateways skip it)

Why a public API: the dashboard (and anyone) reads what validators measured without access to
their databases, the same way it reads miners through the endpoints they announce. ``agora
validator start --http-port PORT`` serves it and announces ``http://ip:port`` with the ledger's
``serve`` transaction, so it is found through the metagraph. Nothing here writes or needs a key.

Latency percentiles come from a window of the last :data:`WINDOW` probes per uid kept in memory
(:class:`ProbeWindow`, fed after every round); the moving score, mean latency and counters come
from the validator's score book and so survive a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import time
from collections import deque
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse

from agora import __version__
from agora.chain.runner import bind, server_for
from agora.validator.errors import SetupFailed
from agora.validator.scoring import ProbeOutcome

if TYPE_CHECKING:
    from agora.validator.service import Validator

__all__ = ["WINDOW", "ProbeWindow", "announced_ip", "create_app", "percentile", "public_api"]

WINDOW = 100  # probes per uid the percentiles are taken over


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q`` quantile (0..1) of ``values`` by the nearest-rank method, None if empty.

    Nearest rank rather than interpolation: the figure is always a latency that was measured.
    """
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 1))  # ceil(n * q), at least 1
    return ordered[int(rank) - 1]


@dataclass(frozen=True)
class _Probe:
    at_ms: int
    ok: bool
    latency: float | None
    throughput: float | None
    verdict: str


class ProbeWindow:
    """The last :data:`WINDOW` probe outcomes per uid (reset when a uid's hotkey changes)."""

    def __init__(self, size: int = WINDOW) -> None:
        self.size = size
        self._probes: dict[int, deque[_Probe]] = {}
        self._hotkeys: dict[int, str] = {}

    def record(self, outcomes: Iterable[ProbeOutcome], at_ms: int | None = None) -> None:
        """Add one round's outcomes (called by the validator after each round)."""
        now = int(time.time() * 1000) if at_ms is None else at_ms
        for outcome in outcomes:
            if self._hotkeys.get(outcome.uid) != outcome.hotkey:
                self._hotkeys[outcome.uid] = outcome.hotkey
                self._probes[outcome.uid] = deque(maxlen=self.size)
            self._probes[outcome.uid].append(
                _Probe(
                    now,
                    outcome.ok,
                    outcome.latency,
                    outcome.throughput,
                    str(getattr(outcome.verdict, "value", outcome.verdict)),
                )
            )

    def summary(self, uid: int, hotkey: str) -> dict[str, Any]:
        """Percentiles and counts over the window for ``uid`` (empty figures if none)."""
        probes = list(self._probes.get(uid, ())) if self._hotkeys.get(uid) == hotkey else []
        answered = [p.latency for p in probes if p.ok and p.latency is not None]
        rates = [p.throughput for p in probes if p.ok and p.throughput is not None]
        p50 = percentile(answered, 0.5)
        p95 = percentile(answered, 0.95)
        return {
            "window": len(probes),
            "window_failures": sum(1 for p in probes if not p.ok),
            "latency_p50_ms": None if p50 is None else round(p50 * 1000, 2),
            "latency_p95_ms": None if p95 is None else round(p95 * 1000, 2),
            "throughput_p50": percentile(rates, 0.5),
            "last_probe_ms": probes[-1].at_ms if probes else None,
        }


def _health(validator: Validator) -> dict[str, Any]:
    return {
        # not "ok": a gateway that finds this endpoint in the metagraph must not route to it
        "status": "validator",
        "role": "validator",
        "hotkey": validator.hotkey.address,
        "netuid": validator.netuid,
        "version": __version__,
    }


def create_app(validator: Validator, window: ProbeWindow) -> FastAPI:
    """The read-only app over ``validator``'s score book and ``window``."""
    app = FastAPI(
        title="Agora validator",
        version=__version__,
        description="What this validator measured of its subnet's miners. Read-only.",
        docs_url=None,
        redoc_url=None,
    )

    def about() -> dict[str, Any]:
        import json

        book, netuid = validator.book, validator.netuid
        last = book.get_meta(netuid, "last_weights")
        return {
            "hotkey": validator.hotkey.address,
            "netuid": netuid,
            "chain_id": validator.chain_id,
            "model": validator.engine.model_id,
            "task": validator.engine.task,
            "probe_interval": validator.config.probe_interval,
            "round": int(book.get_meta(netuid, "round") or 0),
            "last_weights": json.loads(last) if last else None,
            "head_height": validator.head_height,
            "version": __version__,
        }

    @app.get("/health", include_in_schema=False)
    async def health() -> JSONResponse:
        return JSONResponse(_health(validator))

    @app.get("/v1/validator", summary="This validator")
    async def info() -> JSONResponse:
        """Hotkey, subnet, reference model, probe round and the last weights it set."""
        return JSONResponse(about())

    @app.get("/v1/validator/scores", summary="What it measured of each miner")
    async def scores() -> JSONResponse:
        """Per uid (ascending): ``score`` (moving, 0..1), ``latency_ms`` (moving mean),
        ``latency_p50_ms``/``latency_p95_ms`` and ``throughput_p50`` (tokens per second) over the
        last probes, ``probes``/``ok``/``failures``/``proven`` since it first saw the hotkey,
        ``last_verdict``/``last_reason``, and ``last_probe_ms`` (Unix ms)."""
        rows = []
        for uid, row in sorted(validator.book.scores(validator.netuid).items()):
            recent = window.summary(uid, row.hotkey)
            rows.append(
                {
                    "uid": uid,
                    "hotkey": row.hotkey,
                    "score": row.score,
                    "latency_ms": None if row.latency is None else round(row.latency * 1000, 2),
                    "throughput": row.throughput,
                    "probes": row.probes,
                    "ok": row.ok,
                    "failures": row.failures,
                    "proven": row.proven,
                    "last_verdict": row.last_verdict,
                    "last_reason": row.last_reason,
                    "round": row.round,
                    **recent,
                    "last_probe_ms": recent["last_probe_ms"] or row.updated_ms,
                }
            )
        return JSONResponse({**about(), "generated_ms": int(time.time() * 1000), "scores": rows})

    return app


def announced_ip(host: str, external_ip: str | None = None) -> str:
    """The IP to announce for ``host`` (raises SetupFailed for a wildcard or a name without
    ``external_ip``: the ledger stores endpoints as IPs)."""
    ip = external_ip or host
    if ip == "localhost":
        ip = "127.0.0.1"
    if ip in ("0.0.0.0", "::", ""):
        raise SetupFailed(
            f"--http-host {host} listens on every interface, so the address to announce is "
            "unknown: pass --external-ip with the IP others should use"
        )
    try:
        ipaddress.ip_address(ip)
    except ValueError:
        raise SetupFailed(
            f"{ip!r} is not an IP address; pass --external-ip with the IP others should use"
        ) from None
    return ip


@contextlib.asynccontextmanager
async def public_api(
    validator: Validator,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    external_ip: str | None = None,
    announce: bool = True,
) -> AsyncIterator[str]:
    """Serve the API on ``host:port`` while the block runs, and (``announce``) make it the
    hotkey's endpoint on the subnet with a ``serve`` transaction, unless the ledger already
    says so. Yields the URL.

    Raises:
        SetupFailed: the port is in use, or the address cannot be announced.
        TransactionFailed, NodeError: the ``serve`` transaction did not make it into a block.
    """
    from agora.miner.ledger import ensure_endpoint

    ip = announced_ip(host, external_ip) if announce else host
    try:
        sock = bind(host, port)
    except OSError as error:
        raise SetupFailed(
            f"cannot listen on {host}:{port} ({error.strerror or error}); pick another "
            "--http-port, or --http-port 0 for none"
        ) from None
    port = sock.getsockname()[1]
    window = ProbeWindow()
    validator.round_listeners.append(window.record)
    server = server_for(create_app(validator, window))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started and not task.done():
            await asyncio.sleep(0.01)
        if task.done():
            task.result()  # raises what stopped it
            raise SetupFailed(f"the validator's HTTP API on {host}:{port} stopped at once")
        if announce:
            await ensure_endpoint(validator.ledger, validator.netuid, validator.hotkey, ip, port)
        yield f"http://{ip}:{port}"
    finally:
        server.should_exit = True
        with contextlib.suppress(Exception, asyncio.CancelledError):
            await task
        sock.close()
        with contextlib.suppress(ValueError):
            validator.round_listeners.remove(window.record)
