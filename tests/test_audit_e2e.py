"""The audit loop end to end, in real processes on loopback: a miner honest only to validators is
caught on its organic answers, slashed by a stake majority despite a colluding validator, and a
spam dispute against an honest miner fails and costs its deposit.

Processes: a ledger node (a block a second), the gateway serving the tiny LM of subnet 1, two
miners (charlie honest; dave ``--cheat organic-only``: honest to callers with a validator permit,
the ``tiny-bad`` impostor for the gateway's customers) and three validators, each auditing the
gateway's archive: bob and eve honest (100 tokens of stake each), ferdie colluding with dave
(``--collude-with dev:dave``, 40 tokens). alice owns the subnet, backs each miner hotkey with 10
tokens of stake (so a slash takes something, and her stake changes only by slashes: emission goes
to the miners' own coldkeys) and registers ``alice/hot`` (10 tokens), from which the test opens
the spam dispute by hand.

The subnet's audit rate is set to 500,000 ppm (half of all receipts are drawn) so that the test
needs a handful of requests instead of hundreds; everything else is the dev preset (slash 50%,
half of it burned, deposit 1 token, 30 blocks to decide). Organic traffic comes through the
gateway from the real ``openai`` client, greedy (temperature 0).

    pytest tests/test_audit_e2e.py -m slow -s
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from agora.chain.client import LedgerClient
from agora.chain.models import Dispute
from agora.chain.testing import free_port, wait_until_ready
from agora.crypto.keys import Keypair
from agora.crypto.signing import sign_transaction
from agora.gateway.devnet import fund_dev_gateway, gateway_command
from agora.gateway.keys import create_key_for
from agora.protocol.units import TOKEN

pytestmark = pytest.mark.slow

NETUID = 1
AUDIT_RATE_PPM = 500_000  # high on purpose: a few requests suffice (see the module docstring)
ENV = {"OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
GATEWAY_CONFIG = """
health_interval_s = 0.5
metagraph_refresh_s = 1
min_deposit = "0.000001"
min_blocks_left = 5
"""
VALIDATORS = {"bob": (100, []), "eve": (100, []), "ferdie": (40, ["--collude-with", "dev:dave"])}
MINERS = {"charlie": [], "dave": ["--cheat", "organic-only"]}
BACKING = 10 * TOKEN  # alice's stake behind each miner hotkey and alice/hot


def hot(name: str) -> str:
    return Keypair.from_name(name + "/hot").address


@dataclass
class Net:
    tmp: Path
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    node: str = ""
    gateway: str = ""

    def spawn(self, name: str, args: list[str]) -> subprocess.Popen[bytes]:
        with (self.tmp / f"{name}.log").open("wb") as log:
            proc = subprocess.Popen(
                [sys.executable, *args], stdout=log, stderr=subprocess.STDOUT, env=_env()
            )
        self.procs[name] = proc
        return proc

    def start_node(self) -> None:
        """A dev ledger node with 1 s blocks, data under ``tmp/node``; returns once it answers."""
        port = free_port()
        self.node = f"http://127.0.0.1:{port}"
        node = self.spawn(
            "node",
            ["-m", "agora.chain", "start", "--dev", "--data-dir", str(self.tmp / "node"),
             "--port", str(port), "--block-time", "1"],
        )  # fmt: skip
        wait_until_ready(self.node + "/v1/status", 30, node)

    def logs(self) -> str:
        return "\n".join(
            f"----- {name} -----\n" + (self.tmp / f"{name}.log").read_text(errors="replace")[-6000:]
            for name in self.procs
        )

    def ledger(self, fn: Callable[[LedgerClient], Any]) -> Any:
        async def go() -> Any:
            async with LedgerClient(self.node) as client:
                return await fn(client)

        return asyncio.run(go())

    def send(self, key: Keypair, kind: str, **body: Any) -> None:
        self.send_many(key, [(kind, body)])

    def send_many(self, key: Keypair, txs: list[tuple[str, dict[str, Any]]]) -> None:
        """Submit with consecutive nonces, then wait for all (one block instead of one each)."""

        async def go(client: LedgerClient) -> None:
            nonce = await client.next_nonce(key.address)
            chain_id = (await client.status()).chain_id
            hashes = [
                await client.submit(sign_transaction(key, chain_id, kind, nonce + i, body))
                for i, (kind, body) in enumerate(txs)
            ]
            for tx_hash in hashes:
                info = await client.wait_for_tx(tx_hash)
                assert info.status == "included", (info.code, info.message)

        self.ledger(go)

    def disputes(self, miner: str) -> list[Dispute]:
        return self.ledger(lambda c: c.disputes(netuid=NETUID, miner=hot(miner), limit=500))  # type: ignore[no-any-return]

    def backing(self, hotkey: str) -> int:
        account = self.ledger(lambda c: c.account(Keypair.from_name("alice").address))
        return sum(s.amount for s in account.stakes if s.hotkey == hotkey)

    def check_alive(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                raise AssertionError(f"{name} exited with {proc.returncode}")


def _env() -> dict[str, str]:
    import os

    repo = str(Path(__file__).resolve().parents[1])
    return {**os.environ, **ENV, "PYTHONUNBUFFERED": "1", "PYTHONPATH": repo}


def wait_for(what: str, check: Callable[[], Any], net: Net, timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        net.check_alive()
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.5)


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Net]:
    tmp = tmp_path_factory.mktemp("audit-e2e")
    network = Net(tmp)
    started = time.monotonic()
    try:
        network.start_node()
        alice = Keypair.from_name("alice")
        changes = {"audit_rate_ppm": AUDIT_RATE_PPM}
        network.send_many(
            alice,
            [
                ("create_subnet", {}),
                ("set_hyperparams", {"netuid": NETUID, "changes": changes}),
                ("register", {"netuid": NETUID, "hotkey": hot("alice")}),
            ],
        )
        faucet = Keypair.from_name("faucet")
        transfers = [  # validator hotkeys pay dispute deposits
            ("transfer", {"to": hot(name), "amount": 20 * TOKEN}) for name in (*VALIDATORS, "alice")
        ]
        network.send_many(faucet, transfers)
        (tmp / "gateway.toml").write_text(GATEWAY_CONFIG)
        fund_dev_gateway(network.node)
        port = free_port()
        network.gateway = f"http://127.0.0.1:{port}"
        gateway = network.spawn(
            "gateway",
            gateway_command(
                network.node, tmp / "gateway", port=port, serve={"tiny-llm": NETUID},
                config=tmp / "gateway.toml",
            )[1:],
        )  # fmt: skip
        wait_until_ready(network.gateway + "/health", 60, gateway)
        for name, flags in MINERS.items():
            port = free_port()
            network.spawn(
                name,
                ["-m", "agora.miner", "start", "--dev-key", name, "--subnet", str(NETUID),
                 "--model", "generate:tiny", "--port", str(port), "--node", network.node,
                 "--yes", "--data-dir", str(tmp / name), *flags],
            )  # fmt: skip
        for name, (stake, flags) in VALIDATORS.items():
            network.spawn(
                f"validator-{name}",
                ["-m", "agora.validator", "start", "--dev-key", name, "--subnet", str(NETUID),
                 "--model", "generate:tiny", "--node", network.node,
                 "--data-dir", str(tmp / f"validator-{name}"), "--stake", str(stake),
                 "--probe-interval", "4", "--gateway", network.gateway,
                 "--audit-interval", "1", *flags],
            )  # fmt: skip

        def healthy() -> bool:
            health = httpx.get(network.gateway + "/health").json()["healthy_miners"]
            return bool(health == {"tiny-llm": 2})

        wait_for("both miners behind the gateway", healthy, network, 120)
        print(f"miners up after {time.monotonic() - started:.0f}s", flush=True)
        network.send_many(
            alice,
            [("add_stake", {"hotkey": hot(n), "amount": BACKING}) for n in (*MINERS, "alice")],
        )

        def permits() -> bool:
            graph = network.ledger(lambda c: c.metagraph(NETUID))
            holders = {n.hotkey for n in graph.neurons if n.validator_permit}
            return {hot(name) for name in (*VALIDATORS, "alice")} <= holders

        wait_for("validator permits (the first epoch)", permits, network, 90)
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


@pytest.fixture
def logs_on_failure(net: Net) -> Iterator[None]:
    try:
        yield
    except BaseException:
        print(net.logs())
        raise


def upheld_snapshot(net: Net, miner: str) -> tuple[list[Dispute], int] | None:
    """dave's disputes, all resolved, and alice's stake behind it, read consistently (the same
    disputes before and after the stake), or None while a dispute is still open."""
    before = net.disputes(miner)
    if not before or any(d.status == "open" for d in before):
        return None
    stake = net.backing(hot(miner))
    after = net.disputes(miner)
    if [(d.id, d.status) for d in after] != [(d.id, d.status) for d in before]:
        return None
    return after, stake


def test_an_organic_only_cheater_is_slashed_and_spam_costs_its_deposit(
    net: Net, logs_on_failure: None
) -> None:
    key = asyncio.run(create_key_for(net.gateway, Keypair.from_name("alice"), 5 * TOKEN))["key"]
    client = openai.OpenAI(base_url=net.gateway + "/v1", api_key=key, max_retries=2)
    params = net.ledger(lambda c: c.audit_params(NETUID)).params
    assert params["audit_rate_ppm"] == AUDIT_RATE_PPM

    # Organic traffic until the cheater is caught: answers to customers, never to a probe.
    sent = 0

    def caught() -> bool:
        nonlocal sent
        if sent < 60:
            client.chat.completions.create(
                model="tiny-llm",
                messages=[{"role": "user", "content": f"question {sent}: where is the harbour?"}],
                max_tokens=8,
                temperature=0,
            )
            sent += 1
        return any(d.status == "upheld" for d in net.disputes("dave"))

    wait_for("a dispute against dave to be upheld", caught, net, 150)
    # Let the draws of the last answers run out, then read a consistent picture.
    snapshot = wait_for("dave's disputes to settle", lambda: upheld_snapshot(net, "dave"), net, 90)
    disputes, stake_after = snapshot
    upheld = sorted((d for d in disputes if d.status == "upheld"), key=lambda d: d.id)
    assert upheld, [(d.id, d.status, d.reason) for d in disputes]
    expected = BACKING
    for _ in upheld:  # each upheld dispute takes slash_ppm of what is left, rounded down
        expected -= expected * params["slash_ppm"] // 1_000_000
    assert stake_after == expected
    honest_validators = {hot("bob"), hot("eve")}
    for dispute in upheld:
        assert dispute.challenger in honest_validators  # the colluder never opened one
        assert dispute.evidence["kind"] in ("generation", "toploc")  # tokens or their proof
        paid = sum(p.amount for p in dispute.payouts)
        assert paid + dispute.burned == dispute.slashed > 0
        assert {p.hotkey for p in dispute.payouts} <= honest_validators | {hot("alice")}
        assert dispute.deposit_to == dispute.challenger  # the challenger got its deposit back
        ferdie = [v for v in dispute.votes if v.hotkey == hot("ferdie")]
        assert all(not v.guilty for v in ferdie)  # colluding: acquits, and it did not help
    assert any(p.amount > 0 for p in upheld[0].payouts)

    # Its incentive is zero from the next epoch on.
    resolved = max(d.resolved_at for d in upheld)
    tempo = int(net.ledger(lambda c: c.subnet(NETUID)).hyperparams["tempo"])

    def next_epoch() -> Any:
        graph = net.ledger(lambda c: c.metagraph(NETUID))
        return graph if graph.block > resolved + tempo + 2 else None

    graph = wait_for("an epoch after the slash", next_epoch, net, 60)
    dave = next(n for n in graph.neurons if n.hotkey == hot("dave"))
    assert dave.incentive == 0

    # The honest miner was never disputed by the validators ...
    assert net.disputes("charlie") == []
    # ... and a spam dispute against it, with made-up evidence, fails and costs the deposit.
    receipts = httpx.get(
        net.gateway + "/v1/gateway/receipts", params={"miner": hot("charlie"), "limit": 1}
    ).json()["receipts"]
    assert receipts, "the honest miner served nothing"
    spammer = Keypair.from_name("alice/hot")
    balance = net.ledger(lambda c: c.account(spammer.address)).balance
    evidence = {"kind": "generation", "reason": "I say these tokens are wrong"}
    info = net.ledger(lambda c: c.open_dispute(spammer, NETUID, receipts[0]["receipt"], evidence))
    assert info.status == "included"
    (spam,) = wait_for(
        "the spam dispute to be decided",
        lambda: [d for d in net.disputes("charlie") if d.status != "open"],
        net,
        60,
    )
    assert spam.status == "rejected", spam.reason
    assert spam.deposit_to == Keypair.from_name("charlie").address  # the accused's coldkey
    others = [v for v in spam.votes if v.hotkey != spammer.address]
    assert others and not any(v.guilty for v in others)  # nobody else found anything wrong
    assert {v.hotkey for v in others} <= {hot(name) for name in VALIDATORS}
    assert net.ledger(lambda c: c.account(spammer.address)).balance == balance - spam.deposit
    assert net.backing(hot("charlie")) == BACKING  # never slashed


def test_only_validators_read_the_archives_content(net: Net, logs_on_failure: None) -> None:
    from agora.net import AgoraAuth

    gateway_address = httpx.get(net.gateway + "/v1/gateway").json()["address"]
    url = net.gateway + "/v1/gateway/audit"
    assert httpx.get(url, params={"netuid": NETUID}).status_code == 401  # unsigned
    stranger = AgoraAuth(Keypair.from_name("nobody/hot"), gateway_address)
    refused = httpx.get(url, params={"netuid": NETUID}, auth=stranger)
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "not_a_validator"
    validator = AgoraAuth(Keypair.from_name("bob/hot"), gateway_address)
    answers = httpx.get(url, params={"netuid": NETUID, "limit": 5}, auth=validator).json()
    assert answers["answers"] and all("request_b64" in a for a in answers["answers"])
    public = httpx.get(net.gateway + "/v1/gateway/receipts", params={"limit": 5}).json()
    assert public["receipts"] and all("request_b64" not in r for r in public["receipts"])
    bad = httpx.get(net.gateway + "/v1/gateway/receipts", params={"miner": "xyz"})
    assert bad.status_code == 400 and "64 hex" in bad.json()["error"]["message"]
    missing = httpx.get(net.gateway + "/v1/gateway/receipts/" + "0" * 64)
    assert missing.status_code == 404


def test_a_streamed_answer_is_archived_with_the_bytes_its_receipt_covers(
    net: Net, logs_on_failure: None
) -> None:
    import base64
    import json

    from agora.net import AgoraAuth, verify_receipt
    from agora.protocol.receipts import receipt_hash

    key = asyncio.run(create_key_for(net.gateway, Keypair.from_name("bob"), TOKEN))["key"]
    body = {
        "model": "tiny-llm",
        "messages": [{"role": "user", "content": "stream me something"}],
        "max_tokens": 6,
        "temperature": 0,
        "stream": True,
    }
    with httpx.stream(
        "POST",
        net.gateway + "/v1/chat/completions",
        json=body,
        headers={"Authorization": f"Bearer {key}"},
        timeout=60,
    ) as response:
        events = [line[6:] for line in response.iter_lines() if line.startswith("data: {")]
    receipt = next(json.loads(e)["agora_receipt"] for e in events if "agora_receipt" in e)
    name = receipt_hash(receipt)
    auth = AgoraAuth(
        Keypair.from_name("eve/hot"), httpx.get(net.gateway + "/v1/gateway").json()["address"]
    )

    def archived() -> Any:
        answer = httpx.get(
            net.gateway + "/v1/gateway/audit", params={"netuid": NETUID, "hash": name}, auth=auth
        )
        return answer.json()["answers"][0] if answer.status_code == 200 else None

    found = wait_for("the streamed answer in the archive", archived, net, 10)
    assert found["stream"] is True and found["receipt"] == receipt
    request, content = (base64.b64decode(found[k]) for k in ("request_b64", "response_b64"))
    verify_receipt(receipt, request, content)  # the exact bytes the miner signed for
    assert b"event: token" in content and json.loads(request)["stream"] is True
