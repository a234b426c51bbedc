"""The validator's memory: moving scores, the round counter and pending weight commits, in SQLite.

One file, ``<data-dir>/validator.sqlite``, in WAL mode with ``synchronous=FULL``: every round's
scores and every commit's salt are on disk before the validator acts on them, so a restart (or a
``kill -9``) resumes with the same scores, and a commit made before a crash can still be revealed
after it. Several subnets can share the file (every row is keyed by netuid).

    scores(netuid, uid, hotkey, score, latency, throughput, probes, ok, failures, proven,
           last_verdict, last_reason, round, updated_ms)
    meta(netuid, key, value)              the round counter, the last weights set
    commits(netuid, hotkey, uids, weights, salt, commit_hash, block, tx_hash, created_ms)

All calls are short local transactions; the validator calls them from its event loop.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from agora.validator.checks import Verdict
from agora.validator.scoring import DEFAULT_ALPHA, ProbeOutcome, ema

__all__ = ["DB_NAME", "MinerScore", "PendingCommit", "ScoreBook"]

DB_NAME = "validator.sqlite"
_LATENCY_ALPHA = 0.3

_SCHEMA = """
CREATE TABLE IF NOT EXISTS scores (
    netuid INTEGER NOT NULL,
    uid INTEGER NOT NULL,
    hotkey TEXT NOT NULL,
    score REAL NOT NULL DEFAULT 0,
    latency REAL,
    throughput REAL,
    probes INTEGER NOT NULL DEFAULT 0,
    ok INTEGER NOT NULL DEFAULT 0,
    failures INTEGER NOT NULL DEFAULT 0,
    proven INTEGER NOT NULL DEFAULT 0,
    last_verdict TEXT,
    last_reason TEXT,
    round INTEGER,
    updated_ms INTEGER NOT NULL,
    PRIMARY KEY (netuid, uid)
);
CREATE TABLE IF NOT EXISTS meta (
    netuid INTEGER NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (netuid, key)
);
CREATE TABLE IF NOT EXISTS commits (
    netuid INTEGER PRIMARY KEY,
    hotkey TEXT NOT NULL,
    uids TEXT NOT NULL,
    weights TEXT NOT NULL,
    salt TEXT NOT NULL,
    commit_hash TEXT NOT NULL,
    block INTEGER,
    tx_hash TEXT,
    created_ms INTEGER NOT NULL
);
"""


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(frozen=True)
class MinerScore:
    """One uid's row."""

    netuid: int
    uid: int
    hotkey: str
    score: float
    latency: float | None
    throughput: float | None
    probes: int
    ok: int
    failures: int
    proven: int
    last_verdict: str | None
    last_reason: str | None
    round: int | None
    updated_ms: int


@dataclass(frozen=True)
class PendingCommit:
    """A weights commit whose salt must survive until it is revealed."""

    netuid: int
    hotkey: str
    uids: list[int]
    weights: list[int]
    salt: str
    commit_hash: str
    block: int | None  # the block that included the commit; None until known
    tx_hash: str | None
    created_ms: int


