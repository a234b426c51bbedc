"""The market's services in pieces: prices and sizes, the sandbox, workloads, the bid policy."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from agora.chain.models import MarketHardware, MarketHistory, MarketOrder, MarketProvider
from agora.crypto.keys import Keypair
from agora.market.cli import market_app, provider_app
from agora.market.offers import format_price, parse_mem, parse_offer, parse_resources, per_block
from agora.market.provider import ProviderAgent, ProviderConfig
from agora.market.workloads import WorkloadError, Workloads
from agora.protocol.market_state import Hardware

# -- prices and sizes --------------------------------------------------------------------------


def test_hourly_prices_become_per_block_prices_rounded_in_each_side_s_favour() -> None:
    assert per_block("0.02/h", 1.0, round_up=True) == 5556  # 0.02e9 / 3600 = 5555.6
    assert per_block("0.02/h", 1.0, round_up=False) == 5555
    assert per_block("0.02/h", 12.0, round_up=True) == 66667
    assert per_block("5000/block", 3.0, round_up=True) == 5000 * 10**9
    assert per_block("0.000001", 1.0, round_up=True) == 1000  # bare: per block
    assert per_block("1/min", 0.5, round_up=False) == 10**9 // 120
    assert "0.020002/h" in format_price(5556, 1.0)
    for bad in ("abc/h", "0.02/week", "-1/h", "0/h"):
        with pytest.raises(ValueError):
            per_block(bad, 1.0, round_up=True)
    with pytest.raises(ValueError, match="less than one unit"):
        per_block("0.000000000001/h", 1.0, round_up=False)


def test_memory_sizes_are_mib() -> None:
    assert parse_mem("8GiB") == 8192 and parse_mem("512MiB") == 512 and parse_mem("2G") == 2048
    assert parse_mem("1024") == 1024 and parse_mem("1TiB") == 1024 * 1024
    for bad in ("lots", "0.5MiB", "0", "12 parsecs"):
        with pytest.raises(ValueError):
            parse_mem(bad)


def test_offers_and_needs_parse_to_hardware() -> None:
    offer = parse_offer("cpu=2,mem=8GiB,gpu=1,gpu_model=A100,region=eu-west,price=0.5/h")
    assert offer.hardware == Hardware(2, 8192, 1, "A100", "eu-west")
    need = parse_resources("cpu=1,mem=2GiB,gpu=1")
    assert need == Hardware(1, 2048, 1, "", "")
    assert offer.quote(need, 1.0) == per_block("0.5/h", 1.0, round_up=True)  # per GPU
    cpu_offer = parse_offer("cpu=8,mem=8GiB,price=0.02/h")
    assert cpu_offer.quote(parse_resources("cpu=3,mem=1GiB"), 1.0) == 3 * 5556  # per core
    for bad in ("cpu=2,mem=8GiB", "cpu=2,price=1/h", "cpu=x,mem=1GiB,price=1/h", "cpu"):
        with pytest.raises(ValueError):
            parse_offer(bad)
    with pytest.raises(ValueError, match="unknown resource"):
        parse_resources("cpu=1,mem=1GiB,disk=10GiB")


# -- the sandbox and workloads -----------------------------------------------------------------

PROBE = """
import os, resource
print("DATA", resource.getrlimit(resource.RLIMIT_DATA)[0])
print("FSIZE", resource.getrlimit(resource.RLIMIT_FSIZE)[0])
print("CPUS", len(os.sched_getaffinity(0)))
print("SID", os.getsid(0) == os.getpid())
"""


def wait_exit(workloads: Workloads, lease_id: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while workloads.get(lease_id).running:
        assert time.monotonic() < deadline, "the job did not finish"
        time.sleep(0.05)


def test_a_workload_runs_in_its_directory_within_its_limits(tmp_path: Path) -> None:
    workloads = Workloads(tmp_path, use_cgroups=False)
    workloads.prepare(1, Hardware(1, 512))
    workloads.start(1, [sys.executable, "probe.py"], {"probe.py": PROBE.encode()})
    wait_exit(workloads, 1)
    log, _ = workloads.read_log(1)
    lines = dict(line.split(" ", 1) for line in log.decode().split("\n") if " " in line)
    assert lines["DATA"] == str(512 * 1024 * 1024)
    assert lines["FSIZE"] == str(4096 * 1024 * 1024)
    assert lines["CPUS"] == "1" and lines["SID"] == "True"
    assert workloads.get(1).exit_code == 0
    assert workloads.read_file(1, "probe.py") == PROBE.encode()


def test_paths_cannot_escape_the_lease_directory(tmp_path: Path) -> None:
    workloads = Workloads(tmp_path, use_cgroups=False)
    workloads.prepare(1, Hardware(1, 512))
    (tmp_path / "secret.txt").write_text("provider's")
    for name in ("../secret.txt", "/etc/passwd", "a/../../secret.txt", ""):
        with pytest.raises(WorkloadError) as refused:
            workloads.read_file(1, name)
        assert refused.value.code == "bad_path"
    with pytest.raises(WorkloadError):
        workloads.start(1, ["true"], {"../evil.py": b"x"})
    with pytest.raises(WorkloadError) as unknown:
        workloads.get(2)
    assert unknown.value.status == 404


def test_stopping_a_lease_kills_its_whole_process_group(tmp_path: Path) -> None:
    workloads = Workloads(tmp_path, use_cgroups=False, grace_s=1.0)
    workloads.prepare(1, Hardware(1, 512))
    spawner = (
        "import subprocess, sys, time\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'])\n"
        "print(child.pid, flush=True)\n"
        "time.sleep(600)\n"
    )
    workloads.start(1, [sys.executable, "spawn.py"], {"spawn.py": spawner.encode()})
    deadline = time.monotonic() + 20
    while not workloads.read_log(1)[0].strip():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    child = int(workloads.read_log(1)[0].split()[0])
    workloads.stop(1)
    assert not workloads.get(1).running
    deadline = time.monotonic() + 5
    while _alive(child):
        assert time.monotonic() < deadline, "the job's child survived the lease"
        time.sleep(0.05)
    with pytest.raises(WorkloadError) as closed:
        workloads.start(1, ["true"])
    assert closed.value.code == "lease_closed"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    state = subprocess.run(["ps", "-o", "stat=", "-p", str(pid)], capture_output=True, text=True)
    return not state.stdout.strip().startswith("Z")


def test_a_job_cannot_allocate_beyond_its_memory(tmp_path: Path) -> None:
    workloads = Workloads(tmp_path, use_cgroups=False)
    workloads.prepare(1, Hardware(1, 256))
    hog = "x = bytearray(600 * 1024 * 1024)\nprint('allocated')\n"
    workloads.start(1, [sys.executable, "hog.py"], {"hog.py": hog.encode()})
    wait_exit(workloads, 1)
    log = workloads.read_log(1)[0].decode()
    assert "MemoryError" in log and "allocated" not in log
    assert workloads.get(1).exit_code != 0


# -- the bid policy ----------------------------------------------------------------------------


def agent(policy: str = "floor") -> ProviderAgent:
    config = ProviderConfig(
        node_url="http://127.0.0.1:1",
        offer=parse_offer("cpu=4,mem=8GiB,gpu=1,gpu_model=T4,region=eu,price=0.000001/block"),
        work_dir=Path("/nonexistent-unused"),
        policy=policy,  # type: ignore[arg-type]
    )
    me = Keypair.from_name("provider-unit")
    made = ProviderAgent.__new__(ProviderAgent)
    made.config, made.address, made.block_time = config, me.address, 1.0
    hw = MarketHardware(cpu=4, mem=8192, gpu=1, gpu_model="T4", region="eu")
    made.me = MarketProvider(
        address=me.address,
        stake=10**10,
        hardware=hw,
        used=MarketHardware(cpu=1, mem=1024),
        price_info="",
        url="http://x",
        registered_at=1,
        last_heartbeat=-1,
        alive_at=-1,
        alive_until=9,
        active=True,
        attestations={},
        attributes_hash=Hardware(4, 8192, 1, "T4", "eu").hash,
        rate=0,
        open_leases=0,
        open_bids=0,
        history=MarketHistory(
            leases_served=0,
            leases_failed=0,
            blocks_served=0,
            blocks_lost=0,
            failures=0,
            slashed=0,
            challenges_passed=0,
            challenges_failed=0,
        ),
    )
    return made


def order(**need: object) -> MarketOrder:
    base = {"cpu": 1, "mem": 1024, "gpu": 0, "gpu_model": "", "region": ""}
    return MarketOrder(
        id=1,
        tenant="ab" * 32,
        need=MarketHardware(**{**base, **need}),  # type: ignore[arg-type]
        max_price=5000,
        deposit=10**6,
        count=1,
        auditor="",
        created_at=1,
        status="open",
        bids=[],
        leases=[],
        closed_at=-1,
        matching_providers=1,
    )


def test_the_agent_offers_exactly_what_was_asked_at_its_price() -> None:
    decision = agent().offer_for(order(cpu=2, mem=2048))
    assert decision == (Hardware(2, 2048, 0, "", "eu"), 2000)  # no GPU asked: per core
    gpu = agent().offer_for(order(gpu=1, gpu_model="T4"))
    assert gpu == (Hardware(1, 1024, 1, "T4", "eu"), 1000)  # per GPU
    assert agent("max").offer_for(order())[1] == 5000  # type: ignore[index]


def test_the_agent_says_why_it_does_not_bid() -> None:
    assert "free" in str(agent().offer_for(order(cpu=4)))  # one core is leased out
    assert "A100" in str(agent().offer_for(order(gpu=1, gpu_model="A100")))
    assert "region" in str(agent().offer_for(order(region="us")))
    expensive = order(cpu=3)
    expensive = expensive.model_copy(update={"max_price": 2999})
    assert "below" in str(agent().offer_for(expensive))
    attested = order().model_copy(update={"auditor": "cd" * 32})
    assert "attested" in str(agent().offer_for(attested))


# -- the CLI -----------------------------------------------------------------------------------


def test_the_cli_explains_itself_and_refuses_bad_input_in_one_line() -> None:
    runner = CliRunner()
    for app, command in ((market_app, []), (provider_app, ["start"])):
        result = runner.invoke(app, [*command, "--help"])
        assert result.exit_code == 0
    result = runner.invoke(
        market_app,
        ["order", "--need", "cpu=1", "--max-price", "1/h", "--deposit", "1", "--dev-key", "a"],
    )
    assert result.exit_code == 1
    result = runner.invoke(
        market_app,
        [
            "order",
            "--need",
            "cpu=1,mem=1GiB",
            "--max-price",
            "1/h",
            "--deposit",
            "1",
            "--dev-key",
            "alice",
            "--node",
            "http://127.0.0.1:1",
        ],
    )
    assert result.exit_code == 1
