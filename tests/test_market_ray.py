"""With ``--ray``, the leases of one order across two providers form one Ray cluster (head on the
first, a worker on the second), as io.net hands its customers a cluster. Loopback only; skipped
when Ray is not installed. Each cluster has its own auth token, given to the tenant alone."""

from __future__ import annotations

import asyncio
import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from agora.chain.client import LedgerClient
from agora.chain.testing import free_port
from agora.crypto.keys import Keypair
from agora.market.offers import parse_resources
from agora.market.tenant import Tenant, ray_env
from tests.conftest import Service

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="ray is not installed"),
]

PROBE = """
import time, ray
ray.init()
deadline = time.time() + 60
while time.time() < deadline:
    alive = [n for n in ray.nodes() if n["Alive"]]
    if len(alive) >= 2:
        break
    time.sleep(0.5)

@ray.remote(num_cpus=1)
def where():
    import os
    return os.getpid()

pids = set(ray.get([where.remote() for _ in range(4)]))
print("nodes", len(alive), "cpus", ray.cluster_resources().get("CPU"), flush=True)
"""


def provider(spawn_service: Callable[..., Service], url: str, name: str, work: Path) -> Service:
    port = free_port()
    cmd = [
        sys.executable, "-m", "agora.market", "provider", "start", "--dev-key", name,
        "--offer", "cpu=1,mem=2GiB,gpu=0,price=0.000001/block", "--node", url,
        "--port", str(port), "--work-dir", str(work / name), "--ray",
    ]  # fmt: skip
    return spawn_service(cmd, ready_url=f"http://127.0.0.1:{port}/health", timeout=60, name=name)


def test_two_leases_of_one_order_form_a_ray_cluster(
    start_node: Callable[..., Service], spawn_service: Callable[..., Service], tmp_path: Path
) -> None:
    node = start_node(block_time=0.3)
    agents = [provider(spawn_service, node.url, name, tmp_path) for name in ("charlie", "dave")]
    try:
        asyncio.run(scenario(node.url))
    finally:
        for agent in agents:  # SIGTERM: an agent stops its leases' Ray nodes on the way out
            agent.stop(timeout=30)


async def scenario(url: str) -> None:
    async with Tenant(Keypair.from_name("alice"), LedgerClient(url), timeout=60) as tenant:
        need = parse_resources("cpu=1,mem=2GiB")
        order_id = await tenant.order(need, max_price=5000, deposit=5000 * 2000, count=2)
        detail = await tenant.wait_for_bids(order_id, count=2, timeout=20)
        leases = [await tenant.lease(bid.id) for bid in detail.bid_details[:2]]
        address, token = await tenant.ray_cluster(order_id)
        assert address.startswith("127.0.0.1:") and len(token) == 64
        head = min(leases)
        await asyncio.sleep(5)  # let the head come up before the job connects
        await tenant.run(head, [sys.executable, "probe.py"], {"probe.py": PROBE.encode()},
                         ray_env(address, token))  # fmt: skip
        state = await tenant.wait_for_exit(head, timeout=120, poll=0.5)
        output = (await tenant.logs(head))["data"]
        assert state["exit_code"] == 0, output[-3000:]
        assert "nodes 2 cpus 2.0" in output, output[-3000:]
        for lease_id in leases:
            await tenant.close(lease_id)
        for lease_id in leases:  # the agents see the leases end and stop the Ray nodes
            for _ in range(100):
                state = await tenant.status(lease_id)
                if state["stopped"]:
                    break
                await asyncio.sleep(0.2)
            assert state["stopped"] and not state["running"]
