"""The mempool: transactions admitted but not yet in a block, and what became of recent ones.

There are no fees, so admission is what keeps the node usable under load:

- **dedupe** by transaction hash (submitting the same transaction twice is harmless);
- **size cap** for the whole pool (MempoolFull) and **per sender** (TooManyPending);
- a **token bucket per sender** (SenderRateLimited): ``rate`` transactions a second, bursts of
  ``burst``. A token is spent only on a transaction that passed every check, so nobody can drain
  another account's bucket with badly signed transactions in its name;
- **the rules, in advance**: each transaction is applied to an *overlay*, the committed state with
  every pending transaction applied in order. That is ``LedgerApp.check_tx`` (signature, then the
  sender's next nonce counting its pending transactions) followed by the transaction's own rule,
  with one signature verification. A transaction that could not execute after the pending ones
  is refused with the rule's error (BadSignature, BadNonce, InsufficientBalance ...) and leaves
  the overlay untouched. Pending transactions are therefore in nonce order per sender, and taking
  any prefix of the pool gives a valid block body.

After each block :meth:`Mempool.after_block` drops what the block included or rejected and
re-validates the rest against the new state (rebuilding the overlay); what no longer applies is
dropped with its reason. Statuses of the last ``remember`` transactions stay queryable.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal

from agora.chain.errors import MempoolFull, SenderRateLimited, TooManyPending
from agora.protocol.block import Rejected, apply_transaction
from agora.protocol.errors import InvalidTransaction
from agora.protocol.state import State
from agora.protocol.transactions import Transaction

__all__ = ["Mempool", "MempoolLimits", "TxStatus"]

Status = Literal["pending", "included", "rejected"]


@dataclass
class TxStatus:
    """What became of a transaction: pending, included at ``height``, or rejected (code+message)."""

    hash: str
    sender: str
    nonce: int
    kind: str
    status: Status
    height: int | None = None
    index: int | None = None  # position in the block
    code: str | None = None
    message: str | None = None


@dataclass(frozen=True)
class MempoolLimits:
    max_size: int = 20_000  # pending transactions in all
    max_per_sender: int = 256  # pending transactions of one sender
    rate: float = 100.0  # transactions a second per sender, sustained
    burst: int = 500  # ... and in a burst
    remember: int = 100_000  # statuses of finished transactions kept for the API


class _Bucket:
    __slots__ = ("stamp", "tokens")

    def __init__(self, tokens: float, stamp: float) -> None:
        self.tokens = tokens
        self.stamp = stamp


class Mempool:
    """Pending transactions in admission order, over an overlay of the committed state."""

    def __init__(
        self,
        state: State,
        limits: MempoolLimits | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limits = limits or MempoolLimits()
        self._clock = clock
        self._committed = state
        self._overlay = state.clone()
        self._pending: dict[str, Transaction] = {}  # hash -> tx, admission order
        self._per_sender: dict[str, int] = {}
        self._buckets: dict[str, _Bucket] = {}
        self._statuses: OrderedDict[str, TxStatus] = OrderedDict()

    def __len__(self) -> int:
        return len(self._pending)

    # -- admission ----------------------------------------------------------------------------

    def add(self, tx: Transaction) -> TxStatus:
        """Admit ``tx`` or raise. A transaction already pending or included is not an error: its
        status is returned.

        Raises MempoolFull, TooManyPending, SenderRateLimited (node limits) or any
        InvalidTransaction (BadSignature, BadNonce, InsufficientBalance ...: the rules).
        """
        tx_hash = tx.hash  # a property that hashes: compute it once
        known = self._statuses.get(tx_hash)
        if known is not None and known.status != "rejected":
            return known
        limits = self.limits
        if len(self._pending) >= limits.max_size:
            raise MempoolFull(
                f"the node holds {limits.max_size} pending transactions; retry after the next block"
            )
        sender = tx.sender
        if self._per_sender.get(sender, 0) >= limits.max_per_sender:
            raise TooManyPending(
                f"sender {sender[:12]}… already has {limits.max_per_sender} pending transactions; "
                "wait for some to be included"
            )
        bucket = self._refill(sender)
        if bucket.tokens < 1:
            raise SenderRateLimited(
                f"sender {sender[:12]}… may submit {limits.rate:g} transactions a second (bursts "
                f"of {limits.burst}); slow down and retry"
            )
        try:
            apply_transaction(self._overlay, tx, self._committed.height + 1)  # raises, no change
        except InvalidTransaction:
            raise
        except Exception:  # a bug in a rule may have left the overlay half-changed: rebuild it
            self._revalidate()
            raise
        bucket.tokens -= 1
        self._pending[tx_hash] = tx
        self._per_sender[sender] = self._per_sender.get(sender, 0) + 1
        status = TxStatus(tx_hash, sender, tx.nonce, tx.kind, "pending")
        self._remember(status)
        return status

    def _refill(self, sender: str) -> _Bucket:
        now = self._clock()
        bucket = self._buckets.get(sender)
        if bucket is None:
            if len(self._buckets) > 4 * self.limits.max_size:
                self._forget_full_buckets(now)
            bucket = self._buckets[sender] = _Bucket(float(self.limits.burst), now)
            return bucket
        bucket.tokens = min(
            float(self.limits.burst), bucket.tokens + (now - bucket.stamp) * self.limits.rate
        )
        bucket.stamp = now
        return bucket

    def _forget_full_buckets(self, now: float) -> None:
        """A bucket that has refilled completely holds nothing worth remembering."""
        limits = self.limits
        self._buckets = {
            sender: b
            for sender, b in self._buckets.items()
            if b.tokens + (now - b.stamp) * limits.rate < limits.burst
        }

    # -- reading ------------------------------------------------------------------------------

    def batch(self, limit: int) -> list[Transaction]:
        """The oldest ``limit`` pending transactions: a valid block body, in admission order."""
        txs: list[Transaction] = []
        for tx in self._pending.values():
            if len(txs) >= limit:
                break
            txs.append(tx)
        return txs

    def pending_nonce(self, address: str) -> int:
        """The nonce the sender's next transaction should carry."""
        return self._overlay.nonce(address)

    def pending_count(self, address: str) -> int:
        return self._per_sender.get(address, 0)

    def status(self, tx_hash: str) -> TxStatus | None:
        return self._statuses.get(tx_hash)

    # -- after a block ------------------------------------------------------------------------

    def after_block(
        self, state: State, included: Iterable[Transaction], rejected: Iterable[Rejected] = ()
    ) -> None:
        """The chain moved to ``state``: drop what the block took or refused, re-check the rest."""
        height = state.height
        for index, tx in enumerate(included):
            tx_hash = tx.hash
            self._drop(tx_hash, tx.sender)
            self._remember(
                TxStatus(tx_hash, tx.sender, tx.nonce, tx.kind, "included", height, index)
            )
        for item in rejected:
            self._reject(item.tx, item.tx.hash, item.error.code, str(item.error))
        self._committed = state
        self._revalidate()

    def _revalidate(self) -> None:
        """Rebuild the overlay from the committed state; drop what no longer applies."""
        self._overlay = self._committed.clone()
        block = self._committed.height + 1
        failed: dict[str, int] = {}  # sender -> nonce of its first transaction dropped here
        for tx_hash, tx in list(self._pending.items()):
            if tx.sender in failed:
                self._reject(
                    tx,
                    tx_hash,
                    "bad_nonce",
                    f"dropped because this sender's transaction with nonce {failed[tx.sender]} "
                    f"was rejected; resubmit from nonce {failed[tx.sender]}",
                )
                continue
            try:
                apply_transaction(self._overlay, tx, block)
            except InvalidTransaction as error:
                failed[tx.sender] = tx.nonce
                self._reject(tx, tx_hash, error.code, str(error))

    def _drop(self, tx_hash: str, sender: str) -> None:
        if self._pending.pop(tx_hash, None) is not None:
            left = self._per_sender[sender] - 1
            if left:
                self._per_sender[sender] = left
            else:
                del self._per_sender[sender]

    def _reject(self, tx: Transaction, tx_hash: str, code: str, message: str) -> None:
        """Drop ``tx`` (if pending) and remember why."""
        self._drop(tx_hash, tx.sender)
        self._remember(
            TxStatus(tx_hash, tx.sender, tx.nonce, tx.kind, "rejected", code=code, message=message)
        )

    def _remember(self, status: TxStatus) -> None:
        statuses = self._statuses
        statuses[status.hash] = status
        statuses.move_to_end(status.hash)
        cap = self.limits.remember + len(self._pending)
        while len(statuses) > cap:
            oldest, value = statuses.popitem(last=False)
            if value.status == "pending":  # never forget what is still pending
                statuses[oldest] = value
