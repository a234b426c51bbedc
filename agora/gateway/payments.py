"""Money in and money out: redeeming customers' escrow, paying miners through channels.

**In** (:class:`CustomerSettler`). Every ``redeem_interval_s`` the gateway signs, for each key
whose ``spent`` is above what the ledger has paid it, a voucher for ``spent`` on the key's
channel (the gateway is that channel's signer and payee) and submits ``channel_redeem``. The
ledger pays ``spent - redeemed`` and refuses any voucher not above what was redeemed or above the
deposit, so nothing is claimed twice. Channels about to expire are redeemed at once.

**Out** (:class:`MinerPayer`). The gateway owes each miner the sum of the prices in the receipts
it accepted from it. It opens one channel per miner (payer and signer: the gateway, payee: the
miner's hotkey, deposit ``miner_deposit``), tops it up as it fills, and hands the miner a signed
cumulative voucher for what it owes in the ``X-Agora-Voucher: channel,cumulative,signature``
header of the next request it sends that miner (at most every ``voucher_interval_s`` per miner,
or sooner when the amount jumps), and every ``voucher_flush_s`` on ``POST /v1/payments/voucher``
when the miner has not been called since. Payment follows the work: what a miner is owed is
covered by a voucher one request (or one flush interval) later. What is owed before a channel is
open, or beyond its deposit, is kept as debt and moved into the channel once it has room.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from agora.chain.client import LedgerClient
from agora.chain.errors import NodeError
from agora.gateway.accounts import Accounts
from agora.gateway.config import GatewayConfig
from agora.gateway.errors import PaymentError
from agora.gateway.httpclient import HttpPool, UpstreamError
from agora.gateway.ledger import ChainView, FastKey, TxSender, Voucher
from agora.gateway.store import GatewayStore, MinerChannelRecord
from agora.net.signing import sign_request

__all__ = ["VOUCHER_HEADER", "VOUCHER_PATH", "CustomerSettler", "MinerPayer"]

log = logging.getLogger(__name__)

VOUCHER_HEADER = "X-Agora-Voucher"
VOUCHER_PATH = "/v1/payments/voucher"
RETRY_AFTER_FAILURE_S = 15.0


class CustomerSettler:
    """Redeems what customers' keys have spent, in batches."""

    def __init__(
        self,
        accounts: Accounts,
        sender: TxSender,
        key: FastKey,
        chain: ChainView,
        config: GatewayConfig,
    ) -> None:
        self.accounts = accounts
        self.sender = sender
        self.key = key
        self.chain = chain
        self.config = config
        self._lock = asyncio.Lock()
        self.redeemed_total = 0

    def _due(self, force: bool) -> list[tuple[int, int]]:
        due = []
        for state in self.accounts.by_id.values():
            escrow = state.escrow
            owed = escrow.spent - escrow.redeemed
            if owed <= 0 or escrow.closed:
                continue
            expiring = escrow.expires_at - self.chain.height < 2 * self.config.min_blocks_left
            if force or expiring or owed >= self.config.redeem_min:
                due.append((escrow.channel, escrow.spent))
        return sorted(due)

    async def settle(self, force: bool = False) -> int:
        """Redeem every key's spent-but-unredeemed amount that is due. Returns units redeemed.

        Failures are logged and retried at the next round (a voucher stays valid).
        """
        async with self._lock:
            due = self._due(force)
            if not due:
                return 0
            submitted = []
            for channel, cumulative in due:
                voucher = Voucher.sign(self.key, self.chain.chain_id, channel, cumulative)
                body = {"channel": channel, "cumulative": cumulative, "voucher": voucher.signature}
                try:
                    submitted.append(
                        (channel, cumulative, await self.sender.submit("channel_redeem", body))
                    )
                except PaymentError as error:
                    log.warning("cannot redeem channel %d: %s", channel, error)
            paid = 0
            for channel, cumulative, tx_hash in submitted:
                state = self.accounts.by_channel[channel]
                try:
                    info = await self.sender.ledger.wait_for_tx(tx_hash, timeout=60.0)
                except (NodeError, TimeoutError) as error:
                    log.warning("redeeming channel %d not confirmed: %s", channel, error)
                    continue
                if info.status == "included":
                    paid += cumulative - state.escrow.redeemed
                    state.escrow.redeemed = max(state.escrow.redeemed, cumulative)
                    self.accounts.store.save_escrow(state.escrow)
                else:
                    log.warning(
                        "redeem of channel %d rejected: %s %s", channel, info.code, info.message
                    )
                    await self.accounts.refresh(state)
            self.redeemed_total += paid
            return paid

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.config.redeem_interval_s)
            try:
                await self.settle()
            except (NodeError, PaymentError) as error:
                log.warning("settlement round failed: %s", error)


