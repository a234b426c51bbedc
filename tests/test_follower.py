"""Follower mode: it matches an honest producer, and stops at the first block that lies."""

from __future__ import annotations

import asyncio
import copy
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from fastapi import FastAPI
from fastapi.responses import JSONResponse

from agora.chain.api import create_app
from agora.chain.client import LedgerClient
from agora.chain.errors import FollowerDiverged, GenesisMismatch
from agora.chain.genesis import dev_genesis, dev_producer
from agora.chain.node import Node, NodeConfig, build_block
from agora.chain.testing import app_in_thread, free_port, running_app
from agora.crypto.keys import Keypair
from agora.crypto.signing import sign_transaction
from agora.protocol.block import Header, header_signing_bytes, tx_root
from agora.protocol.state import State, state_root
from agora.protocol.transactions import Transaction, tx_signing_bytes
from agora.protocol.units import TOKEN

if TYPE_CHECKING:
    from tests.conftest import Service

ALICE, BOB = Keypair.from_name("alice"), Keypair.from_name("bob")
CHAIN = "agora-dev"


def transfer(sender: Keypair, nonce: int, tokens: int, to: Keypair = BOB) -> Transaction:
    return sign_transaction(
        sender, CHAIN, "transfer", nonce, {"to": to.address, "amount": tokens * TOKEN}
    )


def honest_chain(blocks: int = 5) -> tuple[State, list[dict[str, Any]]]:
    genesis = dev_genesis().to_state()
    state, made = genesis, []
    for height in range(1, blocks + 1):
        txs = [transfer(ALICE, height - 1, height)]
        block, state, _ = build_block(dev_producer(), state, txs, 1_000 * height)
        made.append(block.to_json())
    return genesis, made


def _resign_header(block: dict[str, Any], **changes: Any) -> None:
    header = Header(**{**block["header"], **changes})
    block["header"] = header.to_json()
    block["hash"] = header.hash
    block["signature"] = dev_producer().sign(header_signing_bytes(header))


def amount_changed(block: dict[str, Any]) -> None:
    block["txs"][0]["body"]["amount"] += 1


def state_root_forged_and_signed(block: dict[str, Any]) -> None:
    _resign_header(block, state_root="ab" * 32)


def state_root_forged_unsigned(block: dict[str, Any]) -> None:
    block["header"]["state_root"] = "ab" * 32
    block["hash"] = Header(**block["header"]).hash


def amount_changed_and_everything_resigned(block: dict[str, Any]) -> None:
    """The sender and the producer both sign the new amount; only the state root betrays it."""
    raw = block["txs"][0]
    tx = Transaction(raw["kind"], raw["sender"], raw["nonce"], {**raw["body"], "amount": 1}, "")
    signed = Transaction(
        tx.kind, tx.sender, tx.nonce, tx.body, ALICE.sign(tx_signing_bytes(CHAIN, tx))
    )
    block["txs"][0] = signed.to_json()
    _resign_header(block, tx_root=tx_root([signed]))


def wrong_hash_field(block: dict[str, Any]) -> None:
    block["hash"] = "cd" * 32


TAMPERINGS: dict[str, tuple[Callable[[dict[str, Any]], None], str]] = {
    "amount changed": (amount_changed, "tx_root does not match"),
    "state root forged, signed": (state_root_forged_and_signed, "state root"),
    "state root forged, unsigned": (state_root_forged_unsigned, "signature does not verify"),
    "amount changed, all re-signed": (amount_changed_and_everything_resigned, "state root"),
    "hash field wrong": (wrong_hash_field, "hash field"),
}


def fake_upstream(genesis: State, blocks: list[dict[str, Any]]) -> FastAPI:
    """Serves a genesis and fixed blocks, the way a node would (no event stream: 404)."""
    app = FastAPI()

    @app.get("/v1/genesis")
    async def get_genesis() -> Any:
        return {"hash": genesis.last_block_hash, "state": genesis.to_json()}

    @app.get("/v1/blocks/{height}")
    async def get_block(height: int) -> Any:
        if 1 <= height <= len(blocks):
            return blocks[height - 1]
        error = {"code": "unknown_block", "message": f"no block at height {height}"}
        return JSONResponse({"error": error}, 404)

    return app


