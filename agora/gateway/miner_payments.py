"""The miner's side of gateway payments: take vouchers, keep the best one, redeem in batches.

A gateway pays a miner through a payment channel on the ledger (payer and signer: the gateway,
payee: the miner's hotkey). With its requests it hands over signed *cumulative* vouchers in the
header ``X-Agora-Voucher: <channel>,<cumulative units>,<128 hex signature>``, and, when it has not
called for a while, on ``POST /v1/payments/voucher`` (a signed request with an empty JSON body
and the same header). The miner:

1. checks each voucher: the channel exists and pays this hotkey, is open, the amount is above the
   best voucher held and within the deposit, and the channel's signer signed
   ``voucher_signing_bytes(chain_id, channel, cumulative)``; anything else is ignored (a forged
   or replayed voucher changes nothing and never fails the request that carried it);
2. keeps the highest voucher per channel in SQLite (WAL) under its data dir, so a restart loses
   nothing;
3. every ``interval_s`` redeems, for each channel, the best voucher above what the ledger has
   already paid (``channel_redeem``, signed by the hotkey): the ledger pays the difference.

Wiring it into a miner's FastAPI app (done by :mod:`agora.miner.service`)::

    payments = MinerPayments(hotkey, ledger, data_dir / "vouchers.sqlite")
    mount_payments(app, payments)   # inside the wire guard: only admitted callers' vouchers
    await payments.start()          # the redeemer
    ...
    await payments.aclose()         # one last redemption, then stop

``AGORA_VOUCHER_REDEEM_S`` (seconds between redemptions, default 10) tunes the redeemer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from agora.chain.client import LedgerClient
from agora.chain.errors import NodeError
from agora.chain.models import Channel
from agora.crypto.keys import Keypair
from agora.crypto.signing import sign_transaction
from agora.protocol.channels import voucher_signing_bytes
from agora.protocol.codec import verify_signature

__all__ = [
    "VOUCHER_HEADER",
    "VOUCHER_PATH",
    "HeldVoucher",
    "MinerPayments",
    "VoucherBook",
    "VoucherRejected",
    "mount_payments",
    "parse_voucher",
]

log = logging.getLogger(__name__)

VOUCHER_HEADER = "X-Agora-Voucher"
VOUCHER_PATH = "/v1/payments/voucher"
REDEEM_ENV = "AGORA_VOUCHER_REDEEM_S"
_HEADER_KEY = VOUCHER_HEADER.lower().encode()
_FORMAT = re.compile(r"(0|[1-9][0-9]{0,18}),(0|[1-9][0-9]{0,18}),([0-9a-f]{128})")
CHANNEL_TTL_S = 30.0


class VoucherRejected(Exception):
    """A voucher this miner will not keep; ``reason`` is a short code."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass
class HeldVoucher:
    channel: int
    cumulative: int
    signature: str
    payer: str
    redeemed: int  # what the ledger had paid on this channel when last seen
    received_ms: int

    def to_json(self) -> dict[str, Any]:
        return {
            "channel": self.channel,
            "cumulative": self.cumulative,
            "payer": self.payer,
            "redeemed": self.redeemed,
            "unredeemed": self.cumulative - self.redeemed,
        }


def parse_voucher(value: str) -> tuple[int, int, str]:
    """``channel,cumulative,signature`` in its one exact form. Raises VoucherRejected."""
    match = _FORMAT.fullmatch(value.strip())
    if match is None:
        raise VoucherRejected(
            "malformed",
            f"{VOUCHER_HEADER} must be `<channel>,<cumulative>,<128 hex signature>`",
        )
    return int(match[1]), int(match[2]), match[3]


