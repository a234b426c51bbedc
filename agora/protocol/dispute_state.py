"""Disputes' part of the ledger state: the disputes themselves and the recent block times.

Records are frozen dataclasses replaced by the rules (``dataclasses.replace``), so copying this
part of the state for a block copies two dictionaries and one list, never every record. The
rules are in :mod:`agora.protocol.disputes`.

``block_times`` holds the timestamps of the last :data:`BLOCK_TIMES_KEPT` blocks, oldest first,
the last one being the state's own block: a dispute names a receipt by its timestamp, and the
rules need the receipt's deciding block (the first block after that timestamp) to check that the
dispute comes within ``dispute_window`` blocks of it. ``MAX_DISPUTE_WINDOW + 1`` entries are
exactly enough to decide that for the longest window an owner may choose.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

OPEN = "open"
UPHELD = "upheld"
REJECTED = "rejected"

MAX_DISPUTE_WINDOW = 2048
BLOCK_TIMES_KEPT = MAX_DISPUTE_WINDOW + 1


@dataclass(frozen=True)
class Vote:
    """One validator's verdict, final once cast. ``stake`` is its stake when it voted (shown
    for reading); resolution counts the stake it holds at resolution time."""

    hotkey: str
    guilty: bool
    stake: int
    block: int

    def to_json(self) -> dict[str, Any]:
        return {
            "hotkey": self.hotkey,
            "guilty": self.guilty,
            "stake": self.stake,
            "block": self.block,
        }


@dataclass(frozen=True)
class Payout:
    hotkey: str
    amount: int


@dataclass(frozen=True)
class Dispute:
    """A challenge of one receipt, from opening to its outcome.

    ``receipt`` and ``evidence`` are kept as submitted and never mutated.
    """

    id: int
    netuid: int
    miner: str  # the hotkey that signed the receipt
    miner_coldkey: str  # its owner when the dispute opened: a rejected deposit goes there
    miner_uid: int
    miner_registered_at: int  # which registration of the hotkey is accused
    receipt_hash: str
    receipt: dict[str, Any]
    evidence: dict[str, Any]
    challenger: str  # the validator hotkey that opened it and paid the deposit
    deposit: int
    receipt_block: int  # the receipt's deciding block
    opened_at: int
    deadline: int  # the last block in which votes count
    votes: tuple[Vote, ...]
    status: str = OPEN
    resolved_at: int = -1
    reason: str = ""
    slashed: int = 0  # taken from the miner's stake
    burned: int = 0  # of which burned
    payouts: tuple[Payout, ...] = ()  # of which paid to guilty voters
    deposit_to: str = ""  # who got the deposit back: the challenger or the miner's coldkey

    def vote_of(self, hotkey: str) -> Vote | None:
        for vote in self.votes:
            if vote.hotkey == hotkey:
                return vote
        return None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "netuid": self.netuid,
            "miner": self.miner,
            "miner_coldkey": self.miner_coldkey,
            "miner_uid": self.miner_uid,
            "miner_registered_at": self.miner_registered_at,
            "receipt_hash": self.receipt_hash,
            "receipt": self.receipt,
            "evidence": self.evidence,
            "challenger": self.challenger,
            "deposit": self.deposit,
            "receipt_block": self.receipt_block,
            "opened_at": self.opened_at,
            "deadline": self.deadline,
            "votes": [v.to_json() for v in self.votes],
            "status": self.status,
            "resolved_at": self.resolved_at,
            "reason": self.reason,
            "slashed": self.slashed,
            "burned": self.burned,
            "payouts": [{"hotkey": p.hotkey, "amount": p.amount} for p in self.payouts],
            "deposit_to": self.deposit_to,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Dispute:
        values = dict(data)
        values["receipt"] = dict(data["receipt"])
        values["evidence"] = dict(data["evidence"])
        values["votes"] = tuple(Vote(**v) for v in data["votes"])
        values["payouts"] = tuple(Payout(**p) for p in data["payouts"])
        return cls(**values)


@dataclass
class DisputeState:
    """Every dispute ever opened, the next id, and the recent block times.

    ``by_receipt`` (receipt hash -> dispute id) and ``open_ids`` follow from the records: they
    are rebuilt by ``from_json`` and never encoded, so the state root does not see them.
    """

    disputes: dict[int, Dispute] = field(default_factory=dict)
    next_id: int = 1
    block_times: list[int] = field(default_factory=list)  # change only with push_block_time
    times_text: str = ""  # block_times as encoded, kept in step by push_block_time
    by_receipt: dict[str, int] = field(default_factory=dict)
    open_ids: set[int] = field(default_factory=set)

    def clone(self) -> DisputeState:
        return DisputeState(
            disputes=dict(self.disputes),
            next_id=self.next_id,
            block_times=list(self.block_times),
            times_text=self.times_text,
            by_receipt=dict(self.by_receipt),
            open_ids=set(self.open_ids),
        )

    def put(self, dispute: Dispute) -> None:
        """Store a new or replaced record and keep the indices in step."""
        self.disputes[dispute.id] = dispute
        self.by_receipt[dispute.receipt_hash] = dispute.id
        if dispute.status == OPEN:
            self.open_ids.add(dispute.id)
        else:
            self.open_ids.discard(dispute.id)

    def push_block_time(self, timestamp: int) -> None:
        """Remember one more block's timestamp, forgetting the oldest beyond the window."""
        self.block_times.append(timestamp)
        text = f"{self.times_text},{timestamp}" if self.times_text else str(timestamp)
        if len(self.block_times) > BLOCK_TIMES_KEPT:
            del self.block_times[0]
            text = text[text.index(",") + 1 :]
        self.times_text = text

    def locked(self) -> int:
        """Deposits of open disputes: units that exist but sit in no balance."""
        return sum(self.disputes[i].deposit for i in self.open_ids)

    def open_against(self, hotkey: str) -> list[int]:
        """Ids of open disputes accusing ``hotkey``, lowest first."""
        return sorted(i for i in self.open_ids if self.disputes[i].miner == hotkey)

    def is_pristine(self) -> bool:
        """True before the first block: the genesis state encodes as it did before disputes."""
        return not self.disputes and self.next_id == 1 and not self.block_times

    def to_json(self) -> dict[str, Any]:
        return {
            "disputes": {str(k): d.to_json() for k, d in sorted(self.disputes.items())},
            "next_id": self.next_id,
            # One comma-separated string, not a list of ~2,000 integers, kept up to date as
            # blocks come rather than rebuilt: the state root is computed every block, and the
            # list cost it ~1.7 ms per block.
            "block_times": self.times_text,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> DisputeState:
        text = data["block_times"]
        times = [int(t) for t in text.split(",")] if text else []
        state = cls(next_id=data["next_id"], block_times=times, times_text=text)
        for record in data["disputes"].values():
            state.put(Dispute.from_json(record))
        return state
