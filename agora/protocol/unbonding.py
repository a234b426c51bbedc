"""Unbonding's part of the ledger state: stake on its way out, still slashable until released.

A coldkey that removes stake from a hotkey registered on a subnet does not get the units back at
once: they wait in an :class:`Unbonding` entry until its ``release_at`` block, so a miner cannot
cheat and unstake before the dispute that follows decides. The rules (how long, how a slash
reaches an entry, when it is paid) are in :mod:`agora.protocol.stake`; this module only holds
the records, copies and encodes them, like :mod:`agora.protocol.dispute_state`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Unbonding:
    """``amount`` units that ``coldkey`` removed from ``hotkey`` at block ``created_at``; paid to
    the coldkey's balance at the end of block ``release_at`` (later while the hotkey is accused
    in an open dispute). Replaced (``dataclasses.replace``) when a slash takes part of it."""

    id: int
    hotkey: str
    coldkey: str
    amount: int
    created_at: int
    release_at: int

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "hotkey": self.hotkey,
            "coldkey": self.coldkey,
            "amount": self.amount,
            "created_at": self.created_at,
            "release_at": self.release_at,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Unbonding:
        return cls(**data)


@dataclass
class UnbondingState:
    """Every entry not yet released, by id, and the next id (ids are never reused)."""

    entries: dict[int, Unbonding] = field(default_factory=dict)
    next_id: int = 1

    def clone(self) -> UnbondingState:
        return UnbondingState(entries=dict(self.entries), next_id=self.next_id)

    def add(self, hotkey: str, coldkey: str, amount: int, created_at: int, release_at: int) -> int:
        """Store a new entry; returns its id."""
        entry_id = self.next_id
        self.next_id += 1
        self.entries[entry_id] = Unbonding(
            entry_id, hotkey, coldkey, amount, created_at, release_at
        )
        return entry_id

    def locked(self) -> int:
        """Units waiting to be released: they exist but sit in no balance and no stake."""
        return sum(e.amount for e in self.entries.values())

    def of_hotkey(self, hotkey: str) -> list[Unbonding]:
        """Entries leaving ``hotkey``, oldest first (release block, then id)."""
        return sorted(
            (e for e in self.entries.values() if e.hotkey == hotkey),
            key=lambda e: (e.release_at, e.id),
        )

    def of_coldkey(self, coldkey: str) -> list[Unbonding]:
        """Entries owed to ``coldkey``, soonest first."""
        return sorted(
            (e for e in self.entries.values() if e.coldkey == coldkey),
            key=lambda e: (e.release_at, e.id),
        )

    def is_pristine(self) -> bool:
        """True until the first entry: chains that never unbonded encode as before it existed."""
        return not self.entries and self.next_id == 1

    def to_json(self) -> dict[str, Any]:
        return {
            "entries": {str(k): e.to_json() for k, e in sorted(self.entries.items())},
            "next_id": self.next_id,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> UnbondingState:
        return cls(
            entries={int(k): Unbonding.from_json(e) for k, e in data["entries"].items()},
            next_id=data["next_id"],
        )
