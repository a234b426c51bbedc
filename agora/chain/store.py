"""The block store: SQLite in WAL mode with ``synchronous=FULL``.

Tables::

    meta       (key, value)                       schema version, chain id, genesis hash
    genesis    (id=0, hash, state)                the whole genesis state as JSON
    blocks     (height, hash, parent_hash, timestamp, tx_count, state_root, block)
    snapshots  (height, state)                    the state after ``height``, every N blocks: the
                                                  last KEEP_SNAPSHOTS of them, and genesis (0)

Durability: :meth:`Store.append` writes a block, and its snapshot when one is due, in one
``BEGIN IMMEDIATE ... COMMIT``. With WAL and ``synchronous=FULL`` SQLite fsyncs the log before the
commit returns, so a block is on disk before the node announces it; a ``kill -9`` (or a power cut)
at any moment loses at most the block that was being written, which nobody has seen.

Recovery: :meth:`Store.load` takes the latest snapshot, checks it against the header of its block
(state root and block hash), and re-executes every later block with ``apply_block``, which checks
signatures, transaction roots and state roots again. Anything that does not add up raises
StoreCorrupted with the path and what to do.

Two connections: the writer (the thread that produces or follows blocks) and a read-only one for
the API, so that a reader never sees a block whose transaction has not committed yet.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agora.chain.errors import GenesisMismatch, StoreCorrupted, StoreError
from agora.chain.genesis import check_genesis_state
from agora.protocol.block import Block, apply_block
from agora.protocol.errors import InvalidBlock
from agora.protocol.state import State, state_root

__all__ = ["DEFAULT_SNAPSHOT_INTERVAL", "BlockSummary", "Store"]

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
DEFAULT_SNAPSHOT_INTERVAL = 100
KEEP_SNAPSHOTS = 3  # the latest ones, plus genesis (always kept)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS genesis (
    id INTEGER PRIMARY KEY CHECK (id = 0),
    hash TEXT NOT NULL,
    state TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS blocks (
    height INTEGER PRIMARY KEY,
    hash TEXT NOT NULL UNIQUE,
    parent_hash TEXT NOT NULL,
    timestamp INTEGER NOT NULL,
    tx_count INTEGER NOT NULL,
    state_root TEXT NOT NULL,
    block TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS snapshots (height INTEGER PRIMARY KEY, state TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS epochs (
    netuid INTEGER NOT NULL,
    height INTEGER NOT NULL,
    emissions TEXT NOT NULL,
    PRIMARY KEY (netuid, height)
);
"""


@dataclass(frozen=True)
class BlockSummary:
    height: int
    hash: str
    parent_hash: str
    timestamp: int
    tx_count: int
    state_root: str


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


