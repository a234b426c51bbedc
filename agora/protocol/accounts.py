"""Balances and transfers."""

from __future__ import annotations

from agora.protocol.errors import InsufficientBalance, MalformedTransaction
from agora.protocol.state import State


def debit(state: State, address: str, amount: int, what: str) -> None:
    """Take ``amount`` from a free balance. Raises InsufficientBalance before touching anything."""
    have = state.balance(address)
    if amount > have:
        raise InsufficientBalance(
            f"{what} needs {amount} units but {address[:12]}… has {have}; fund the account first"
        )
    left = have - amount
    if left:
        state.balances[address] = left
    else:
        state.balances.pop(address, None)


def credit(state: State, address: str, amount: int) -> None:
    if amount:
        state.balances[address] = state.balance(address) + amount


def transfer(state: State, sender: str, recipient: str, amount: int) -> None:
    """Move ``amount`` units from ``sender`` to ``recipient``.

    Raises MalformedTransaction (zero amount) or InsufficientBalance.
    """
    if amount <= 0:
        raise MalformedTransaction("a transfer must move a positive amount")
    debit(state, sender, amount, "this transfer")
    credit(state, recipient, amount)