class ScoreBook:
    """Scores and commits of one validator, persisted in SQLite (see the module docstring)."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA busy_timeout=5000")
        self._db.executescript(_SCHEMA)

    @classmethod
    def in_dir(cls, data_dir: Path | str) -> ScoreBook:
        return cls(Path(data_dir) / DB_NAME)

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> ScoreBook:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- scores ------------------------------------------------------------------------------------

    def scores(self, netuid: int) -> dict[int, MinerScore]:
        rows = self._db.execute(
            "SELECT netuid, uid, hotkey, score, latency, throughput, probes, ok, failures, proven,"
            " last_verdict, last_reason, round, updated_ms FROM scores WHERE netuid = ?"
            " ORDER BY uid",
            (netuid,),
        ).fetchall()
        return {row[1]: MinerScore(*row) for row in rows}

    def sync_hotkeys(self, netuid: int, hotkeys: Mapping[int, str]) -> list[int]:
        """Forget the score of every uid whose hotkey is not the one given (re-registration)
        and of uids that no longer exist. Returns the uids reset."""
        reset: list[int] = []
        current = self.scores(netuid)
        self._db.execute("BEGIN IMMEDIATE")
        try:
            for uid, row in current.items():
                if hotkeys.get(uid) != row.hotkey:
                    self._db.execute(
                        "DELETE FROM scores WHERE netuid = ? AND uid = ?", (netuid, uid)
                    )
                    reset.append(uid)
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        return reset

    def record(
        self,
        netuid: int,
        round_no: int,
        outcomes: Iterable[ProbeOutcome],
        samples: Mapping[int, float],
        alpha: float = DEFAULT_ALPHA,
    ) -> dict[int, float]:
        """Fold one round into the moving scores, in one transaction. Returns the new scores.

        A row whose stored hotkey differs from the outcome's starts again from zero;
        inconclusive outcomes change nothing.
        """
        current = self.scores(netuid)
        now = _now_ms()
        updated: dict[int, float] = {}
        self._db.execute("BEGIN IMMEDIATE")
        try:
            for outcome in outcomes:
                if outcome.verdict is Verdict.INCONCLUSIVE:
                    continue
                row = current.get(outcome.uid)
                if row is not None and row.hotkey != outcome.hotkey:
                    row = None
                previous = row.score if row is not None else 0.0
                score = ema(previous, samples.get(outcome.uid, 0.0), alpha, reset=outcome.proven)
                latency = _smooth(
                    row.latency if row else None, outcome.latency if outcome.ok else None
                )
                throughput = _smooth(
                    row.throughput if row else None, outcome.throughput if outcome.ok else None
                )
                self._db.execute(
                    "INSERT OR REPLACE INTO scores (netuid, uid, hotkey, score, latency,"
                    " throughput, probes, ok, failures, proven, last_verdict, last_reason, round,"
                    " updated_ms)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        netuid,
                        outcome.uid,
                        outcome.hotkey,
                        score,
                        latency,
                        throughput,
                        (row.probes if row else 0) + 1,
                        (row.ok if row else 0) + int(outcome.ok),
                        (row.failures if row else 0) + int(not outcome.ok and not outcome.proven),
                        (row.proven if row else 0) + int(outcome.proven),
                        str(outcome.verdict),
                        outcome.reason[:500],
                        round_no,
                        now,
                    ),
                )
                updated[outcome.uid] = score
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        return updated

    # -- meta ------------------------------------------------------------------------------------

    def get_meta(self, netuid: int, key: str) -> str | None:
        row = self._db.execute(
            "SELECT value FROM meta WHERE netuid = ? AND key = ?", (netuid, key)
        ).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, netuid: int, key: str, value: str) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO meta (netuid, key, value) VALUES (?, ?, ?)",
            (netuid, key, value),
        )

    def next_round(self, netuid: int) -> int:
        """A new round number (1, 2, ...), persisted before it is used."""
        value = int(self.get_meta(netuid, "round") or 0) + 1
        self.set_meta(netuid, "round", str(value))
        return value

    # -- commits ---------------------------------------------------------------------------------

    def pending_commit(self, netuid: int) -> PendingCommit | None:
        row = self._db.execute(
            "SELECT netuid, hotkey, uids, weights, salt, commit_hash, block, tx_hash, created_ms"
            " FROM commits WHERE netuid = ?",
            (netuid,),
        ).fetchone()
        if row is None:
            return None
        return PendingCommit(row[0], row[1], json.loads(row[2]), json.loads(row[3]), *row[4:])

    def save_commit(self, commit: PendingCommit) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO commits (netuid, hotkey, uids, weights, salt, commit_hash,"
            " block, tx_hash, created_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                commit.netuid,
                commit.hotkey,
                json.dumps(commit.uids),
                json.dumps(commit.weights),
                commit.salt,
                commit.commit_hash,
                commit.block,
                commit.tx_hash,
                commit.created_ms,
            ),
        )

    def clear_commit(self, netuid: int) -> None:
        self._db.execute("DELETE FROM commits WHERE netuid = ?", (netuid,))


def _smooth(previous: float | None, value: float | None) -> float | None:
    if value is None:
        return previous
    if previous is None:
        return value
    return (1 - _LATENCY_ALPHA) * previous + _LATENCY_ALPHA * value
