"""The HTTP API in-process (httpx.ASGITransport): routes, and bad input that changes nothing."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from agora.chain.api import create_app, halving
from agora.chain.client import LedgerClient
from agora.chain.errors import NodeError, TransactionRejected
from agora.chain.genesis import dev_genesis, dev_producer
from agora.chain.mempool import MempoolLimits
from agora.chain.node import Node, NodeConfig
from agora.crypto.keys import Keypair
from agora.crypto.signing import sign_transaction
from agora.protocol.state import state_root
from agora.protocol.transactions import Transaction
from agora.protocol.units import SUPPLY_CAP, TOKEN

pytestmark = pytest.mark.anyio

ALICE, BOB = Keypair.from_name("alice"), Keypair.from_name("bob")
CHAIN = "agora-dev"


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[Node]:
    config = NodeConfig(data_dir=tmp_path, block_time=2.0, limits=MempoolLimits(rate=5, burst=5))
    node = await Node.create(config, genesis=dev_genesis(), producer=dev_producer())
    yield node
    await node.stop()


@pytest.fixture
async def http(node: Node) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_app(node))
    async with httpx.AsyncClient(transport=transport, base_url="http://node") as client:
        yield client


def transfer(sender: Keypair, nonce: int, tokens: int = 1, to: Keypair = BOB) -> Transaction:
    return sign_transaction(
        sender, CHAIN, "transfer", nonce, {"to": to.address, "amount": tokens * TOKEN}
    )


def error_of(response: httpx.Response) -> tuple[int, str]:
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}
    assert body["error"]["message"]
    return response.status_code, body["error"]["code"]


async def test_status_describes_the_chain(http: httpx.AsyncClient, node: Node) -> None:
    status = (await http.get("/v1/status")).json()
    assert status["chain_id"] == CHAIN and status["role"] == "producer"
    assert status["height"] == 0 and status["head_hash"] == node.genesis_hash
    assert status["genesis_hash"] == node.genesis_hash
    assert status["producer"] == dev_producer().address
    assert status["total_issuance"] == 1_060_000 * TOKEN
    assert status["block_reward"] == TOKEN
    assert status["next_halving_at"] == SUPPLY_CAP // 2
    assert status["mempool_size"] == 0 and status["block_time"] == 2.0


def test_halving_thresholds_follow_the_emission_schedule() -> None:
    assert halving(TOKEN, SUPPLY_CAP, 0) == (TOKEN, SUPPLY_CAP // 2)
    assert halving(TOKEN, SUPPLY_CAP, SUPPLY_CAP // 2) == (TOKEN // 2, SUPPLY_CAP * 3 // 4)
    assert halving(TOKEN, SUPPLY_CAP, SUPPLY_CAP) == (0, None)


async def test_a_transfer_goes_from_submission_to_a_block(
    http: httpx.AsyncClient, node: Node
) -> None:
    tx = transfer(ALICE, 0, tokens=7)
    response = await http.post("/v1/transactions", json=tx.to_json())
    assert response.status_code == 202
    assert response.json()["hash"] == tx.hash and response.json()["status"] == "pending"
    again = await http.post("/v1/transactions", json=tx.to_json())
    assert again.status_code == 202 and again.json()["hash"] == tx.hash
    assert (await http.get(f"/v1/accounts/{ALICE.address}")).json()["pending_nonce"] == 1

    block = await node.produce_block()
    info = (await http.get(f"/v1/transactions/{tx.hash}")).json()
    assert info["status"] == "included" and info["height"] == 1 and info["index"] == 0

    alice = (await http.get(f"/v1/accounts/{ALICE.address}")).json()
    assert alice["balance"] == 9_993 * TOKEN and alice["nonce"] == 1
    latest = (await http.get("/v1/blocks/latest")).json()
    assert latest == (await http.get("/v1/blocks/1")).json() == block.to_json()
    listing = (await http.get("/v1/blocks", params={"limit": 5})).json()
    assert listing["head"] == 1 and listing["blocks"][0]["tx_count"] == 1


async def test_an_account_with_nothing_shows_zeros(http: httpx.AsyncClient) -> None:
    nobody = Keypair.from_name("nobody").address
    account = (await http.get(f"/v1/accounts/{nobody}")).json()
    assert account["balance"] == 0 and account["nonce"] == 0 and account["pending_nonce"] == 0
    assert account["stakes"] == [] and account["registrations"] == []


def _unsigned(tx: Transaction) -> dict[str, Any]:
    return {**tx.to_json(), "signature": ""}


BAD_SUBMISSIONS: dict[str, tuple[Any, int, str]] = {
    # name: (body: bytes, or a function of the node's state giving a JSON body; status; code)
    "malformed json": (b'{"kind": "transfer",', 400, "malformed_json"),
    "NaN in json": (b'{"nonce": NaN}', 400, "malformed_json"),
    "not an object": (b"[1, 2, 3]", 400, "malformed_transaction"),
    "unknown kind": (
        lambda: {**transfer(ALICE, 0).to_json(), "kind": "mint"},
        400,
        "malformed_transaction",
    ),
    "missing field": (
        lambda: {k: v for k, v in transfer(ALICE, 0).to_json().items() if k != "nonce"},
        400,
        "malformed_transaction",
    ),
    "float amount": (
        lambda: {**transfer(ALICE, 0).to_json(), "body": {"to": BOB.address, "amount": 1.5}},
        400,
        "malformed_transaction",
    ),
    "wrong signature": (
        lambda: {**transfer(ALICE, 0).to_json(), "signature": transfer(BOB, 0).signature},
        401,
        "bad_signature",
    ),
    "altered amount": (
        lambda: {**transfer(ALICE, 0).to_json(), "body": {"to": BOB.address, "amount": 2}},
        401,
        "bad_signature",
    ),
    "empty signature": (lambda: _unsigned(transfer(ALICE, 0)), 401, "bad_signature"),
    "replayed nonce": (lambda: transfer(ALICE, 0, tokens=3).to_json(), 409, "bad_nonce"),
    "future nonce": (lambda: transfer(ALICE, 7).to_json(), 409, "bad_nonce"),
    "insufficient balance": (
        lambda: transfer(ALICE, 1, tokens=20_000).to_json(),
        422,
        "insufficient_balance",
    ),
    "zero amount": (
        lambda: sign_transaction(ALICE, CHAIN, "transfer", 1, {"to": BOB.address, "amount": 0}),
        400,
        "malformed_transaction",
    ),
    "oversized payload": (b"{" + b" " * 70_000 + b"}", 413, "payload_too_large"),
}


@pytest.mark.parametrize("name", list(BAD_SUBMISSIONS))
async def test_bad_submissions_get_a_clear_error_and_change_nothing(
    http: httpx.AsyncClient, node: Node, name: str
) -> None:
    await http.post("/v1/transactions", json=transfer(ALICE, 0, tokens=1).to_json())
    await node.produce_block()  # alice's nonce 0 is used now
    root, height, pending = state_root(node.state), node.height, len(node.mempool)

    body, status, code = BAD_SUBMISSIONS[name]
    if callable(body):
        body = body()
    if isinstance(body, Transaction):
        body = body.to_json()
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    response = await http.post(
        "/v1/transactions", content=content, headers={"Content-Type": "application/json"}
    )
    assert error_of(response) == (status, code), response.json()

    assert state_root(node.state) == root and node.height == height
    assert len(node.mempool) == pending == 0
    assert (await http.get(f"/v1/accounts/{ALICE.address}")).json()["pending_nonce"] == 1


async def test_a_body_without_content_length_is_cut_at_the_limit(
    http: httpx.AsyncClient, node: Node
) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(100):
            yield b" " * 1024

    response = await http.post("/v1/transactions", content=chunks())
    assert error_of(response) == (413, "payload_too_large")
    assert len(node.mempool) == 0


async def test_rate_limited_sender_gets_429_with_retry_after(http: httpx.AsyncClient) -> None:
    for nonce in range(5):  # the fixture's bucket holds 5
        assert (
            await http.post("/v1/transactions", json=transfer(ALICE, nonce).to_json())
        ).is_success
    response = await http.post("/v1/transactions", json=transfer(ALICE, 5).to_json())
    assert error_of(response) == (429, "sender_rate_limited")
    assert int(response.headers["Retry-After"]) >= 1


@pytest.mark.parametrize(
    ("path", "status", "code"),
    [
        ("/v1/blocks/1", 404, "unknown_block"),
        ("/v1/blocks/0", 404, "unknown_block"),
        ("/v1/blocks/latest", 404, "unknown_block"),
        ("/v1/blocks/abc", 400, "bad_request"),
        ("/v1/blocks?limit=0", 400, "bad_request"),
        ("/v1/subnets/99", 404, "unknown_subnet"),
        ("/v1/subnets/99/metagraph", 404, "unknown_subnet"),
        ("/v1/subnets/x", 400, "bad_request"),
        ("/v1/accounts/not-an-address", 400, "bad_address"),
        ("/v1/accounts/" + "A" * 64, 400, "bad_address"),
        ("/v1/transactions/" + "0" * 64, 404, "unknown_transaction"),
        ("/v1/transactions/xyz", 400, "bad_request"),
        ("/v2/status", 404, "not_found"),
    ],
)
async def test_bad_reads(http: httpx.AsyncClient, path: str, status: int, code: str) -> None:
    assert error_of(await http.get(path)) == (status, code)


async def test_genesis_is_served_with_its_hash(http: httpx.AsyncClient, node: Node) -> None:
    from agora.chain.genesis import check_genesis_state

    genesis = (await http.get("/v1/genesis")).json()
    assert genesis["hash"] == node.genesis_hash
    assert check_genesis_state(genesis["state"]).last_block_hash == genesis["hash"]


async def test_openapi_documents_every_route(http: httpx.AsyncClient) -> None:
    spec = (await http.get("/openapi.json")).json()
    paths = spec["paths"]
    for path in (
        "/v1/transactions",
        "/v1/transactions/{tx_hash}",
        "/v1/status",
        "/v1/genesis",
        "/v1/blocks",
        "/v1/blocks/latest",
        "/v1/blocks/{height}",
        "/v1/accounts/{address}",
        "/v1/subnets",
        "/v1/subnets/{netuid}",
        "/v1/subnets/{netuid}/metagraph",
        "/v1/events",
    ):
        operations = paths[path]
        for operation in operations.values():
            assert operation["summary"] and operation["description"]
    submit = paths["/v1/transactions"]["post"]
    assert {"202", "400", "401", "409", "413", "422", "429"} <= set(submit["responses"])
    assert "requestBody" in submit


async def test_client_against_the_app(http: httpx.AsyncClient, node: Node) -> None:
    client = LedgerClient(http)
    status = await client.status()
    assert status.chain_id == CHAIN
    tx_hash = await client.submit(transfer(ALICE, await client.next_nonce(ALICE.address)))
    assert (await client.tx_status(tx_hash)).status == "pending"
    await node.produce_block()
    info = await client.wait_for_tx(tx_hash, timeout=1)
    assert info.status == "included" and info.height == 1
    assert (await client.account(BOB.address)).balance == 10_001 * TOKEN
    assert (await client.block(1))["hash"] == node.head_hash
    with pytest.raises(NodeError) as caught:
        await client.submit(transfer(ALICE, 0, tokens=2))
    assert caught.value.code == "bad_nonce" and caught.value.status == 409
    with pytest.raises(NodeError, match="no subnet 5") as unknown:
        await client.subnet(5)
    assert unknown.value.code == "unknown_subnet" and unknown.value.status == 404


async def test_a_transaction_left_out_of_a_block_is_reported(
    http: httpx.AsyncClient, node: Node
) -> None:
    client = LedgerClient(http)
    poor = Keypair.from_name("poor")
    await client.submit(transfer(ALICE, 0, tokens=1, to=poor))
    await node.produce_block()
    spend = sign_transaction(poor, CHAIN, "transfer", 0, {"to": BOB.address, "amount": TOKEN})
    waiting = asyncio.create_task(client.submit_and_wait(spend, timeout=5))
    while len(node.mempool) == 0:
        await asyncio.sleep(0.01)
    node.state.balances.pop(poor.address)  # as if something else had spent it meanwhile
    await node.produce_block()
    with pytest.raises(TransactionRejected) as caught:
        await waiting
    assert caught.value.code == "insufficient_balance"
    info = await client.wait_for_tx(spend.hash, timeout=1)
    assert info.status == "rejected" and info.code == "insufficient_balance"
    assert (node.store.block_json(2) or {})["txs"] == []


async def test_subnets_and_metagraph_after_an_epoch(http: httpx.AsyncClient, node: Node) -> None:
    client = LedgerClient(http)
    owner = Keypair.from_name("alice")
    validator, miner = Keypair.from_name("alice/hot"), Keypair.from_name("bob/hot")

    async def send(signer: Keypair, kind: str, **body: Any) -> None:
        nonce = await client.next_nonce(signer.address)
        await client.submit(sign_transaction(signer, CHAIN, kind, nonce, body))

    await send(owner, "create_subnet")
    await node.produce_block()
    assert [s.netuid for s in await client.subnets()] == [1]
    await send(owner, "register", netuid=1, hotkey=validator.address)
    await send(BOB, "register", netuid=1, hotkey=miner.address)
    await send(owner, "add_stake", hotkey=validator.address, amount=100 * TOKEN)
    await send(validator, "serve", netuid=1, ip="127.0.0.1", port=8091, protocol="http")
    while node.height < 10:  # the first epoch of subnet 1 (tempo 10) gives permits
        await node.produce_block()
    subnet = await client.subnet(1)
    assert subnet.owner == owner.address and subnet.neurons == 2
    assert subnet.next_epoch_block == 20 and subnet.last_epoch == 9
    assert subnet.hyperparams["tempo"] == 10 and subnet.registration_burn > 0
    await send(validator, "set_weights", netuid=1, uids=[1], weights=[65535])
    while node.height < 21:
        await node.produce_block()

    meta = await client.metagraph(1)
    assert meta.n == 2 and meta.one == 2**32
    v, m = meta.neurons
    assert v.hotkey == validator.address and v.coldkey == owner.address
    assert v.stake >= 100 * TOKEN and v.validator_permit
    assert v.endpoint is not None and v.endpoint.port == 8091
    assert m.incentive == meta.one and m.incentive_float == 1.0
    assert v.dividends_float == pytest.approx(1.0) and m.emission > 0
    assert meta.weights[0] == [(1, 65535)] and meta.weights[1] == []
    assert meta.bonds[0] and meta.bonds[0][0][0] == 1
    alice = await client.account(owner.address)
    assert alice.owned_subnets == [1] and alice.total_staked >= 100 * TOKEN
    hot = await client.account(validator.address)
    assert hot.hotkey_owner == owner.address and hot.registrations[0].uid == 0
    assert hot.stake_behind == v.stake


async def test_an_unexpected_failure_is_still_a_json_error(
    node: Node, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(tx: Transaction) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(node, "submit", broken)
    transport = httpx.ASGITransport(app=create_app(node), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://node") as http:
        response = await http.post("/v1/transactions", json=transfer(ALICE, 0).to_json())
    assert error_of(response) == (500, "internal_error")
