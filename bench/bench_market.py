"""The compute market: how fast a rented job starts, and what the ledger pays for the market.

Three figures, each next to its target or reference:

1. **Order to running workload** on loopback with 1 s blocks: a node and a provider agent as real
   processes, the tenant in this process. Timed from signing the order to the job's first line
   of output read back through the provider's signed log endpoint, with the steps in between
   (order included, bid seen, lease included, job started). Target: under 5 s. Reference: an
   Akash provider waits up to 5 minutes for bids to be accepted (``--bid-timeout``) and another
   5 for the tenant's manifest (``--manifest-timeout``), and withdraws lease payments from
   escrow every 24 hours (``--withdrawal-period``), checking lease funds every 10 minutes
   (``--lease-funds-monitor-interval``): defaults of ``provider-services run`` in
   akash-network/provider, ``cmd/provider-services/cmd/run.go``. Here payment is every block.
2. **Settlement per block** with 1,000 open leases (and 100, 10,000 for the trend): the market's
   end-of-block rules alone (target: under 10 ms), the worst block where every lease runs out at
   once, and the whole empty block as the node executes it (copy the state, rules, state root),
   so that the cost of hashing the whole state every block is not hidden.
3. **Challenge verification**: what the ledger spends checking an opening versus what the
   provider spends computing the product, committing and opening, per matrix size.

    python -m bench.bench_market              # all three
    python -m bench.bench_market --skip-e2e   # only the in-process figures
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agora.protocol.block import execute
from agora.protocol.market import heartbeat, open_lease, place_bid, place_order, register_provider
from agora.protocol.market_challenge import verify_opening
from agora.protocol.market_settle import settle_block
from agora.protocol.market_state import MARKET, Hardware
from agora.protocol.params import DEV_CHAIN, DEV_HYPERPARAMS
from agora.protocol.state import State, state_root
from agora.protocol.units import TOKEN

AKASH_REFERENCE = {
    "bid_timeout_s": 300,
    "manifest_timeout_s": 300,
    "withdrawal_period_s": 86_400,
    "lease_funds_monitor_interval_s": 600,
    "source": "akash-network/provider cmd/provider-services/cmd/run.go (flag defaults)",
}
TARGET_START_S = 5.0
TARGET_SETTLE_MS = 10.0


def _address(label: str) -> str:
    return hashlib.sha256(label.encode()).hexdigest()


def market_state(leases: int, per_provider: int, expiring_together: bool = False) -> State:
    """A state with ``leases`` open leases, ``per_provider`` per provider, built with the rules
    themselves (no signatures: those are not what settlement costs)."""
    from agora.protocol.block import genesis_state

    providers = max(1, leases // per_provider)
    tenant = _address("tenant")
    balances = {tenant: 10**9 * TOKEN}
    balances |= {_address(f"p{i}"): 100 * TOKEN for i in range(providers)}
    state = genesis_state("bench", _address("producer"), balances, DEV_CHAIN, DEV_HYPERPARAMS)
    block = 1
    hw = Hardware(1, 1024)
    for i in range(providers):
        register_provider(
            state, _address(f"p{i}"), Hardware(per_provider, per_provider * 1024), "", "http://x",
            MARKET.min_provider_stake, block,
        )  # fmt: skip
    for n in range(leases):
        provider = _address(f"p{n % providers}")
        deposit = 5_000 if expiring_together else 10**12 + n
        order = place_order(state, tenant, hw, 1_000, deposit, 1, "", block)
        bid = place_bid(state, provider, order, 1_000, hw, block)
        open_lease(state, tenant, bid, block)
    state.height = block
    return state


def _discard(_: object) -> None:
    return None


def _per_call_ms(run: Callable[[], None], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def bench_settlement(sizes: list[int]) -> list[dict[str, Any]]:
    rows = []
    for leases in sizes:
        for per_provider in (10, 1):
            state = market_state(leases, per_provider)
            providers = list(state.market.providers)
            timings = []
            for _ in range(9):  # stay inside the liveness window: heartbeat outside the timer
                height = state.height + 1
                for address in providers:
                    heartbeat(state, address, height - 1)
                start = time.perf_counter()
                settle_block(state, height)
                timings.append(time.perf_counter() - start)
                state.height = height
            settle_ms = 1e3 * statistics.median(timings)
            block_ms = _per_call_ms(
                lambda s=state: _discard(execute(s, [], 0, skip_invalid=False)), 5
            )
            root_ms = _per_call_ms(lambda s=state: _discard(state_root(s)), 5)
            rows.append(
                {
                    "leases": leases,
                    "providers": len(providers),
                    "settle_ms": settle_ms,
                    "block_execute_ms": block_ms,
                    "state_root_ms": root_ms,
                }
            )
        expiring = market_state(leases, 1, expiring_together=True)
        expiry_block = next(iter(expiring.market.expiries))
        start = time.perf_counter()
        settle_block(expiring, expiry_block)
        rows[-1]["all_expire_ms"] = 1e3 * (time.perf_counter() - start)
        assert not any(x.status == "open" for x in expiring.market.leases.values())
    return rows


def bench_challenges(sizes: list[int]) -> list[dict[str, Any]]:
    from agora.market.prover import solve

    rows = []
    for size in sizes:
        seed = hashlib.sha256(f"bench-{size}".encode()).hexdigest()
        open_seed = hashlib.sha256(f"bench-open-{size}".encode()).hexdigest()
        start = time.perf_counter()
        answer = solve(seed, size)
        values, proofs = answer.open(open_seed, MARKET.challenge_cells)
        prove_ms = 1e3 * (time.perf_counter() - start)
        args = (seed, open_seed, size, MARKET.challenge_cells, answer.root, values, proofs)
        verify_ms = _per_call_ms(lambda a=args: _discard(verify_opening(*a)), 5)
        assert verify_opening(*args) is None
        tx_bytes = len(json.dumps({"values": values, "proofs": proofs}))
        rows.append(
            {
                "size": size,
                "provider_ms": prove_ms,
                "ledger_verify_ms": verify_ms,
                "ratio": prove_ms / verify_ms,
                "opening_bytes": tx_bytes,
            }
        )
    return rows


async def _time_one_start(url: str, tenant_name: str) -> dict[str, float]:
    from agora.chain.client import LedgerClient
    from agora.crypto.keys import Keypair
    from agora.market.offers import parse_resources
    from agora.market.tenant import Tenant

    async with Tenant(Keypair.from_name(tenant_name), LedgerClient(url), timeout=30) as tenant:
        t0 = time.perf_counter()
        marks: dict[str, float] = {}
        order_id = await tenant.order(parse_resources("cpu=1,mem=512MiB"), 5_000, 500_000)
        marks["order included"] = time.perf_counter() - t0
        detail = await tenant.wait_for_bids(order_id, 1, timeout=30, poll=0.05)
        marks["bid seen"] = time.perf_counter() - t0
        lease_id = await tenant.lease(detail.bid_details[0].id)
        marks["lease included"] = time.perf_counter() - t0
        await tenant.run(lease_id, [sys.executable, "-c", "print('running', flush=True)"])
        marks["job started"] = time.perf_counter() - t0
        while "running" not in (await tenant.logs(lease_id))["data"]:
            await asyncio.sleep(0.02)
        marks["first output read"] = time.perf_counter() - t0
        await tenant.close(lease_id)
        return marks


def _wait_http(url: str, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args} exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer")


def bench_start(trials: int, block_time: float) -> list[dict[str, float]]:
    from agora.chain.testing import free_port

    results = []
    with tempfile.TemporaryDirectory() as tmp:
        node_port, agent_port = free_port(), free_port()
        url = f"http://127.0.0.1:{node_port}"
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        node = subprocess.Popen(
            [sys.executable, "-m", "agora.chain", "start", "--dev", "--data-dir", f"{tmp}/node",
             "--port", str(node_port), "--block-time", str(block_time)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
        )  # fmt: skip
        agent = None
        try:
            _wait_http(f"{url}/v1/status", node)
            agent = subprocess.Popen(
                [sys.executable, "-m", "agora.market", "provider", "start", "--dev-key", "eve",
                 "--offer", "cpu=1,mem=1GiB,gpu=0,price=0.000001/block", "--node", url,
                 "--port", str(agent_port), "--work-dir", f"{tmp}/provider"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
            )  # fmt: skip
            _wait_http(f"http://127.0.0.1:{agent_port}/health", agent)
            for _ in range(trials):
                results.append(asyncio.run(_time_one_start(url, "ferdie")))
        finally:
            for proc in (agent, node):
                if proc is not None and proc.poll() is None:
                    proc.terminate()
                    try:
                        proc.wait(15)
                    except subprocess.TimeoutExpired:
                        proc.kill()
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--skip-e2e", action="store_true", help="Skip the loopback start test.")
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--block-time", type=float, default=1.0)
    parser.add_argument("--out", type=Path, default=Path("bench/out/bench_market.json"))
    args = parser.parse_args(argv)
    print(f"python {platform.python_version()} on {platform.machine()}, {os.cpu_count()} cores")

    report: dict[str, Any] = {"akash_reference": AKASH_REFERENCE}
    if not args.skip_e2e:
        starts = bench_start(args.trials, args.block_time)
        report["order_to_running"] = starts
        print(f"\norder -> running workload, loopback, {args.block_time:g} s blocks")
        print(f"{'step':<20}" + "".join(f"{f'trial {i + 1}':>10}" for i in range(len(starts))))
        for step in starts[0]:
            print(f"{step:<20}" + "".join(f"{s[step]:>9.2f}s" for s in starts))
        total = statistics.median(s["first output read"] for s in starts)
        verdict = "meets" if total < TARGET_START_S else "MISSES"
        print(f"median {total:.2f} s: {verdict} the {TARGET_START_S:g} s target")
        print(
            "reference (Akash provider defaults): bids wait up to "
            f"{AKASH_REFERENCE['bid_timeout_s']} s for a lease, the manifest up to "
            f"{AKASH_REFERENCE['manifest_timeout_s']} s; escrow withdrawn every "
            f"{AKASH_REFERENCE['withdrawal_period_s'] // 3600} h, funds checked every "
            f"{AKASH_REFERENCE['lease_funds_monitor_interval_s']} s ({AKASH_REFERENCE['source']})"
        )

    settlement = bench_settlement([100, 1_000, 10_000])
    report["settlement"] = settlement
    print("\nper-block settlement (market rules only) and the whole empty block, in ms")
    print(
        f"{'leases':>7} {'providers':>9} {'settle':>8} {'all expire':>10} {'block':>8} "
        f"{'(root)':>8}"
    )
    for row in settlement:
        expire = f"{row['all_expire_ms']:>10.2f}" if "all_expire_ms" in row else f"{'':>10}"
        print(
            f"{row['leases']:>7} {row['providers']:>9} {row['settle_ms']:>8.3f} {expire} "
            f"{row['block_execute_ms']:>8.2f} {row['state_root_ms']:>8.2f}"
        )
    thousand = max(r["settle_ms"] for r in settlement if r["leases"] == 1_000)
    verdict = "meets" if thousand < TARGET_SETTLE_MS else "MISSES"
    print(
        f"1,000 leases: {thousand:.3f} ms per block, {verdict} the {TARGET_SETTLE_MS:g} ms target"
    )

    challenges = bench_challenges([16, 64, 256, 512])
    report["challenges"] = challenges
    print(f"\nhardware challenge, {MARKET.challenge_cells} cells opened")
    print(f"{'n':>5} {'provider':>11} {'ledger':>9} {'ratio':>8} {'opening':>9}")
    for row in challenges:
        print(
            f"{row['size']:>5} {row['provider_ms']:>9.1f}ms {row['ledger_verify_ms']:>7.2f}ms "
            f"{row['ratio']:>7.0f}x {row['opening_bytes']:>7} B"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwritten to {args.out}")


if __name__ == "__main__":
    main()
