"""kill -9 at random moments loses nothing a client was told.

A real node process (0.2 s blocks, a snapshot every 3 blocks) takes signed transfers while a
client watches the event stream and the API; the process is SIGKILLed at a random moment, several
times, and restarted on the same data directory. Afterwards every block any client saw announced
is still there with the same hash, every transaction reported included is in that block, and
replaying the whole chain from genesis with ``apply_block`` gives the balances the node reports.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from agora.chain.client import LedgerClient
from agora.chain.errors import NodeUnreachable
from agora.chain.genesis import DEV_ACCOUNTS, check_genesis_state, dev_genesis
from agora.chain.store import Store
from agora.chain.testing import free_port
from agora.crypto.keys import Keypair
from agora.crypto.signing import sign_transaction
from agora.protocol.block import Block, apply_block

if TYPE_CHECKING:
    from tests.conftest import Service

REPO = Path(__file__).resolve().parents[1]

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

ACCOUNTS = [Keypair.from_name(name) for name in DEV_ACCOUNTS]
ROUNDS = 5


async def watch(url: str, seen: dict[int, str]) -> None:
    """Record every announced block until the node dies."""
    with contextlib.suppress(NodeUnreachable):
        async with LedgerClient(url) as client:
            async for event in client.events():
                seen[event["height"]] = event["hash"]


async def submit(
    url: str, rng: random.Random, included: dict[str, int], seen: dict[int, str]
) -> None:
    """Send transfers between the dev accounts; note those the API reports included."""
    pending: list[str] = []
    with contextlib.suppress(NodeUnreachable):
        async with LedgerClient(url, timeout=2.0) as client:
            chain_id = (await client.status()).chain_id
            while True:
                sender, recipient = rng.sample(ACCOUNTS, 2)
                nonce = await client.next_nonce(sender.address)
                body = {"to": recipient.address, "amount": rng.randint(1, 10**9)}
                tx = sign_transaction(sender, chain_id, "transfer", nonce, body)
                pending.append(await client.submit(tx))
                for tx_hash in list(pending[-20:]):
                    info = await client.tx_status(tx_hash)
                    if info.status == "included":
                        assert info.height is not None
                        included[tx_hash] = info.height
                        pending.remove(tx_hash)
                latest = await client.block("latest")
                seen[latest["header"]["height"]] = latest["hash"]
                await asyncio.sleep(rng.uniform(0, 0.03))


async def test_kill_9_loses_nothing_announced(
    tmp_path: Path, start_node: Callable[..., Service]
) -> None:
    rng = random.Random(20240611)
    data_dir, port = tmp_path / "node", free_port()
    seen: dict[int, str] = {}
    included: dict[str, int] = {}
    for _ in range(ROUNDS):
        node = start_node("--snapshot-interval", "3", data_dir=data_dir, port=port, block_time=0.2)
        tasks = [
            asyncio.create_task(watch(node.url, seen)),
            asyncio.create_task(submit(node.url, rng, included, seen)),
        ]
        await asyncio.sleep(rng.uniform(0.3, 2.0))
        node.kill()
        for task in tasks:
            await asyncio.wait_for(task, 10)

    node = start_node(data_dir=data_dir, port=port, block_time=0.2)
    async with LedgerClient(node.url) as client:
        head = (await client.status()).height
        assert seen and max(seen) <= head
        assert len(included) > 10, f"only {len(included)} transfers seen included"
        assert len(seen) > 10, f"only {len(seen)} blocks seen announced"
        genesis = await client.genesis()
        state = check_genesis_state(genesis["state"])
        blocks: dict[int, Block] = {}
        for height in range(1, head + 1):
            blocks[height] = Block.from_json(await client.block(height))
            state = apply_block(state, blocks[height])  # every signature and root again
        for height, block_hash in seen.items():
            assert blocks[height].hash == block_hash, f"block {height} changed after a crash"
        for tx_hash, height in included.items():
            assert tx_hash in {tx.hash for tx in blocks[height].txs}, f"lost {tx_hash[:12]}"
        assert blocks[head].hash == state.last_block_hash
        for key in ACCOUNTS:
            account = await client.account(key.address)
            assert account.balance == state.balance(key.address)
            assert account.nonce == state.nonce(key.address)
        assert sum(state.balances.values()) == state.total_issuance  # transfers conserve
    assert node.stop() == 0


WRITER = """
import sys
from agora.chain.genesis import dev_genesis, dev_producer
from agora.chain.node import build_block
from agora.chain.store import Store
from agora.crypto.keys import Keypair
from agora.crypto.signing import sign_transaction

store = Store.open(sys.argv[1], snapshot_interval=2)
store.initialize(dev_genesis().to_state())
state = store.load()
alice, bob = Keypair.from_name("alice"), Keypair.from_name("bob")
while True:
    tx = sign_transaction(alice, state.chain_id, "transfer", state.nonce(alice.address),
                          {"to": bob.address, "amount": 1})
    block, state, _ = build_block(dev_producer(), state, [tx], state.timestamp + 1)
    store.append(block, state)
    print(block.header.height, block.hash, flush=True)  # announced only once durable
"""


def test_kill_9_during_appends_never_loses_an_announced_block(tmp_path: Path) -> None:
    """Tighter than the node test: a process that does nothing but append is killed at random
    moments, so the kill often lands inside a transaction or a snapshot write."""
    rng = random.Random(7)
    path = tmp_path / "chain.sqlite"
    announced: dict[int, str] = {}
    for _ in range(6):
        writer = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(path)],
            stdout=subprocess.PIPE,
            text=True,
            cwd=REPO,
        )
        assert writer.stdout is not None
        # Kill after a random number of announced blocks (not a time: a loaded machine must not
        # change what is tested); the writer keeps appending, so the kill lands mid-write.
        quota = rng.randint(10, 30)
        for count, line in enumerate(writer.stdout, start=1):
            height, block_hash = line.split()
            announced[int(height)] = block_hash
            if count >= quota:
                break
        writer.kill()
        writer.wait(10)
        for line in writer.stdout.read().splitlines():  # lines printed before the kill
            height, block_hash = line.split()
            announced[int(height)] = block_hash
    store = Store.open(path, snapshot_interval=2)
    state = store.load()  # replays and verifies everything after the last snapshot
    assert state is not None and state.height >= max(announced) > 50
    assert store.genesis_hash == dev_genesis().to_state().last_block_hash
    for height, block_hash in announced.items():
        block = store.block(height)
        assert block is not None and block.hash == block_hash, f"lost block {height}"
    store.close()
