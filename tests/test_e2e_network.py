"""The whole network, end to end, in real processes on loopback.

A ledger node (dev genesis, a block a second), a subnet with a short tempo, three miners (two
honest, one cheating) and a validator, each its own ``python -m agora...`` process, started the
way a person would start them. The test only reads the ledger: it asserts from the metagraph
that the honest miners earn incentive and their stake grows, the cheater earns nothing, and the
validator earns dividends. On failure it prints every process's log.

    pytest tests/test_e2e_network.py -m slow -s        # about a minute on 2 cores each
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from agora.chain.client import LedgerClient
from agora.chain.models import Metagraph, NeuronInfo
from agora.chain.testing import free_port
from agora.crypto.keys import Keypair
from agora.crypto.signing import sign_transaction
from tests.conftest import Service

pytestmark = pytest.mark.slow

NETUID = 1
TEMPO = 5
VALIDATOR_STAKE = 100  # tokens
DEADLINE_S = 150.0
# One torch thread per process: five processes share two cores.
QUIET_ENV = {"OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}


@dataclass
class Net:
    node: Service
    spawn: Callable[..., Service]
    tmp: Path
    services: dict[str, Service] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return self.node.url

    def ledger(self, coro_fn: Callable[[LedgerClient], Any]) -> Any:
        async def run() -> Any:
            async with LedgerClient(self.url) as client:
                return await coro_fn(client)

        return asyncio.run(run())

    def send(self, key: Keypair, kind: str, **body: Any) -> None:
        async def go(client: LedgerClient) -> None:
            chain_id = (await client.status()).chain_id
            nonce = await client.next_nonce(key.address)
            await client.submit_and_wait(sign_transaction(key, chain_id, kind, nonce, body))

        self.ledger(go)

    def metagraph(self) -> Metagraph:
        return self.ledger(lambda client: client.metagraph(NETUID))  # type: ignore[no-any-return]

    def miner(self, name: str, model: str, *extra: str) -> None:
        port = free_port()
        self.services[name] = self.spawn(
            [
                sys.executable, "-m", "agora.miner", "start",
                "--dev-key", name, "--subnet", str(NETUID), "--model", model,
                "--port", str(port), "--node", self.url, "--yes",
                "--data-dir", str(self.tmp / name), *extra,
            ],
            name=f"miner-{name}",
            env=QUIET_ENV,
        )  # fmt: skip

    def validator(self, name: str, model: str) -> None:
        self.services[name] = self.spawn(
            [
                sys.executable, "-m", "agora.validator", "start",
                "--dev-key", name, "--subnet", str(NETUID), "--model", model,
                "--node", self.url, "--data-dir", str(self.tmp / name),
                "--stake", str(VALIDATOR_STAKE), "--probe-interval", "2",
            ],
            name=f"validator-{name}",
            env=QUIET_ENV,
        )  # fmt: skip

    def check_alive(self) -> None:
        for name, service in self.services.items():
            if service.proc.poll() is not None:
                raise AssertionError(f"{name} exited with {service.proc.returncode}")

    def logs(self) -> str:
        parts = [f"===== node =====\n{self.node.output()[-4000:]}"]
        for name, service in self.services.items():
            parts.append(f"===== {name} ({' '.join(service.args[2:5])}) =====")
            parts.append(service.output()[-8000:])
        return "\n".join(parts)


@pytest.fixture
def net(
    start_node: Callable[..., Service], spawn_service: Callable[..., Service], tmp_path: Path
) -> Iterator[Net]:
    node = start_node(block_time=1.0)
    network = Net(node, spawn_service, tmp_path)
    yield network


def neuron(graph: Metagraph, name: str) -> NeuronInfo:
    hotkey = Keypair.from_name(name + "/hot").address
    return next(n for n in graph.neurons if n.hotkey == hotkey)


def create_subnet(net: Net, **hyper: Any) -> None:
    alice = Keypair.from_name("alice")
    net.send(alice, "create_subnet")
    net.send(alice, "set_hyperparams", netuid=NETUID, changes={"tempo": TEMPO, **hyper})


def wait_until(
    net: Net, what: str, check: Callable[[Metagraph], bool], deadline: float
) -> Metagraph:
    while True:
        net.check_alive()
        graph = net.metagraph()
        if check(graph):
            return graph
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(1.0)


def run_network(
    net: Net, model: str, honest: list[str], cheater: str, cheat: str
) -> tuple[Metagraph, Metagraph]:
    """Start the processes and wait until honest miners and the validator are paid; returns the
    metagraph then and one a tempo later."""
    started = time.monotonic()
    deadline = started + DEADLINE_S
    net.validator("eve", model)
    for name in honest:
        net.miner(name, model)
    net.miner(cheater, model, "--cheat", cheat)

    def everyone_registered(graph: Metagraph) -> bool:
        keys = {n.hotkey for n in graph.neurons if n.endpoint is not None}
        wanted = [Keypair.from_name(f"{m}/hot").address for m in [*honest, cheater]]
        return all(k in keys for k in wanted) and any(
            n.hotkey == Keypair.from_name("eve/hot").address for n in graph.neurons
        )

    wait_until(net, "all miners and the validator to register", everyone_registered, deadline)
    print(f"registered after {time.monotonic() - started:.0f} s")

    def paid(graph: Metagraph) -> bool:
        return all(neuron(graph, m).incentive > 0 for m in honest) and (
            neuron(graph, "eve").dividends > 0
        )

    first = wait_until(net, "incentive for honest miners and dividends", paid, deadline)
    print(f"paid after {time.monotonic() - started:.0f} s")
    epoch_block = first.block + TEMPO + 2
    later = wait_until(net, "another epoch", lambda g: g.block >= epoch_block, deadline)
    later = wait_until(net, "another payout", paid, deadline)
    print(f"done after {time.monotonic() - started:.0f} s")
    return first, later


def assert_paid_honestly(
    first: Metagraph, later: Metagraph, honest: list[str], cheater: str
) -> None:
    for name in honest:
        before, after = neuron(first, name), neuron(later, name)
        assert after.incentive > 0 and after.emission > 0, name
        assert after.stake > before.stake > 0, f"{name}'s stake did not grow"
    bad = neuron(later, cheater)
    assert bad.incentive == 0 and bad.stake == 0 and bad.emission == 0
    validator = neuron(later, "eve")
    assert validator.dividends > 0 and validator.validator_permit
    assert validator.stake > VALIDATOR_STAKE * 10**9, "the validator's dividends are staked"
    weights = dict(later.weights[validator.uid])
    assert bad.uid not in weights and all(neuron(later, m).uid in weights for m in honest)


def test_embedding_subnet_pays_honest_miners_and_not_the_cheater(net: Net) -> None:
    create_subnet(net)
    try:
        first, later = run_network(net, "embed:minilm", ["bob", "charlie"], "dave", "random")
        assert_paid_honestly(first, later, ["bob", "charlie"], "dave")
    except BaseException:
        print(net.logs())
        raise


def test_generation_subnet_catches_a_wrong_model(net: Net) -> None:
    create_subnet(net)
    try:
        first, later = run_network(net, "generate:tiny", ["bob", "charlie"], "dave", "wrong-model")
        assert_paid_honestly(first, later, ["bob", "charlie"], "dave")
    except BaseException:
        print(net.logs())
        raise
