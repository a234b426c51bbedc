"""The node's market routes in-process (httpx.ASGITransport), read through ``LedgerClient``."""

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
from agora.chain.node import Node, NodeConfig
from agora.crypto.keys import Keypair
from agora.crypto.signing import sign_transaction
from agora.protocol.market_state import MARKET

pytestmark = pytest.mark.anyio

ALICE, CHARLIE, DAVE = (Keypair.from_name(n) for n in ("alice", "charlie", "dave"))
HW = {"cpu": 2, "mem": 4096, "gpu": 0, "gpu_model": "", "region": "eu"}


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[Node]:
    made = await Node.create(
        NodeConfig(data_dir=tmp_path, block_time=1.0),
        genesis=dev_genesis(),
        producer=dev_producer(),
    )
    yield made
    await made.stop()


@pytest.fixture
async def ledger(node: Node) -> AsyncIterator[LedgerClient]:
    transport = httpx.ASGITransport(app=create_app(node))
    async with httpx.AsyncClient(transport=transport, base_url="http://node") as http:
        yield LedgerClient(http)


async def do(node: Node, ledger: LedgerClient, who: Keypair, kind: str, **body: Any) -> None:
    nonce = await ledger.next_nonce(who.address)
    await ledger.submit(sign_transaction(who, "agora-dev", kind, nonce, body))
    await node.produce_block()
    assert (await ledger.account(who.address)).nonce == nonce + 1, f"{kind} was left out"


async def test_market_routes_show_orders_bids_with_records_leases_and_challenges(
    node: Node, ledger: LedgerClient
) -> None:
    for provider in (CHARLIE, DAVE):
        await do(
            node,
            ledger,
            provider,
            "market_register",
            **HW,
            price_info="0.02/h per core",
            url="http://127.0.0.1:9",
            stake=MARKET.min_provider_stake,
        )
    providers = await ledger.market_providers()
    assert {p.address for p in providers} == {CHARLIE.address, DAVE.address}
    await do(
        node,
        ledger,
        ALICE,
        "market_order",
        **{**HW, "cpu": 1, "mem": 1024},
        max_price=3000,
        deposit=30_000,
        count=1,
        auditor="",
    )
    [order] = await ledger.market_orders(status="open")
    assert order.matching_providers == 2 and order.tenant == ALICE.address
    for provider, price in ((CHARLIE, 2000), (DAVE, 1500)):
        await do(node, ledger, provider, "market_bid", order=1, price=price, **HW)
    detail = await ledger.market_order(1)
    assert [b.price for b in detail.bid_details] == [1500, 2000]  # cheapest first
    assert detail.bid_details[0].provider_info is not None
    assert detail.bid_details[0].provider_info.history.leases_served == 0
    await do(node, ledger, ALICE, "market_lease", bid=2)
    lease = await ledger.market_lease(1)
    assert lease.provider == DAVE.address and lease.provider_url == "http://127.0.0.1:9"
    assert lease.paid == 1500 and lease.remaining == 30_000 - 1500 and lease.paid_blocks == 1
    await node.produce_block()
    lease = await ledger.market_lease(1)
    assert lease.paid == 3000 and lease.height == lease.opened_at + 1
    assert [x.id for x in await ledger.market_leases(tenant=ALICE.address)] == [1]
    assert await ledger.market_leases(provider=CHARLIE.address) == []
    dave = await ledger.market_provider(DAVE.address)
    assert dave.rate == 1500 and dave.used.cpu == 2 and dave.open_leases == 1
    assert dave.alive_until == dave.alive_at + MARKET.liveness_window
    await do(node, ledger, ALICE, "market_challenge", lease=1, size=16)
    [challenge] = await ledger.market_challenges(provider=DAVE.address, pending=True)
    assert challenge.status == "posted" and challenge.cells == MARKET.challenge_cells
    params = await ledger.market_params()
    assert params.params["liveness_window"] == MARKET.liveness_window
    assert params.block_time == 1.0


async def test_unknown_market_records_are_404_and_bad_addresses_400(ledger: LedgerClient) -> None:
    for call in (ledger.market_order(7), ledger.market_lease(7)):
        with pytest.raises(NodeError) as missing:
            await call
        assert missing.value.code == "not_found"
    with pytest.raises(NodeError) as missing:
        await ledger.market_provider("ab" * 32)
    assert missing.value.code == "not_found"
    with pytest.raises(NodeError) as bad:
        await ledger.market_provider("nope")
    assert bad.value.code == "bad_address"


async def test_a_refused_market_transaction_says_why(node: Node, ledger: LedgerClient) -> None:
    nonce = await ledger.next_nonce(ALICE.address)
    body = {**HW, "cpu": 100_000, "max_price": 1, "deposit": 1, "count": 1, "auditor": ""}
    with pytest.raises(NodeError) as refused:
        await ledger.submit(sign_transaction(ALICE, "agora-dev", "market_order", nonce, body))
    assert refused.value.code == "malformed_transaction" and "impossible" in str(refused.value)
