"""What a miner charges: a price per 1,000 tokens in units, and the price of one answer.

Prices are integers in units (10^9 per token) from the moment they are read: ``--price 0.001``
(tokens per 1,000 tokens) is 1,000,000 units per 1,000 tokens, and an answer of ``n`` tokens
(prompt plus completion) costs ``ceil(n * price_per_1k / 1000)`` units, so any non-zero amount
of work at a non-zero price costs at least one unit. Floats never touch an amount.
"""

from __future__ import annotations

from agora.miner.errors import MinerConfigError
from agora.protocol.units import format_amount, parse_amount

__all__ = ["DEFAULT_PRICE", "answer_price", "format_price", "parse_price"]

DEFAULT_PRICE = "0.001"
"""Tokens per 1,000 tokens, as ``--price`` takes it."""

MAX_PRICE_PER_1K = 10**15
"""A ceiling well under 2^64 so that a receipt's price field can never overflow."""


def parse_price(text: str | int) -> int:
    """``--price`` (tokens per 1,000 tokens, e.g. ``"0.001"``) in units per 1,000 tokens.

    Raises:
        MinerConfigError: not a non-negative amount, finer than one unit, or absurdly high.
    """
    try:
        units = parse_amount(text if isinstance(text, str) else str(text))
    except ValueError as error:
        raise MinerConfigError(f"--price: {error}") from None
    if units > MAX_PRICE_PER_1K:
        raise MinerConfigError(
            f"--price {text} is over {format_amount(MAX_PRICE_PER_1K)} tokens per 1,000 tokens; "
            "nobody would pay it: lower it"
        )
    return units


def answer_price(tokens: int, price_per_1k: int) -> int:
    """Units charged for ``tokens`` tokens of work: ``ceil(tokens * price_per_1k / 1000)``."""
    if tokens < 0 or price_per_1k < 0:
        raise ValueError("tokens and price must not be negative")
    return -(-tokens * price_per_1k // 1000)


def format_price(price_per_1k: int) -> str:
    """``1000000`` -> ``"0.001 tokens per 1,000 tokens"``."""
    return f"{format_amount(price_per_1k)} tokens per 1,000 tokens"
