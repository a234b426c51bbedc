"""What the gateway asks of the ledger: the head, channels, and its own transactions in order.

- :class:`FastKey`: a keypair whose Ed25519 signing key and address are computed once (the
  gateway signs a request, and often a voucher, for every call it forwards; rebuilding the
  signing key each time would double the cost).
- :class:`ChainView`: chain id and a recent height, refreshed in the background.
- :class:`TxSender`: the gateway's transactions (opening and topping up miner channels,
  redeeming customer vouchers), one at a time per nonce, waiting for their blocks.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from nacl.signing import SigningKey

from agora.chain.client import LedgerClient
from agora.chain.errors import NodeError
from agora.chain.models import TxInfo
from agora.crypto.keys import Keypair
from agora.crypto.signing import sign_transaction
from agora.gateway.errors import PaymentError
from agora.protocol.channels import voucher_signing_bytes
from agora.protocol.codec import Json, signing_bytes

__all__ = ["ChainView", "FastKey", "TxSender", "Voucher"]

log = logging.getLogger(__name__)


class FastKey:
    """A :class:`Keypair` that keeps its signing key and address (duck-types ``Keypair`` for
    :func:`agora.net.signing.sign_request` and :func:`sign_transaction`)."""

    def __init__(self, keypair: Keypair) -> None:
        self.keypair = keypair
        self.seed = keypair.seed
        self._signing = SigningKey(keypair.seed)
        self.address = bytes(self._signing.verify_key).hex()

    def sign(self, message: bytes) -> str:
        return self._signing.sign(message).signature.hex()

    def sign_message(self, domain: bytes, message: Json) -> str:
        return self.sign(signing_bytes(domain, message))

    def __repr__(self) -> str:
        return f"FastKey(address={self.address[:12]}…)"


@dataclass(frozen=True)
class Voucher:
    """A signed cumulative voucher: the wire form is ``channel,cumulative,signature``."""

    channel: int
    cumulative: int
    signature: str

    @cached_property
    def header(self) -> str:
        return f"{self.channel},{self.cumulative},{self.signature}"

    @classmethod
    def sign(cls, key: FastKey, chain_id: str, channel: int, cumulative: int) -> Voucher:
        return cls(
            channel, cumulative, key.sign(voucher_signing_bytes(chain_id, channel, cumulative))
        )


class ChainView:
    """The chain id and a height at most ``refresh_s`` old."""

    def __init__(self, ledger: LedgerClient, chain_id: str, height: int, block_time: float) -> None:
        self.ledger = ledger
        self.chain_id = chain_id
        self.height = height
        self.block_time = block_time
        self._task: asyncio.Task[None] | None = None

    @classmethod
    async def create(cls, ledger: LedgerClient) -> ChainView:
        status = await ledger.status()
        return cls(ledger, status.chain_id, status.height, status.block_time)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="chain-view")

    async def _run(self) -> None:
        while True:
            # Only the escrow-expiry check reads it, with a margin of many blocks.
            await asyncio.sleep(max(2.0, min(self.block_time, 10.0)))
            try:
                self.height = (await self.ledger.status()).height
            except NodeError as error:
                log.warning("cannot read the ledger's head: %s", error)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


class TxSender:
    """Signs and submits the gateway's transactions with consecutive nonces."""

    def __init__(self, ledger: LedgerClient, key: FastKey, chain: ChainView) -> None:
        self.ledger = ledger
        self.key = key
        self.chain = chain
        self._lock = asyncio.Lock()

    async def submit(self, kind: str, body: dict[str, Any]) -> str:
        """Sign and submit; returns the hash once the node's mempool holds it.

        Raises:
            PaymentError: the node refused it (the code and message say why).
        """
        async with self._lock:
            try:
                nonce = await self.ledger.next_nonce(self.key.address)
                tx = sign_transaction(self.key, self.chain.chain_id, kind, nonce, body)  # type: ignore[arg-type]
                return await self.ledger.submit(tx)
            except NodeError as error:
                raise PaymentError(f"{kind} refused by the ledger: {error.code}: {error}") from None

    async def send(self, kind: str, body: dict[str, Any], timeout: float = 60.0) -> TxInfo:
        """Submit and wait for a block. Raises PaymentError if it is refused or left out."""
        tx_hash = await self.submit(kind, body)
        try:
            info = await self.ledger.wait_for_tx(tx_hash, timeout=timeout)
        except (NodeError, TimeoutError) as error:
            raise PaymentError(f"{kind} {tx_hash[:12]}… not confirmed: {error}") from None
        if info.status != "included":
            raise PaymentError(f"{kind} rejected in a block: {info.code}: {info.message}")
        return info
