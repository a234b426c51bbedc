"""Block production in-process: sealing, the producer loop, restarts, and the event stream."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from agora.chain.api import create_app
from agora.chain.client import LedgerClient
from agora.chain.errors import GenesisMismatch
from agora.chain.genesis import GenesisSpec, dev_genesis, dev_producer
from agora.chain.node import Node, NodeConfig, build_block, seal_proposal
from agora.chain.testing import running_app
from agora.crypto.keys import Keypair
from agora.crypto.signing import seal_block, sign_transaction
from agora.protocol.abci import LedgerApp
from agora.protocol.block import apply_block
from agora.protocol.state import state_root
from agora.protocol.units import TOKEN

pytestmark = pytest.mark.anyio

ALICE, BOB = Keypair.from_name("alice"), Keypair.from_name("bob")


def config(tmp_path: Path, block_time: float = 0.05, **extra: object) -> NodeConfig:
    return NodeConfig(data_dir=tmp_path, block_time=block_time, keepalive=0.2, **extra)  # type: ignore[arg-type]


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[Node]:
    node = await Node.create(config(tmp_path), genesis=dev_genesis(), producer=dev_producer())
    yield node
    await node.stop()


def test_seal_proposal_is_seal_block_without_hashing_twice() -> None:
    parent = dev_genesis().to_state()
    tx = sign_transaction(ALICE, "agora-dev", "transfer", 0, {"to": BOB.address, "amount": 5})
    proposal = LedgerApp(parent).prepare_proposal([tx], 1234)
    ours = seal_proposal(dev_producer(), parent, proposal, 1234)
    reference = seal_block(dev_producer(), parent, proposal.state, proposal.txs, 1234)
    assert ours == reference


def test_built_blocks_pass_apply_block() -> None:
    state = dev_genesis().to_state()
    for height in range(1, 4):
        tx = sign_transaction(
            ALICE, "agora-dev", "transfer", height - 1, {"to": BOB.address, "amount": TOKEN}
        )
        block, new, rejected = build_block(dev_producer(), state, [tx], height * 1000)
        assert not rejected
        replayed = apply_block(state, block)
        assert replayed.to_json() == new.to_json()
        state = new


async def test_the_loop_makes_blocks_even_when_nothing_happens(node: Node) -> None:
    subscription = node.subscribe()
    await node.start()
    heights = [(await subscription.get(timeout=5))["height"] for _ in range(4)]  # type: ignore[index]
    assert heights == [1, 2, 3, 4]
    stamps = [node.store.block(h).header.timestamp for h in heights]  # type: ignore[union-attr]
    assert stamps == sorted(stamps)
    await node.stop()
    while await subscription.get(timeout=1) is not None:  # the stream ends with the node
        pass


async def test_a_restarted_node_continues_from_its_head(tmp_path: Path) -> None:
    first = await Node.create(config(tmp_path), genesis=dev_genesis(), producer=dev_producer())
    tx = sign_transaction(ALICE, "agora-dev", "transfer", 0, {"to": BOB.address, "amount": 9})
    first.submit(tx)
    for _ in range(3):
        await first.produce_block()
    root, head = state_root(first.state), first.head_hash
    await first.stop()

    again = await Node.create(config(tmp_path), genesis=dev_genesis(), producer=dev_producer())
    try:
        assert again.height == 3 and again.head_hash == head and state_root(again.state) == root
        assert again.mempool.pending_nonce(ALICE.address) == 1
        await again.produce_block()
        assert again.height == 4
    finally:
        await again.stop()


async def test_refuses_the_wrong_producer_key_or_another_chain(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not the producer"):
        await Node.create(config(tmp_path), genesis=dev_genesis(), producer=Keypair.from_name("x"))
    node = await Node.create(config(tmp_path), genesis=dev_genesis(), producer=dev_producer())
    await node.stop()
    other = GenesisSpec("other-chain", dev_producer().address, {ALICE.address: TOKEN})
    with pytest.raises(GenesisMismatch):
        await Node.create(config(tmp_path), genesis=other, producer=dev_producer())


async def test_sse_delivers_new_blocks_and_replays_from_last_event_id(node: Node) -> None:
    async with running_app(create_app(node)) as url, LedgerClient(url) as client:
        await node.start()
        seen = []
        async for event in client.events():
            seen.append(event)
            if len(seen) == 2:
                break
        first, second = seen
        assert second["height"] == first["height"] + 1
        block = await client.block(first["height"])
        assert block["hash"] == first["hash"]
        assert set(first) == {"height", "hash", "timestamp", "tx_count", "state_root"}

        replayed = []
        async for event in client.events(last_event_id=0):
            replayed.append(event["height"])
            if len(replayed) == 3:
                break
        assert replayed == [1, 2, 3]

        async def drain() -> list[int]:
            return [event["height"] async for event in client.events()]

        streaming = asyncio.create_task(drain())
        await asyncio.sleep(0.3)
        node.request_stop()  # the stream ends when the node stops
        assert len(await asyncio.wait_for(streaming, 5)) >= 1


async def test_sse_sends_keep_alive_comments(tmp_path: Path) -> None:
    node = await Node.create(
        config(tmp_path, block_time=60), genesis=dev_genesis(), producer=dev_producer()
    )
    import httpx

    try:
        async with running_app(create_app(node)) as url, httpx.AsyncClient() as http:
            async with http.stream("GET", f"{url}/v1/events") as response:
                assert response.headers["content-type"].startswith("text/event-stream")
                lines = []
                async for line in response.aiter_lines():
                    lines.append(line)
                    if line.startswith(": keep-alive"):
                        break
            assert lines[0] == "retry: 1000"
    finally:
        await node.stop()