@dataclass
class MinerAccount:
    record: MinerChannelRecord
    last_sent: int = 0
    last_sent_at: float = 0.0
    voucher: Voucher | None = None
    busy: bool = False
    retry_at: float = 0.0
    url: tuple[str, int] | None = None
    flush_failures: int = 0
    paid_via_ledger: int = field(default=0)

    @property
    def room(self) -> int:
        r = self.record
        return r.deposit - r.owed if r.channel is not None else 0


class MinerPayer:
    """What the gateway owes each miner, the channels that pay it, the vouchers that carry it."""

    def __init__(
        self,
        config: GatewayConfig,
        key: FastKey,
        chain: ChainView,
        sender: TxSender,
        ledger: LedgerClient,
        store: GatewayStore,
        pool: HttpPool,
        clock: Callable[[], float] = time.monotonic,
        locate: Callable[[str], tuple[str, int] | None] = lambda hotkey: None,
    ) -> None:
        self.config = config
        self.key = key
        self.chain = chain
        self.sender = sender
        self.ledger = ledger
        self.store = store
        self.pool = pool
        self._clock = clock
        self._locate = locate
        self.miners: dict[str, MinerAccount] = {
            m: MinerAccount(r) for m, r in store.load_miner_channels().items()
        }
        self._tasks: set[asyncio.Task[None]] = set()
        self.low_water = max(1, config.miner_deposit // 4)
        self.step = max(1, config.miner_deposit // 100)

    async def reconcile(self) -> None:
        """Check the recorded channels against the ledger (after a restart): a channel the miner
        closed is forgotten (what it did not redeem it gave up); deposits are re-read."""
        for miner, account in self.miners.items():
            record = account.record
            if record.channel is None:
                continue
            try:
                channel = await self.ledger.channel(record.channel)
            except NodeError:
                channel = None
            if channel is None or channel.closed or channel.payee != miner:
                log.info(
                    "channel %s to %s is gone; a new one opens on the next payment",
                    record.channel,
                    miner[:12],
                )
                record.channel, record.deposit, record.owed = None, 0, 0
            else:
                record.deposit, record.expires_at = channel.deposit, channel.expires_at
                record.owed = max(record.owed, channel.redeemed)
                account.last_sent = channel.redeemed
            self.store.save_miner_channel(record)

    def _account(self, miner: str) -> MinerAccount:
        account = self.miners.get(miner)
        if account is None:
            account = MinerAccount(MinerChannelRecord(miner, None, 0, 0, 0, 0))
            self.miners[miner] = account
        return account

    def owe(self, miner: str, price: int, url: tuple[str, int] | None = None) -> None:
        """Record that ``miner`` is owed ``price`` units more (its receipt was accepted)."""
        account = self._account(miner)
        if url is not None:
            account.url = url
        record = account.record
        if record.channel is not None and price <= account.room:
            record.owed += price
        else:
            record.debt += price
        self.store.save_miner_channel(record)
        if record.debt > 0 or account.room < self.low_water:
            self._ensure_soon(miner, account)

    def owed(self, miner: str) -> int:
        account = self.miners.get(miner)
        return 0 if account is None else account.record.owed + account.record.debt

    # -- vouchers -----------------------------------------------------------------------------

    def voucher_for(self, miner: str) -> Voucher | None:
        """A voucher to attach to the next request to ``miner``, or None when it is paid up (or
        was handed one very recently and the amount has not jumped)."""
        account = self.miners.get(miner)
        if account is None or account.record.channel is None:
            return None
        owed = account.record.owed
        if owed <= account.last_sent:
            return None
        if (
            self._clock() - account.last_sent_at < self.config.voucher_interval_s
            and owed - account.last_sent < self.step
        ):
            return None
        return self._sign(account)

    def _sign(self, account: MinerAccount) -> Voucher:
        record = account.record
        assert record.channel is not None
        voucher = account.voucher
        if (
            voucher is None
            or voucher.channel != record.channel
            or voucher.cumulative != record.owed
        ):
            voucher = Voucher.sign(self.key, self.chain.chain_id, record.channel, record.owed)
            account.voucher = voucher
        return voucher

    def delivered(self, miner: str, voucher: Voucher) -> None:
        """The miner answered a request that carried ``voucher``."""
        account = self.miners.get(miner)
        if account is not None and account.record.channel == voucher.channel:
            account.last_sent = max(account.last_sent, voucher.cumulative)
            account.last_sent_at = self._clock()

    async def flush(self) -> None:
        """Hand every miner that is owed more than its last voucher a fresh one."""
        for miner, account in list(self.miners.items()):
            if account.record.channel is None or account.record.owed <= account.last_sent:
                continue
            if account.url is None:
                account.url = self._locate(miner)
                if account.url is None:
                    continue
            voucher = self._sign(account)
            host, port = account.url
            headers = sign_request(self.key, miner, "POST", VOUCHER_PATH, b"{}")  # type: ignore[arg-type]
            headers[VOUCHER_HEADER] = voucher.header
            headers["Content-Type"] = "application/json"
            try:
                response = await self.pool.request(
                    host, port, "POST", VOUCHER_PATH, headers.items(), b"{}", 10.0
                )
            except UpstreamError as error:
                log.info("could not hand %s… its voucher: %s", miner[:12], error)
                continue
            if response.status < 300:
                self.delivered(miner, voucher)
            elif account.flush_failures == 0 or account.flush_failures % 100 == 0:
                log.warning(
                    "miner %s… refused its voucher on %s: %d %s",
                    miner[:12],
                    VOUCHER_PATH,
                    response.status,
                    response.body[:200],
                )
            if response.status >= 300:
                account.flush_failures += 1

    async def run_flush(self) -> None:
        while True:
            await asyncio.sleep(self.config.voucher_flush_s)
            try:
                await self.flush()
            except Exception:  # a bug here must not stop the loop that pays miners
                log.exception("voucher flush failed")

    # -- channels -----------------------------------------------------------------------------

    def _ensure_soon(self, miner: str, account: MinerAccount) -> None:
        if account.busy or self._clock() < account.retry_at:
            return
        account.busy = True
        task = asyncio.create_task(self._ensure(miner, account), name=f"pay-{miner[:8]}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _ensure(self, miner: str, account: MinerAccount) -> None:
        record = account.record
        try:
            amount = max(self.config.miner_deposit, 2 * record.debt)
            if record.channel is None:
                await self.sender.send(
                    "channel_open",
                    {
                        "payee": miner,
                        "signer": self.key.address,
                        "amount": amount,
                        "timeout": self.config.miner_channel_timeout,
                    },
                )
                channels = await self.ledger.channels(
                    self.key.address, role="payer", open_only=True
                )
                mine = [c for c in channels if c.payee == miner and c.signer == self.key.address]
                if not mine:
                    raise PaymentError(f"the channel opened to {miner[:12]}… is not on the ledger")
                channel = max(mine, key=lambda c: c.id)
                record.channel, record.owed = channel.id, channel.redeemed
                account.last_sent, account.voucher = channel.redeemed, None
            else:
                await self.sender.send(
                    "channel_top_up", {"channel": record.channel, "amount": amount, "extend": 0}
                )
                channel = await self.ledger.channel(record.channel)
            record.deposit, record.expires_at = channel.deposit, channel.expires_at
            moved = min(record.debt, account.room)
            record.owed += moved
            record.debt -= moved
            self.store.save_miner_channel(record)
            log.info(
                "channel %d to %s…: deposit %d, owed %d, debt %d",
                record.channel,
                miner[:12],
                record.deposit,
                record.owed,
                record.debt,
            )
        except (PaymentError, NodeError) as error:
            account.retry_at = self._clock() + RETRY_AFTER_FAILURE_S
            log.warning("cannot fund the channel to miner %s…: %s", miner[:12], error)
        finally:
            account.busy = False
        if record.debt > 0 and self._clock() >= account.retry_at:
            self._ensure_soon(miner, account)

    async def wait_idle(self, timeout: float = 60.0) -> None:
        """Until no channel is being opened or topped up (tests, shutdown)."""
        deadline = self._clock() + timeout
        while self._tasks and self._clock() < deadline:
            await asyncio.sleep(0.05)

    async def aclose(self) -> None:
        for task in list(self._tasks):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
