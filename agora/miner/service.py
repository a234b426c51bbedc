"""The miner as a long-running service: set up once, serve until told to stop, stop cleanly.

    miner = await Miner.create(config, hotkey, coldkey=lambda: wallet.coldkey(password))
    exit_code = await miner.serve()          # until SIGTERM / SIGINT, or miner.request_stop()

``create`` does all the slow and fallible work before anything is served, in this order, so
that a mistake is reported before a model is loaded or a token is burnt:

1. reach the ledger and check that the subnet exists;
2. bind the listening socket (a port in use fails here);
3. load the engine (``--model``, or the ``--cheat`` impostor) in its own engine process, behind
   a ``BatchedEngine`` here (see :mod:`agora.miner.engine_host` for why a process);
4. make sure the hotkey is registered on the subnet, registering it by burn (signed by the
   coldkey, the burn shown first) unless ``--no-register``;
5. announce the endpoint with a ``serve`` transaction (signed by the hotkey) if the ledger's
   differs; the socket already listens, so callers that see it can connect;
6. read the metagraph once, so the first caller does not wait for it.

``serve`` runs uvicorn on that socket. On SIGTERM or SIGINT it stops accepting connections,
lets requests in flight (streams included) finish within ``grace_s``, closes the engine and
returns 0. A second signal stops at once. If the engine process dies, the miner stops the same
way and returns 1, for its supervisor to restart it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import signal
import socket
import time
from collections.abc import Callable
from typing import Any, Literal

import uvicorn

from agora.chain.client import LedgerClient
from agora.chain.errors import NodeError
from agora.chain.models import NeuronInfo
from agora.chain.runner import QuietServer, bind
from agora.crypto.keys import Keypair
from agora.gateway.miner_payments import MinerPayments, mount_payments
from agora.miner.app import InFlight, create_app
from agora.miner.config import MinerConfig
from agora.miner.core import MinerCore
from agora.miner.engine_host import EngineSpec, ProcessEngine, load_raw_engine
from agora.miner.errors import MinerConfigError, SubnetNotFound
from agora.miner.ledger import (
    CallerStandingWithAllowList,
    QuietReporter,
    Reporter,
    caller_standing,
    ensure_endpoint,
    ensure_registered,
)
from agora.miner.schema import Health
from agora.models.base import Engine
from agora.models.batcher import BatchedEngine, DynamicBatcher
from agora.net.guard import GuardConfig, RequestGuard

__all__ = ["Miner", "engine_spec", "load_miner_engine"]

log = logging.getLogger(__name__)

BATCH_HISTORY = 10_000
"""Batch sizes kept per batcher (for the stop message and benchmarks); older ones are dropped."""


def _bind(host: str, port: int) -> socket.socket:
    """The node's listening socket helper, with this service's advice when the port is taken."""
    try:
        return bind(host, port)
    except OSError as error:
        raise MinerConfigError(
            f"cannot listen on {host}:{port} ({error.strerror}); pick another --port, or stop "
            "whatever uses it"
        ) from None


def engine_spec(config: MinerConfig) -> EngineSpec:
    return EngineSpec(
        model=config.model,
        data_dir=str(config.data_dir),
        cheat=None if config.cheat == "organic-only" else config.cheat,  # see create()
        ray=config.ray,
        threads=config.threads,
    )


async def load_miner_engine(config: MinerConfig) -> BatchedEngine:
    """The engine a miner serves: ``config.model`` (or its ``--cheat`` impostor), batched.

    By default the model runs in an engine process of its own
    (:class:`agora.miner.engine_host.ProcessEngine`) so that it never waits for the GIL behind
    the HTTP side; with ``engine_process=False``, or through Ray (whose replicas are processes
    already), it is loaded here. ``config.threads`` sets torch's intra-op threads where the
    model runs; by default torch's own default less one, so that the HTTP side keeps a core
    (on 2 cores: 1 thread) and the two overlap instead of fighting for the same cores.

    Raises ModelError subclasses (InvalidSpec, ModelNotFound, EngineUnavailable, EngineClosed)
    and MinerConfigError (a cheat mode that does not apply to this model).
    """
    spec = engine_spec(config)
    engine: Engine
    if config.engine_process and config.ray is None:
        engine = await ProcessEngine.start(spec)
    else:
        engine = await load_raw_engine(spec)
    return BatchedEngine(
        engine,
        max_batch_size=config.max_batch_size,
        max_embed_texts=config.max_embed_texts,
        max_wait_ms=config.max_wait_ms,
    )


class Miner:
    """One running miner. Build it with :meth:`create`; run it with :meth:`serve`."""

    def __init__(
        self,
        config: MinerConfig,
        hotkey: Keypair,
        engine: Engine,
        ledger: LedgerClient,
        sock: socket.socket,
        neuron: NeuronInfo,
        standing: CallerStandingWithAllowList,
    ) -> None:
        self.config = config
        self.hotkey = hotkey
        self.engine = engine
        self.ledger = ledger
        self.neuron = neuron
        self.standing = standing
        self._sock = sock
        self.host, self.port = sock.getsockname()[:2]
        self.status: Literal["starting", "ok", "stopping"] = "starting"
        self.core = MinerCore(engine, hotkey, config.netuid, config.price_per_1k)
        self.guard = RequestGuard(
            GuardConfig(
                hotkey=hotkey.address,
                min_stake=config.min_caller_stake,
                max_body_bytes=config.max_body_bytes,
                rate_per_second=config.rate_per_second,
                burst=config.burst,
            ),
            standing,
        )
        self.app = create_app(self.core, self.guard, self.health)
        # Payments from gateways (agora.gateway.miner_payments): vouchers in, redemptions out.
        self.payments = MinerPayments(
            hotkey, ledger, config.data_dir / "miners" / hotkey.address[:16] / "vouchers.sqlite"
        )
        mount_payments(self.app, self.payments)
        self._stop = asyncio.Event()
        self._server: QuietServer | None = None
        self._closed = False
        self._engine_failed = False
        inner = getattr(engine, "engine", None)
        if isinstance(inner, ProcessEngine):
            inner.on_failure = self._on_engine_failure

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def address(self) -> str:
        """The miner's hotkey address: callers sign their requests for it."""
        return self.hotkey.address

    @classmethod
    async def create(
        cls,
        config: MinerConfig,
        hotkey: Keypair,
        *,
        coldkey: Callable[[], Keypair] | None = None,
        confirm_burn: Callable[[int], bool] | None = None,
        reporter: Reporter | None = None,
    ) -> Miner:
        """Set up a miner (see the module docstring for the steps).

        ``coldkey`` is called only if the hotkey must be registered.

        Raises:
            MinerConfigError, LedgerSetupError subclasses, NodeUnreachable, NodeError,
            ModelError subclasses, TimeoutError, and what ``coldkey`` raises (WrongPassword).
        """
        reporter = reporter or QuietReporter()
        ip = config.announced_ip() if config.announce else config.host
        ledger = LedgerClient(config.node_url, timeout=30.0)
        sock: socket.socket | None = None
        engine: Engine | None = None
        try:
            try:
                await ledger.subnet(config.netuid)
            except NodeError as error:
                if error.code == "unknown_subnet":
                    raise SubnetNotFound(
                        f"subnet {config.netuid} does not exist on the ledger at "
                        f"{config.node_url}; list subnets with `agora subnet list`"
                    ) from None
                raise
            sock = _bind(config.host, config.port)
            port = sock.getsockname()[1]
            started = time.perf_counter()
            with reporter.status(f"loading {config.model}…"):
                engine = await load_miner_engine(config)
            reporter.info(
                f"loaded {engine.model_id} ({engine.engine_name}) in "
                f"{time.perf_counter() - started:.1f} s"
                + (f"  [CHEATING: --cheat {config.cheat}]" if config.cheat else "")
            )
            neuron = await ensure_registered(
                ledger,
                config.netuid,
                hotkey.address,
                coldkey=coldkey,
                register=config.register,
                max_burn=config.max_burn,
                confirm_burn=confirm_burn,
                reporter=reporter,
                timeout=config.tx_timeout_s,
            )
            if config.announce:
                await ensure_endpoint(
                    ledger,
                    config.netuid,
                    hotkey,
                    ip,
                    port,
                    reporter=reporter,
                    timeout=config.tx_timeout_s,
                )
            standing = caller_standing(
                ledger,
                config.netuid,
                allow=config.allow,
                refresh_s=config.standing_refresh_s,
                me=hotkey.address,
            )
            await standing.table.snapshot()
            miner = cls(config, hotkey, engine, ledger, sock, neuron, standing)
            if config.cheat == "organic-only":  # tests and demos: see agora.miner.adversary
                from agora.miner.adversary import ValidatorPermits, load_cheat_engine

                miner.core.organic_engine = await load_cheat_engine(
                    "organic-only", config.model, config.data_dir
                )
                miner.core.is_validator = ValidatorPermits(ledger, config.netuid)
            return miner
        except BaseException:
            if engine is not None:
                await engine.close()
            if sock is not None:
                sock.close()
            await ledger.aclose()
            raise

    def health(self, in_flight: InFlight) -> Health:
        engine = self.engine
        return Health(
            status=self.status,
            hotkey=self.hotkey.address,
            netuid=self.config.netuid,
            model=engine.model_id,
            model_hash=engine.model_hash,
            task=engine.task,
            price_per_1k_tokens=self.config.price_per_1k,
            in_flight=in_flight.count,
            served=self.core.served,
        )

    def batchers(self) -> list[DynamicBatcher[Any, Any]]:
        """The batchers in front of the model (requests, and token counts in the engine process)."""
        found = [getattr(self.engine, "embed_batcher", None)]
        found.append(getattr(self.engine, "generate_batcher", None))
        found.append(getattr(getattr(self.engine, "engine", None), "counter", None))
        return [b for b in found if isinstance(b, DynamicBatcher)]

    async def _trim_batch_history(self, every_s: float = 60.0) -> None:
        # DynamicBatcher records every batch's size; a miner runs for weeks, so keep the recent.
        while True:
            await asyncio.sleep(every_s)
            for batcher in self.batchers():
                if len(batcher.batch_sizes) > BATCH_HISTORY:
                    del batcher.batch_sizes[:-BATCH_HISTORY]

    def _on_engine_failure(self, error: BaseException) -> None:
        # Without its model a miner can only refuse work: stop, and exit 1 so that whatever
        # supervises it (systemd, agora up) starts it again.
        log.error("%s; stopping the miner", error)
        self._engine_failed = True
        self.request_stop()

    def request_stop(self) -> None:
        """Stop accepting connections and drain (what SIGTERM does); a second call, or a second
        signal, stops at once."""
        if self._stop.is_set() and self._server is not None:
            log.warning("second stop request: closing connections now")
            self._server.force_exit = True
        self.status = "stopping"
        self._stop.set()
        if self._server is not None:
            self._server.should_exit = True

    async def serve(self, *, handle_signals: bool = True, log_level: str = "warning") -> int:
        """Serve until :meth:`request_stop` (SIGTERM, SIGINT), then drain and close.

        Returns the exit code: 0 after a clean stop, 1 if the engine process died.
        """
        server = QuietServer(
            uvicorn.Config(
                self.app,
                lifespan="off",
                log_level=log_level,
                access_log=False,
                timeout_graceful_shutdown=math.ceil(self.config.grace_s),
                server_header=False,
            )
        )
        self._server = server
        loop = asyncio.get_running_loop()
        signals = (signal.SIGTERM, signal.SIGINT) if handle_signals else ()
        for sig in signals:
            loop.add_signal_handler(sig, self.request_stop)
        trim = asyncio.create_task(self._trim_batch_history())
        try:
            await self.payments.start()
            task = asyncio.create_task(server.serve(sockets=[self._sock]))
            while not server.started and not task.done():
                await asyncio.sleep(0.01)
            if server.started:
                self.status = "ok"
            if self._stop.is_set():
                server.should_exit = True
            await task
        finally:
            trim.cancel()
            for sig in signals:
                loop.remove_signal_handler(sig)
            await self.aclose()
        return 1 if self._engine_failed else 0

    async def started(self, timeout: float = 30.0) -> None:
        """Wait until :meth:`serve` listens (for callers that run it as a task)."""
        deadline = asyncio.get_running_loop().time() + timeout
        while self._server is None or not self._server.started:
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError("the miner did not start serving in time")
            await asyncio.sleep(0.01)

    async def aclose(self) -> None:
        """Close the engine, the socket and the ledger client. Idempotent."""
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(OSError):
            self._sock.close()
        await self.payments.aclose()
        await self.engine.close()
        if self.core.organic_engine is not None:
            await self.core.organic_engine.close()
        await self.ledger.aclose()

    def describe(self) -> dict[str, Any]:
        """What a person or a script wants to know about a running miner."""
        return {
            "url": self.url,
            "hotkey": self.hotkey.address,
            "netuid": self.config.netuid,
            "uid": self.neuron.uid,
            "model": self.engine.model_id,
            "price_per_1k_tokens": self.config.price_per_1k,
            "cheat": self.config.cheat,
        }
