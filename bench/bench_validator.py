"""What validating costs: CPU seconds per probe, and how it grows with the number of miners.

The validator's scoring path (``agora.validator.tasks``: the reference run on the round's pool,
then for every miner a signed ``/health`` and main request, the receipt check and the comparison
with the reference) runs against N simulated miners (``agora.validator.sim``) for N = 64 and 256.
The miners live in a separate process serving all N hotkeys from 4 apps on loopback (one app
answers for many hotkeys, routed by the signed ``X-Agora-Callee`` header), so that this
process's CPU time (``time.process_time``: every thread, the reference engine's included) is the
validator's alone. One miner in 16 cheats (``random``), so the failure path is measured too.

Per round (3 rounds per N, after one warm-up round) it records:

- the reference step (``prepare``: once per round, whatever N) in CPU and wall seconds;
- the probing step (N miners, 64 at a time) in CPU and wall seconds;
- CPU seconds per probe, all included (reference + probing) / N, and probing only / N;
- the miners' process CPU for the same round, for comparison (it is not the validator's cost).

Run:

    python -m bench.bench_validator                    # embeddings, N = 64 and 256
    python -m bench.bench_validator --task generate    # the tiny LM instead
    python -m bench.bench_validator --miners 16,64,256 --rounds 5

Results go to stdout and ``bench/out/bench_validator.json``. Torch uses one thread in both
processes (as in the e2e test) so that the two do not fight over the 2 cores.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from agora.chain.testing import free_port, wait_until_ready
from agora.crypto.keys import Keypair
from agora.models import load_engine
from agora.validator.prober import MinerClient, MinerTarget
from agora.validator.probes import round_seed
from agora.validator.scoring import round_samples
from agora.validator.sim import SimBehaviour, SimMiner, create_sim_app
from agora.validator.tasks import run_round, task_for

OUT = Path(__file__).resolve().parent / "out" / "bench_validator.json"
NETUID = 1
APPS = 4
CHEAT_EVERY = 16
VALIDATOR = Keypair.from_name("bench/validator/hot")
MODELS = {"embed": "embed:minilm", "generate": "generate:tiny"}


def miner_keys(count: int) -> list[Keypair]:
    return [Keypair.from_name(f"bench/miner{i}/hot") for i in range(count)]


def behaviour(i: int) -> SimBehaviour:
    return SimBehaviour.RANDOM if i % CHEAT_EVERY == CHEAT_EVERY - 1 else SimBehaviour.HONEST


# -- the miners' process ----------------------------------------------------------------------


async def serve_miners(task: str, count: int, ports: list[int], data_dir: Path) -> None:
    from agora.chain.testing import running_app

    engine = await load_engine(MODELS[task], data_dir)
    keys = miner_keys(count)
    async with contextlib_stack() as stack:
        for app_index, port in enumerate(ports):
            mine = [
                SimMiner(k, behaviour(i)) for i, k in enumerate(keys) if i % len(ports) == app_index
            ]
            await stack.enter_async_context(running_app(create_sim_app(engine, mine, NETUID), port))
        print("ready", flush=True)
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        await stop.wait()


def contextlib_stack() -> Any:
    import contextlib

    return contextlib.AsyncExitStack()


class MinerProcess:
    """The simulated miners in their own process."""

    def __init__(self, task: str, count: int, data_dir: Path) -> None:
        self.ports = [free_port() for _ in range(APPS)]
        args = [sys.executable, "-m", "bench.bench_validator", "--serve", task,
                "--count", str(count), "--ports", ",".join(map(str, self.ports)),
                "--data-dir", str(data_dir)]  # fmt: skip
        self.log = open(data_dir / f"miners-{count}.log", "wb")  # noqa: SIM115 - the child's
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT)
        for port in self.ports:
            wait_until_ready(f"http://127.0.0.1:{port}/health", 120.0, self.proc)

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks = os.sysconf("SC_CLK_TCK")
        return (int(fields[11]) + int(fields[12])) / ticks  # utime + stime

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        self.log.close()


# -- the validator's side ---------------------------------------------------------------------


async def measure(task_name: str, count: int, rounds: int, data_dir: Path) -> dict[str, Any]:
    miners = MinerProcess(task_name, count, data_dir)
    engine = await load_engine(MODELS[task_name], data_dir)
    task = task_for(engine)
    client = MinerClient(VALIDATOR, NETUID, timeout=60.0)
    keys = miner_keys(count)
    targets = [
        MinerTarget(i, k.address, f"http://127.0.0.1:{miners.ports[i % APPS]}")
        for i, k in enumerate(keys)
    ]
    results: list[dict[str, Any]] = []
    try:
        for round_no in range(rounds + 1):  # round 0 warms up connections and the model
            seed = round_seed(f"{round_no:064x}", VALIDATOR.address, NETUID, round_no)
            miners_cpu0 = miners.cpu_seconds()
            cpu0, wall0 = time.process_time(), time.perf_counter()
            plan = await task.prepare(seed, round_no)
            cpu1, wall1 = time.process_time(), time.perf_counter()
            outcomes = await run_round(task, client, targets, plan, concurrency=64)
            round_samples(outcomes)
            cpu2, wall2 = time.process_time(), time.perf_counter()
            verdicts: dict[str, int] = {}
            for outcome in outcomes:
                verdicts[outcome.verdict] = verdicts.get(outcome.verdict, 0) + 1
            expected_bad = sum(1 for i in range(count) if behaviour(i) is not SimBehaviour.HONEST)
            if verdicts.get("ok", 0) != count - expected_bad:
                raise RuntimeError(f"unexpected verdicts at N={count}: {verdicts}")
            if round_no == 0:
                continue
            results.append(
                {
                    "reference_cpu_s": cpu1 - cpu0,
                    "reference_wall_s": wall1 - wall0,
                    "probe_cpu_s": cpu2 - cpu1,
                    "probe_wall_s": wall2 - wall1,
                    "miners_cpu_s": miners.cpu_seconds() - miners_cpu0,
                    "verdicts": verdicts,
                }
            )
    finally:
        await client.aclose()
        await engine.close()
        miners.stop()

    def median(key: str) -> float:
        return statistics.median(r[key] for r in results)

    total_cpu = median("reference_cpu_s") + median("probe_cpu_s")
    return {
        "task": task_name,
        "miners": count,
        "rounds": rounds,
        "reference_cpu_s": median("reference_cpu_s"),
        "reference_wall_s": median("reference_wall_s"),
        "probe_cpu_s": median("probe_cpu_s"),
        "probe_wall_s": median("probe_wall_s"),
        "cpu_s_per_probe": total_cpu / count,
        "probing_cpu_s_per_probe": median("probe_cpu_s") / count,
        "miners_cpu_s": median("miners_cpu_s"),
        "round_wall_s": median("reference_wall_s") + median("probe_wall_s"),
        "verdicts": results[-1]["verdicts"],
    }


def table(rows: list[dict[str, Any]]) -> str:
    head = (
        f"{'task':<9}{'miners':>7}{'ref CPU s':>11}{'probe CPU s':>13}{'CPU ms/probe':>14}"
        f"{'probing ms/probe':>18}{'round wall s':>14}{'miners CPU s':>14}"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{r['task']:<9}{r['miners']:>7}{r['reference_cpu_s']:>11.3f}{r['probe_cpu_s']:>13.3f}"
            f"{r['cpu_s_per_probe'] * 1000:>14.2f}{r['probing_cpu_s_per_probe'] * 1000:>18.2f}"
            f"{r['round_wall_s']:>14.2f}{r['miners_cpu_s']:>14.2f}"
        )
    return "\n".join(lines)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    counts = [int(n) for n in args.miners.split(",")]
    rows = []
    with tempfile.TemporaryDirectory(prefix="agora-bench-validator-") as tmp:
        for count in counts:
            started = time.perf_counter()
            rows.append(await measure(args.task, count, args.rounds, Path(tmp)))
            print(f"N={count}: {time.perf_counter() - started:.1f} s", file=sys.stderr, flush=True)
    return {
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "loadavg_at_start": os.getloadavg(),
            "torch_threads": os.environ.get("OMP_NUM_THREADS"),
        },
        "rows": rows,
    }


def main(argv: list[str] | None = None) -> None:
    """The command line (also what ``python -m bench validator`` calls, with no arguments)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--task", choices=sorted(MODELS), default="embed")
    parser.add_argument("--miners", default="64,256", help="comma-separated miner counts")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--serve", choices=sorted(MODELS), help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--ports", help=argparse.SUPPRESS)
    parser.add_argument("--data-dir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        ports = [int(p) for p in args.ports.split(",")]
        asyncio.run(serve_miners(args.serve, args.count, ports, args.data_dir))
        return
    report = asyncio.run(run(args))
    print(table(report["rows"]))
    rows = report["rows"]
    if len(rows) > 1:  # the reference: a cost per probe that stays flat as the subnet grows
        first, last = rows[0], rows[-1]
        print(
            f"CPU per probe: {first['cpu_s_per_probe'] * 1000:.2f} ms at {first['miners']} miners, "
            f"{last['cpu_s_per_probe'] * 1000:.2f} ms at {last['miners']} "
            f"(x{last['cpu_s_per_probe'] / first['cpu_s_per_probe']:.2f}; flat = linear cost); "
            f"load average {os.getloadavg()[0]:.1f}"
        )
    OUT.parent.mkdir(parents=True, exist_ok=True)
    existing: dict[str, Any] = json.loads(OUT.read_text()) if OUT.exists() else {}
    existing[args.task] = report
    OUT.write_text(json.dumps(existing, indent=2) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
