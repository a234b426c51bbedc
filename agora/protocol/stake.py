"""Stake: a coldkey backs a hotkey with tokens (its own or, as delegation, another's)."""

from __future__ import annotations

from agora.protocol.accounts import credit, debit
from agora.protocol.errors import InsufficientStake, MalformedTransaction, NotRegistered
from agora.protocol.state import State


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


def remove_stake(state: State, coldkey: str, hotkey: str, amount: int) -> None:
    """Return ``amount`` of the coldkey's stake behind ``hotkey`` to its free balance.

    Raises MalformedTransaction (zero) or InsufficientStake.
    """
    if amount <= 0:
        raise MalformedTransaction("unstake a positive amount")
    by_cold = state.stakes.get(hotkey, {})
    have = by_cold.get(coldkey, 0)
    if amount > have:
        raise InsufficientStake(
            f"cannot unstake {amount} units: {coldkey[:12]}… has {have} staked to {hotkey[:12]}…"
        )
    if amount == have:
        del by_cold[coldkey]
        if not by_cold:
            del state.stakes[hotkey]
    else:
        by_cold[coldkey] = have - amount
    credit(state, coldkey, amount)
