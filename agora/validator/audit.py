"""The audit loop: spot-check organic answers, open disputes on proven cheats, vote on others'.

Probes only show how a miner treats validators. A miner that is honest to probes and cheats on
customers is caught here, on the answers the gateways archived (:mod:`agora.gateway.archive`):

1. **Fetch.** Every ``interval`` seconds, from each gateway (``--gateway URL``), the answers of
   the subnet newer than the last ones seen, with their bytes (``GET /v1/gateway/audit``, signed
   by this validator's hotkey, which must hold a validator permit on the subnet).
2. **Draw.** For each receipt, the *deciding block*, the first block after its timestamp
   (``GET /v1/blocks/after/{ts_ms}``); the receipt is audited when
   :func:`agora.protocol.audit.is_audited` says so at the subnet's ``audit_rate_ppm``. The miner
   signed before that block existed, so it could not know which answers would be checked; every
   validator draws the same receipts. A receipt whose deciding block does not exist yet waits.
3. **Re-check** a drawn answer against this validator's reference model
   (:func:`agora.validator.recheck.recheck`): provenance, model, embeddings by cosine,
   truncation, the TOPLOC proof if any, greedy tokens.
4. **Dispute** a proven mismatch: a ``dispute_open`` transaction with the receipt and the
   evidence ``{"kind", "reason", "reference", "gateway"}`` (``reference``: SHA-256 of the
   reference's own output; ``gateway``: where the answer's bytes are archived), which costs the
   subnet's ``dispute_deposit``.
5. **Vote** on every open dispute of the subnet that this validator did not open and has not
   voted on: fetch the bytes from its own gateways by the receipt's hash, check that they are the
   ones the receipt signs, re-check independently, and vote ``guilty`` only on a proven mismatch
   (bytes no gateway can produce prove nothing: not guilty).

What was audited and voted is kept in ``<data-dir>/audit.sqlite`` (receipt hash, deciding block,
drawn or not, finding, dispute id; votes by dispute id; a cursor per gateway), so a restart
neither redoes nor forgets anything.

**Collusion, for tests and demos only** (``--collude-with HOTKEY``): the validator never disputes
those miners and votes not guilty on their disputes, without looking. The end-to-end test shows
that a colluding minority of validator stake cannot save a cheater.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from agora.chain.client import LedgerClient
from agora.chain.errors import NodeError
from agora.chain.models import Dispute
from agora.crypto.keys import Keypair
from agora.gateway.archive import ArchivedAnswer
from agora.models import Engine
from agora.net import AgoraAuth
from agora.protocol.audit import is_audited
from agora.protocol.receipts import receipt_hash
from agora.validator.recheck import Finding, ProofVerdicts, recheck, verify_proofs_together

__all__ = ["AUDIT_DB", "AuditBook", "Auditor", "GatewaySource"]

log = logging.getLogger("agora.validator.audit")

AUDIT_DB = "audit.sqlite"
LOOKBACK_MS = 60_000
"""How far before the cursor each fetch reaches back: receipts carry their miner's clock and
reach the archive in batches, so one written late may be older than one already seen."""
FETCH_LIMIT = 200

SCHEMA = """
CREATE TABLE IF NOT EXISTS audited (
    hash        TEXT PRIMARY KEY,
    netuid      INTEGER NOT NULL,
    miner       TEXT NOT NULL,
    ts_ms       INTEGER NOT NULL,
    block       INTEGER NOT NULL,
    drawn       INTEGER NOT NULL,
    guilty      INTEGER,
    kind        TEXT NOT NULL,
    reason      TEXT NOT NULL,
    dispute     TEXT NOT NULL,
    at_ms       INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS audited_miner ON audited(netuid, miner);
CREATE TABLE IF NOT EXISTS votes (
    dispute_id  INTEGER PRIMARY KEY,
    netuid      INTEGER NOT NULL,
    miner       TEXT NOT NULL,
    guilty      INTEGER NOT NULL,
    reason      TEXT NOT NULL,
    outcome     TEXT NOT NULL,
    at_ms       INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS cursors (
    gateway     TEXT NOT NULL,
    netuid      INTEGER NOT NULL,
    since_ms    INTEGER NOT NULL,
    PRIMARY KEY (gateway, netuid)
);
"""


def _now_ms() -> int:
    return int(time.time() * 1000)


def evidence_kind(finding_kind: str, task: str) -> str:
    """The ledger's evidence kind (``agora.protocol.disputes.EVIDENCE_KINDS``) for a finding."""
    if finding_kind == "truncated":
        return "truncation"
    if finding_kind == "bad_proof":
        return "toploc"
    if finding_kind == "wrong_output":
        return "embedding" if task == "embed" else "generation"
    return "other"


class AuditBook:
    """What this validator audited and voted, in SQLite (see the module docstring)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._db = sqlite3.connect(str(path), isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA busy_timeout=5000")
        self._db.executescript(SCHEMA)

    @classmethod
    def in_dir(cls, data_dir: Path) -> AuditBook:
        return cls(data_dir / AUDIT_DB)

    def close(self) -> None:
        self._db.close()

    def cursor(self, gateway: str, netuid: int) -> int:
        row = self._db.execute(
            "SELECT since_ms FROM cursors WHERE gateway=? AND netuid=?", (gateway, netuid)
        ).fetchone()
        return int(row[0]) if row else 0

    def set_cursor(self, gateway: str, netuid: int, since_ms: int) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO cursors VALUES (?,?,?)", (gateway, netuid, since_ms)
        )

    def seen(self, hashes: Iterable[str]) -> set[str]:
        wanted = list(hashes)
        found: set[str] = set()
        for start in range(0, len(wanted), 500):
            chunk = wanted[start : start + 500]
            marks = ",".join("?" * len(chunk))
            rows = self._db.execute(f"SELECT hash FROM audited WHERE hash IN ({marks})", chunk)
            found.update(row[0] for row in rows)
        return found

    def record(
        self,
        hash_hex: str,
        receipt: dict[str, Any],
        block: int,
        drawn: bool,
        finding: Finding | None,
        dispute: str = "",
    ) -> None:
        guilty = None if finding is None or finding.guilty is None else int(finding.guilty)
        self._db.execute(
            "INSERT OR REPLACE INTO audited VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            (
                hash_hex,
                int(receipt["netuid"]),
                str(receipt["miner"]),
                int(receipt["timestamp"]),
                block,
                int(drawn),
                guilty,
                finding.kind if finding else "not_drawn",
                finding.reason if finding else "",
                dispute,
                _now_ms(),
            ),
        )

    def voted(self, dispute_id: int) -> bool:
        row = self._db.execute("SELECT 1 FROM votes WHERE dispute_id=?", (dispute_id,))
        return row.fetchone() is not None

    def record_vote(
        self, dispute_id: int, netuid: int, miner: str, guilty: bool, reason: str, outcome: str
    ) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO votes VALUES (?,?,?,?,?,?,?)",
            (dispute_id, netuid, miner, int(guilty), reason, outcome, _now_ms()),
        )

    def audited(self, netuid: int, *, drawn_only: bool = False) -> list[dict[str, Any]]:
        sql = "SELECT hash, miner, ts_ms, block, drawn, guilty, kind, reason, dispute FROM audited"
        sql += " WHERE netuid=?" + (" AND drawn=1" if drawn_only else "") + " ORDER BY ts_ms"
        keys = ("hash", "miner", "ts_ms", "block", "drawn", "guilty", "kind", "reason", "dispute")
        return [dict(zip(keys, row, strict=True)) for row in self._db.execute(sql, (netuid,))]

    def votes(self, netuid: int) -> list[dict[str, Any]]:
        keys = ("dispute_id", "miner", "guilty", "reason", "outcome")
        rows = self._db.execute(
            "SELECT dispute_id, miner, guilty, reason, outcome FROM votes WHERE netuid=? "
            "ORDER BY dispute_id",
            (netuid,),
        )
        return [dict(zip(keys, row, strict=True)) for row in rows]


class GatewaySource:
    """One gateway's archive, read with requests signed by the validator's hotkey."""

    def __init__(self, url: str, hotkey: Keypair, http: httpx.AsyncClient) -> None:
        self.url = url.rstrip("/").removesuffix("/v1")
        self.hotkey = hotkey
        self.http = http
        self.address: str | None = None

    async def _auth(self) -> AgoraAuth:
        if self.address is None:
            info = await self.http.get(self.url + "/v1/gateway")
            info.raise_for_status()
            self.address = str(info.json()["address"])
        return AgoraAuth(self.hotkey, self.address)

    async def answers(
        self, netuid: int, *, since_ms: int = 0, limit: int = FETCH_LIMIT, hash_hex: str = ""
    ) -> list[ArchivedAnswer]:
        """Raises httpx.HTTPError (unreachable, or refused: e.g. 403 without a permit)."""
        params: dict[str, Any] = {"netuid": netuid, "since_ms": since_ms, "limit": limit}
        if hash_hex:
            params = {"netuid": netuid, "hash": hash_hex}
        response = await self.http.get(
            self.url + "/v1/gateway/audit", params=params, auth=await self._auth()
        )
        if hash_hex and response.status_code == 404:
            return []
        response.raise_for_status()
        return [ArchivedAnswer.from_json(item) for item in response.json()["answers"]]


@dataclass(frozen=True)
class AuditParams:
    """The subnet's audit hyperparameters, as the ledger reports them."""

    audit_rate_ppm: int
    dispute_deposit: int = 0

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> AuditParams:
        params = data.get("params", data)
        if not isinstance(params, dict) or "audit_rate_ppm" not in params:
            params = data.get("hyperparams", {})
        return cls(int(params["audit_rate_ppm"]), int(params.get("dispute_deposit", 0)))


@dataclass(frozen=True)
class AuditResult:
    """One receipt handled by :meth:`Auditor.audit_step`."""

    hash: str
    miner: str
    drawn: bool
    finding: Finding | None
    dispute: str  # the dispute transaction's hash, or why none was opened, or ""


class Auditor:
    """Runs the audit loop of one validator on one subnet (see the module docstring)."""

    def __init__(
        self,
        hotkey: Keypair,
        netuid: int,
        ledger: LedgerClient,
        engine: Engine,
        gateways: Collection[str],
        book: AuditBook,
        *,
        collude_with: Collection[str] = (),
        http: httpx.AsyncClient | None = None,
        interval: float = 2.0,
    ) -> None:
        self.hotkey = hotkey
        self.netuid = netuid
        self.ledger = ledger
        self.engine = engine
        self.book = book
        self.collude_with = frozenset(collude_with)
        self.interval = interval
        self._owns_http = http is None
        self.http = http or httpx.AsyncClient(timeout=30.0)
        self.sources = [GatewaySource(url, hotkey, self.http) for url in gateways]
        self._blocks: dict[int, tuple[int, str]] = {}  # ts_ms -> deciding (height, hash)

    async def aclose(self) -> None:
        if self._owns_http:
            await self.http.aclose()

    # -- ledger reads ---------------------------------------------------------------------------

    async def params(self) -> AuditParams:
        report = await self.ledger.audit_params(self.netuid)
        return AuditParams.from_json(report.params)

    async def deciding_block(self, ts_ms: int) -> tuple[int, str] | None:
        """(height, hash) of the first block after ``ts_ms``; None while there is none."""
        if ts_ms in self._blocks:
            return self._blocks[ts_ms]
        block = await self.ledger.block_after(ts_ms)
        if block is None:
            return None
        if len(self._blocks) > 10_000:
            self._blocks.clear()
        self._blocks[ts_ms] = (block.height, block.hash)
        return self._blocks[ts_ms]

    async def open_disputes(self) -> list[Dispute]:
        return await self.ledger.disputes(netuid=self.netuid, status="open", limit=500)

    # -- auditing ---------------------------------------------------------------------------------

    async def audit_step(self) -> list[AuditResult]:
        """Fetch new answers from every gateway, draw, re-check what is drawn, dispute what is
        proven wrong. Returns what was handled (receipts waiting for their block are not)."""
        params = await self.params()
        results: list[AuditResult] = []
        for source in self.sources:
            try:
                results.extend(await self._audit_source(source, params))
            except httpx.HTTPError as error:
                log.warning("cannot read the archive of gateway %s: %s", source.url, error)
        return results

    async def _audit_source(self, source: GatewaySource, params: AuditParams) -> list[AuditResult]:
        cursor = self.book.cursor(source.url, self.netuid)
        answers = await source.answers(self.netuid, since_ms=max(0, cursor - LOOKBACK_MS))
        seen = self.book.seen(a.hash for a in answers)
        ready: list[tuple[ArchivedAnswer, tuple[int, str]]] = []
        for answer in answers:
            if answer.hash in seen:
                continue
            if receipt_hash(answer.receipt) != answer.hash:
                log.warning("gateway %s archived %s under a wrong hash", source.url, answer.hash)
                continue
            block = await self.deciding_block(int(answer.receipt["timestamp"]))
            if block is None:
                break  # its block is still to come; later answers are newer still
            ready.append((answer, block))
        # the round's drawn answers have their activation proofs verified together (one
        # padded forward pass per few answers: a validator's cost, docs/verification.md)
        drawn = [
            (a.request, a.response)
            for a, (_, block_hash) in ready
            if is_audited(block_hash, a.hash, params.audit_rate_ppm)
        ]
        proofs = await verify_proofs_together(self.engine, drawn) if drawn else {}
        results = []
        for answer, block in ready:
            result = await self._audit_one(source, answer, block, params, proofs)
            results.append(result)
            cursor = max(cursor, int(answer.receipt["timestamp"]))
            self.book.set_cursor(source.url, self.netuid, cursor)
        return results

    async def _audit_one(
        self,
        source: GatewaySource,
        answer: ArchivedAnswer,
        block: tuple[int, str],
        params: AuditParams,
        proofs: ProofVerdicts | None = None,
    ) -> AuditResult:
        height, block_hash = block
        miner = str(answer.receipt["miner"])
        drawn = is_audited(block_hash, answer.hash, params.audit_rate_ppm)
        if not drawn:
            self.book.record(answer.hash, answer.receipt, height, False, None)
            return AuditResult(answer.hash, miner, False, None, "")
        finding = await recheck(
            self.engine, answer.receipt, answer.request, answer.response, proofs
        )
        dispute = ""
        if finding.guilty:
            if miner in self.collude_with:
                dispute = "not opened: colluding with this miner"
                log.info("audit: %s… cheated (%s); colluding, no dispute", miner[:12], finding.kind)
            else:
                dispute = await self._open(source, answer, finding)
        elif finding.guilty is None:
            log.info("audit of %s… inconclusive: %s", answer.hash[:12], finding.reason)
        self.book.record(answer.hash, answer.receipt, height, True, finding, dispute)
        return AuditResult(answer.hash, miner, True, finding, dispute)

    async def _open(self, source: GatewaySource, answer: ArchivedAnswer, finding: Finding) -> str:
        evidence: dict[str, Any] = {
            "kind": evidence_kind(finding.kind, self.engine.task),
            "reason": finding.reason[:256],
            "gateway": source.url[:200],
        }
        if finding.reference is not None:
            evidence["reference"] = finding.reference
        try:
            info = await self.ledger.open_dispute(
                self.hotkey, self.netuid, answer.receipt, evidence
            )
            tx_hash = info.hash
        except (NodeError, TimeoutError) as error:
            log.warning("could not open a dispute on %s…: %s", answer.hash[:12], error)
            return f"not opened: {error}"[:300]
        log.warning(
            "audit: miner %s… cheated on receipt %s… (%s: %s); dispute opened in tx %s…",
            str(answer.receipt["miner"])[:12],
            answer.hash[:12],
            finding.kind,
            finding.reason,
            tx_hash[:12],
        )
        return tx_hash

    # -- voting -----------------------------------------------------------------------------------

    async def vote_step(self) -> list[tuple[int, bool, str]]:
        """Vote on every open dispute of the subnet this validator neither opened nor voted on.
        Returns (dispute id, guilty, reason) for each vote cast."""
        cast = []
        for dispute in await self.open_disputes():
            dispute_id = dispute.id
            if dispute.challenger == self.hotkey.address or self.book.voted(dispute_id):
                continue
            if any(v.hotkey == self.hotkey.address for v in dispute.votes):
                continue
            guilty, reason = await self.judge_dispute(dispute.miner, dispute.receipt)
            try:
                await self.ledger.vote_dispute(self.hotkey, dispute_id, guilty)
                outcome = "cast"
            except (NodeError, TimeoutError) as error:
                outcome = f"refused: {error}"[:300]
                log.warning("vote on dispute %d refused: %s", dispute_id, error)
            self.book.record_vote(dispute_id, self.netuid, dispute.miner, guilty, reason, outcome)
            log.info(
                "dispute %d on %s…: voted %s (%s)",
                dispute_id,
                dispute.miner[:12],
                "guilty" if guilty else "not guilty",
                reason,
            )
            cast.append((dispute_id, guilty, reason))
        return cast

    async def judge_dispute(self, miner: str, receipt: dict[str, Any]) -> tuple[bool, str]:
        """This validator's own verdict on a dispute of ``miner``'s ``receipt``: re-run from the
        receipt and the bytes its gateways hold. Only a proven mismatch is guilty."""
        if miner in self.collude_with:
            return False, "colluding with this miner"
        try:
            wanted = receipt_hash(receipt)
        except (TypeError, ValueError):
            return False, "the disputed receipt is malformed"
        for source in self.sources:
            try:
                found = await source.answers(self.netuid, hash_hex=wanted)
            except httpx.HTTPError as error:
                log.warning("gateway %s unavailable for dispute: %s", source.url, error)
                continue
            for answer in found:
                if answer.hash != wanted:
                    continue
                finding = await recheck(self.engine, receipt, answer.request, answer.response)
                if finding.guilty:
                    return True, f"{finding.kind}: {finding.reason}"[:300]
                return False, f"{finding.kind}: {finding.reason}"[:300]
        return False, "no gateway of this validator holds the answer's bytes: unproven"

    # -- running ----------------------------------------------------------------------------------

    async def step(self) -> None:
        try:
            await self.audit_step()
        except NodeError as error:
            log.warning("audit step skipped: %s", error)
        try:
            await self.vote_step()
        except NodeError as error:
            log.warning("vote step skipped: %s", error)

    async def run(self, stop: asyncio.Event) -> None:
        """Audit and vote every ``interval`` seconds until ``stop`` is set."""
        loop = asyncio.get_running_loop()
        while not stop.is_set():
            started = loop.time()
            try:
                await self.step()
            except Exception:
                log.exception("audit step failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    stop.wait(), timeout=max(0.0, self.interval - (loop.time() - started))
                )
