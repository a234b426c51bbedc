"""The node: a LedgerApp, the block store, the mempool and a loop that moves the chain.

A *producer* builds a block every ``block_time`` seconds, empty or not (time passes and epochs
run on empty blocks too)::

    txs      = mempool.batch(max_txs_per_block)
    proposal = app.prepare_proposal(txs, now_ms)      # executes, leaves out what fails
    block    = seal_proposal(producer, parent, proposal, now_ms)
    store.append(block, proposal.state)              # durable from here
    app.state = proposal.state                       # the header commits to exactly this root
    mempool.after_block(...); publish(block event)   # announced only now

A *follower* downloads blocks from another node, runs each through ``apply_block`` (producer
signature, transaction root, every transaction, state root), stores it and serves the same read
API. The first block that does not verify stops it with FollowerDiverged naming the height.

The wall clock is read here and only here (``time.time()`` for the block timestamp); the rules
only ever see the header's timestamp. Execution and the SQLite commit run in a worker thread so
the API stays responsive while a block is built.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from agora.chain.errors import ChainError, FollowerDiverged
from agora.chain.events import Broadcaster, Subscription, resolved_in
from agora.chain.genesis import GenesisSpec, check_genesis_state
from agora.chain.mempool import Mempool, MempoolLimits, TxStatus
from agora.chain.store import DEFAULT_SNAPSHOT_INTERVAL, Store
from agora.crypto.keys import Keypair
from agora.protocol.abci import LedgerApp, Proposal
from agora.protocol.block import Block, Header, Rejected, apply_block, header_signing_bytes, tx_root
from agora.protocol.errors import InvalidBlock
from agora.protocol.state import State
from agora.protocol.transactions import Transaction

__all__ = ["Node", "NodeConfig", "block_event", "build_block", "seal_proposal"]

log = logging.getLogger(__name__)

Role = Literal["producer", "follower"]


@dataclass
class NodeConfig:
    data_dir: Path
    block_time: float = 12.0
    snapshot_interval: int = DEFAULT_SNAPSHOT_INTERVAL
    limits: MempoolLimits = field(default_factory=MempoolLimits)
    follow: str | None = None  # upstream URL: run as a follower
    genesis_hash: str | None = None  # a follower refuses an upstream with another genesis
    keepalive: float = 15.0  # seconds between SSE keep-alive comments
    max_body_bytes: int = 65_536  # largest POST body the API reads

    @property
    def db_path(self) -> Path:
        return Path(self.data_dir) / "chain.sqlite"


def seal_proposal(producer: Keypair, parent: State, proposal: Proposal, timestamp: int) -> Block:
    """Header and signature for an executed proposal. Same as ``agora.crypto.signing.seal_block``
    but takes the state root the proposal already computed instead of hashing the state again."""
    header = Header(
        chain_id=parent.chain_id,
        height=parent.height + 1,
        parent_hash=parent.last_block_hash,
        timestamp=timestamp,
        producer=producer.address,
        tx_root=tx_root(proposal.txs),
        state_root=proposal.app_hash,
    )
    return Block(header, tuple(proposal.txs), producer.sign(header_signing_bytes(header)))


def build_block(
    producer: Keypair, parent: State, txs: list[Transaction], timestamp: int
) -> tuple[Block, State, list[Rejected]]:
    """Execute ``txs`` on ``parent`` and seal the result: the block, the state after it (with
    ``last_block_hash`` set) and the transactions left out. Pure: reads no clock, writes nothing."""
    proposal = LedgerApp(parent).prepare_proposal(txs, timestamp)
    block = seal_proposal(producer, parent, proposal, timestamp)
    if block.header.state_root != proposal.app_hash:  # the header must commit to this state
        raise InvalidBlock("sealed header does not commit to the executed state")
    state = proposal.state
    state.last_block_hash = block.hash
    return block, state, proposal.rejected


def block_event(block: Block, disputes: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The event announcing ``block``; ``disputes`` (outcomes it resolved) only when any."""
    header = block.header
    event: dict[str, Any] = {
        "height": header.height,
        "hash": block.hash,
        "timestamp": header.timestamp,
        "tx_count": len(block.txs),
        "state_root": header.state_root,
    }
    if disputes:
        event["disputes"] = disputes
    return event


