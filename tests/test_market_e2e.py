"""End to end on loopback: a node, two provider agents and a tenant.

An order gets bids from both providers; the tenant leases the cheaper one, runs a job that writes
a file and reads it back through the provider's signed file endpoint; a hardware challenge is
answered by the agent and verified by the ledger; the escrow drains by the
price every block and the lease closes in exactly the block the escrow runs out, when the agent
stops the job. Then a provider that stops answering (killed) is slashed and the tenant refunded.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from agora.chain.client import LedgerClient
from agora.chain.testing import free_port
from agora.crypto.keys import Keypair
from agora.market.offers import parse_resources
from agora.market.tenant import ProviderError, Tenant
from agora.protocol.market_state import MARKET
from tests.conftest import Service

pytestmark = pytest.mark.slow

ALICE, CHARLIE, DAVE = (Keypair.from_name(n) for n in ("alice", "charlie", "dave"))
CHEAP, DEAR = 1_000, 2_000  # units per block
JOB = """
import pathlib, time
pathlib.Path("result.txt").write_text("hello from lease")
print("job done", flush=True)
time.sleep(600)  # keeps running: the agent must stop it when the lease ends
"""


def start_provider(
    spawn_service: Callable[..., Service], node: Service, name: str, price: int, work: Path
) -> Service:
    port = free_port()
    cmd = [
        sys.executable,
        "-m",
        "agora.market",
        "provider",
        "start",
        "--dev-key",
        name,
        "--offer",
        f"cpu=1,mem=1GiB,gpu=0,price={price / 10**9:.9f}/block",
        "--node",
        node.url,
        "--port",
        str(port),
        "--work-dir",
        str(work / name),
    ]
    service = spawn_service(cmd, ready_url=f"http://127.0.0.1:{port}/health", timeout=60, name=name)
    service.url = f"http://127.0.0.1:{port}"
    return service


async def wait_until(predicate: Callable[[], object], timeout: float, what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        result = predicate()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if loop.time() > deadline:
            raise TimeoutError(f"{what} did not happen within {timeout}s")
        await asyncio.sleep(0.1)


def test_rent_run_drain_expire_and_slash_a_vanished_provider(
    start_node: Callable[..., Service],
    spawn_service: Callable[..., Service],
    tmp_path: Path,
) -> None:
    node = start_node(block_time=0.3)
    start_provider(spawn_service, node, "charlie", CHEAP, tmp_path)
    dave = start_provider(spawn_service, node, "dave", DEAR, tmp_path)
    asyncio.run(scenario(node.url, dave))


async def scenario(url: str, dave: Service) -> None:
    async with Tenant(ALICE, LedgerClient(url)) as tenant:
        ledger = tenant.ledger
        need = parse_resources("cpu=1,mem=512MiB")

        # -- an order, bids from both providers, a lease of the cheaper one
        deposit = 40 * CHEAP + 321
        order_id = await tenant.order(need, max_price=5 * CHEAP, deposit=deposit)
        detail = await tenant.wait_for_bids(order_id, count=2, timeout=20)
        cheapest = detail.bid_details[0]
        assert cheapest.provider == CHARLIE.address and cheapest.price == CHEAP
        assert cheapest.hardware.cpu == 1 and cheapest.hardware.mem == 512
        assert cheapest.provider_info is not None and cheapest.provider_info.stake > 0
        lease_id = await tenant.lease(cheapest.id)
        lease = await ledger.market_lease(lease_id)
        assert lease.expires_at == lease.opened_at + deposit // CHEAP - 1
        assert (await ledger.market_order(order_id)).bid_details[1].status == "lost"

        # -- a job that writes a file, read back through the provider's signed endpoint
        await tenant.run(lease_id, [sys.executable, "job.py"], {"job.py": JOB.encode()})

        async def job_done() -> bool:
            return "job done" in (await tenant.logs(lease_id))["data"]

        await wait_until(job_done, 15, "the job's output")
        assert await tenant.file(lease_id, "result.txt") == b"hello from lease"
        with pytest.raises(ProviderError) as refused:
            await tenant.file(lease_id, "../../etc/passwd")
        assert refused.value.status in (400, 404)  # httpx drops the dots, or the agent refuses
        async with Tenant(Keypair.from_name("bob"), LedgerClient(url)) as stranger:
            with pytest.raises(ProviderError) as refused:
                await stranger.logs(lease_id)
            assert refused.value.code == "not_tenant"

        # -- a hardware challenge: the agent commits and opens; the ledger verifies; it passes
        await tenant.challenge(lease_id, size=64)

        async def challenge_passed() -> bool:
            [challenge] = await ledger.market_challenges(provider=CHARLIE.address)
            return challenge.status == "passed"

        await wait_until(challenge_passed, 10, "the challenge to pass")

        # -- the escrow drains by the price every block, and closes exactly when it runs out
        seen: dict[int, int] = {}
        while True:
            lease = await ledger.market_lease(lease_id)
            if lease.status != "open":
                break
            seen[lease.height] = lease.remaining
            await asyncio.sleep(0.1)
        assert len(seen) >= 5
        for height, remaining in seen.items():
            assert remaining == deposit - CHEAP * (height - lease.opened_at + 1)
        assert lease.close_reason == "expired" and lease.closed_at == lease.expires_at
        assert lease.paid == CHEAP * (deposit // CHEAP) and lease.refunded == deposit % CHEAP

        async def job_stopped() -> bool:
            state = await tenant.status(lease_id)
            return bool(state["stopped"]) and not state["running"]

        await wait_until(job_stopped, 10, "the agent stopping the job")
        charlie = await ledger.market_provider(CHARLIE.address)
        assert charlie.history.leases_served == 1 and charlie.history.failures == 0
        assert charlie.history.challenges_passed == 1

        # -- a provider that stops answering is slashed, the tenant refunded
        order_id = await tenant.order(need, max_price=5 * CHEAP, deposit=200 * CHEAP)
        detail = await tenant.wait_for_bids(order_id, count=2, timeout=20)
        dave_bid = next(b for b in detail.bid_details if b.provider == DAVE.address)
        lease_id = await tenant.lease(dave_bid.id)
        before = await ledger.market_provider(DAVE.address)
        await wait_until(
            lambda: _heartbeated(ledger, DAVE.address), 10, "dave's heartbeat after the lease"
        )
        dave.kill()
        alice_before = (await ledger.account(ALICE.address)).balance
        await wait_until(
            lambda: _closed(ledger, lease_id), 4 * MARKET.liveness_window * 0.3 + 10, "slashing"
        )
        lease = await ledger.market_lease(lease_id)
        after = await ledger.market_provider(DAVE.address)
        assert lease.close_reason == "liveness"
        assert lease.closed_at - after.last_heartbeat == MARKET.liveness_window + 1
        assert lease.compensation == DEAR * (lease.closed_at - after.last_heartbeat - 1)
        penalty = after.history.slashed - lease.compensation
        assert penalty > 0 and after.stake == before.stake - after.history.slashed
        alice_after = (await ledger.account(ALICE.address)).balance
        reward = penalty * MARKET.slash_reward_ppm // 1_000_000
        assert alice_after - alice_before == lease.refunded + lease.compensation + reward
        assert after.history.failures == 1 and after.history.leases_failed == 1


async def _heartbeated(ledger: LedgerClient, address: str) -> bool:
    provider = await ledger.market_provider(address)
    leases = await ledger.market_leases(provider=address, status="open")
    return bool(leases) and provider.last_heartbeat >= max(x.opened_at for x in leases)


async def _closed(ledger: LedgerClient, lease_id: int) -> bool:
    return (await ledger.market_lease(lease_id)).status != "open"
