"""Every adversary that must be caught is slashed in one end-to-end run on loopback (issue #5).

Processes, all real and on loopback: a ledger node (a block a second), the gateway serving the
tiny LM on subnet 1 and MiniLM embeddings on subnet 2, and per subnet an honest miner plus one
miner per cheat mode that the audits must prove:

- generation (``generate:tiny``): ``smaller-model``, ``perturb-1``, ``perturb-5``, ``int4``,
  ``cached``, ``truncate``, ``copy``;
- embeddings (``embed:minilm``): ``random``, ``wrong-model``.

``int8`` is left out on purpose: docs/audits.md measures it proven on only about a quarter of
its answers, so it is not caught reliably per answer. ``organic-only`` has its own test
(tests/test_audit_e2e.py), ``lazy`` and ``slow`` are not in the issue's list.

Validators bob and eve (generation) and charlie and dave (embeddings), 100 tokens of stake
each (a stake majority of each subnet), audit the gateway's archive of their subnet. Each
subnet's ``audit_rate_ppm`` is raised to 1,000,000 (every receipt is drawn) so that the run
needs a few answers per miner instead of hundreds; the draw itself is exercised at realistic
rates by bench/verify_spotcheck and the unit tests.
alice backs every miner hotkey with 10 tokens of stake, so an upheld dispute takes something
measurable and her stake changes only by slashes.

The gateway's ``exploration`` is set to 1.0: it then picks uniformly among healthy miners (a
real setting of its router, see agora/gateway/routing.py), so organic traffic from the
``openai`` client reaches every miner without pinning; the test checks through the gateway's
public receipts that each miner served answers. Miners run their model ``--in-process`` (a
supported mode of the miner) to halve the number of processes loading torch on 2 cores.

    pytest tests/test_adversaries_e2e.py -m slow -s
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import openai
import pytest
from test_audit_e2e import Net, hot, wait_for

from agora.chain.client import LedgerClient
from agora.chain.models import Dispute
from agora.chain.testing import free_port, wait_until_ready
from agora.crypto.keys import Keypair
from agora.crypto.signing import sign_transaction
from agora.gateway.devnet import fund_dev_gateway, gateway_command
from agora.gateway.keys import create_key_for
from agora.protocol.units import TOKEN

pytestmark = pytest.mark.slow

GEN, EMB = 1, 2
AUDIT_RATE_PPM = 1_000_000  # every receipt drawn: a few answers per miner suffice (docstring)
GATEWAY_CONFIG = """
health_interval_s = 0.5
metagraph_refresh_s = 1
min_deposit = "0.000001"
min_blocks_left = 5
exploration = 1.0
"""
SUBNETS = {GEN: ("generate:tiny", "tiny-llm"), EMB: ("embed:minilm", "minilm")}
# miner dev-key name -> (netuid, cheat mode or None for the honest miner)
MINERS: dict[str, tuple[int, str | None]] = {
    "gen-honest": (GEN, None),
    **{
        f"gen-{mode}": (GEN, mode)
        for mode in (
            "smaller-model", "perturb-1", "perturb-5", "int4", "cached", "truncate", "copy",
        )
    },
    "emb-honest": (EMB, None),
    "emb-random": (EMB, "random"),
    "emb-wrong-model": (EMB, "wrong-model"),
}  # fmt: skip
CHEATERS = [name for name, (_, mode) in MINERS.items() if mode is not None]
HONEST = [name for name, (_, mode) in MINERS.items() if mode is None]
# validator dev keys per subnet (a hotkey per process: two processes signing with one hotkey
# would race for its nonces), each staking 100 tokens: a stake majority of each subnet
VALIDATORS = {GEN: ("bob", "eve"), EMB: ("charlie", "dave")}
VALIDATOR_STAKE = 100
BACKING = 10 * TOKEN  # alice's stake behind each miner hotkey
# Organic traffic comes in rounds of 4 chats and 1 embedding call: a burst first (about 5
# answers per miner), then one round every ROUND_PAUSE_S until every cheater is caught, so that
# the validators' re-checks and votes keep up with the answers (a vote later than the dispute
# period lets a dispute lapse).
BURST_ROUNDS = 10
ROUND_PAUSE_S = 2.0
CATCH_TIMEOUT_S = 180.0


def submit_all(net: Net, txs: list[tuple[Keypair, str, dict[str, Any]]]) -> None:
    """Submit transactions of several signers (consecutive nonces per signer), wait for all."""

    async def go(client: LedgerClient) -> None:
        chain_id = (await client.status()).chain_id
        nonces: dict[str, int] = {}
        hashes = []
        for key, kind, body in txs:
            if key.address not in nonces:
                nonces[key.address] = await client.next_nonce(key.address)
            tx = sign_transaction(key, chain_id, kind, nonces[key.address], body)
            nonces[key.address] += 1
            hashes.append(await client.submit(tx))
        for tx_hash in hashes:
            info = await client.wait_for_tx(tx_hash)
            assert info.status == "included", (info.code, info.message)

    net.ledger(go)


def disputes_of(net: Net, miner: str) -> list[Dispute]:
    netuid = MINERS[miner][0]
    return net.ledger(lambda c: c.disputes(netuid=netuid, miner=hot(miner), limit=500))  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Net]:
    tmp = tmp_path_factory.mktemp("adversaries-e2e")
    network = Net(tmp)
    started = time.monotonic()
    try:
        network.start_node()
        alice, faucet = Keypair.from_name("alice"), Keypair.from_name("faucet")
        changes = {"audit_rate_ppm": AUDIT_RATE_PPM}
        setup: list[tuple[Keypair, str, dict[str, Any]]] = [
            (alice, "create_subnet", {}),
            (alice, "create_subnet", {}),
            (alice, "set_hyperparams", {"netuid": GEN, "changes": changes}),
            (alice, "set_hyperparams", {"netuid": EMB, "changes": changes}),
            # validator hotkeys pay dispute deposits (returned when upheld); miners' coldkeys burn
            *[
                (faucet, "transfer", {"to": hot(n), "amount": 200 * TOKEN})
                for names in VALIDATORS.values()
                for n in names
            ],
            *[
                (faucet, "transfer", {"to": Keypair.from_name(n).address, "amount": 50 * TOKEN})
                for n in MINERS
            ],
        ]
        submit_all(network, setup)
        # Register every miner now, from its own coldkey, so that none waits on a rising burn.
        submit_all(
            network,
            [
                (Keypair.from_name(n), "register", {"netuid": netuid, "hotkey": hot(n)})
                for n, (netuid, _) in MINERS.items()
            ],
        )
        backing = [(alice, "add_stake", {"hotkey": hot(n), "amount": BACKING}) for n in MINERS]
        submit_all(network, backing)

        (tmp / "gateway.toml").write_text(GATEWAY_CONFIG)
        fund_dev_gateway(network.node)
        port = free_port()
        network.gateway = f"http://127.0.0.1:{port}"
        serve = {model: netuid for netuid, (_, model) in SUBNETS.items()}
        gateway = network.spawn(
            "gateway",
            gateway_command(
                network.node, tmp / "gateway", port=port, serve=serve,
                config=tmp / "gateway.toml",
            )[1:],
        )  # fmt: skip
        for name, (netuid, mode) in MINERS.items():
            flags = [] if mode is None else ["--cheat", mode]
            network.spawn(
                name,
                ["-m", "agora.miner", "start", "--dev-key", name, "--subnet", str(netuid),
                 "--model", SUBNETS[netuid][0], "--port", str(free_port()),
                 "--node", network.node, "--yes", "--data-dir", str(tmp / name),
                 "--in-process", *flags],
            )  # fmt: skip
        wait_until_ready(network.gateway + "/health", 180, gateway)
        for netuid, names in VALIDATORS.items():
            spec = SUBNETS[netuid][0]
            for name in names:
                network.spawn(
                    f"validator-{name}-{netuid}",
                    ["-m", "agora.validator", "start", "--dev-key", name,
                     "--subnet", str(netuid), "--model", spec, "--node", network.node,
                     "--data-dir", str(tmp / f"validator-{name}-{netuid}"),
                     "--stake", str(VALIDATOR_STAKE), "--probe-interval", "4",
                     "--gateway", network.gateway, "--audit-interval", "1"],
                )  # fmt: skip
        expected = {
            model: sum(1 for n, _ in MINERS.values() if n == netuid)
            for netuid, (_, model) in SUBNETS.items()
        }

        def healthy() -> bool:
            health = httpx.get(network.gateway + "/health").json()["healthy_miners"]
            return bool(health == expected)

        wait_for("every miner behind the gateway", healthy, network, 180)
        print(f"miners up after {time.monotonic() - started:.0f}s", flush=True)

        def permits() -> bool:
            for netuid, names in VALIDATORS.items():
                graph = network.ledger(lambda c, n=netuid: c.metagraph(n))
                holders = {n.hotkey for n in graph.neurons if n.validator_permit}
                if not {hot(name) for name in names} <= holders:
                    return False
            return True

        wait_for("validator permits on both subnets", permits, network, 90)
        print(f"permits after {time.monotonic() - started:.0f}s", flush=True)
        yield network
    except BaseException:
        print(network.logs())
        raise
    finally:
        for proc in reversed(network.procs.values()):
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)


def settled(net: Net, miner: str) -> tuple[list[Dispute], int] | None:
    """The miner's disputes and alice's stake behind it, read between two equal readings of
    them (open ones have not slashed yet); None if one resolved in between."""
    before = disputes_of(net, miner)
    account = net.ledger(lambda c: c.account(Keypair.from_name("alice").address))
    stake = sum(s.amount for s in account.stakes if s.hotkey == hot(miner))
    after = disputes_of(net, miner)
    if [(d.id, d.status) for d in after] != [(d.id, d.status) for d in before]:
        return None
    return after, stake


def served(net: Net, miner: str) -> int:
    receipts = httpx.get(
        net.gateway + "/v1/gateway/receipts",
        params={"miner": hot(miner), "netuid": MINERS[miner][0], "limit": 5},
    ).json()["receipts"]
    return len(receipts)


def test_every_adversary_is_slashed_and_no_honest_miner_is_disputed(net: Net) -> None:
    try:
        _run(net)
    except BaseException:
        print(net.logs())
        raise


def _run(net: Net) -> None:
    key = asyncio.run(create_key_for(net.gateway, Keypair.from_name("alice"), 5 * TOKEN))["key"]
    client = openai.OpenAI(base_url=net.gateway + "/v1", api_key=key, max_retries=2)
    for netuid in SUBNETS:
        params = net.ledger(lambda c, n=netuid: c.audit_params(n)).params
        assert params["audit_rate_ppm"] == AUDIT_RATE_PPM
    slash_ppm = params["slash_ppm"]

    def chat(i: int) -> None:
        client.chat.completions.create(
            model="tiny-llm",
            # similar prompts on purpose: the semantic cache (cached) must get hits
            messages=[{"role": "user", "content": f"question {i}: where is the harbour?"}],
            max_tokens=8,
            temperature=0,
        )

    def embed(i: int) -> None:
        client.embeddings.create(
            model="minilm", input=[f"sentence {i} about the harbour", f"another {i}"]
        )

    caught: set[str] = set()
    rounds = 0
    begun = time.monotonic()
    with ThreadPoolExecutor(4) as pool:
        while caught != set(CHEATERS):
            waited = time.monotonic() - begun
            assert waited < CATCH_TIMEOUT_S, f"never caught: {sorted(set(CHEATERS) - caught)}"
            net.check_alive()
            if rounds >= BURST_ROUNDS:  # then a round every ROUND_PAUSE_S: audits keep up
                time.sleep(ROUND_PAUSE_S)
            jobs = [pool.submit(chat, 4 * rounds + j) for j in range(4)]
            jobs.append(pool.submit(embed, rounds))
            for job in jobs:
                job.result()
            rounds += 1
            for name in set(CHEATERS) - caught:
                if any(d.status == "upheld" for d in disputes_of(net, name)):
                    caught.add(name)
                    elapsed = time.monotonic() - begun
                    print(f"{name} caught after {rounds} rounds, {elapsed:.0f}s", flush=True)
    print(f"all {len(CHEATERS)} cheaters caught after {rounds} rounds", flush=True)

    # Every miner, honest ones included, served organic answers through the gateway.
    assert all(served(net, name) > 0 for name in MINERS), {n: served(net, n) for n in MINERS}

    for name in CHEATERS:
        disputes, stake = wait_for(
            f"{name}'s disputes to settle", lambda n=name: settled(net, n), net, 90
        )
        upheld = [d for d in disputes if d.status == "upheld"]
        assert upheld, (name, [(d.id, d.status, d.reason) for d in disputes])
        expected = BACKING
        for _ in upheld:  # each upheld dispute takes slash_ppm of what is left, rounded down
            expected -= expected * slash_ppm // 1_000_000
        assert stake == expected < BACKING, (name, stake, expected)
        for dispute in upheld:
            assert dispute.challenger in {hot(v) for v in VALIDATORS[MINERS[name][0]]}
            assert sum(p.amount for p in dispute.payouts) + dispute.burned == dispute.slashed > 0

    # The honest miners were never disputed and keep every unit of their backing.
    for name in HONEST:
        assert disputes_of(net, name) == [], name
        account = net.ledger(lambda c: c.account(Keypair.from_name("alice").address))
        assert sum(s.amount for s in account.stakes if s.hotkey == hot(name)) == BACKING