class Node:
    """Build with ``await Node.create(...)``, then ``await node.start()``; ``stop()`` ends it."""

    def __init__(
        self,
        *,
        config: NodeConfig,
        store: Store,
        state: State,
        genesis: dict[str, Any],
        producer: Keypair | None,
    ) -> None:
        self.config = config
        self.store = store
        self.app = LedgerApp(state)
        self.mempool = Mempool(state, config.limits)
        self.producer = producer
        self.genesis = genesis  # the genesis state as JSON
        self.genesis_hash: str = genesis["last_block_hash"]
        self.role: Role = "follower" if config.follow else "producer"
        self.events = Broadcaster()
        self.failure: ChainError | None = None
        self.started_at = time.time()
        self._lock = asyncio.Lock()  # one block at a time
        self._stopping = asyncio.Event()
        self._stopped = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    @classmethod
    async def create(
        cls,
        config: NodeConfig,
        *,
        genesis: GenesisSpec | State | None = None,
        producer: Keypair | None = None,
    ) -> Node:
        """Open the store, check or write the genesis, and rebuild the head state.

        A producer needs ``genesis`` (used when the store is empty, checked otherwise) and the
        ``producer`` key the genesis names. A follower (``config.follow``) takes the genesis from
        its upstream. Raises ValueError for a wrong key, GenesisMismatch, StoreCorrupted,
        NodeUnreachable (follower).
        """
        store = await asyncio.to_thread(
            Store.open, config.db_path, snapshot_interval=config.snapshot_interval
        )
        try:
            if config.follow:
                genesis_state, block_time = await _upstream(config.follow, config.genesis_hash)
                if block_time is not None:
                    config = replace(config, block_time=block_time)  # the upstream's pace
            else:
                if genesis is None or producer is None:
                    raise ValueError("a producing node needs a genesis and the producer key")
                genesis_state = genesis.to_state() if isinstance(genesis, GenesisSpec) else genesis
                if producer.address != genesis_state.producer:
                    raise ValueError(
                        f"the producer key {producer.address[:12]}… is not the producer the "
                        f"genesis names ({genesis_state.producer[:12]}…)"
                    )
            await asyncio.to_thread(store.initialize, genesis_state)
            state = await asyncio.to_thread(store.load)
        except BaseException:
            store.close()
            raise
        assert state is not None  # initialized just above
        genesis_json = store.genesis_json()
        assert genesis_json is not None
        node = cls(config=config, store=store, state=state, genesis=genesis_json, producer=producer)
        log.info("%s node at height %d (%s)", node.role, state.height, state.chain_id)
        return node

    # -- what the API reads -------------------------------------------------------------------

    @property
    def state(self) -> State:
        return self.app.state

    @property
    def height(self) -> int:
        return self.app.state.height

    @property
    def head_hash(self) -> str:
        return self.app.state.last_block_hash

    def subscribe(self) -> Subscription:
        return self.events.subscribe()

    def submit(self, tx: Transaction) -> TxStatus:
        """Admit a transaction to the mempool. Raises Refused subclasses or InvalidTransaction."""
        return self.mempool.add(tx)

    def tx_status(self, tx_hash: str) -> TxStatus | None:
        return self.mempool.status(tx_hash)

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        """Start producing (or following) in the background."""
        if self._task is not None:
            return
        loop = self._follow_loop() if self.role == "follower" else self._produce_loop()
        self._task = asyncio.create_task(self._run(loop), name=f"agora-{self.role}")

    async def _run(self, loop: Any) -> None:
        try:
            await loop
        except ChainError as error:
            self.failure = error
            log.error("%s", error)
        except Exception as error:  # keep the process honest: record, log, stop
            self.failure = ChainError(f"the {self.role} loop failed: {error!r}")
            log.exception("the %s loop failed", self.role)
        finally:
            self._stopping.set()
            self._stopped.set()

    async def wait(self) -> ChainError | None:
        """Until the node's loop has ended: it stopped on its own (a follower that diverged)
        or was asked to. Returns the failure, if any."""
        await self._stopping.wait()
        if self._task is not None:
            await self._stopped.wait()
        return self.failure

    def request_stop(self) -> None:
        """Ask the loop to stop after the block in progress; end every event stream."""
        self._stopping.set()
        self.events.close()

    async def stop(self) -> None:
        """Finish the block in progress, end event streams and close the store."""
        self.request_stop()
        if self._task is not None:
            await self._task
        if not self._closed:
            self._closed = True
            async with self._lock:
                self.store.close()
            log.info("%s stopped at height %d", self.role, self.height)

    # -- producing ----------------------------------------------------------------------------

    async def _produce_loop(self) -> None:
        loop = asyncio.get_running_loop()
        interval = self.config.block_time
        next_at = loop.time() + interval
        while not self._stopping.is_set():
            delay = next_at - loop.time()
            if delay > 0:
                try:
                    await asyncio.wait_for(self._stopping.wait(), delay)
                    return
                except TimeoutError:
                    pass
            await self.produce_block()
            next_at = max(next_at + interval, loop.time())

    async def produce_block(self) -> Block:
        """Build, store (durably) and announce the next block. Raises StoreError."""
        if self.producer is None:
            raise ChainError("this node has no producer key; it cannot make blocks")
        async with self._lock:
            parent = self.app.state
            txs = self.mempool.batch(parent.params.max_txs_per_block)
            timestamp = max(int(time.time() * 1000), parent.timestamp)
            block, state, rejected = await asyncio.to_thread(
                self._build_and_store, parent, txs, timestamp
            )
            self._adopt(block, state, rejected)
        return block

    def _build_and_store(
        self, parent: State, txs: list[Transaction], timestamp: int
    ) -> tuple[Block, State, list[Rejected]]:
        assert self.producer is not None
        block, state, rejected = build_block(self.producer, parent, txs, timestamp)
        self.store.append(block, state)
        return block, state, rejected

    def _adopt(self, block: Block, state: State, rejected: list[Rejected]) -> None:
        """The block is durable: make it the head, update the mempool, announce it."""
        parent = self.app.state
        self.app.state = state
        self.mempool.after_block(state, block.txs, rejected)
        for item in rejected:
            log.info("left out %s: %s", item.tx.hash[:12], item.error)
        self.events.publish(block_event(block, resolved_in(parent, state)))

    # -- following ----------------------------------------------------------------------------

    async def _follow_loop(self) -> None:
        from agora.chain.follower import follow

        assert self.config.follow is not None
        await follow(self, self.config.follow, self._stopping)

    async def import_block(self, data: dict[str, Any]) -> Block:
        """Verify a block received as JSON, store it and make it the head.

        Raises FollowerDiverged (naming the height) if anything about it does not verify.
        """
        expected = self.height + 1
        try:
            block = Block.from_json(data, self.state.params.max_tx_bytes)
        except InvalidBlock as error:
            raise FollowerDiverged(expected, f"block {expected} is malformed: {error}") from None
        claimed = data.get("hash")
        if claimed is not None and claimed != block.hash:
            raise FollowerDiverged(
                expected,
                f"block {expected}: its hash field {str(claimed)[:16]}… is not the "
                f"hash of its header {block.hash[:16]}…",
            )
        async with self._lock:
            try:
                state = await asyncio.to_thread(self._verify_and_store, block)
            except InvalidBlock as error:
                height = block.header.height
                raise FollowerDiverged(height, f"block {height} does not verify: {error}") from None
            self._adopt(block, state, [])
        return block

    def _verify_and_store(self, block: Block) -> State:
        state = apply_block(self.app.state, block)
        self.store.append(block, state)
        return state


async def _upstream(url: str, expected_hash: str | None) -> tuple[State, float | None]:
    """The upstream's genesis, checked, and its block time if it says.

    Raises GenesisMismatch, NodeUnreachable or NodeError.
    """
    from pydantic import ValidationError

    from agora.chain.client import LedgerClient
    from agora.chain.errors import GenesisMismatch, NodeError

    async with LedgerClient(url) as client:
        data = await client.genesis()
        try:
            block_time: float | None = (await client.status()).block_time
        except (NodeError, ValidationError):
            block_time = None
    try:
        state = check_genesis_state(data.get("state"))
    except ValueError as error:
        raise GenesisMismatch(f"the genesis served by {url} is invalid: {error}") from None
    if data.get("hash") != state.last_block_hash:
        raise GenesisMismatch(f"{url} serves a genesis whose hash does not match its content")
    if expected_hash is not None and state.last_block_hash != expected_hash:
        raise GenesisMismatch(
            f"{url} runs the chain with genesis {state.last_block_hash}, not the {expected_hash} "
            "given with --genesis-hash; check the URL"
        )
    return state, block_time
