"""What a validator asks of the ledger besides weights: registration, stake, transactions.

    info = await transact(ledger, chain_id, hotkey, "set_weights", {...})   # None if refused
    uid = await ensure_registered(ledger, chain_id, netuid, hotkey, coldkey)  # burn if needed
    stake = await ensure_stake(ledger, chain_id, hotkey, amount, coldkey)     # top up to amount

``coldkey`` is a callable so that a wallet's coldkey is decrypted only when something must be
paid. Each transaction waits until a block includes (or drops) it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from agora.chain.client import LedgerClient
from agora.chain.errors import NodeError, NodeUnreachable
from agora.chain.models import NeuronInfo, TxInfo
from agora.crypto.keys import Keypair
from agora.crypto.signing import sign_transaction
from agora.protocol.units import format_amount
from agora.validator.errors import SetupFailed

__all__ = ["ensure_registered", "ensure_stake", "find_neuron", "transact"]

log = logging.getLogger("agora.validator")

TX_TIMEOUT_S = 60.0


async def transact(
    ledger: LedgerClient,
    chain_id: str,
    key: Keypair,
    kind: str,
    body: dict[str, Any],
    *,
    tx_hook: Callable[[str], None] | None = None,
) -> TxInfo | None:
    """Sign, submit and wait for one transaction. Returns its status once a block included or
    dropped it, or None if the node refused it at once (logged). ``tx_hook`` gets the
    transaction's hash before it is submitted.

    Raises:
        NodeUnreachable, TimeoutError (no block took it within a minute).
    """
    async with ledger.nonce_lock:  # shared with the client's own signing (disputes, votes)
        nonce = await ledger.next_nonce(key.address)
        tx = sign_transaction(key, chain_id, kind, nonce, body)
        if tx_hook is not None:
            tx_hook(tx.hash)
        try:
            tx_hash = await ledger.submit(tx)
        except NodeUnreachable:
            raise
        except NodeError as error:
            log.warning("%s refused by the node: %s: %s", kind, error.code, error.message)
            return None
    info = await ledger.wait_for_tx(tx_hash, timeout=TX_TIMEOUT_S)
    if info.status != "included":
        log.warning("%s left out of the block: %s: %s", kind, info.code, info.message)
    return info


async def find_neuron(ledger: LedgerClient, netuid: int, hotkey: str) -> NeuronInfo | None:
    graph = await ledger.metagraph(netuid)
    return next((n for n in graph.neurons if n.hotkey == hotkey), None)


def _no_coldkey() -> Keypair:
    raise SetupFailed(
        "this needs the coldkey (to pay the burn or the stake), and none was given: "
        "start with --wallet NAME (or --dev-key NAME on the dev network)"
    )


async def ensure_registered(
    ledger: LedgerClient,
    chain_id: str,
    netuid: int,
    hotkey: Keypair,
    coldkey: Callable[[], Keypair] | None,
) -> int:
    """The hotkey's uid on ``netuid``, registering it by burn (paid by the coldkey) if needed.

    Raises:
        SetupFailed: no coldkey, too little balance, or the ledger refused.
    """
    me = await find_neuron(ledger, netuid, hotkey.address)
    if me is not None:
        return me.uid
    subnet = await ledger.subnet(netuid)
    cold = (coldkey or _no_coldkey)()
    balance = (await ledger.account(cold.address)).balance
    if balance < subnet.registration_burn:
        raise SetupFailed(
            f"registering on subnet {netuid} burns {format_amount(subnet.registration_burn)} "
            f"tokens; coldkey {cold.address[:16]}… has {format_amount(balance)}"
        )
    log.info(
        "registering hotkey %s… on subnet %d (burn %s tokens)",
        hotkey.address[:16],
        netuid,
        format_amount(subnet.registration_burn),
    )
    info = await transact(
        ledger, chain_id, cold, "register", {"netuid": netuid, "hotkey": hotkey.address}
    )
    if info is None or info.status != "included":
        reason = f"{info.code}: {info.message}" if info is not None else "refused (see log)"
        raise SetupFailed(f"could not register on subnet {netuid}: {reason}")
    me = await find_neuron(ledger, netuid, hotkey.address)
    if me is None:
        raise SetupFailed("the registration was included but the hotkey has no uid")
    log.info("registered as uid %d in block %s", me.uid, info.height)
    return me.uid


async def ensure_stake(
    ledger: LedgerClient,
    chain_id: str,
    hotkey: Keypair,
    amount: int,
    coldkey: Callable[[], Keypair] | None,
) -> int:
    """Stake from the coldkey until the hotkey has at least ``amount`` units behind it.
    Returns the stake now behind the hotkey.

    Raises:
        SetupFailed: no coldkey, too little balance, or the ledger refused.
    """
    have = (await ledger.account(hotkey.address)).stake_behind
    if have >= amount:
        return have
    cold = (coldkey or _no_coldkey)()
    missing = amount - have
    balance = (await ledger.account(cold.address)).balance
    if balance < missing:
        raise SetupFailed(
            f"staking {format_amount(missing)} more tokens needs that much in coldkey "
            f"{cold.address[:16]}…, which has {format_amount(balance)}"
        )
    log.info("staking %s tokens to hotkey %s…", format_amount(missing), hotkey.address[:16])
    info = await transact(
        ledger, chain_id, cold, "add_stake", {"hotkey": hotkey.address, "amount": missing}
    )
    if info is None or info.status != "included":
        reason = f"{info.code}: {info.message}" if info is not None else "refused (see log)"
        raise SetupFailed(f"could not stake: {reason}")
    return (await ledger.account(hotkey.address)).stake_behind
