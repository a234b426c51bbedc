"""The block store: round trips, snapshots plus replay, and damage reported clearly."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from agora.chain.errors import GenesisMismatch, StoreCorrupted, StoreError
from agora.chain.genesis import GenesisSpec, dev_genesis, dev_producer
from agora.chain.node import build_block
from agora.chain.store import Store
from agora.crypto.keys import Keypair
from agora.crypto.signing import sign_transaction
from agora.protocol.block import Block
from agora.protocol.state import State, state_root
from agora.protocol.units import TOKEN

ALICE, BOB = Keypair.from_name("alice"), Keypair.from_name("bob")


def grow(store: Store, state: State, blocks: int, per_block: int = 3) -> tuple[State, list[Block]]:
    """Append ``blocks`` blocks of transfers alice -> bob (and back) to ``store``."""
    made = []
    for height in range(blocks):
        txs = []
        for i in range(per_block):
            sender, recipient = (ALICE, BOB) if i % 2 == 0 else (BOB, ALICE)
            nonce = state.nonce(sender.address) + sum(1 for t in txs if t.sender == sender.address)
            body = {"to": recipient.address, "amount": (height + 1) * TOKEN + i}
            txs.append(sign_transaction(sender, state.chain_id, "transfer", nonce, body))
        block, state, rejected = build_block(dev_producer(), state, txs, 1_000 * (height + 1))
        assert not rejected
        store.append(block, state)
        made.append(block)
    return state, made


@pytest.fixture
def genesis() -> State:
    return dev_genesis().to_state()


def test_empty_store_loads_nothing(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "chain.sqlite")
    assert store.load() is None
    assert store.genesis_hash is None


def test_append_and_load_round_trip(tmp_path: Path, genesis: State) -> None:
    store = Store.open(tmp_path / "chain.sqlite", snapshot_interval=1000)
    store.initialize(genesis)
    live, blocks = grow(store, genesis, 5)
    store.close()

    reopened = Store.open(tmp_path / "chain.sqlite", snapshot_interval=1000)
    assert reopened.head_height == 5 and reopened.head_hash == blocks[-1].hash
    loaded = reopened.load()
    assert loaded is not None
    assert loaded.to_json() == live.to_json()
    for block in blocks:
        assert reopened.block(block.header.height) == block
        assert reopened.block_json(block.header.height) == block.to_json()
    summaries = reopened.summaries(2, 2)
    assert [s.height for s in summaries] == [2, 3]
    assert summaries[0].hash == blocks[1].hash and summaries[0].tx_count == 3


@pytest.mark.parametrize("interval", [1, 3, 4])
def test_snapshot_plus_replay_equals_live_state(
    tmp_path: Path, genesis: State, interval: int
) -> None:
    store = Store.open(tmp_path / "chain.sqlite", snapshot_interval=interval)
    store.initialize(genesis)
    live, blocks = grow(store, genesis, 10)
    heights = [row[0] for row in store._writer.execute("SELECT height FROM snapshots")]
    assert heights == [0, *list(range(interval, 11, interval))[-3:]]  # genesis and the last 3
    loaded = store.load()
    assert loaded is not None
    assert state_root(loaded) == state_root(live)
    assert loaded.last_block_hash == blocks[-1].hash
    assert loaded.to_json() == live.to_json()


def test_initialize_twice_is_idempotent_and_refuses_another_chain(
    tmp_path: Path, genesis: State
) -> None:
    store = Store.open(tmp_path / "chain.sqlite")
    store.initialize(genesis)
    store.initialize(genesis)
    other = GenesisSpec("another-chain", dev_producer().address, {ALICE.address: 5}).to_state()
    with pytest.raises(GenesisMismatch, match="another --data-dir"):
        store.initialize(other)


def test_append_refuses_a_block_that_does_not_extend_the_head(
    tmp_path: Path, genesis: State
) -> None:
    store = Store.open(tmp_path / "chain.sqlite")
    store.initialize(genesis)
    block, state, _ = build_block(dev_producer(), genesis, [], 1000)
    store.append(block, state)
    with pytest.raises(StoreError, match="does not extend"):
        store.append(block, state)
    assert store.head_height == 1


def _damage(path: Path, sql: str, *params: object) -> None:
    db = sqlite3.connect(path)
    db.execute(sql, params)
    db.commit()
    db.close()


def _built(tmp_path: Path, genesis: State, interval: int = 4) -> Path:
    path = tmp_path / "chain.sqlite"
    store = Store.open(path, snapshot_interval=interval)
    store.initialize(genesis)
    grow(store, genesis, 6)
    store.close()
    return path


def test_a_tampered_block_is_reported_with_its_height(tmp_path: Path, genesis: State) -> None:
    path = _built(tmp_path, genesis)
    row = sqlite3.connect(path).execute("SELECT block FROM blocks WHERE height = 6").fetchone()
    data = json.loads(row[0])
    data["txs"][0]["body"]["amount"] += 1
    _damage(path, "UPDATE blocks SET block = ? WHERE height = 6", json.dumps(data))
    with pytest.raises(StoreCorrupted, match="block 6"):
        Store.open(path).load()


def test_a_tampered_snapshot_is_reported(tmp_path: Path, genesis: State) -> None:
    path = _built(tmp_path, genesis)
    row = sqlite3.connect(path).execute("SELECT state FROM snapshots WHERE height = 4").fetchone()
    data = json.loads(row[0])
    data["balances"][BOB.address] += 1
    _damage(path, "UPDATE snapshots SET state = ? WHERE height = 4", json.dumps(data))
    with pytest.raises(StoreCorrupted, match="snapshot at height 4"):
        Store.open(path, snapshot_interval=4).load()


def test_a_missing_block_is_reported(tmp_path: Path, genesis: State) -> None:
    path = _built(tmp_path, genesis)
    _damage(path, "DELETE FROM blocks WHERE height = 3")
    with pytest.raises(StoreCorrupted, match="missing"):
        Store.open(path)


def test_a_file_that_is_not_a_database_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "chain.sqlite"
    path.write_bytes(b"this is not sqlite " * 100)
    with pytest.raises(StoreCorrupted, match="damaged or not an Agora database"):
        Store.open(path)


def test_a_truncated_database_is_reported(tmp_path: Path, genesis: State) -> None:
    path = tmp_path / "chain.sqlite"
    store = Store.open(path, snapshot_interval=1)  # snapshots make the file span many pages
    store.initialize(genesis)
    grow(store, genesis, 30)
    store._writer.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    store.close()
    size = path.stat().st_size
    with path.open("r+b") as handle:
        handle.truncate(size // 2)
    with pytest.raises(StoreCorrupted, match="damaged"):
        Store.open(path).load()
