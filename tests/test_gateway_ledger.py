"""The gateway's money against a real in-process ledger node: the channel routes, escrow
accounting per key, and the miner's voucher book. A forged, replayed or oversized voucher moves
no money, on the ledger or in the miner's book."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from agora.chain.api import create_app
from agora.chain.client import LedgerClient
from agora.chain.errors import NodeError
from agora.chain.genesis import dev_genesis, dev_producer
from agora.chain.models import Channel
from agora.chain.node import Node, NodeConfig
from agora.crypto.keys import Keypair
from agora.crypto.signing import sign_transaction
from agora.gateway.accounts import Accounts, hash_key
from agora.gateway.config import GatewayConfig
from agora.gateway.errors import (
    AuthenticationFailed,
    EscrowExhausted,
    Forbidden,
    RateLimited,
    SpendLimitReached,
)
from agora.gateway.ledger import ChainView, FastKey, Voucher
from agora.gateway.miner_payments import MinerPayments, VoucherBook, VoucherRejected
from agora.gateway.store import GatewayStore
from agora.protocol.units import TOKEN

pytestmark = pytest.mark.anyio

ALICE, BOB, EVE = Keypair.from_name("alice"), Keypair.from_name("bob"), Keypair.from_name("eve")
GATEWAY = Keypair.from_name("alice/hot")  # funded below
MINER = Keypair.from_name("bob/hot")
CHAIN = "agora-dev"


@pytest.fixture
async def ledger(tmp_path: Path) -> AsyncIterator[LedgerClient]:
    node = await Node.create(
        NodeConfig(data_dir=tmp_path / "node", block_time=0.05),
        genesis=dev_genesis(),
        producer=dev_producer(),
    )
    await node.start()
    transport = httpx.ASGITransport(app=create_app(node))
    async with httpx.AsyncClient(transport=transport, base_url="http://node") as http:
        yield LedgerClient(http)
    await node.stop()


async def send(ledger: LedgerClient, key: Keypair, kind: str, **body: Any) -> None:
    nonce = await ledger.next_nonce(key.address)
    await ledger.submit_and_wait(sign_transaction(key, CHAIN, kind, nonce, body), timeout=10)


async def open_channel(
    ledger: LedgerClient, payer: Keypair, payee: str, signer: str, amount: int, timeout: int = 1000
) -> Channel:
    await send(
        ledger, payer, "channel_open", payee=payee, signer=signer, amount=amount, timeout=timeout
    )
    return max(await ledger.channels(payer.address, role="payer"), key=lambda c: c.id)


# -- the node's channel routes ------------------------------------------------------------------


async def test_channel_routes_list_by_role_and_state(ledger: LedgerClient) -> None:
    first = await open_channel(ledger, ALICE, BOB.address, ALICE.address, 2 * TOKEN)
    second = await open_channel(ledger, ALICE, EVE.address, BOB.address, TOKEN)
    assert (first.payer, first.payee, first.signer) == (ALICE.address, BOB.address, ALICE.address)
    assert first.deposit == first.remaining == 2 * TOKEN and not first.closed
    assert (await ledger.channel(second.id)).signer == BOB.address
    assert [c.id for c in await ledger.channels(ALICE.address)] == [first.id, second.id]
    assert [c.id for c in await ledger.channels(BOB.address)] == [first.id, second.id]
    assert [c.id for c in await ledger.channels(BOB.address, role="payee")] == [first.id]
    assert [c.id for c in await ledger.channels(BOB.address, role="signer")] == [second.id]
    await send(ledger, BOB, "channel_close", channel=first.id)  # the payee may close any time
    assert [c.id for c in await ledger.channels(BOB.address, open_only=True)] == [second.id]
    assert (await ledger.channel(first.id)).closed
    with pytest.raises(NodeError) as unknown:
        await ledger.channel(999)
    assert unknown.value.code == "unknown_channel" and unknown.value.status == 404
    with pytest.raises(NodeError) as bad:
        await ledger.channels("not-an-address")
    assert bad.value.code == "bad_address" and bad.value.status == 400


# -- vouchers on the ledger and in the miner's book ----------------------------------------------


async def balance(ledger: LedgerClient, key: Keypair) -> int:
    return (await ledger.account(key.address)).balance


async def test_forged_replayed_and_oversized_vouchers_move_no_money(
    ledger: LedgerClient, tmp_path: Path
) -> None:
    await send(ledger, ALICE, "transfer", to=GATEWAY.address, amount=5 * TOKEN)
    channel = await open_channel(ledger, GATEWAY, MINER.address, GATEWAY.address, TOKEN)
    payments = MinerPayments(MINER, ledger, tmp_path / "vouchers.sqlite", interval_s=3600)
    book = payments.book
    key = FastKey(GATEWAY)
    good = Voucher.sign(key, CHAIN, channel.id, 1000)
    assert (await book.offer(good.header)).cumulative == 1000
    older = Voucher.sign(key, CHAIN, channel.id, 400)
    assert (await book.offer(older.header)).cumulative == 1000  # kept the best one
    forged = Voucher.sign(FastKey(EVE), CHAIN, channel.id, 5000)
    other_chain = Voucher.sign(key, "agora-other", channel.id, 5000)
    too_much = Voucher.sign(key, CHAIN, channel.id, TOKEN + 1)
    for voucher, reason in [
        (forged, "bad_signature"),
        (other_chain, "bad_signature"),
        (too_much, "over_deposit"),
    ]:
        with pytest.raises(VoucherRejected) as refused:
            await book.offer(voucher.header)
        assert refused.value.reason == reason
    for text, reason in [
        ("1,2", "malformed"),
        (f"01,5,{'a' * 128}", "malformed"),
        (f"99,5,{'a' * 128}", "unknown_channel"),
    ]:
        with pytest.raises(VoucherRejected) as refused:
            await book.offer(text)
        assert refused.value.reason == reason
    not_mine = await open_channel(ledger, GATEWAY, EVE.address, GATEWAY.address, TOKEN)
    with pytest.raises(VoucherRejected, match="not this miner"):
        await book.offer(Voucher.sign(key, CHAIN, not_mine.id, 10).header)

    before = await balance(ledger, MINER)
    assert await payments.redeem() == 1000
    assert await balance(ledger, MINER) == before + 1000
    assert (await ledger.channel(channel.id)).redeemed == 1000
    assert await payments.redeem() == 0  # nothing new to redeem

    # Straight to the ledger: a replay, a forgery, too much, the wrong sender. Nothing moves.
    attempts = [
        (MINER, {"channel": channel.id, "cumulative": 1000, "voucher": good.signature}),
        (
            MINER,
            {
                "channel": channel.id,
                "cumulative": 800,
                "voucher": Voucher.sign(key, CHAIN, channel.id, 800).signature,
            },
        ),
        (MINER, {"channel": channel.id, "cumulative": 5000, "voucher": forged.signature}),
        (MINER, {"channel": channel.id, "cumulative": TOKEN + 1, "voucher": too_much.signature}),
        (
            EVE,
            {
                "channel": channel.id,
                "cumulative": 2000,
                "voucher": Voucher.sign(key, CHAIN, channel.id, 2000).signature,
            },
        ),
    ]
    balances = [await balance(ledger, k) for k in (MINER, GATEWAY, EVE)]
    for sender, body in attempts:
        tx = sign_transaction(
            sender, CHAIN, "channel_redeem", await ledger.next_nonce(sender.address), body
        )
        with pytest.raises(NodeError) as refused:
            await ledger.submit(tx)
        assert refused.value.code in ("invalid_parameter", "bad_signature", "not_owner")
    assert [await balance(ledger, k) for k in (MINER, GATEWAY, EVE)] == balances
    assert (await ledger.channel(channel.id)).redeemed == 1000

    # The book survives a restart, remembering what was redeemed.
    await payments.aclose(final_redeem=False)
    reopened = VoucherBook(MINER.address, ledger, tmp_path / "vouchers.sqlite")
    held = reopened.best[channel.id]
    assert (held.cumulative, held.redeemed) == (1000, 1000)
    assert reopened.unredeemed() == []
    reopened.close()


# -- escrow accounting per key -------------------------------------------------------------------


async def test_keys_spend_only_what_their_escrow_covers(
    ledger: LedgerClient, tmp_path: Path
) -> None:
    config = GatewayConfig(min_blocks_left=5, default_rpm=6000, default_burst=1000)
    chain = await ChainView.create(ledger)
    store = GatewayStore(tmp_path / "gw.sqlite")
    accounts = Accounts(store, config, chain, ledger)
    channel = await open_channel(ledger, ALICE, GATEWAY.address, GATEWAY.address, 10_000)
    key_text, key = accounts.register(ALICE.address, channel, label="t", daily_limit=9_000)
    assert key_text.startswith("sk-agora-") and key.record.key_hash == hash_key(key_text)
    assert accounts.authenticate(f"Bearer {key_text}") is key
    for header in (None, "Basic abc", "Bearer sk-agora-wrong"):
        with pytest.raises(AuthenticationFailed):
            accounts.authenticate(header)
    with pytest.raises(Forbidden, match="already backs"):
        accounts.register(ALICE.address, channel)

    hold = await accounts.reserve(key, 6_000)
    assert key.available == 4_000
    with pytest.raises(EscrowExhausted) as short:
        await accounts.reserve(key, 5_000)
    error = short.value.to_json()["error"]
    assert (
        short.value.status == 402 and error["available"] == 4_000 and "top-up" in error["message"]
    )
    assert accounts.charge(hold, 2_500) == 2_500  # the receipt's price, the rest released
    assert key.available == 7_500 and key.escrow.spent == 2_500
    spare = await accounts.reserve(key, 100)
    accounts.release(spare)
    accounts.release(spare)  # twice changes nothing
    assert key.available == 7_500
    with pytest.raises(SpendLimitReached):
        await accounts.reserve(key, 7_000)  # 2,500 + 7,000 > the daily 9,000

    # A top-up on the ledger is seen at once: the 402 path re-reads the channel.
    await send(ledger, ALICE, "channel_top_up", channel=channel.id, amount=5_000, extend=0)
    key.last_refresh = 0.0
    key.record.daily_limit = None
    hold = await accounts.reserve(key, 12_000)
    assert key.escrow.deposit == 15_000
    accounts.release(hold)

    # Expiring escrow refuses service before the customer can take it back.
    chain.height = key.escrow.expires_at - 3
    with pytest.raises(EscrowExhausted) as expiring:
        await accounts.reserve(key, 1)
    assert expiring.value.code == "escrow_expiring"

    slow_channel = await open_channel(ledger, BOB, GATEWAY.address, GATEWAY.address, 100, 10**5)
    _, slow = accounts.register(BOB.address, slow_channel, rpm=60, burst=2)
    accounts.check_rate(slow)
    accounts.check_rate(slow)
    with pytest.raises(RateLimited) as limited:
        accounts.check_rate(slow)
    assert limited.value.status == 429 and limited.value.headers()["Retry-After"] == "1"

    store.close()
    reloaded = Accounts(GatewayStore(tmp_path / "gw.sqlite"), config, chain, ledger)
    again = reloaded.by_id[key.record.key_id]
    assert again.escrow.spent == 2_500 and again.escrow.deposit == 15_000
    reloaded.store.close()
