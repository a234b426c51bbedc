"""Payment channels: a voucher can never be redeemed twice or above the channel's funds."""

from __future__ import annotations

import pytest

from agora.crypto.keys import Keypair
from agora.protocol.channels import voucher_signing_bytes
from agora.protocol.errors import (
    BadSignature,
    InsufficientBalance,
    InvalidParameter,
    MalformedTransaction,
    NotOwner,
)
from agora.protocol.units import TOKEN
from tests.protocol_kit import CHAIN_ID, Chain, key

ALICE, GATEWAY, MINER = key("alice"), key("gateway"), key("miner")


def voucher(signer: Keypair, channel: int, cumulative: int, chain_id: str = CHAIN_ID) -> str:
    return signer.sign(voucher_signing_bytes(chain_id, channel, cumulative))


def opened(amount: int = 10 * TOKEN, timeout: int = 5) -> Chain:
    chain = Chain.new({"alice": 100, "gateway": 0, "miner": 0})
    chain.do(
        ALICE,
        "channel_open",
        payee=MINER.address,
        signer=GATEWAY.address,
        amount=amount,
        timeout=timeout,
    )
    return chain


def test_open_locks_the_deposit_and_redeem_pays_the_difference() -> None:
    chain = opened()
    assert chain.state.balance(ALICE.address) == 90 * TOKEN
    assert chain.state.channels[1].deposit == 10 * TOKEN
    chain.do(MINER, "channel_redeem", channel=1, cumulative=3, voucher=voucher(GATEWAY, 1, 3))
    chain.do(MINER, "channel_redeem", channel=1, cumulative=8, voucher=voucher(GATEWAY, 1, 8))
    assert chain.state.balance(MINER.address) == 8
    assert chain.state.channels[1].redeemed == 8


def test_a_voucher_cannot_be_redeemed_twice_or_out_of_order() -> None:
    chain = opened()
    chain.do(MINER, "channel_redeem", channel=1, cumulative=8, voucher=voucher(GATEWAY, 1, 8))
    for amount in (8, 3):
        with pytest.raises(InvalidParameter, match="not above"):
            chain.do(
                MINER,
                "channel_redeem",
                channel=1,
                cumulative=amount,
                voucher=voucher(GATEWAY, 1, amount),
            )
    assert chain.state.balance(MINER.address) == 8


def test_forged_foreign_or_oversized_vouchers_move_no_money() -> None:
    chain = opened(amount=10)
    cases = [
        (voucher(ALICE, 1, 5), 5, BadSignature),  # not the channel's signer
        (voucher(GATEWAY, 2, 5), 5, BadSignature),  # another channel's voucher
        (voucher(GATEWAY, 1, 5, chain_id="other"), 5, BadSignature),  # another chain's
        (voucher(GATEWAY, 1, 6), 5, BadSignature),  # signed for another amount
        (voucher(GATEWAY, 1, 11), 11, InvalidParameter),  # above the deposit
    ]
    for signature, cumulative, error in cases:
        with pytest.raises(error):
            chain.do(MINER, "channel_redeem", channel=1, cumulative=cumulative, voucher=signature)
    with pytest.raises(NotOwner):
        chain.do(ALICE, "channel_redeem", channel=1, cumulative=5, voucher=voucher(GATEWAY, 1, 5))
    assert chain.state.balance(MINER.address) == 0 and chain.state.channels[1].redeemed == 0


def test_payer_closes_only_after_expiry_and_gets_the_rest() -> None:
    chain = opened(timeout=4)
    chain.do(
        MINER, "channel_redeem", channel=1, cumulative=TOKEN, voucher=voucher(GATEWAY, 1, TOKEN)
    )
    with pytest.raises(InvalidParameter, match="runs until"):
        chain.do(ALICE, "channel_close", channel=1)
    chain.advance(3)
    chain.do(ALICE, "channel_close", channel=1)
    assert chain.state.balance(ALICE.address) == 99 * TOKEN
    with pytest.raises(InvalidParameter, match="closed"):
        chain.do(
            MINER,
            "channel_redeem",
            channel=1,
            cumulative=2 * TOKEN,
            voucher=voucher(GATEWAY, 1, 2 * TOKEN),
        )
    with pytest.raises(InvalidParameter, match="already closed"):
        chain.do(ALICE, "channel_close", channel=1)


def test_payee_may_close_early_and_strangers_may_not() -> None:
    chain = opened()
    with pytest.raises(NotOwner):
        chain.do(GATEWAY, "channel_close", channel=1)
    chain.do(MINER, "channel_close", channel=1)
    assert chain.state.balance(ALICE.address) == 100 * TOKEN


def test_top_up_and_extend() -> None:
    chain = opened(timeout=3)
    expires = chain.state.channels[1].expires_at
    chain.do(ALICE, "channel_top_up", channel=1, amount=5 * TOKEN, extend=10)
    assert chain.state.channels[1].deposit == 15 * TOKEN
    assert chain.state.channels[1].expires_at == expires + 10
    with pytest.raises(NotOwner):
        chain.do(MINER, "channel_top_up", channel=1, amount=1, extend=0)
    with pytest.raises(InsufficientBalance):
        chain.do(ALICE, "channel_top_up", channel=1, amount=10**18, extend=0)


@pytest.mark.parametrize(
    "body",
    [
        {"payee": ALICE.address, "signer": ALICE.address, "amount": 1, "timeout": 5},
        {"payee": MINER.address, "signer": ALICE.address, "amount": 0, "timeout": 5},
        {"payee": MINER.address, "signer": ALICE.address, "amount": 1, "timeout": 0},
    ],
)
def test_bad_channel_opens_are_refused(body: dict[str, object]) -> None:
    chain = Chain.new({"alice": 100})
    with pytest.raises(MalformedTransaction):
        chain.do(ALICE, "channel_open", **body)
    assert chain.state.channels == {} and chain.state.balance(ALICE.address) == 100 * TOKEN
