"""The validator against a real ledger node (in-process, on loopback) and simulated miners.

Registration by burn and staking at start, rounds recorded in the score book, weights set once
the epoch grants a permit (and skipped before), incentive for honest miners only, scores kept
across a restart, a re-registered uid starting from zero, and commit-reveal with the salt
surviving a restart between commit and reveal.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from agora.chain.api import create_app
from agora.chain.client import LedgerClient
from agora.chain.genesis import dev_genesis, dev_producer
from agora.chain.node import Node, NodeConfig
from agora.chain.testing import running_app
from agora.crypto.keys import Keypair
from agora.crypto.signing import sign_transaction
from agora.models import Engine, load_engine
from agora.protocol.units import TOKEN
from agora.validator import Validator, ValidatorConfig, Verdict
from agora.validator.sim import SimBehaviour, SimMiner, create_sim_app

pytestmark = pytest.mark.anyio

ALICE, BOB = Keypair.from_name("alice"), Keypair.from_name("bob")
EVE = Keypair.from_name("eve")  # the validator's coldkey; its hotkey is eve/hot
MINERS = [Keypair.from_name(f"test/svc-miner{i}/hot") for i in range(3)]
BEHAVIOURS = [SimBehaviour.HONEST, SimBehaviour.HONEST, SimBehaviour.RANDOM]
NETUID = 1


@pytest.fixture(scope="module")
def minilm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    engine = asyncio.run(load_engine("embed:minilm", tmp_path_factory.mktemp("models")))
    yield engine
    asyncio.run(engine.close())


@dataclass
class Network:
    node: Node
    ledger: LedgerClient
    url: str
    miners_url: str
    tmp: Path

    async def send(self, key: Keypair, kind: str, **body: Any) -> int:
        status = await self.ledger.status()
        tx = sign_transaction(
            key, status.chain_id, kind, await self.ledger.next_nonce(key.address), body
        )
        info = await self.ledger.submit_and_wait(tx)
        return info.height or 0

    async def wait_for(
        self, what: str, check: Callable[[], Awaitable[bool]], timeout: float = 30.0
    ) -> None:
        deadline = asyncio.get_running_loop().time() + timeout
        while not await check():
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"timed out waiting for {what}")
            await asyncio.sleep(0.1)

    def config(self, **changes: Any) -> ValidatorConfig:
        settings: dict[str, Any] = {
            "netuid": NETUID,
            "hotkey": Keypair.from_name("eve/hot"),
            "coldkey": EVE,
            "node": self.url,
            "data_dir": self.tmp / "validator",
            "probe_interval": 0.5,
            "stake": 100 * TOKEN,
        }
        settings.update(changes)
        return ValidatorConfig(**settings)


@asynccontextmanager
async def network(
    tmp_path: Path, engine: Engine, behaviours: list[SimBehaviour], **hyper: Any
) -> AsyncIterator[Network]:
    """A node producing every 0.1 s, a subnet owned by alice, and simulated miners registered
    (by bob) and serving on one loopback address."""
    config = NodeConfig(data_dir=tmp_path / "node", block_time=0.1, keepalive=0.5)
    node = await Node.create(config, genesis=dev_genesis(), producer=dev_producer())
    await node.start()
    miners = [SimMiner(key, b) for key, b in zip(MINERS, behaviours, strict=False)]
    try:
        async with (
            running_app(create_app(node)) as url,
            running_app(create_sim_app(engine, miners, NETUID)) as miners_url,
            LedgerClient(url) as ledger,
        ):
            net = Network(node, ledger, url, miners_url, tmp_path)
            await net.send(ALICE, "create_subnet")
            changes = {"tempo": 4, "weights_rate_limit": 1, **hyper}
            await net.send(ALICE, "set_hyperparams", netuid=NETUID, changes=changes)
            port = int(miners_url.rsplit(":", 1)[1])
            for miner in miners:
                await net.send(BOB, "register", netuid=NETUID, hotkey=miner.keypair.address)
                await net.send(
                    miner.keypair,
                    "serve",
                    netuid=NETUID,
                    ip="127.0.0.1",
                    port=port,
                    protocol="http",
                )
            yield net
            node.request_stop()  # ends the event streams so the servers can stop
    finally:
        await node.stop()


def uid_of(graph: Any, key: Keypair) -> int:
    return next(n.uid for n in graph.neurons if n.hotkey == key.address)


async def test_a_validator_scores_miners_and_pays_the_honest_ones(
    tmp_path: Path, minilm: Engine
) -> None:
    async with network(tmp_path, minilm, BEHAVIOURS) as net:
        validator = await Validator.create(net.config(), engine=minilm)
        try:
            me = await net.ledger.account(validator.hotkey.address)
            assert me.stake_behind == 100 * TOKEN and me.registrations[0].netuid == NETUID

            outcomes = await validator.run_round()
            assert [o.verdict for o in outcomes] == [Verdict.OK, Verdict.OK, Verdict.WRONG_OUTPUT]
            graph = await net.ledger.metagraph(NETUID)
            if not next(
                n for n in graph.neurons if n.hotkey == validator.hotkey.address
            ).validator_permit:
                status = await validator.weights_step(graph.block + 10)
                assert status.startswith("skipped: no validator permit yet")

            runner = asyncio.create_task(validator.run())

            async def paid() -> bool:
                graph = await net.ledger.metagraph(NETUID)
                by_key = {n.hotkey: n for n in graph.neurons}
                honest = [by_key[m.address] for m in MINERS[:2]]
                v = by_key[validator.hotkey.address]
                return all(n.incentive > 0 and n.stake > 0 for n in honest) and v.dividends > 0

            await net.wait_for("incentive for honest miners and dividends", paid, timeout=40)
            validator.stop()
            await runner
            graph = await net.ledger.metagraph(NETUID)
            cheater = next(n for n in graph.neurons if n.hotkey == MINERS[2].address)
            assert cheater.incentive == 0 and cheater.stake == 0
            row = graph.weights[uid_of(graph, validator.hotkey)]
            assert {uid for uid, _ in row} == {uid_of(graph, m) for m in MINERS[:2]}
            assert validator.book.scores(NETUID)[cheater.uid].score == 0.0
            assert validator.book.get_meta(NETUID, "last_weights") is not None
        finally:
            await validator.close()


async def test_scores_survive_a_restart_and_new_hotkeys_start_from_zero(
    tmp_path: Path, minilm: Engine
) -> None:
    hyper = {"max_uids": 4, "max_validators": 4, "immunity_period": 0}
    async with network(tmp_path, minilm, BEHAVIOURS, **hyper) as net:
        validator = await Validator.create(net.config(), engine=minilm)
        for _ in range(3):
            await validator.run_round()
        before = validator.book.scores(NETUID)
        await validator.close()

        validator = await Validator.create(net.config(), engine=minilm)  # a restart
        try:
            assert validator.book.scores(NETUID) == before
            assert validator.book.next_round(NETUID) == 4
            honest_uid = uid_of(await net.ledger.metagraph(NETUID), MINERS[0])
            assert before[honest_uid].score > 0.4

            # The subnet is full: a new registration takes the uid with the least emission
            # (all are zero, so the oldest registration: the first miner).
            newcomer = Keypair.from_name("test/svc-newcomer/hot")
            await net.send(BOB, "register", netuid=NETUID, hotkey=newcomer.address)
            graph = await net.ledger.metagraph(NETUID)
            assert graph.neurons[honest_uid].hotkey == newcomer.address
            outcomes = await validator.run_round()
            assert honest_uid not in {o.uid for o in outcomes}  # no endpoint announced yet
            assert honest_uid not in validator.book.scores(NETUID)
        finally:
            await validator.close()


async def test_commit_reveal_survives_a_restart(tmp_path: Path, minilm: Engine) -> None:
    hyper = {"commit_reveal_enabled": True, "commit_reveal_period": 1}
    async with network(tmp_path, minilm, BEHAVIOURS, **hyper) as net:
        validator = await Validator.create(net.config(), engine=minilm)
        try:
            await validator.run_round()

            async def has_permit() -> bool:
                graph = await net.ledger.metagraph(NETUID)
                return any(
                    n.validator_permit
                    for n in graph.neurons
                    if n.hotkey == validator.hotkey.address
                )

            await net.wait_for("a validator permit", has_permit)
            status = await validator.weights_step((await net.ledger.status()).height)
            assert status == "committed", status
            pending = validator.book.pending_commit(NETUID)
            assert pending is not None and pending.block is not None
            assert (await validator.weights_step(pending.block + 1)) == "waiting"
        finally:
            await validator.close()

        # A restart between commit and reveal: the salt is read back from the database.
        validator = await Validator.create(net.config(), engine=minilm)
        try:
            assert validator.book.pending_commit(NETUID) == pending
            reveal_from = pending.block + 4  # commit_reveal_period * tempo

            async def window_open() -> bool:
                return (await net.ledger.status()).height + 1 >= reveal_from

            await net.wait_for("the reveal window", window_open)
            status = await validator.weights_step((await net.ledger.status()).height)
            assert status.startswith("revealed"), status
            graph = await net.ledger.metagraph(NETUID)
            row = dict(graph.weights[uid_of(graph, validator.hotkey)])
            assert set(row) == set(pending.uids) and max(row.values()) == 65535
            assert status == "revealed, committed"  # and the next commit is on its way
        finally:
            await validator.close()


async def test_setup_failures_are_explained(tmp_path: Path, minilm: Engine) -> None:
    from agora.validator import SetupFailed, UnknownSubnetError

    async with network(tmp_path, minilm, BEHAVIOURS[:1]) as net:
        stranger = Keypair.from_name("test/svc-stranger/hot")
        with pytest.raises(SetupFailed, match="not registered on subnet 1"):
            await Validator.create(net.config(hotkey=stranger, register=False), engine=minilm)
        broke = Keypair.from_name("test/svc-broke")  # no balance at all
        with pytest.raises(SetupFailed, match=r"burns .* tokens; coldkey"):
            await Validator.create(net.config(hotkey=stranger, coldkey=broke), engine=minilm)
        with pytest.raises(SetupFailed, match="needs the coldkey"):
            await Validator.create(net.config(hotkey=stranger, coldkey=None), engine=minilm)
        with pytest.raises(UnknownSubnetError, match="subnet 9 does not exist"):
            await Validator.create(net.config(netuid=9), engine=minilm)
        assert (await net.ledger.account(stranger.address)).registrations == []
