"""What people type, as the ledger wants it: resources, sizes and prices.

    parse_resources("cpu=2,mem=8GiB,gpu=1,gpu_model=A100,region=eu-west")
    parse_offer("cpu=2,mem=8GiB,gpu=0,price=0.02/h")     # a provider's offer
    per_block("0.02/h", block_time=1.0)                  # -> 5556 units per block

Prices. The ledger works in units (10^-9 token) per block; people think per hour. A price is
``<tokens>/<period>`` with period ``h`` (hour), ``min``, ``s`` or ``block``; a bare number means
per block. Converting uses the chain's block time (``/v1/status`` ``block_time``):
``units per block = tokens * 10^9 * block_time / period seconds``, rounded **up** for a provider's
price (it never earns less than it asked) and **down** for a tenant's max price (it never pays
more than it said). With 1 s blocks, 0.02 token/h is 5,556 units per block.

Sizes. Memory is in MiB on the ledger; ``8GiB``, ``512MiB``, ``2G`` (taken as GiB) and a bare
number (MiB) are accepted.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

from agora.protocol.market_state import Hardware
from agora.protocol.units import TOKEN, format_amount

__all__ = [
    "Offer",
    "format_price",
    "parse_mem",
    "parse_offer",
    "parse_resources",
    "per_block",
]

PERIODS = {"block": None, "b": None, "s": 1, "sec": 1, "min": 60, "m": 60, "h": 3600, "hour": 3600}
_MEM = re.compile(r"(?i)^\s*(\d+(?:\.\d+)?)\s*(ki|mi|gi|ti|k|m|g|t)?b?\s*$")
_MEM_MIB = {None: 1, "k": 1 / 1024, "ki": 1 / 1024, "m": 1, "mi": 1, "g": 1024, "gi": 1024}
_MEM_MIB |= {"t": 1024 * 1024, "ti": 1024 * 1024}


def parse_mem(text: str) -> int:
    """MiB from ``8GiB``, ``512MiB``, ``2G`` or ``1024``. Raises ValueError."""
    match = _MEM.match(text)
    if not match:
        raise ValueError(f"{text!r} is not a memory size; write e.g. 8GiB or 512MiB")
    number, unit = match.group(1), match.group(2)
    mib = Decimal(number) * Decimal(str(_MEM_MIB[unit.lower() if unit else None]))
    if mib < 1 or mib != mib.to_integral_value():
        raise ValueError(f"{text!r} is not a whole number of MiB (at least 1)")
    return int(mib)


def per_block(text: str, block_time: float, *, round_up: bool) -> int:
    """Units per block from ``0.02/h`` (tokens per hour), ``5000/block`` ... Raises ValueError."""
    amount, _, period = text.strip().partition("/")
    period = period.strip().lower() or "block"
    if period not in PERIODS:
        raise ValueError(f"unknown period {period!r} in {text!r}; use /h, /min, /s or /block")
    try:
        tokens = Decimal(amount.strip())
    except InvalidOperation:
        raise ValueError(f"{text!r} is not a price; write e.g. 0.02/h") from None
    if not tokens.is_finite() or tokens <= 0:
        raise ValueError(f"{text!r} must be a positive price")
    seconds = PERIODS[period]
    units = tokens * TOKEN
    if seconds is not None:
        units = units * Decimal(str(block_time)) / seconds
    result = math.ceil(units) if round_up else math.floor(units)
    if result < 1:
        raise ValueError(f"{text!r} is less than one unit per block at {block_time:g} s blocks")
    return result


def format_price(units_per_block: int, block_time: float) -> str:
    """``5556`` units per block -> ``0.020002 /h (5556 units/block)``."""
    per_hour = Decimal(units_per_block) * 3600 / Decimal(str(block_time)) / TOKEN
    return f"{per_hour:.6f}/h ({units_per_block} units/block)"


def _pairs(text: str) -> dict[str, str]:
    pairs: dict[str, str] = {}
    for part in text.split(","):
        if not part.strip():
            continue
        name, sep, value = part.partition("=")
        if not sep:
            raise ValueError(f"{part!r} is not name=value (e.g. cpu=2,mem=8GiB)")
        pairs[name.strip().lower()] = value.strip()
    return pairs


def _hardware(pairs: dict[str, str], *, defaults: bool) -> Hardware:
    known = {"cpu", "mem", "gpu", "gpu_model", "region", "price"}
    unknown = sorted(set(pairs) - known)
    if unknown:
        raise ValueError(f"unknown resource {unknown}; use cpu, mem, gpu, gpu_model, region")
    try:
        cpu = int(pairs.get("cpu", "1" if defaults else ""))
        gpu = int(pairs.get("gpu", "0"))
    except ValueError:
        raise ValueError("cpu and gpu are whole numbers (cores, GPUs)") from None
    if "mem" not in pairs:
        raise ValueError("say how much memory: mem=2GiB")
    return Hardware(
        cpu=cpu,
        mem=parse_mem(pairs["mem"]),
        gpu=gpu,
        gpu_model=pairs.get("gpu_model", ""),
        region=pairs.get("region", ""),
    )


def parse_resources(text: str) -> Hardware:
    """An order's needs: ``cpu=1,mem=2GiB`` (+ ``gpu``, ``gpu_model``, ``region``)."""
    pairs = _pairs(text)
    if "price" in pairs:
        raise ValueError("an order's price is --max-price, not part of --need")
    return _hardware(pairs, defaults=True)


@dataclass(frozen=True)
class Offer:
    """A provider's capacity and its price: per GPU for orders that ask for GPUs (on a GPU
    machine), per core otherwise."""

    hardware: Hardware
    price: str  # as typed, e.g. "0.02/h": converted per block once the block time is known

    def unit_price(self, block_time: float) -> int:
        return per_block(self.price, block_time, round_up=True)

    def quote(self, need: Hardware, block_time: float) -> int:
        """Units per block for exactly ``need``: the price times the GPUs asked, or the cores
        when no GPU is asked."""
        units = need.gpu if self.hardware.gpu and need.gpu else need.cpu
        return self.unit_price(block_time) * max(1, units)

    def describe(self, block_time: float) -> str:
        hw = self.hardware
        gpu = f", {hw.gpu} x {hw.gpu_model}" if hw.gpu else ""
        per = "GPU" if hw.gpu else "core"
        unit = self.unit_price(block_time)
        return (
            f"{hw.cpu} cores, {hw.mem} MiB{gpu}{', ' + hw.region if hw.region else ''}; "
            f"{self.price} per {per} = {unit} units/block ({format_amount(unit)} token)"
        )


def parse_offer(text: str) -> Offer:
    """``cpu=2,mem=8GiB,gpu=0,price=0.02/h``: capacity and price. Raises ValueError."""
    pairs = _pairs(text)
    if "price" not in pairs:
        raise ValueError("an offer needs a price, e.g. price=0.02/h (per core, or per GPU)")
    return Offer(_hardware(pairs, defaults=False), pairs["price"])
