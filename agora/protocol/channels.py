"""Payment channels: many off-ledger payments, a handful of ledger transactions.

A payer locks a deposit in a channel to a payee, with a ``signer`` allowed to sign vouchers (the
payer itself, or a key the payer delegates to, such as a gateway paying miners on its behalf).
Off the ledger, the signer hands the payee vouchers for the *cumulative* amount owed:
``{chain_id, channel, cumulative}`` signed under ``VOUCHER_DOMAIN``. The payee redeems the highest
voucher it holds whenever it likes; the ledger pays ``cumulative - redeemed``. Because vouchers
are cumulative and the ledger remembers ``redeemed``, a voucher can never be redeemed twice (an
old one pays nothing and is refused) and never above the deposit.

The payer can top up and extend. After ``expires_at`` the payer may close the channel and take
back what was not redeemed; the payee may close it at any time (giving up what it did not redeem).
A closed channel accepts nothing more.

Used twice by the gateway: a customer's prepaid escrow is a channel to the gateway (whose vouchers
the gateway signs itself, up to the deposit, and accounts for with miners' receipts), and the
gateway pays each miner through a channel of its own.
"""

from __future__ import annotations

from agora.protocol.accounts import credit, debit
from agora.protocol.codec import Json, signing_bytes, verify_signature
from agora.protocol.errors import BadSignature, InvalidParameter, MalformedTransaction, NotOwner
from agora.protocol.state import Channel, State

VOUCHER_DOMAIN = b"agora/voucher/v1"
MAX_CHANNEL_BLOCKS = 10_000_000


def voucher_message(chain_id: str, channel_id: int, cumulative: int) -> Json:
    return {"chain_id": chain_id, "channel": channel_id, "cumulative": cumulative}


def voucher_signing_bytes(chain_id: str, channel_id: int, cumulative: int) -> bytes:
    return signing_bytes(VOUCHER_DOMAIN, voucher_message(chain_id, channel_id, cumulative))


def get_channel(state: State, channel_id: int) -> Channel:
    channel = state.channels.get(channel_id)
    if channel is None:
        raise InvalidParameter(f"no channel {channel_id}")
    return channel


def open_channel(
    state: State, payer: str, payee: str, signer: str, amount: int, timeout: int, block: int
) -> int:
    """Lock ``amount`` from ``payer`` in a new channel. Returns its id.

    Raises MalformedTransaction (zero amount, payee is the payer, timeout out of range) or
    InsufficientBalance.
    """
    if amount <= 0:
        raise MalformedTransaction("a channel needs a positive deposit")
    if payee == payer:
        raise MalformedTransaction("a channel pays someone else: payee must differ from payer")
    if not 1 <= timeout <= MAX_CHANNEL_BLOCKS:
        raise MalformedTransaction(f"timeout must be 1..{MAX_CHANNEL_BLOCKS} blocks")
    debit(state, payer, amount, "this channel's deposit")
    channel_id = state.next_channel_id
    state.next_channel_id += 1
    state.channels[channel_id] = Channel(
        id=channel_id,
        payer=payer,
        payee=payee,
        signer=signer,
        deposit=amount,
        redeemed=0,
        opened_at=block,
        expires_at=block + timeout,
    )
    return channel_id


def top_up_channel(state: State, payer: str, channel_id: int, amount: int, extend: int) -> None:
    """Add ``amount`` and push the expiry ``extend`` blocks later. Raises InvalidParameter,
    NotOwner, MalformedTransaction or InsufficientBalance."""
    channel = get_channel(state, channel_id)
    if channel.payer != payer:
        raise NotOwner(f"only the payer of channel {channel_id} can top it up")
    if channel.closed:
        raise InvalidParameter(f"channel {channel_id} is closed; open a new one")
    if amount == 0 and extend == 0:
        raise MalformedTransaction("top up a positive amount or extend the expiry")
    if channel.expires_at + extend - channel.opened_at > MAX_CHANNEL_BLOCKS:
        raise MalformedTransaction(f"a channel lives at most {MAX_CHANNEL_BLOCKS} blocks")
    if amount:
        debit(state, payer, amount, "this top-up")
    channel.deposit += amount
    channel.expires_at += extend


def redeem_voucher(
    state: State, payee: str, channel_id: int, cumulative: int, signature: str
) -> int:
    """Pay the payee up to a signed cumulative amount. Returns the units paid now.

    Raises InvalidParameter (unknown or closed channel, a voucher not above what was redeemed,
    or above the deposit), NotOwner (not the payee) or BadSignature (not the signer's voucher).
    """
    channel = get_channel(state, channel_id)
    if channel.payee != payee:
        raise NotOwner(f"only the payee of channel {channel_id} can redeem its vouchers")
    if channel.closed:
        raise InvalidParameter(f"channel {channel_id} is closed")
    if cumulative <= channel.redeemed:
        raise InvalidParameter(
            f"voucher for {cumulative} units is not above the {channel.redeemed} already "
            "redeemed: vouchers are cumulative, redeem the latest one"
        )
    if cumulative > channel.deposit:
        raise InvalidParameter(
            f"voucher for {cumulative} units exceeds the channel's deposit of {channel.deposit}"
        )
    message = voucher_signing_bytes(state.chain_id, channel_id, cumulative)
    if not verify_signature(channel.signer, message, signature):
        raise BadSignature(f"voucher is not signed by channel {channel_id}'s signer")
    paid = cumulative - channel.redeemed
    channel.redeemed = cumulative
    credit(state, channel.payee, paid)
    return paid


def close_channel(state: State, sender: str, channel_id: int, block: int) -> int:
    """Close a channel and refund the payer what was not redeemed. Returns the refund.

    The payee may close at any time; the payer only after ``expires_at`` (so that the payee
    has had the time it was promised to redeem). Raises InvalidParameter or NotOwner.
    """
    channel = get_channel(state, channel_id)
    if channel.closed:
        raise InvalidParameter(f"channel {channel_id} is already closed")
    if sender == channel.payer:
        if block < channel.expires_at:
            raise InvalidParameter(
                f"channel {channel_id} runs until block {channel.expires_at}; "
                "the payer can close it from then on"
            )
    elif sender != channel.payee:
        raise NotOwner(f"only the payer or the payee can close channel {channel_id}")
    refund = channel.remaining
    channel.closed = True
    channel.deposit = channel.redeemed
    credit(state, channel.payer, refund)
    return refund
