"""The gateway's own records, in SQLite (WAL) under its data dir: ``gateway.sqlite``.

Tables:

    api_keys         key_id, sha256 of the key (the key itself is never stored), the ledger
                     account that owns it, its escrow channel, limits, revoked
    escrows          per customer channel: spent (what the gateway may claim, cumulative),
                     redeemed (claimed on the ledger), deposit and expiry as last read
    usage            one row per answered request: key, model, miner, tokens, the miner's
                     price, what the key was charged, the receipt (JSON)
    miner_channels   per miner hotkey: the gateway's channel to it, its deposit, owed (the
                     cumulative voucher the gateway owes in it) and debt (owed, not yet covered
                     by a channel)

Writes that happen on every request (usage rows, spent, owed) are queued and written by
:meth:`GatewayStore.flush` in one transaction, which the service calls every ``usage_flush_s``
(50 ms) and at shutdown; a key is written at once, before it is shown to its owner. A ``kill -9``
loses at most the last flush interval of usage, always in the customers' favour (the gateway
claims and pays less, never more), and never a key.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

__all__ = ["EscrowRecord", "GatewayStore", "KeyRecord", "MinerChannelRecord", "UsageRow"]

SCHEMA = """
CREATE TABLE IF NOT EXISTS api_keys (
    key_id      TEXT PRIMARY KEY,
    key_hash    TEXT NOT NULL UNIQUE,
    account     TEXT NOT NULL,
    channel     INTEGER NOT NULL UNIQUE,
    label       TEXT NOT NULL,
    created_ms  INTEGER NOT NULL,
    rpm         REAL NOT NULL,
    burst       INTEGER NOT NULL,
    daily_limit INTEGER,
    revoked     INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS api_keys_account ON api_keys(account);
CREATE TABLE IF NOT EXISTS escrows (
    channel     INTEGER PRIMARY KEY,
    spent       INTEGER NOT NULL,
    redeemed    INTEGER NOT NULL,
    deposit     INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    closed      INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS usage (
    id                INTEGER PRIMARY KEY,
    key_id            TEXT NOT NULL,
    ts_ms             INTEGER NOT NULL,
    request_id        TEXT NOT NULL,
    model             TEXT NOT NULL,
    netuid            INTEGER NOT NULL,
    miner             TEXT NOT NULL,
    prompt_tokens     INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    price             INTEGER NOT NULL,
    charged           INTEGER NOT NULL,
    receipt           TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS usage_key_ts ON usage(key_id, ts_ms);
CREATE TABLE IF NOT EXISTS miner_channels (
    miner       TEXT PRIMARY KEY,
    channel     INTEGER,
    deposit     INTEGER NOT NULL,
    owed        INTEGER NOT NULL,
    debt        INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL
);
"""


@dataclass
class KeyRecord:
    key_id: str
    key_hash: str
    account: str
    channel: int
    label: str
    created_ms: int
    rpm: float
    burst: int
    daily_limit: int | None
    revoked: bool = False


@dataclass
class EscrowRecord:
    channel: int
    spent: int
    redeemed: int
    deposit: int
    expires_at: int
    closed: bool


@dataclass
class UsageRow:
    key_id: str
    ts_ms: int
    request_id: str
    model: str
    netuid: int
    miner: str
    prompt_tokens: int
    completion_tokens: int
    price: int
    charged: int
    receipt: str  # canonical JSON of the miner's receipt

    def to_json(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data["receipt"] = json.loads(self.receipt)
        return data


@dataclass
class MinerChannelRecord:
    miner: str
    channel: int | None
    deposit: int
    owed: int
    debt: int
    expires_at: int


def _columns(cls: type) -> list[str]:
    return [f.name for f in fields(cls)]


class GatewayStore:
    """SQLite access for the gateway, used from one event loop thread."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA busy_timeout=5000")
        self._db.executescript(SCHEMA)
        self._usage: list[UsageRow] = []
        self._escrows: dict[int, EscrowRecord] = {}
        self._miners: dict[str, MinerChannelRecord] = {}

    def close(self) -> None:
        self.flush()
        self._db.close()

    # -- keys ---------------------------------------------------------------------------------

    def insert_key(self, record: KeyRecord, escrow: EscrowRecord) -> None:
        """Write a new key and its escrow at once (raises sqlite3.IntegrityError if the key id,
        hash or channel is taken)."""
        cols = _columns(KeyRecord)
        values = [getattr(record, c) for c in cols]
        values[cols.index("revoked")] = int(record.revoked)
        with self._transaction():
            self._db.execute(
                f"INSERT INTO api_keys ({','.join(cols)}) VALUES ({','.join('?' * len(cols))})",
                values,
            )
            self._write_escrow(escrow)

    def load_keys(self) -> list[KeyRecord]:
        cols = _columns(KeyRecord)
        rows = self._db.execute(f"SELECT {','.join(cols)} FROM api_keys ORDER BY created_ms")
        records = []
        for row in rows:
            record = KeyRecord(*row)
            record.revoked = bool(record.revoked)
            records.append(record)
        return records

    def set_revoked(self, key_id: str, revoked: bool = True) -> None:
        self._db.execute("UPDATE api_keys SET revoked=? WHERE key_id=?", (int(revoked), key_id))

    # -- escrows and miner channels (queued) --------------------------------------------------

    def load_escrows(self) -> dict[int, EscrowRecord]:
        rows = self._db.execute(f"SELECT {','.join(_columns(EscrowRecord))} FROM escrows")
        return {
            row[0]: EscrowRecord(row[0], row[1], row[2], row[3], row[4], bool(row[5]))
            for row in rows
        }

    def save_escrow(self, escrow: EscrowRecord) -> None:
        self._escrows[escrow.channel] = escrow

    def _write_escrow(self, e: EscrowRecord) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO escrows VALUES (?,?,?,?,?,?)",
            (e.channel, e.spent, e.redeemed, e.deposit, e.expires_at, int(e.closed)),
        )

    def load_miner_channels(self) -> dict[str, MinerChannelRecord]:
        rows = self._db.execute(
            f"SELECT {','.join(_columns(MinerChannelRecord))} FROM miner_channels"
        )
        return {row[0]: MinerChannelRecord(*row) for row in rows}

    def save_miner_channel(self, record: MinerChannelRecord) -> None:
        self._miners[record.miner] = record

    # -- usage --------------------------------------------------------------------------------

    def add_usage(self, row: UsageRow) -> None:
        self._usage.append(row)

    def usage(self, key_id: str, limit: int = 100, since_ms: int = 0) -> list[UsageRow]:
        """The key's most recent rows, newest first (flushed ones)."""
        cols = _columns(UsageRow)
        rows = self._db.execute(
            f"SELECT {','.join(cols)} FROM usage WHERE key_id=? AND ts_ms>=? "
            "ORDER BY id DESC LIMIT ?",
            (key_id, since_ms, limit),
        )
        return [UsageRow(*row) for row in rows]

    def usage_totals(self, key_id: str, since_ms: int = 0) -> dict[str, Any]:
        """Requests, tokens and charges of a key, in all and per miner and per model."""
        where = "WHERE key_id=? AND ts_ms>=?"
        args = (key_id, since_ms)
        total = self._db.execute(
            "SELECT COUNT(*), COALESCE(SUM(prompt_tokens),0), COALESCE(SUM(completion_tokens),0),"
            f" COALESCE(SUM(price),0), COALESCE(SUM(charged),0) FROM usage {where}",
            args,
        ).fetchone()
        per: dict[str, list[dict[str, Any]]] = {}
        for column in ("miner", "model"):
            rows = self._db.execute(
                f"SELECT {column}, COUNT(*), SUM(prompt_tokens + completion_tokens), SUM(price),"
                f" SUM(charged) FROM usage {where} GROUP BY {column} ORDER BY {column}",
                args,
            )
            per[column] = [
                {column: r[0], "requests": r[1], "tokens": r[2], "price": r[3], "charged": r[4]}
                for r in rows
            ]
        return {
            "requests": total[0],
            "prompt_tokens": total[1],
            "completion_tokens": total[2],
            "price": total[3],
            "charged": total[4],
            "by_miner": per["miner"],
            "by_model": per["model"],
        }

    def charged_since(self, since_ms: int) -> dict[str, int]:
        """Charges per key since ``since_ms`` (for daily spend limits after a restart)."""
        rows = self._db.execute(
            "SELECT key_id, SUM(charged) FROM usage WHERE ts_ms>=? GROUP BY key_id", (since_ms,)
        )
        return {key_id: int(total) for key_id, total in rows}

    # -- flushing -----------------------------------------------------------------------------

    @property
    def pending(self) -> int:
        return len(self._usage) + len(self._escrows) + len(self._miners)

    def flush(self) -> None:
        """Write everything queued, in one transaction."""
        if not self.pending:
            return
        usage, self._usage = self._usage, []
        escrows, self._escrows = self._escrows, {}
        miners, self._miners = self._miners, {}
        cols = _columns(UsageRow)
        with self._transaction():
            self._db.executemany(
                f"INSERT INTO usage ({','.join(cols)}) VALUES ({','.join('?' * len(cols))})",
                [tuple(getattr(row, c) for c in cols) for row in usage],
            )
            for escrow in escrows.values():
                self._write_escrow(escrow)
            self._db.executemany(
                "INSERT OR REPLACE INTO miner_channels VALUES (?,?,?,?,?,?)",
                [
                    (m.miner, m.channel, m.deposit, m.owed, m.debt, m.expires_at)
                    for m in miners.values()
                ],
            )

    def _transaction(self) -> _Tx:
        return _Tx(self._db)


class _Tx:
    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> None:
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, kind: object, *rest: object) -> None:
        self.db.execute("COMMIT" if kind is None else "ROLLBACK")


def rows_json(rows: Iterable[UsageRow]) -> list[dict[str, Any]]:
    return [row.to_json() for row in rows]
