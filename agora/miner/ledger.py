"""What a miner asks of the ledger: its registration, its announced endpoint, and who may call.

    neuron = await ensure_registered(ledger, netuid, hotkey.address, coldkey=get_coldkey, ...)
    await ensure_endpoint(ledger, netuid, hotkey, ip, port)     # a serve tx only if it changed
    standing = caller_standing(ledger, netuid, allow={gateway_hotkey})

Registration is by burn, signed by the coldkey that will own the hotkey (the ``register``
transaction of :mod:`agora.protocol.registry`); the endpoint is announced by the hotkey itself
(``serve``). Both wait until a block includes them.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Collection, Iterator
from contextlib import AbstractContextManager
from typing import Any, Protocol

from agora.chain.client import LedgerClient
from agora.chain.errors import NodeError
from agora.chain.models import NeuronInfo, TxInfo
from agora.crypto.keys import Keypair
from agora.crypto.signing import sign_transaction
from agora.miner.errors import (
    BurnTooHigh,
    CannotPayBurn,
    HotkeyNotRegistered,
    SubnetNotFound,
    TransactionFailed,
)
from agora.net.standing import CachedStanding, CallerStanding
from agora.protocol.units import format_amount

__all__ = [
    "ALLOWED_STAKE",
    "CallerStandingWithAllowList",
    "QuietReporter",
    "Reporter",
    "caller_standing",
    "ensure_endpoint",
    "ensure_registered",
    "find_neuron",
    "metagraph_stakes",
]

log = logging.getLogger(__name__)

ALLOWED_STAKE = 2**63 - 1
"""The stake an explicitly allowed caller is treated as having."""


class Reporter(Protocol):
    """Where a miner tells a person what it is doing: one-line notes and spinners.

    ``status(message)`` is a context manager shown while something slow runs (loading a model,
    waiting for a block); ``info(message)`` prints one line.
    """

    def info(self, message: str) -> None: ...

    def status(self, message: str) -> AbstractContextManager[Any]: ...


class QuietReporter:
    """A reporter that says nothing (tests, embedded use)."""

    def info(self, message: str) -> None:
        pass

    @contextlib.contextmanager
    def status(self, message: str) -> Iterator[None]:
        yield


async def find_neuron(ledger: LedgerClient, netuid: int, hotkey: str) -> NeuronInfo | None:
    """The hotkey's neuron on the subnet, or None if it is not registered there.

    Raises:
        SubnetNotFound, NodeUnreachable, NodeError.
    """
    try:
        metagraph = await ledger.metagraph(netuid)
    except NodeError as error:
        if error.code == "unknown_subnet":
            raise SubnetNotFound(
                f"subnet {netuid} does not exist on the ledger at {ledger.url}; list subnets "
                "with `agora subnet list` and pass one with --subnet"
            ) from None
        raise
    for neuron in metagraph.neurons:
        if neuron.hotkey == hotkey:
            return neuron
    return None


async def _send(
    ledger: LedgerClient, key: Keypair, kind: str, body: dict[str, Any], timeout: float
) -> TxInfo:
    chain_id = (await ledger.status()).chain_id
    nonce = await ledger.next_nonce(key.address)
    tx = sign_transaction(key, chain_id, kind, nonce, body)
    info = await ledger.wait_for_tx(await ledger.submit(tx), timeout=timeout)
    if info.status != "included":
        raise TransactionFailed(kind, info.code or "rejected", info.message or "")
    return info


async def ensure_registered(
    ledger: LedgerClient,
    netuid: int,
    hotkey: str,
    *,
    coldkey: Callable[[], Keypair] | None,
    register: bool = True,
    max_burn: int | None = None,
    confirm_burn: Callable[[int], bool] | None = None,
    reporter: Reporter | None = None,
    timeout: float = 60.0,
) -> NeuronInfo:
    """The hotkey's neuron on ``netuid``, registering it by burn first if it has none.

    ``coldkey`` is called only if a registration is needed (opening a coldkey may ask for a
    password). The burn is reported (and passed to ``confirm_burn``, which may refuse) before
    anything is signed. The price is the one the ledger quotes for the next block; if another
    registration lands first, the ledger burns its own current price.

    Raises:
        SubnetNotFound, HotkeyNotRegistered (``register`` is false, or ``confirm_burn`` said
        no, or no ``coldkey``), BurnTooHigh, CannotPayBurn, TransactionFailed, TimeoutError,
        NodeUnreachable, NodeError, and whatever ``coldkey`` raises (WrongPassword ...).
    """
    reporter = reporter or QuietReporter()
    neuron = await find_neuron(ledger, netuid, hotkey)
    if neuron is not None:
        reporter.info(f"hotkey {hotkey[:12]}… is uid {neuron.uid} on subnet {netuid}")
        return neuron
    burn = (await ledger.subnet(netuid)).registration_burn
    how = (
        f"register it by burning {format_amount(burn)} tokens: run without --no-register, or "
        f"`agora subnet register --netuid {netuid}`"
    )
    if not register:
        raise HotkeyNotRegistered(
            f"hotkey {hotkey} is not registered on subnet {netuid} and --no-register forbids "
            f"paying for it; {how}"
        )
    if max_burn is not None and burn > max_burn:
        raise BurnTooHigh(
            f"registering on subnet {netuid} burns {format_amount(burn)} tokens now, over "
            f"--max-burn {format_amount(max_burn)}; wait for the price to decay, or raise "
            "--max-burn"
        )
    if coldkey is None:
        raise HotkeyNotRegistered(f"hotkey {hotkey} is not registered on subnet {netuid}; {how}")
    key = coldkey()
    balance = (await ledger.account(key.address)).balance
    if balance < burn:
        raise CannotPayBurn(
            f"registering on subnet {netuid} burns {format_amount(burn)} tokens but coldkey "
            f"{key.address[:12]}… holds {format_amount(balance)}; fund it (on the dev network: "
            f"`agora dev fund {key.address} 1`) and start again"
        )
    reporter.info(
        f"registering hotkey {hotkey[:12]}… on subnet {netuid}: burns {format_amount(burn)} "
        f"tokens from coldkey {key.address[:12]}… (balance {format_amount(balance)})"
    )
    if confirm_burn is not None and not confirm_burn(burn):
        raise HotkeyNotRegistered(f"registration declined; hotkey {hotkey} is not registered")
    with reporter.status("waiting for a block to include the registration…"):
        await _send(ledger, key, "register", {"netuid": netuid, "hotkey": hotkey}, timeout)
    neuron = await find_neuron(ledger, netuid, hotkey)
    if neuron is None:  # pragma: no cover  (included means registered, unless pruned at once)
        raise TransactionFailed("register", "not_registered", "the hotkey has no uid after all")
    reporter.info(f"registered: hotkey {hotkey[:12]}… is uid {neuron.uid} on subnet {netuid}")
    return neuron


async def ensure_endpoint(
    ledger: LedgerClient,
    netuid: int,
    hotkey: Keypair,
    ip: str,
    port: int,
    protocol: str = "http",
    *,
    reporter: Reporter | None = None,
    timeout: float = 60.0,
) -> bool:
    """Announce ``protocol://ip:port`` for the hotkey on ``netuid`` (a ``serve`` transaction
    signed by the hotkey) unless the ledger already shows exactly that. Returns whether a
    transaction was sent.

    Raises:
        SubnetNotFound, HotkeyNotRegistered, TransactionFailed, TimeoutError, NodeError.
    """
    reporter = reporter or QuietReporter()
    neuron = await find_neuron(ledger, netuid, hotkey.address)
    if neuron is None:
        raise HotkeyNotRegistered(
            f"hotkey {hotkey.address} is not registered on subnet {netuid}; register it first"
        )
    endpoint = neuron.endpoint
    if endpoint is not None and (endpoint.ip, endpoint.port, endpoint.protocol) == (
        ip,
        port,
        protocol,
    ):
        return False
    body = {"netuid": netuid, "ip": ip, "port": port, "protocol": protocol}
    with reporter.status(f"announcing {protocol}://{ip}:{port} on subnet {netuid}…"):
        await _send(ledger, hotkey, "serve", body, timeout)
    reporter.info(f"announced {protocol}://{ip}:{port} on subnet {netuid}")
    return True


async def metagraph_stakes(ledger: LedgerClient, netuid: int) -> dict[str, int]:
    """``{hotkey: stake in units}`` of every neuron of the subnet (the guard's standing table)."""
    metagraph = await ledger.metagraph(netuid)
    return {neuron.hotkey: neuron.stake for neuron in metagraph.neurons}


class CallerStandingWithAllowList:
    """A caller's standing: from ``table`` (a :class:`CachedStanding` over the metagraph), except
    that hotkeys in ``allow`` (gateways that are not registered) always pass, with any
    ``--min-caller-stake``."""

    def __init__(self, table: CachedStanding, allow: Collection[str] = ()) -> None:
        self.table = table
        self.allow = frozenset(allow)

    async def __call__(self, hotkey: str, /) -> CallerStanding:
        if hotkey in self.allow:
            return CallerStanding(True, ALLOWED_STAKE)
        return await self.table(hotkey)


def caller_standing(
    ledger: LedgerClient,
    netuid: int,
    *,
    allow: Collection[str] = (),
    refresh_s: float = 12.0,
    me: str | None = None,
) -> CallerStandingWithAllowList:
    """Standing for the guard: registered on ``netuid`` with its metagraph stake (fetched at most
    once per ``refresh_s``), or explicitly allowed. If ``me`` (the miner's hotkey) disappears
    from the metagraph (pruned), a warning says so, once."""
    warned = False

    async def fetch() -> dict[str, int]:
        nonlocal warned
        stakes = await metagraph_stakes(ledger, netuid)
        if me is not None and me not in stakes and not warned:
            warned = True
            log.warning(
                "this miner's hotkey %s is no longer registered on subnet %d (pruned?): callers "
                "will not find it; restart the miner to register again",
                me,
                netuid,
            )
        return stakes

    return CallerStandingWithAllowList(CachedStanding(fetch, refresh_s=refresh_s), allow)
