"""Amounts of the token, always integers in the smallest unit.

1 token = 10**9 units (as TAO has 10**9 rao). Floats never touch an amount: text such as "1.5"
is parsed with :class:`decimal.Decimal`, exactly, and anything finer than one unit is refused.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

TOKEN = 10**9
SUPPLY_CAP = 21_000_000 * TOKEN


def parse_amount(text: str | int) -> int:
    """Tokens as text ("1.5", "0.000000001") to units. Raises ValueError with a hint."""
    if isinstance(text, int) and not isinstance(text, bool):
        return text * TOKEN
    try:
        value = Decimal(str(text).strip())
    except InvalidOperation:
        raise ValueError(f"{text!r} is not an amount; write tokens like 1.5 or 0.001") from None
    if not value.is_finite() or value < 0:
        raise ValueError(f"{text!r} is not a non-negative amount of tokens")
    units = value * TOKEN
    if units != units.to_integral_value():
        raise ValueError(f"{text!r} is finer than one unit (10^-9 token)")
    return int(units)


def format_amount(units: int) -> str:
    """Units as tokens with up to 9 decimals, trailing zeros dropped: 1500000000 -> '1.5'."""
    sign = "-" if units < 0 else ""
    whole, frac = divmod(abs(units), TOKEN)
    if frac == 0:
        return f"{sign}{whole}"
    return f"{sign}{whole}.{frac:09d}".rstrip("0")