class Store:
    """Blocks and snapshots of one chain in one SQLite file. Open with :meth:`open`."""

    def __init__(
        self, path: Path, writer: sqlite3.Connection, reader: sqlite3.Connection, interval: int
    ) -> None:
        self.path = path
        self.snapshot_interval = interval
        self._writer = writer
        self._reader = reader
        self._write_lock = threading.Lock()
        self._read_lock = threading.Lock()
        self.genesis_hash: str | None = None
        self.head_height = 0
        self.head_hash: str | None = None
        self.closed = False

    # -- opening ------------------------------------------------------------------------------

    @classmethod
    def open(
        cls, path: Path, *, snapshot_interval: int = DEFAULT_SNAPSHOT_INTERVAL, check: bool = True
    ) -> Store:
        """Open (or create) the store at ``path``. ``check`` runs SQLite's ``quick_check``.

        Raises StoreCorrupted if the file is not a healthy Agora database.
        """
        if snapshot_interval < 1:
            raise ValueError("snapshot_interval must be at least 1")
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            writer = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            writer.execute("PRAGMA journal_mode=WAL")
            writer.execute("PRAGMA synchronous=FULL")
            writer.execute("PRAGMA foreign_keys=ON")
            if check:
                problems = [row[0] for row in writer.execute("PRAGMA quick_check")]
                if problems != ["ok"]:
                    raise sqlite3.DatabaseError("; ".join(problems[:5]))
            writer.executescript(_SCHEMA)
            reader = sqlite3.connect(
                f"{path.resolve().as_uri()}?mode=ro", uri=True, check_same_thread=False
            )
            reader.execute("PRAGMA query_only=1")
        except sqlite3.DatabaseError as error:
            raise _corrupted(path, error) from None
        store = cls(path, writer, reader, snapshot_interval)
        store._read_head()
        return store

    def _read_head(self) -> None:
        try:
            meta = dict(self._writer.execute("SELECT key, value FROM meta").fetchall())
            if meta and int(meta.get("schema_version", "0")) != SCHEMA_VERSION:
                raise StoreError(
                    f"{self.path} has schema version {meta.get('schema_version')}, this node "
                    f"reads version {SCHEMA_VERSION}; use a node of the matching version"
                )
            row = self._writer.execute("SELECT hash FROM genesis WHERE id = 0").fetchone()
            self.genesis_hash = None if row is None else row[0]
            row = self._writer.execute(
                "SELECT height, hash FROM blocks ORDER BY height DESC LIMIT 1"
            ).fetchone()
            count = self._writer.execute("SELECT COUNT(*) FROM blocks").fetchone()[0]
        except sqlite3.DatabaseError as error:
            raise _corrupted(self.path, error) from None
        if row is not None and self.genesis_hash is None:
            raise StoreCorrupted(f"{self.path} holds blocks but no genesis; {_ADVICE}")
        self.head_height, self.head_hash = (0, self.genesis_hash) if row is None else row
        if count != self.head_height:
            raise StoreCorrupted(
                f"{self.path} holds {count} blocks but its head is at height {self.head_height}: "
                f"blocks are missing; {_ADVICE}"
            )

    def initialize(self, genesis: State) -> None:
        """Write the genesis state into an empty store, or check that the store holds this one.

        Raises GenesisMismatch if the store belongs to another chain.
        """
        genesis_hash = genesis.last_block_hash
        if self.genesis_hash is not None:
            if self.genesis_hash != genesis_hash:
                raise GenesisMismatch(
                    f"{self.path} holds the chain with genesis {self.genesis_hash[:16]}…, not "
                    f"{genesis_hash[:16]}… ({genesis.chain_id}); use another --data-dir, or "
                    "delete that one to start over"
                )
            return
        text = _dumps(genesis.to_json())
        with self._transaction() as db:
            db.execute(
                "INSERT INTO genesis (id, hash, state) VALUES (0, ?, ?)", (genesis_hash, text)
            )
            db.execute("INSERT INTO snapshots (height, state) VALUES (0, ?)", (text,))
            db.executemany(
                "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                [
                    ("schema_version", str(SCHEMA_VERSION)),
                    ("chain_id", genesis.chain_id),
                    ("genesis_hash", genesis_hash),
                ],
            )
        self.genesis_hash, self.head_height, self.head_hash = genesis_hash, 0, genesis_hash

    # -- writing ------------------------------------------------------------------------------

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._write_lock:
            db = self._writer
            try:
                db.execute("BEGIN IMMEDIATE")
                yield db
                db.execute("COMMIT")
            except BaseException as error:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                if isinstance(error, sqlite3.DatabaseError):
                    raise StoreError(f"writing to {self.path} failed: {error}") from error
                raise

    def append(self, block: Block, state: State) -> None:
        """Make ``block`` durable, with a snapshot of ``state`` (the state after it) when due.

        One transaction: when this returns the block survives any crash. Raises StoreError if
        the block does not extend the stored head or the write fails.
        """
        header = block.header
        if self.genesis_hash is None:
            raise StoreError("the store has no genesis yet; call initialize() first")
        if header.height != self.head_height + 1 or header.parent_hash != self.head_hash:
            raise StoreError(
                f"block {header.height} does not extend the stored head {self.head_height}"
            )
        if state.height != header.height or state.last_block_hash != block.hash:
            raise StoreError(
                f"the state given with block {header.height} is not the state after it"
            )
        row = (
            header.height,
            block.hash,
            header.parent_hash,
            header.timestamp,
            len(block.txs),
            header.state_root,
            _dumps(block.to_json()),
        )
        snapshot = header.height % self.snapshot_interval == 0
        snapshot_text = _dumps(state.to_json()) if snapshot else None
        epochs = _epoch_rows(state)
        with self._transaction() as db:
            db.execute("INSERT INTO blocks VALUES (?, ?, ?, ?, ?, ?, ?)", row)
            if epochs:
                db.executemany("INSERT OR REPLACE INTO epochs VALUES (?, ?, ?)", epochs)
            if snapshot_text is not None:
                db.execute(
                    "INSERT INTO snapshots (height, state) VALUES (?, ?)",
                    (header.height, snapshot_text),
                )
                oldest_kept = header.height - (KEEP_SNAPSHOTS - 1) * self.snapshot_interval
                db.execute("DELETE FROM snapshots WHERE height > 0 AND height < ?", (oldest_kept,))
        self.head_height, self.head_hash = header.height, block.hash

    # -- reading ------------------------------------------------------------------------------

    def _read(self, sql: str, params: tuple[Any, ...] = ()) -> list[Any]:
        with self._read_lock:
            if self.closed:
                raise StoreError(f"the block store {self.path} is closed (the node is stopping)")
            try:
                return self._reader.execute(sql, params).fetchall()
            except sqlite3.DatabaseError as error:
                raise _corrupted(self.path, error) from None

    def genesis_json(self) -> dict[str, Any] | None:
        rows = self._read("SELECT state FROM genesis WHERE id = 0")
        return None if not rows else json.loads(rows[0][0])

    def block_json(self, height: int) -> dict[str, Any] | None:
        """The stored block at ``height`` as served by the API (it carries its hash)."""
        rows = self._read("SELECT block FROM blocks WHERE height = ?", (height,))
        return None if not rows else json.loads(rows[0][0])

    def block(self, height: int) -> Block | None:
        data = self.block_json(height)
        return None if data is None else Block.from_json(data)

    def summaries(self, start: int, limit: int) -> list[BlockSummary]:
        """Blocks ``start``, ``start + 1`` ... (at most ``limit``), oldest first."""
        rows = self._read(
            "SELECT height, hash, parent_hash, timestamp, tx_count, state_root FROM blocks "
            "WHERE height >= ? ORDER BY height LIMIT ?",
            (start, limit),
        )
        return [BlockSummary(*row) for row in rows]

    def epochs(self, netuid: int, limit: int) -> list[tuple[int, list[list[Any]]]]:
        """The last ``limit`` epochs of ``netuid``, oldest first: ``(height, [[uid, hotkey,
        emission], ...])``. Kept so the emission history costs one indexed read, not a replay;
        a store written before this table existed has history only from then on."""
        rows = self._read(
            "SELECT height, emissions FROM epochs WHERE netuid = ? ORDER BY height DESC LIMIT ?",
            (netuid, limit),
        )
        return [(height, json.loads(text)) for height, text in reversed(rows)]

    def load(self) -> State | None:
        """The head state, rebuilt from the latest snapshot and the blocks after it.

        None for an empty store. Raises StoreCorrupted if a snapshot or block does not verify.
        """
        if self.genesis_hash is None:
            return None
        try:
            state = self._latest_snapshot()
            for height in range(state.height + 1, self.head_height + 1):
                block = self._writer_block(height)
                try:
                    state = apply_block(state, block)
                except InvalidBlock as error:
                    raise StoreCorrupted(
                        f"{self.path}: stored block {height} does not verify on replay ({error}); "
                        f"{_ADVICE}"
                    ) from None
        except sqlite3.DatabaseError as error:
            raise _corrupted(self.path, error) from None
        return state

    def _writer_block(self, height: int) -> Block:
        row = self._writer.execute(
            "SELECT hash, block FROM blocks WHERE height = ?", (height,)
        ).fetchone()
        if row is None:
            raise StoreCorrupted(f"{self.path}: block {height} is missing; {_ADVICE}")
        try:
            block = Block.from_json(json.loads(row[1]))
        except (ValueError, InvalidBlock) as error:
            raise StoreCorrupted(f"{self.path}: block {height} is unreadable ({error})") from None
        if block.hash != row[0]:
            raise StoreCorrupted(f"{self.path}: block {height} does not hash to its stored hash")
        return block

    def _latest_snapshot(self) -> State:
        row = self._writer.execute(
            "SELECT height, state FROM snapshots WHERE height <= ? ORDER BY height DESC LIMIT 1",
            (self.head_height,),
        ).fetchone()
        if row is None:
            raise StoreCorrupted(f"{self.path}: no snapshot, not even genesis; {_ADVICE}")
        height, text = row
        try:
            data = json.loads(text)
            if height == 0:
                state = check_genesis_state(data)
                if state.last_block_hash != self.genesis_hash:
                    raise ValueError("the genesis snapshot is not the stored genesis")
                return state
            state = State.from_json(data)
        except (ValueError, KeyError, TypeError) as error:
            raise StoreCorrupted(
                f"{self.path}: snapshot at height {height} is unreadable ({error}); {_ADVICE}"
            ) from None
        block = self._writer_block(height)
        # The header's root covers the state as executed, whose last_block_hash was still the
        # parent's; the stored state has it set to the block's own hash (as apply_block leaves it).
        state.last_block_hash = block.header.parent_hash
        root = state_root(state)
        last_hash, state.last_block_hash = data.get("last_block_hash"), block.hash
        if root != block.header.state_root or last_hash != block.hash:
            raise StoreCorrupted(
                f"{self.path}: snapshot at height {height} does not match block {height}'s "
                f"state root; {_ADVICE}"
            )
        return state

    def close(self) -> None:
        with self._write_lock, self._read_lock:
            self.closed = True
            self._reader.close()
            self._writer.close()


_ADVICE = (
    "restore the data directory from a backup, or delete it and resync with "
    "`agora node start --follow URL`"
)


def _epoch_rows(state: State) -> list[tuple[int, int, str]]:
    """One row per subnet whose epoch ran in the block that made ``state``: what each uid earned."""
    return [
        (netuid, state.height, _dumps([[n.uid, n.hotkey, n.emission] for n in subnet.neurons]))
        for netuid, subnet in sorted(state.subnets.items())
        if subnet.last_epoch == state.height
    ]


def _corrupted(path: Path, error: sqlite3.DatabaseError) -> StoreCorrupted:
    return StoreCorrupted(
        f"the block store {path} is damaged or not an Agora database ({error}); {_ADVICE}"
    )
