"""The node's emission history (``GET /v1/subnets/{netuid}/emissions``) the dashboard charts.

In-process (httpx.ASGITransport) against a real node whose blocks are produced on demand, so
every epoch is deterministic: the history must equal what the metagraph said after each epoch.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from agora.chain.api import create_app
from agora.chain.genesis import dev_genesis, dev_producer
from agora.chain.node import Node, NodeConfig
from agora.chain.store import Store
from agora.crypto.keys import Keypair
from agora.crypto.signing import sign_transaction
from agora.protocol.units import TOKEN

pytestmark = pytest.mark.anyio

CHAIN = "agora-dev"
OWNER = Keypair.from_name("alice")
MEMBERS = ["alice", "bob", "charlie"]


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[Node]:
    config = NodeConfig(data_dir=tmp_path, block_time=60.0)
    node = await Node.create(config, genesis=dev_genesis(), producer=dev_producer())
    yield node
    await node.stop()


@pytest.fixture
async def http(node: Node) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_app(node))
    async with httpx.AsyncClient(transport=transport, base_url="http://node") as client:
        yield client


async def send(node: Node, signer: Keypair, kind: str, body: dict[str, object]) -> None:
    status = node.submit(
        sign_transaction(signer, CHAIN, kind, node.state.nonce(signer.address), body)
    )
    await node.produce_block()
    assert node.tx_status(status.hash) is not None


async def test_the_history_is_what_each_epoch_paid(node: Node, http: httpx.AsyncClient) -> None:
    await send(node, OWNER, "create_subnet", {})
    netuid = max(node.state.subnets)
    for name in MEMBERS:
        hot = Keypair.from_name(name + "/hot").address
        await send(node, Keypair.from_name(name), "register", {"netuid": netuid, "hotkey": hot})
    await send(
        node,
        OWNER,
        "add_stake",
        {"hotkey": Keypair.from_name("alice/hot").address, "amount": 10 * TOKEN},
    )

    # The first epoch gives alice/hot a validator permit; then it sets weights on the others.
    first = node.state.subnets[netuid].last_epoch
    while node.state.subnets[netuid].last_epoch == first:
        await node.produce_block()
    uids = [n.uid for n in node.state.subnets[netuid].neurons][1:]
    weights = {"netuid": netuid, "uids": uids, "weights": [65535, 20000]}
    await send(node, Keypair.from_name("alice/hot"), "set_weights", weights)

    # Produce blocks and note what the metagraph says after every epoch.
    seen: list[tuple[int, dict[int, int]]] = []
    last_epoch = node.state.subnets[netuid].last_epoch
    for _ in range(40):
        await node.produce_block()
        subnet = node.state.subnets[netuid]
        if subnet.last_epoch != last_epoch:
            last_epoch = subnet.last_epoch
            seen.append((node.height, {n.uid: n.emission for n in subnet.neurons}))
    assert len(seen) >= 3, "a dev tempo is short: 40 blocks hold several epochs"
    assert any(sum(e.values()) > 0 for _, e in seen), "the subnet earned something"

    body = (await http.get(f"/v1/subnets/{netuid}/emissions?limit=1000")).json()
    assert body["netuid"] == netuid and body["block"] == node.height
    history = [(e["block"], {u["uid"]: u["emission"] for u in e["uids"]}) for e in body["epochs"]]
    assert history[-len(seen) :] == seen
    for epoch in body["epochs"]:
        assert epoch["total"] == sum(u["emission"] for u in epoch["uids"])
    blocks = [e["block"] for e in body["epochs"]]
    assert blocks == sorted(blocks)

    # ``limit`` keeps the newest; a bad limit or subnet is a clear error.
    two = (await http.get(f"/v1/subnets/{netuid}/emissions?limit=2")).json()["epochs"]
    assert [e["block"] for e in two] == blocks[-2:]
    bad = await http.get(f"/v1/subnets/{netuid}/emissions?limit=0")
    assert bad.status_code == 400 and bad.json()["error"]["code"]
    missing = await http.get("/v1/subnets/999/emissions")
    assert missing.status_code == 404


async def test_the_history_survives_a_restart(tmp_path: Path) -> None:
    config = NodeConfig(data_dir=tmp_path, block_time=60.0)
    node = await Node.create(config, genesis=dev_genesis(), producer=dev_producer())
    try:
        await send(node, OWNER, "create_subnet", {})
        netuid = max(node.state.subnets)
        for _ in range(25):
            await node.produce_block()
        before = node.store.epochs(netuid, 100)
    finally:
        await node.stop()
    assert before
    store = Store.open(node.store.path)
    try:
        assert store.epochs(netuid, 100) == before
    finally:
        store.close()
