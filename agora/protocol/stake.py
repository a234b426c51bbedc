"""Stake: a coldkey backs a hotkey with tokens (its own or, as delegation, another's).

Removing stake from a hotkey registered on any subnet starts an **unbonding**: the units leave
the hotkey's stake (they no longer count for weights, permits, emission or votes) but wait in an
entry (:mod:`agora.protocol.unbonding`) that a slash can still reach, and are paid to the
coldkey's balance at the end of the entry's release block. Without it a miner could cheat,
unstake, and be gone before the dispute that follows decides, and the honesty condition's S
(the stake at risk) would be zero.

How long (:func:`unbonding_delay`): ``1 + max(dispute_window + dispute_period)`` over the
subnets the hotkey is registered on, read when the stake is removed. A receipt the miner signed
before removing stake at block ``h`` has its deciding block at ``h + 1`` at the latest, can be
disputed until ``h + 1 + dispute_window``, and that dispute's votes count until ``+
dispute_period``; disputes settle at the end of a block before entries are released, so an
entry released at ``h + 1 + window + period`` has met every verdict it could owe. Derived from
the subnets' own parameters rather than a chain constant, so a subnet with short disputes does
not keep its miners' stake for longer than its own rules need. Two guards keep it honest when an
owner changes the parameters later: an entry whose hotkey is accused in an open dispute at its
release block waits until no dispute against that hotkey is open, and a raised
``dispute_window`` only applies to stake removed after the change (documented in
docs/disputes.md).

A hotkey registered on no subnet (never, or pruned since) cannot be disputed (``dispute_open``
needs the miner registered), so stake removed from it returns at once, as before.

Slashing (:func:`slash_hotkey`) takes ``slash_ppm`` of each coldkey's exposure to the hotkey,
its bonded stake plus its unbonding entries from that hotkey, rounded down once per coldkey; the
cut comes from the bonded stake first, then from the coldkey's entries oldest first. Per coldkey,
so one staker's unbonding never shifts the loss onto another's bonded stake; bonded first, so an
entry about to be paid stays whole when the bonded stake covers the cut.
"""

from __future__ import annotations

from dataclasses import replace

from agora.protocol.accounts import credit, debit
from agora.protocol.errors import InsufficientStake, MalformedTransaction, NotRegistered
from agora.protocol.state import State
from agora.protocol.unbonding import Unbonding

PPM = 1_000_000


def add_stake(state: State, coldkey: str, hotkey: str, amount: int) -> None:
    """Move ``amount`` from the coldkey's balance to stake behind ``hotkey``.

    Raises MalformedTransaction (zero), NotRegistered (the hotkey was never registered) or
    InsufficientBalance.
    """
    if amount <= 0:
        raise MalformedTransaction("stake a positive amount")
    if hotkey not in state.hotkey_owner:
        raise NotRegistered(
            f"hotkey {hotkey[:12]}… has never been registered on any subnet; register it first"
        )
    debit(state, coldkey, amount, "this stake")
    add_stake_units(state, hotkey, coldkey, amount)


def add_stake_units(state: State, hotkey: str, coldkey: str, amount: int) -> None:
    """Credit stake without debiting anyone (emission pays this way)."""
    if amount:
        by_cold = state.stakes.setdefault(hotkey, {})
        by_cold[coldkey] = by_cold.get(coldkey, 0) + amount


def unbonding_delay(state: State, hotkey: str) -> int:
    """Blocks between removing stake from ``hotkey`` and its release: ``1 + max(dispute_window
    + dispute_period)`` over the subnets ``hotkey`` is registered on, 0 when it is registered on
    none (the module docstring says why)."""
    spans = [
        s.hyperparams.dispute_window + s.hyperparams.dispute_period
        for _, s in sorted(state.subnets.items())
        if s.uid_of(hotkey) is not None
    ]
    return 1 + max(spans) if spans else 0


def remove_stake(state: State, coldkey: str, hotkey: str, amount: int, block: int) -> int | None:
    """Take ``amount`` of the coldkey's stake off ``hotkey`` in block ``block``.

    If the hotkey is registered on a subnet the units start unbonding and the entry's id is
    returned; otherwise they go straight to the coldkey's balance and None is returned.

    Raises MalformedTransaction (zero) or InsufficientStake (more than staked, or the hotkey
    is accused in an open dispute); changes nothing then.
    """
    if amount <= 0:
        raise MalformedTransaction("unstake a positive amount")
    accused = state.disputes.open_against(hotkey)
    if accused:
        raise InsufficientStake(
            f"hotkey {hotkey[:12]}… is accused in open dispute(s) {accused}: its stake is locked "
            "until they are resolved"
        )
    by_cold = state.stakes.get(hotkey, {})
    have = by_cold.get(coldkey, 0)
    if amount > have:
        raise InsufficientStake(
            f"cannot unstake {amount} units: {coldkey[:12]}… has {have} staked to {hotkey[:12]}…"
        )
    _take_bonded(state, hotkey, coldkey, amount)
    delay = unbonding_delay(state, hotkey)
    if delay == 0:
        credit(state, coldkey, amount)
        return None
    return state.unbonding.add(hotkey, coldkey, amount, block, block + delay)


def _take_bonded(state: State, hotkey: str, coldkey: str, amount: int) -> None:
    """Lower ``coldkey``'s bonded stake behind ``hotkey`` by ``amount`` (at most what it has),
    dropping empty entries so that the state holds no zero stakes."""
    by_cold = state.stakes[hotkey]
    left = by_cold[coldkey] - amount
    if left:
        by_cold[coldkey] = left
    else:
        del by_cold[coldkey]
        if not by_cold:
            del state.stakes[hotkey]


def slash_hotkey(state: State, hotkey: str, slash_ppm: int) -> int:
    """Take ``slash_ppm`` of every coldkey's bonded plus unbonding stake on ``hotkey``, bonded
    first, then its entries oldest first. Returns the units taken (never more than the hotkey
    had bonded plus unbonding); the caller decides where they go."""
    bonded = dict(state.stakes.get(hotkey, {}))
    leaving: dict[str, list[Unbonding]] = {}
    for entry in state.unbonding.of_hotkey(hotkey):
        leaving.setdefault(entry.coldkey, []).append(entry)
    taken = 0
    for coldkey in sorted(set(bonded) | set(leaving)):
        entries = leaving.get(coldkey, [])
        cut = (bonded.get(coldkey, 0) + sum(e.amount for e in entries)) * slash_ppm // PPM
        from_bonded = min(cut, bonded.get(coldkey, 0))
        if from_bonded:
            _take_bonded(state, hotkey, coldkey, from_bonded)
        rest = cut - from_bonded
        for entry in entries:
            if rest == 0:
                break
            part = min(rest, entry.amount)
            if part == entry.amount:
                del state.unbonding.entries[entry.id]
            else:
                state.unbonding.entries[entry.id] = replace(entry, amount=entry.amount - part)
            rest -= part
        taken += cut
    return taken


def release_unbonding(state: State, height: int) -> list[Unbonding]:
    """End-of-block rule, after disputes settle: pay every entry whose release block has come to
    its coldkey, except entries of a hotkey still accused in an open dispute (they wait for the
    verdict). Returns the entries paid, in (release block, id) order."""
    due = sorted(
        (e for e in state.unbonding.entries.values() if e.release_at <= height),
        key=lambda e: (e.release_at, e.id),
    )
    paid = []
    for entry in due:
        if state.disputes.open_against(entry.hotkey):
            continue
        del state.unbonding.entries[entry.id]
        credit(state, entry.coldkey, entry.amount)
        paid.append(entry)
    return paid