class VoucherBook:
    """The best voucher per channel paying ``payee``, checked and kept in SQLite."""

    def __init__(self, payee: str, ledger: LedgerClient, db_path: Path) -> None:
        self.payee = payee
        self.ledger = ledger
        db_path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(db_path), isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS vouchers (channel INTEGER PRIMARY KEY, cumulative INTEGER "
            "NOT NULL, signature TEXT NOT NULL, payer TEXT NOT NULL, redeemed INTEGER NOT NULL, "
            "received_ms INTEGER NOT NULL)"
        )
        self.best: dict[int, HeldVoucher] = {
            row[0]: HeldVoucher(*row) for row in self._db.execute("SELECT * FROM vouchers")
        }
        self._channels: dict[int, tuple[float, Channel]] = {}
        self._chain_id: str | None = None
        self._lock = asyncio.Lock()

    def close(self) -> None:
        self._db.close()

    async def chain_id(self) -> str:
        if self._chain_id is None:
            self._chain_id = (await self.ledger.status()).chain_id
        return self._chain_id

    async def channel(self, channel_id: int, *, fresh: bool = False) -> Channel | None:
        cached = self._channels.get(channel_id)
        if cached is not None and not fresh and time.monotonic() - cached[0] < CHANNEL_TTL_S:
            return cached[1]
        try:
            found = await self.ledger.channel(channel_id)
        except NodeError as error:
            if error.code == "unknown_channel":
                return None
            raise
        self._channels[channel_id] = (time.monotonic(), found)
        return found

    async def offer(self, value: str) -> HeldVoucher:
        """Check a voucher and keep it if it is the best for its channel; returns the best one
        held for that channel (the offered one if it was kept).

        Raises:
            VoucherRejected: malformed, unknown_channel, not_payee, closed, over_deposit,
                already_redeemed, bad_signature; NodeError if the ledger cannot be read.
        """
        channel_id, cumulative, signature = parse_voucher(value)
        async with self._lock:
            held = self.best.get(channel_id)
            if held is not None and cumulative <= held.cumulative:
                return held  # an older voucher of the same channel: nothing to do
            channel = await self.channel(channel_id)
            if channel is not None and cumulative > channel.deposit:
                channel = await self.channel(channel_id, fresh=True)  # a top-up since?
            if channel is None:
                raise VoucherRejected("unknown_channel", f"no channel {channel_id} on the ledger")
            if channel.payee != self.payee:
                raise VoucherRejected(
                    "not_payee", f"channel {channel_id} pays {channel.payee[:12]}…, not this miner"
                )
            if channel.closed:
                raise VoucherRejected("closed", f"channel {channel_id} is closed")
            if cumulative > channel.deposit:
                raise VoucherRejected(
                    "over_deposit",
                    f"voucher for {cumulative} units exceeds channel {channel_id}'s deposit of "
                    f"{channel.deposit}",
                )
            if cumulative <= channel.redeemed:
                raise VoucherRejected(
                    "already_redeemed",
                    f"channel {channel_id} has already paid {channel.redeemed} units",
                )
            message = voucher_signing_bytes(await self.chain_id(), channel_id, cumulative)
            if not verify_signature(channel.signer, message, signature):
                raise VoucherRejected(
                    "bad_signature", f"not signed by channel {channel_id}'s signer"
                )
            held = HeldVoucher(
                channel_id,
                cumulative,
                signature,
                channel.payer,
                max(channel.redeemed, held.redeemed if held else 0),
                int(time.time() * 1000),
            )
            self._db.execute(
                "INSERT OR REPLACE INTO vouchers VALUES (?,?,?,?,?,?)",
                (
                    held.channel,
                    held.cumulative,
                    held.signature,
                    held.payer,
                    held.redeemed,
                    held.received_ms,
                ),
            )
            self.best[channel_id] = held
            return held

    def unredeemed(self) -> list[HeldVoucher]:
        return [v for _, v in sorted(self.best.items()) if v.cumulative > v.redeemed]

    def mark_redeemed(self, channel_id: int, redeemed: int) -> None:
        held = self.best.get(channel_id)
        if held is not None and redeemed > held.redeemed:
            held.redeemed = redeemed
            self._db.execute(
                "UPDATE vouchers SET redeemed=? WHERE channel=?", (redeemed, channel_id)
            )

    def forget(self, channel_id: int) -> None:
        self.best.pop(channel_id, None)
        self._db.execute("DELETE FROM vouchers WHERE channel=?", (channel_id,))

    def summary(self) -> dict[str, Any]:
        return {
            "channels": len(self.best),
            "held": sum(v.cumulative for v in self.best.values()),
            "redeemed": sum(v.redeemed for v in self.best.values()),
        }


