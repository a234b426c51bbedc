"""API keys and the escrow behind each: who may call, how fast, and how much is left to spend.

A key is ``sk-agora-`` and 43 random URL-safe characters; the gateway keeps only its SHA-256.
Each key belongs to one ledger account and is bound to one payment channel from that account to
the gateway (``payee = signer = gateway``). What the key may still spend is::

    available = deposit - spent - reserved

``deposit`` is the channel's on the ledger (re-read when a top-up may have happened), ``spent``
what the gateway has charged so far (the cumulative voucher it will redeem), and ``reserved``
the worst-case cost of requests in flight. A request reserves its worst case before any miner is
called (an embedding's exact price; a generation's price at ``max_tokens``), is charged the
miner's receipt price (plus the markup, 0 by default) when it succeeds, and releases the rest.
Nothing is charged for a request that fails. The gateway therefore never serves beyond what the
escrow covers.

A key stops working ``min_blocks_left`` blocks before its channel expires (after expiry the
customer may close the channel and take back what was not redeemed); ``keys top-up --extend``
pushes the expiry.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass
from typing import Any

from agora.chain.client import LedgerClient
from agora.chain.errors import NodeError
from agora.chain.models import Channel
from agora.gateway.config import GatewayConfig
from agora.gateway.errors import (
    AuthenticationFailed,
    EscrowExhausted,
    Forbidden,
    RateLimited,
    SpendLimitReached,
)
from agora.gateway.ledger import ChainView
from agora.gateway.store import EscrowRecord, GatewayStore, KeyRecord
from agora.protocol.units import format_amount

__all__ = ["KEY_PREFIX", "Accounts", "Hold", "KeyState", "hash_key", "new_api_key"]

KEY_PREFIX = "sk-agora-"
DAY_MS = 86_400_000
REFRESH_MIN_S = 1.0


def new_api_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def key_id_of(key_hash: str) -> str:
    return "key_" + key_hash[:16]


def _today(now_ms: int) -> int:
    return now_ms // DAY_MS


class KeyState:
    """A key in memory: its record, its escrow, what is reserved, its rate bucket."""

    __slots__ = (
        "bucket_stamp",
        "bucket_tokens",
        "day",
        "escrow",
        "last_refresh",
        "record",
        "reserved",
        "spent_today",
    )

    def __init__(self, record: KeyRecord, escrow: EscrowRecord, spent_today: int = 0) -> None:
        self.record = record
        self.escrow = escrow
        self.reserved = 0
        self.day = _today(int(time.time() * 1000))
        self.spent_today = spent_today
        self.bucket_tokens = float(record.burst)
        self.bucket_stamp = time.monotonic()
        self.last_refresh = 0.0

    @property
    def available(self) -> int:
        if self.escrow.closed:
            return 0
        return max(0, self.escrow.deposit - self.escrow.spent - self.reserved)

    def to_json(self, height: int | None = None) -> dict[str, Any]:
        r, e = self.record, self.escrow
        return {
            "key_id": r.key_id,
            "account": r.account,
            "channel": r.channel,
            "label": r.label,
            "created_ms": r.created_ms,
            "revoked": r.revoked,
            "rate_limit_rpm": r.rpm,
            "burst": r.burst,
            "daily_spend_limit": r.daily_limit,
            "spent_today": self.spent_today,
            "deposit": e.deposit,
            "spent": e.spent,
            "redeemed": e.redeemed,
            "reserved": self.reserved,
            "available": self.available,
            "expires_at": e.expires_at,
            "blocks_left": None if height is None else e.expires_at - height,
            "closed": e.closed,
        }


@dataclass
class Hold:
    """Units reserved in a key's escrow for one request in flight."""

    key: KeyState
    amount: int
    open: bool = True