@pytest.mark.anyio
async def test_follower_matches_the_producer(tmp_path: Path) -> None:
    producer = await Node.create(
        NodeConfig(data_dir=tmp_path / "producer", block_time=0.1, keepalive=0.5),
        genesis=dev_genesis(),
        producer=dev_producer(),
    )
    async with running_app(create_app(producer)) as upstream:
        await producer.start()
        follower = await Node.create(
            NodeConfig(data_dir=tmp_path / "follower", follow=upstream, keepalive=0.5)
        )
        await follower.start()
        async with (
            running_app(create_app(follower)) as follower_url,
            LedgerClient(follower_url) as via_follower,
        ):
            # submitted to the follower, forwarded to the producer
            for nonce in range(3):
                await via_follower.submit(transfer(ALICE, nonce, 1 + nonce))
            target = producer.height + 5
            while follower.height < target:
                await asyncio.sleep(0.05)
                assert follower.failure is None
            producer.request_stop()  # freeze the producer; let the follower catch up
            await producer.wait()
            while follower.height < producer.height:
                await asyncio.sleep(0.05)
            assert follower.head_hash == producer.head_hash
            assert state_root(follower.state) == state_root(producer.state)
            assert follower.state.to_json() == producer.state.to_json()
            height = follower.height
            assert await via_follower.block(height) == producer.store.block_json(height)
            status = await via_follower.status()
            assert status.role == "follower" and status.upstream == upstream
            assert status.height == height and status.block_time == 0.1
            bob = await via_follower.account(BOB.address)
            assert bob.balance == 10_006 * TOKEN
        await follower.stop()
        await producer.stop()


@pytest.mark.anyio
async def test_follower_refuses_an_upstream_of_another_genesis(tmp_path: Path) -> None:
    genesis, blocks = honest_chain(1)
    with app_in_thread(fake_upstream(genesis, blocks)) as url:
        with pytest.raises(GenesisMismatch, match="--genesis-hash"):
            await Node.create(NodeConfig(data_dir=tmp_path, follow=url, genesis_hash="00" * 32))
        node = await Node.create(
            NodeConfig(data_dir=tmp_path, follow=url, genesis_hash=genesis.last_block_hash)
        )
        await node.stop()


@pytest.mark.anyio
@pytest.mark.parametrize("name", list(TAMPERINGS))
async def test_follower_stops_at_a_tampered_block(tmp_path: Path, name: str) -> None:
    tamper, reason = TAMPERINGS[name]
    genesis, blocks = honest_chain(5)
    blocks = copy.deepcopy(blocks)
    tamper(blocks[2])  # block 3
    with app_in_thread(fake_upstream(genesis, blocks)) as url:
        node = await Node.create(NodeConfig(data_dir=tmp_path, follow=url))
        await node.start()
        failure = await asyncio.wait_for(node.wait(), 10)
        await node.stop()
    assert isinstance(failure, FollowerDiverged)
    assert failure.height == 3
    assert "block 3" in str(failure) and reason in str(failure)
    assert node.height == 2  # blocks 1 and 2 were fine and are kept


def test_follower_process_exits_non_zero_naming_the_height(
    tmp_path: Path, spawn_service: Callable[..., Service]
) -> None:
    genesis, blocks = honest_chain(4)
    state_root_forged_and_signed(blocks[3])  # block 4
    with app_in_thread(fake_upstream(genesis, blocks)) as url:
        service = spawn_service(
            [
                sys.executable,
                "-m",
                "agora.chain",
                "start",
                "--follow",
                url,
                "--genesis-hash",
                genesis.last_block_hash,
                "--data-dir",
                str(tmp_path / "follower"),
                "--port",
                str(free_port()),
            ],
            name="follower",
        )
        code = service.wait(30)
    output = service.output()
    assert code == 3, output
    assert "block 4 does not verify" in output and "state root" in output