class MinerPayments:
    """A :class:`VoucherBook` and the task that redeems it."""

    def __init__(
        self,
        hotkey: Keypair,
        ledger: LedgerClient,
        db_path: Path,
        *,
        interval_s: float | None = None,
    ) -> None:
        self.hotkey = hotkey
        self.ledger = ledger
        self.book = VoucherBook(hotkey.address, ledger, db_path)
        env = os.environ.get(REDEEM_ENV)
        self.interval_s = interval_s if interval_s is not None else float(env or 10.0)
        self._task: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[Any]] = set()
        self.redeemed_total = 0

    def take_in_background(self, value: str) -> None:
        """Check a voucher from a request header without delaying the request."""
        task = asyncio.create_task(self._take(value))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _take(self, value: str) -> None:
        try:
            await self.book.offer(value)
        except VoucherRejected as error:
            log.info("ignored a voucher (%s): %s", error.reason, error)
        except NodeError as error:
            log.warning("could not check a voucher against the ledger: %s", error)

    async def redeem(self) -> int:
        """Redeem every voucher above what its channel has paid. Returns units received."""
        received = 0
        for held in self.book.unredeemed():
            body = {
                "channel": held.channel,
                "cumulative": held.cumulative,
                "voucher": held.signature,
            }
            try:
                chain_id = await self.book.chain_id()
                nonce = await self.ledger.next_nonce(self.hotkey.address)
                tx = sign_transaction(self.hotkey, chain_id, "channel_redeem", nonce, body)
                info = await self.ledger.wait_for_tx(await self.ledger.submit(tx), timeout=60)
            except (NodeError, TimeoutError) as error:
                log.warning("redeeming channel %d failed: %s", held.channel, error)
                channel = await self._quiet_channel(held.channel)
                if channel is not None:
                    self._settle_from(channel, held)
                continue
            if info.status == "included":
                received += held.cumulative - held.redeemed
                self.book.mark_redeemed(held.channel, held.cumulative)
                log.info("redeemed %d units on channel %d", held.cumulative, held.channel)
            else:
                log.warning(
                    "redeem on channel %d rejected: %s %s", held.channel, info.code, info.message
                )
                channel = await self._quiet_channel(held.channel)
                if channel is not None:
                    self._settle_from(channel, held)
        self.redeemed_total += received
        return received

    def _settle_from(self, channel: Channel, held: HeldVoucher) -> None:
        if channel.closed:
            self.book.forget(held.channel)
        else:
            self.book.mark_redeemed(held.channel, channel.redeemed)

    async def _quiet_channel(self, channel_id: int) -> Channel | None:
        try:
            return await self.book.channel(channel_id, fresh=True)
        except NodeError:
            return None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                await self.redeem()
            except Exception:  # keep redeeming whatever one round hit
                log.exception("voucher redemption round failed")

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="voucher-redeemer")

    async def aclose(self, *, final_redeem: bool = True) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for task in list(self._background):
            with contextlib.suppress(Exception):
                await task
        if final_redeem:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.redeem(), timeout=10.0)
        self.book.close()


class VoucherMiddleware:
    """ASGI middleware: hands any ``X-Agora-Voucher`` header to :class:`MinerPayments`."""

    def __init__(self, app: ASGIApp, payments: MinerPayments) -> None:
        self.app = app
        self.payments = payments

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] != VOUCHER_PATH:
            for name, value in scope["headers"]:
                if name == _HEADER_KEY:
                    self.payments.take_in_background(value.decode("latin-1"))
                    break
        await self.app(scope, receive, send)


def mount_payments(app: Any, payments: MinerPayments) -> None:
    """Add the voucher header middleware (innermost: after the wire guard admitted the caller)
    and ``POST /v1/payments/voucher`` to a Starlette or FastAPI ``app`` that has not started."""
    app.user_middleware.append(Middleware(VoucherMiddleware, payments=payments))

    async def take_voucher(request: Request) -> JSONResponse:
        value = request.headers.get(VOUCHER_HEADER)
        if value is None:
            return JSONResponse(
                {"error": {"code": "no_voucher", "message": f"send the {VOUCHER_HEADER} header"}},
                400,
            )
        try:
            held = await payments.book.offer(value)
        except VoucherRejected as error:
            return JSONResponse(
                {"error": {"code": f"voucher_{error.reason}", "message": str(error)}}, 422
            )
        except NodeError as error:
            return JSONResponse(
                {"error": {"code": "ledger_unavailable", "message": str(error)}}, 503
            )
        return JSONResponse({"accepted": held.to_json()})

    app.router.add_route(VOUCHER_PATH, take_voucher, methods=["POST"])
