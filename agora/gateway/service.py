"""The gateway as a long-running service: set up once, serve until told to stop, settle, stop.

    gateway = await Gateway.create(config, hotkey, coldkey=lambda: coldkey_keypair)
    exit_code = await gateway.serve()        # until SIGTERM / SIGINT or gateway.request_stop()

``create`` does the slow and fallible work before anything is served:

1. reach the ledger; check that every configured model's subnet exists;
2. load the tokenizers; bind the listening socket (a port in use fails here);
3. make sure the gateway's hotkey is registered on each subnet it serves, registering it by burn
   (signed by the coldkey) unless ``register = false`` (then the miners must list the hotkey with
   ``agora miner start --allow <gateway hotkey>``);
4. keep ``float_target`` tokens in the hotkey's account for miner channels, moved from the coldkey
   once at start (customers' redemptions refill it as the gateway runs);
5. open the store (keys, escrows, usage), check recorded miner channels against the ledger, read
   the metagraphs and every miner's health.

The gateway's **hotkey is its account**: it signs requests to miners, is the payee and signer of
customers' escrow channels (so their redemptions land in it), and the payer and signer of the
channels that pay miners. Sweep earnings to the coldkey with an ordinary transfer.

``serve`` runs uvicorn on the socket plus the background loops: head of the chain, metagraphs
and miner health, flushing usage to SQLite, handing miners their vouchers, redeeming customers'
vouchers, and re-registering the hotkey if it was pruned. On SIGTERM it stops accepting, lets
requests in flight finish, hands every miner its last voucher, redeems what customers owe, and
returns 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import time
from collections.abc import Callable
from typing import Any

import uvicorn

from agora import __version__
from agora.chain.client import LedgerClient
from agora.chain.errors import NodeError
from agora.chain.runner import QuietServer, bind
from agora.crypto.keys import Keypair
from agora.gateway.accounts import Accounts
from agora.gateway.app import create_app
from agora.gateway.archive import ARCHIVE_DB, ReceiptArchive
from agora.gateway.config import GatewayConfig
from agora.gateway.errors import GatewayConfigError, PaymentError
from agora.gateway.forward import Forwarder
from agora.gateway.httpclient import HttpPool
from agora.gateway.ledger import ChainView, FastKey, TxSender
from agora.gateway.payments import CustomerSettler, MinerPayer
from agora.gateway.routing import Router
from agora.gateway.store import GatewayStore
from agora.gateway.tokens import TokenCounter, check_config, load_counter
from agora.net.limits import NonceCache
from agora.protocol.units import format_amount

__all__ = ["Gateway"]

log = logging.getLogger(__name__)

REGISTRATION_CHECK_S = 60.0
ARCHIVE_FLUSH_S = 0.25


def _bind(host: str, port: int) -> socket.socket:
    """The node's listening socket helper, with this service's advice when the port is taken."""
    try:
        return bind(host, port)
    except OSError as error:
        raise GatewayConfigError(
            f"cannot listen on {host}:{port} ({error.strerror}); pick another --port"
        ) from None


class Gateway:
    """One running gateway. Build it with :meth:`create`; run it with :meth:`serve`."""

    def __init__(
        self,
        config: GatewayConfig,
        key: FastKey,
        ledger: LedgerClient,
        chain: ChainView,
        store: GatewayStore,
        counters: dict[str, TokenCounter],
        sock: socket.socket,
        coldkey: Callable[[], Keypair] | None,
    ) -> None:
        self.config = config
        self.key = key
        self.ledger = ledger
        self.chain = chain
        self.store = store
        self.counters = counters
        self._sock = sock
        self._coldkey = coldkey
        self.host, self.port = sock.getsockname()[:2]
        self.started_s = int(time.time())
        self.pool = HttpPool()
        self.nonces = NonceCache(10_000)
        self.accounts = Accounts(store, config, chain, ledger)
        self.router = Router(config, ledger, self.pool, key.address)
        self.sender = TxSender(ledger, key, chain)
        self.payer = MinerPayer(
            config, key, chain, self.sender, ledger, store, self.pool, locate=self.router.locate
        )
        self.settler = CustomerSettler(self.accounts, self.sender, key, chain, config)
        self.forwarder = Forwarder(
            config, key, self.router, self.payer, self.accounts, store, self.pool
        )
        # every answer served, with its bytes, for validators' audits (agora.gateway.archive)
        self.archive = ReceiptArchive(config.data_dir / ARCHIVE_DB)
        self.forwarder.archive = self.archive
        self.app = create_app(self)
        self._tasks: list[asyncio.Task[Any]] = []
        self._server: QuietServer | None = None
        self._stop = asyncio.Event()
        self._closed = False

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def address(self) -> str:
        return self.key.address

    @classmethod
    async def create(
        cls,
        config: GatewayConfig,
        hotkey: Keypair,
        *,
        coldkey: Callable[[], Keypair] | None = None,
        reporter: Any = None,
    ) -> Gateway:
        """Set up a gateway (see the module docstring).

        Raises:
            GatewayConfigError, NodeUnreachable, NodeError, LedgerSetupError subclasses (from
            registering), TimeoutError, and what ``coldkey`` raises (WrongPassword).
        """
        from agora.miner.ledger import QuietReporter, ensure_registered

        reporter = reporter or QuietReporter()
        ledger = LedgerClient(config.node_url, timeout=30.0)
        sock: socket.socket | None = None
        store: GatewayStore | None = None
        try:
            chain = await ChainView.create(ledger)
            for netuid in sorted({m.netuid for m in config.models}):
                try:
                    await ledger.subnet(netuid)
                except NodeError as error:
                    if error.code != "unknown_subnet":
                        raise
                    names = [m.name for m in config.models if m.netuid == netuid]
                    raise GatewayConfigError(
                        f"subnet {netuid} (models {', '.join(names)}) does not exist on the "
                        f"ledger at {config.node_url}; map the models to existing subnets in "
                        "--config (`agora subnet list` shows them)"
                    ) from None
            counters = {}
            for route in config.models:
                counters[route.name] = load_counter(route.tokenizer, config.data_dir)
                check_config(counters[route.name])
            sock = _bind(config.host, config.port)
            cached: list[Keypair] = []

            def cold() -> Keypair:
                if not cached:
                    if coldkey is None:
                        raise GatewayConfigError("no coldkey to register or fund with")
                    cached.append(coldkey())
                return cached[0]

            for netuid in sorted({m.netuid for m in config.models}):
                await ensure_registered(
                    ledger,
                    netuid,
                    hotkey.address,
                    coldkey=cold if coldkey is not None else None,
                    register=config.register,
                    max_burn=config.max_burn,
                    reporter=reporter,
                )
            if config.float_target > 0 and coldkey is not None:
                await _fund_float(ledger, chain, hotkey, cold, config.float_target, reporter)
            store = GatewayStore(config.db_path)
            gateway = cls(
                config,
                FastKey(hotkey),
                ledger,
                chain,
                store,
                counters,
                sock,
                cold if coldkey is not None else None,
            )
            await gateway.payer.reconcile()
            await gateway.router.refresh()
            return gateway
        except BaseException:
            if sock is not None:
                sock.close()
            if store is not None:
                store.close()
            await ledger.aclose()
            raise

    def describe(self) -> dict[str, Any]:
        config = self.config
        return {
            "address": self.key.address,
            "chain_id": self.chain.chain_id,
            "node": config.node_url,
            "height": self.chain.height,
            "version": __version__,
            "models": [
                {
                    "id": r.name,
                    "subnet": r.netuid,
                    "task": r.task,
                    "context_length": r.context_length,
                    "model_prefix": r.model_prefix,
                }
                for r in config.models
            ],
            "terms": {
                "payee": self.key.address,
                "signer": self.key.address,
                "min_deposit": config.min_deposit,
                "min_blocks_left": config.min_blocks_left,
                "markup_bps": config.markup_bps,
                "redeem_interval_s": config.redeem_interval_s,
            },
        }

    # -- running --------------------------------------------------------------------------------

    def start_background(self) -> None:
        """Start the loops (``serve`` does it; tests that drive ``app`` directly call it)."""
        if self._tasks:
            return
        self.chain.start()
        self.router.start()
        self._tasks = [
            asyncio.create_task(self._flush_loop(), name="store-flush"),
            asyncio.create_task(self.payer.run_flush(), name="voucher-flush"),
            asyncio.create_task(self.settler.run(), name="settle"),
            asyncio.create_task(self._registration_loop(), name="registration"),
            asyncio.create_task(self.archive.run(ARCHIVE_FLUSH_S), name="archive-flush"),
        ]

    async def _flush_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.usage_flush_s)
            try:
                self.store.flush()
            except Exception:  # a full disk must not kill the gateway: log, keep the queue
                log.exception("writing usage to %s failed", self.store.path)

    async def _registration_loop(self) -> None:
        from agora.miner.ledger import ensure_registered

        while True:
            await asyncio.sleep(REGISTRATION_CHECK_S)
            if not self.config.register or self._coldkey is None:
                continue
            for netuid in self.router.netuids:
                try:
                    await ensure_registered(
                        self.ledger,
                        netuid,
                        self.key.address,
                        coldkey=self._coldkey,
                        max_burn=self.config.max_burn,
                    )
                except Exception as error:  # retried at the next check
                    log.warning("cannot re-register on subnet %d: %s", netuid, error)

    def request_stop(self) -> None:
        if self._stop.is_set() and self._server is not None:
            self._server.force_exit = True
        self._stop.set()
        if self._server is not None:
            self._server.should_exit = True

    async def serve(self, *, handle_signals: bool = True, log_level: str = "warning") -> int:
        """Serve until :meth:`request_stop` (SIGTERM, SIGINT), then settle and close.

        Returns the exit code: 0 after a clean stop.
        """
        server = QuietServer(
            uvicorn.Config(
                self.app,
                lifespan="off",
                log_level=log_level,
                access_log=False,
                http="httptools",
                timeout_graceful_shutdown=30,
                timeout_keep_alive=30,
                server_header=False,
            )
        )
        self._server = server
        loop = asyncio.get_running_loop()
        signals = (signal.SIGTERM, signal.SIGINT) if handle_signals else ()
        for sig in signals:
            loop.add_signal_handler(sig, self.request_stop)
        try:
            self.start_background()
            task = asyncio.create_task(server.serve(sockets=[self._sock]))
            if self._stop.is_set():
                server.should_exit = True
            await task
        finally:
            for sig in signals:
                loop.remove_signal_handler(sig)
            await self.aclose()
        return 0

    async def started(self, timeout: float = 30.0) -> None:
        deadline = asyncio.get_running_loop().time() + timeout
        while self._server is None or not self._server.started:
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError("the gateway did not start serving in time")
            await asyncio.sleep(0.01)

    async def settle_now(self) -> int:
        """Hand miners their vouchers and redeem what customers owe, now (shutdown, tests)."""
        self.store.flush()
        await self.payer.wait_idle()
        await self.payer.flush()
        try:
            return await self.settler.settle(force=True)
        except (NodeError, PaymentError) as error:
            log.warning("final settlement failed: %s", error)
            return 0

    async def aclose(self) -> None:
        """Stop the loops, settle once, close everything. Idempotent."""
        if self._closed:
            return
        self._closed = True
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self.router.stop()
        await self.chain.stop()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.settle_now(), timeout=30.0)
        await self.payer.aclose()
        with contextlib.suppress(OSError):
            self._sock.close()
        self.store.close()
        with contextlib.suppress(Exception):
            self.archive.close()
        await self.pool.aclose()
        await self.ledger.aclose()


async def _fund_float(
    ledger: LedgerClient,
    chain: ChainView,
    hotkey: Keypair,
    coldkey: Callable[[], Keypair],
    target: int,
    reporter: Any,
) -> None:
    """Move tokens from the coldkey so the hotkey holds ``target`` (if it holds under half)."""
    from agora.crypto.signing import sign_transaction

    balance = (await ledger.account(hotkey.address)).balance
    if balance >= target // 2:
        return
    cold = coldkey()
    amount = target - balance
    reporter.info(
        f"moving {format_amount(amount)} tokens from coldkey {cold.address[:12]}… to the "
        f"gateway's hotkey {hotkey.address[:12]}… (its float for miner channels)"
    )
    tx = sign_transaction(
        cold,
        chain.chain_id,
        "transfer",
        await ledger.next_nonce(cold.address),
        {"to": hotkey.address, "amount": amount},
    )
    info = await ledger.wait_for_tx(await ledger.submit(tx), timeout=60)
    if info.status != "included":
        raise GatewayConfigError(f"funding the hotkey failed: {info.code}: {info.message}")
