"""The gateway's archive of organic receipts: every answer it served, kept for auditors.

Validators audit a random fraction of *organic* traffic (issue #5, layer 3): a miner that is
honest only to validators' probes is caught on the answers it gave customers. For that the
gateway keeps, for every answer it charged for, the miner's signed receipt and the exact bytes
the receipt's hashes cover: the request body the gateway signed and sent, and the response
content (a JSON answer without its ``agora_receipt`` field, or every byte of a stream before the
receipt event). Anyone can then check ``sha256(request) == receipt.request_hash`` and
``sha256(response) == receipt.response_hash`` and re-run the request on a reference model.

Writes stay off the request path: :meth:`ReceiptArchive.add` appends the parsed receipt and the
two byte strings to an in-memory queue (no I/O, no encoding, no hashing), and
:meth:`ReceiptArchive.flush`, which the service runs every 0.25 s on a worker thread with its own
SQLite connection, encodes, hashes and writes the queue in one transaction. Retention is
bounded by age and by row count (oldest first), and the queue itself by ``max_pending`` (beyond
it the oldest queued rows are dropped and counted: a gateway under a flood keeps serving rather
than grow its memory). A ``kill -9`` loses at most the last flush interval of archived
answers, never a charge.

Table ``receipts`` in ``<data-dir>/archive.sqlite`` (its own file, so that archive writes never
wait for, or hold up, the usage and escrow writes in ``gateway.sqlite``):

    hash      sha256 (hex) of the receipt's canonical JSON: how the ledger names a receipt
    ts_ms     the receipt's timestamp (the miner's clock, milliseconds)
    netuid, miner, model_id, caller     from the receipt
    receipt   the receipt's canonical JSON
    request   the request bytes (what request_hash covers)
    response  the response content (what response_hash covers)
    stream    1 if the answer was an event stream
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import sqlite3
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agora.net.receipts import Receipt
from agora.protocol.codec import canonical_bytes, sha256_hex

__all__ = ["ArchivedAnswer", "ReceiptArchive", "receipt_hash"]

log = logging.getLogger(__name__)

ARCHIVE_DB = "archive.sqlite"
DEFAULT_MAX_ROWS = 200_000
DEFAULT_MAX_AGE_S = 7 * 24 * 3600
DEFAULT_MAX_PENDING = 50_000

SCHEMA = """
CREATE TABLE IF NOT EXISTS receipts (
    hash      TEXT PRIMARY KEY,
    ts_ms     INTEGER NOT NULL,
    netuid    INTEGER NOT NULL,
    miner     TEXT NOT NULL,
    model_id  TEXT NOT NULL,
    caller    TEXT NOT NULL,
    receipt   TEXT NOT NULL,
    request   BLOB NOT NULL,
    response  BLOB NOT NULL,
    stream    INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS receipts_netuid_ts ON receipts(netuid, ts_ms);
CREATE INDEX IF NOT EXISTS receipts_miner_ts ON receipts(miner, ts_ms);
CREATE INDEX IF NOT EXISTS receipts_ts ON receipts(ts_ms);
"""


def receipt_hash(receipt: Receipt | dict[str, Any]) -> str:
    """sha256 (hex) of a receipt's canonical JSON (signature included): its name on the ledger
    and in the archive, and the input of the audit draw."""
    fields = receipt.to_json() if isinstance(receipt, Receipt) else receipt
    return sha256_hex(canonical_bytes(fields))


@dataclass(frozen=True)
class ArchivedAnswer:
    """One archived answer."""

    hash: str
    receipt: dict[str, Any]
    request: bytes
    response: bytes
    stream: bool

    def summary(self) -> dict[str, Any]:
        """The public view: the receipt and its hash, no content."""
        return {"hash": self.hash, "stream": self.stream, "receipt": self.receipt}

    def to_json(self) -> dict[str, Any]:
        """The auditor's view: the receipt with the exact bytes its hashes cover (base64)."""
        return {
            **self.summary(),
            "request_b64": base64.b64encode(self.request).decode(),
            "response_b64": base64.b64encode(self.response).decode(),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ArchivedAnswer:
        """Read the auditor's view back (raises KeyError, ValueError, TypeError if malformed)."""
        return cls(
            hash=str(data["hash"]),
            receipt=dict(data["receipt"]),
            request=base64.b64decode(data["request_b64"], validate=True),
            response=base64.b64decode(data["response_b64"], validate=True),
            stream=bool(data.get("stream", False)),
        )


_Row = tuple[str, int, int, str, str, str, str, bytes, bytes, int]
_Queued = tuple[Receipt, bytes, bytes, bool]


class ReceiptArchive:
    """The archive (see the module docstring). ``add`` from the event loop; ``flush`` from one
    worker at a time (``run`` does it); reads on the event loop's own connection."""

    def __init__(
        self,
        path: Path,
        *,
        max_rows: int = DEFAULT_MAX_ROWS,
        max_age_s: float = DEFAULT_MAX_AGE_S,
        max_pending: int = DEFAULT_MAX_PENDING,
    ) -> None:
        if max_rows < 1 or max_age_s <= 0 or max_pending < 1:
            raise ValueError("max_rows, max_age_s and max_pending must be positive")
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.max_rows = max_rows
        self.max_age_s = max_age_s
        self.max_pending = max_pending
        self.dropped = 0
        self.written = 0
        self._queue: deque[_Queued] = deque()
        self._lock = threading.Lock()  # one flush at a time
        self._writer = self._connect()
        self._writer.executescript(SCHEMA)
        self._reader = self._connect()

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("PRAGMA busy_timeout=5000")
        return db

    # -- writing ----------------------------------------------------------------------------------

    def add(
        self, receipt: Receipt, receipt_json: bytes, request: bytes, response: bytes, stream: bool
    ) -> None:
        """Queue one answer (the hot path: no I/O, no encoding, no hashing; :meth:`flush` does
        those on its worker thread). ``receipt_json`` is the receipt as the miner sent it (kept
        for reference; the archive stores the canonical form, whose hash is the ledger's)."""
        if len(self._queue) >= self.max_pending:
            self._queue.popleft()
            self.dropped += 1
        self._queue.append((receipt, request, response, stream))

    @staticmethod
    def _row(item: _Queued) -> _Row:
        receipt, request, response, stream = item
        canonical = canonical_bytes(receipt.to_json())
        return (
            sha256_hex(canonical),
            receipt.timestamp,
            receipt.netuid,
            receipt.miner,
            receipt.model_id,
            receipt.caller,
            canonical.decode(),
            bytes(request),
            bytes(response),
            int(stream),
        )

    @property
    def pending(self) -> int:
        return len(self._queue)

    def flush(self, now_ms: int | None = None) -> int:
        """Write what is queued in one transaction and apply retention; returns rows written.
        Safe to call from a worker thread."""
        with self._lock:
            taken: list[_Queued] = []
            while self._queue:
                taken.append(self._queue.popleft())
            rows = [self._row(item) for item in taken]
            now = int(time.time() * 1000) if now_ms is None else now_ms
            cutoff = now - int(self.max_age_s * 1000)
            db = self._writer
            db.execute("BEGIN IMMEDIATE")
            try:
                db.executemany("INSERT OR IGNORE INTO receipts VALUES (?,?,?,?,?,?,?,?,?,?)", rows)
                db.execute("DELETE FROM receipts WHERE ts_ms < ?", (cutoff,))
                (count,) = db.execute("SELECT COUNT(*) FROM receipts").fetchone()
                if count > self.max_rows:
                    db.execute(
                        "DELETE FROM receipts WHERE rowid IN (SELECT rowid FROM receipts "
                        "ORDER BY ts_ms, rowid LIMIT ?)",
                        (count - self.max_rows,),
                    )
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                for item in reversed(taken):  # keep them for the next attempt
                    self._queue.appendleft(item)
                raise
            self.written += len(rows)
            return len(rows)

    async def run(self, interval_s: float) -> None:
        """Flush every ``interval_s`` on a worker thread, until cancelled (then flush once)."""
        try:
            while True:
                await asyncio.sleep(interval_s)
                if self._queue:
                    try:
                        await asyncio.to_thread(self.flush)
                    except sqlite3.Error:  # a full disk must not stop the gateway
                        log.exception("writing the receipt archive %s failed", self.path)
        finally:
            if self._queue:
                try:
                    self.flush()
                except sqlite3.Error:
                    log.exception("final write of the receipt archive failed")

    def close(self) -> None:
        if self._queue:
            self.flush()
        self._writer.close()
        self._reader.close()

    # -- reading ----------------------------------------------------------------------------------

    def receipts(
        self,
        *,
        miner: str | None = None,
        netuid: int | None = None,
        before_ms: int | None = None,
        limit: int = 100,
    ) -> list[ArchivedAnswer]:
        """Newest first (by receipt time), written rows only, without content."""
        where, args = self._where(miner, netuid)
        if before_ms is not None:
            where.append("ts_ms < ?")
            args.append(before_ms)
        sql = "SELECT hash, receipt, stream FROM receipts"
        if where:
            sql += " WHERE " + " AND ".join(where)
        rows = self._reader.execute(sql + " ORDER BY ts_ms DESC, hash LIMIT ?", (*args, limit))
        return [_answer(h, r, b"", b"", s) for h, r, s in rows]

    def get(self, hash_hex: str) -> ArchivedAnswer | None:
        row = self._reader.execute(
            "SELECT hash, receipt, request, response, stream FROM receipts WHERE hash = ?",
            (hash_hex,),
        ).fetchone()
        return None if row is None else _answer(*row)

    def for_audit(self, netuid: int, since_ms: int, limit: int) -> list[ArchivedAnswer]:
        """Answers of ``netuid`` with ``ts_ms >= since_ms``, oldest first, with content."""
        rows = self._reader.execute(
            "SELECT hash, receipt, request, response, stream FROM receipts "
            "WHERE netuid = ? AND ts_ms >= ? ORDER BY ts_ms, hash LIMIT ?",
            (netuid, since_ms, limit),
        )
        return [_answer(*row) for row in rows]

    def count(self) -> int:
        (n,) = self._reader.execute("SELECT COUNT(*) FROM receipts").fetchone()
        return int(n)

    @staticmethod
    def _where(miner: str | None, netuid: int | None) -> tuple[list[str], list[Any]]:
        where: list[str] = []
        args: list[Any] = []
        if miner is not None:
            where.append("miner = ?")
            args.append(miner)
        if netuid is not None:
            where.append("netuid = ?")
            args.append(netuid)
        return where, args


def _answer(
    hash_hex: str, receipt: str, request: bytes, response: bytes, stream: int
) -> ArchivedAnswer:
    return ArchivedAnswer(
        hash_hex, json.loads(receipt), bytes(request), bytes(response), bool(stream)
    )