class Accounts:
    """Every key, by hash and by id; escrow reservations and charges."""

    def __init__(
        self, store: GatewayStore, config: GatewayConfig, chain: ChainView, ledger: LedgerClient
    ) -> None:
        self.store = store
        self.config = config
        self.chain = chain
        self.ledger = ledger
        self.by_hash: dict[str, KeyState] = {}
        self.by_id: dict[str, KeyState] = {}
        self.by_channel: dict[int, KeyState] = {}
        self._load()

    def _load(self) -> None:
        escrows = self.store.load_escrows()
        now = int(time.time() * 1000)
        today = self.store.charged_since(_today(now) * DAY_MS)
        for record in self.store.load_keys():
            escrow = escrows.get(record.channel) or EscrowRecord(record.channel, 0, 0, 0, 0, True)
            self._add(KeyState(record, escrow, today.get(record.key_id, 0)))

    def _add(self, key: KeyState) -> None:
        self.by_hash[key.record.key_hash] = key
        self.by_id[key.record.key_id] = key
        self.by_channel[key.record.channel] = key

    # -- who is calling -------------------------------------------------------------------------

    def authenticate(self, authorization: str | None) -> KeyState:
        """The key of an ``Authorization: Bearer sk-agora-...`` header.

        Raises:
            AuthenticationFailed: no header, not a bearer key, unknown or revoked key.
        """
        if not authorization:
            raise AuthenticationFailed(
                "no API key: send `Authorization: Bearer sk-agora-...` (create a key with "
                "`agora gateway keys new --wallet NAME --deposit TOKENS`)",
                code="missing_api_key",
            )
        scheme, _, token = authorization.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise AuthenticationFailed(
                "the Authorization header must be `Bearer <API key>`", code="invalid_api_key"
            )
        key = self.by_hash.get(hash_key(token))
        if key is None:
            shown = token[:12] + "…" if len(token) > 12 else token
            raise AuthenticationFailed(
                f"incorrect API key provided: {shown}; keys are shown once when created with "
                "`agora gateway keys new`",
                code="invalid_api_key",
            )
        if key.record.revoked:
            raise AuthenticationFailed(
                f"API key {key.record.key_id} was revoked", code="revoked_api_key"
            )
        return key

    def check_rate(self, key: KeyState) -> None:
        """Take one request from the key's bucket (``rpm`` per minute, ``burst`` at once).

        Raises:
            RateLimited: with Retry-After.
        """
        record = key.record
        rate = record.rpm / 60.0
        now = time.monotonic()
        tokens = min(float(record.burst), key.bucket_tokens + (now - key.bucket_stamp) * rate)
        key.bucket_stamp = now
        if tokens < 1.0:
            key.bucket_tokens = tokens
            wait = (1.0 - tokens) / rate
            raise RateLimited(
                f"rate limit reached for {record.key_id}: {record.rpm:g} requests per minute, "
                f"{record.burst} at once; retry after {wait:.2f} s",
                retry_after=wait,
            )
        key.bucket_tokens = tokens - 1.0

    # -- money ----------------------------------------------------------------------------------

    def _problem(self, key: KeyState, amount: int) -> Exception | None:
        escrow, record = key.escrow, key.record
        now = int(time.time() * 1000)
        if _today(now) != key.day:
            key.day, key.spent_today = _today(now), 0
        if record.daily_limit is not None and key.spent_today + amount > record.daily_limit:
            return SpendLimitReached(
                f"{record.key_id} has spent {format_amount(key.spent_today)} of its daily limit "
                f"of {format_amount(record.daily_limit)} tokens; this request needs up to "
                f"{format_amount(amount)}. The limit resets at 00:00 UTC.",
                code="spend_limit_exceeded",
            )
        top_up = (
            f"agora gateway keys top-up --wallet <owner of {record.account[:12]}…> "
            f"--key {record.key_id} --amount <tokens>"
        )
        details = {
            "available": key.available,
            "deposit": escrow.deposit,
            "spent": escrow.spent,
            "reserved": key.reserved,
            "needed": amount,
            "top_up": top_up,
        }
        if escrow.closed:
            return EscrowExhausted(
                f"the escrow channel {record.channel} of {record.key_id} is closed; create a new "
                "key with `agora gateway keys new`",
                code="escrow_closed",
                extra=details,
            )
        blocks_left = escrow.expires_at - self.chain.height
        if blocks_left < self.config.min_blocks_left:
            return EscrowExhausted(
                f"the escrow channel {record.channel} of {record.key_id} expires at block "
                f"{escrow.expires_at} ({blocks_left} blocks from now); extend it: {top_up} "
                "--extend <blocks>",
                code="escrow_expiring",
                extra=details,
            )
        if amount > key.available:
            return EscrowExhausted(
                f"insufficient escrow: {record.key_id} has {format_amount(key.available)} tokens "
                f"available (deposit {format_amount(escrow.deposit)}, spent "
                f"{format_amount(escrow.spent)}, reserved by requests in flight "
                f"{format_amount(key.reserved)}) and this request needs up to "
                f"{format_amount(amount)}. Top up: {top_up}",
                code="insufficient_escrow",
                extra=details,
            )
        return None

    async def reserve(self, key: KeyState, amount: int) -> Hold:
        """Reserve ``amount`` units for a request. Re-reads the channel once (at most once a
        second) before refusing, so a top-up is seen at once.

        Raises:
            EscrowExhausted (402), SpendLimitReached (429).
        """
        problem = self._problem(key, amount)
        if isinstance(problem, EscrowExhausted) and (
            time.monotonic() - key.last_refresh >= REFRESH_MIN_S
        ):
            await self.refresh(key)
            problem = self._problem(key, amount)
        if problem is not None:
            raise problem
        key.reserved += amount
        return Hold(key, amount)

    def release(self, hold: Hold) -> None:
        if hold.open:
            hold.open = False
            hold.key.reserved -= hold.amount

    def charge(self, hold: Hold, price: int) -> int:
        """Release the hold and charge the key ``price`` plus the markup; returns the charge
        (never above the hold: the reservation was the worst case)."""
        charged = min(hold.amount, price + -(-price * self.config.markup_bps // 10_000))
        self.release(hold)
        key = hold.key
        key.escrow.spent += charged
        key.spent_today += charged
        self.store.save_escrow(key.escrow)
        return charged

    async def refresh(self, key: KeyState) -> Channel | None:
        """Re-read the key's channel from the ledger (deposit, expiry, redeemed, closed)."""
        key.last_refresh = time.monotonic()
        try:
            channel = await self.ledger.channel(key.record.channel)
        except NodeError:
            return None
        self.apply_channel(key, channel)
        return channel

    def apply_channel(self, key: KeyState, channel: Channel) -> None:
        escrow = key.escrow
        escrow.deposit = channel.deposit
        escrow.expires_at = channel.expires_at
        escrow.closed = channel.closed
        escrow.redeemed = max(escrow.redeemed, channel.redeemed)
        escrow.spent = max(escrow.spent, escrow.redeemed)
        self.store.save_escrow(escrow)

    # -- keys -----------------------------------------------------------------------------------

    def register(
        self,
        account: str,
        channel: Channel,
        *,
        label: str = "",
        rpm: float | None = None,
        burst: int | None = None,
        daily_limit: int | None = None,
    ) -> tuple[str, KeyState]:
        """Create a key for ``account`` bound to ``channel`` (already checked against the ledger
        by the caller); writes it at once. Returns the key (shown once) and its state.

        Raises:
            Forbidden: the channel is bound to another key already.
        """
        if channel.id in self.by_channel:
            other = self.by_channel[channel.id].record.key_id
            raise Forbidden(
                f"channel {channel.id} already backs key {other}; open a new channel for a new key",
                code="channel_in_use",
            )
        key = new_api_key()
        digest = hash_key(key)
        record = KeyRecord(
            key_id=key_id_of(digest),
            key_hash=digest,
            account=account,
            channel=channel.id,
            label=label[:64],
            created_ms=int(time.time() * 1000),
            rpm=float(rpm if rpm is not None else self.config.default_rpm),
            burst=int(burst if burst is not None else self.config.default_burst),
            daily_limit=daily_limit if daily_limit is not None else self.config.default_daily_limit,
        )
        escrow = EscrowRecord(
            channel=channel.id,
            spent=channel.redeemed,
            redeemed=channel.redeemed,
            deposit=channel.deposit,
            expires_at=channel.expires_at,
            closed=channel.closed,
        )
        self.store.insert_key(record, escrow)
        state = KeyState(record, escrow)
        state.last_refresh = time.monotonic()
        self._add(state)
        return key, state

    def keys_of(self, account: str) -> list[KeyState]:
        return [k for k in self.by_id.values() if k.record.account == account]
