"""Miner throughput and latency over signed HTTP, next to the same engine called in-process.

What runs: a dev ledger node, a subnet, a registered caller, and a real miner process
(``python -m agora.miner start``, its model in its engine process) per workload on loopback. For
each workload and for 1, 8 and 32 concurrent clients, this process measures two ways of getting
the same answers:

- **over HTTP**: that many clients keep sending signed requests to the miner on keep-alive
  connections (``sign_request`` headers, a fresh nonce each; a minimal HTTP/1.1 client, as
  wrk is, so the load generator takes little CPU from the miner on a shared machine). The miner
  checks each request, batches the model calls, counts tokens, prices and signs a receipt. The
  first answer's receipt is verified (with httpx and ``verify_receipt``);
- **in-process**: that many callers keep calling the same engine spec loaded in this process,
  behind the miner's own ``BatchedEngine`` settings and torch threads, with no network, no
  signatures, no receipts and no token counting. Both report their mean batch, so that the
  batching can be compared.

Each cell runs the two ways in alternating rounds (``--rounds``), so a change in the machine's
load during the run weighs on both alike. Reported: requests per second, p50 and p99 latency,
the HTTP/in-process throughput ratio (the wire's cost), the mean batch size of both, and CPU
milliseconds per request by process (engine process, miner, load generator; in-process), which
say where the time goes whatever else the machine is doing. The load generator shares the
machine with the miner (2 cores on the build machine). Torch gets one thread in both (the
miner's default on 2 cores: torch's default less one); ``--threads N`` sets another count.

Workloads: ``embed`` is one short sentence per request (a gateway embedding a query);
``generate`` is a 40-character prompt and 64 greedy tokens on the tiny LM.

Run:

    python -m bench.bench_miner                       # about 2 minutes
    python -m bench.bench_miner --seconds 3           # shorter cells
    python -m bench.bench_miner --max-wait-ms 25      # batch wait, miner and in-process alike
    python -m bench.bench_miner --miner-in-process    # the model in the miner's own process

Results go to stdout and ``bench/out/bench_miner.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx

from agora.chain.client import LedgerClient
from agora.chain.testing import free_port, wait_until_ready
from agora.crypto.keys import Keypair
from agora.crypto.signing import sign_transaction
from agora.miner.config import MinerConfig
from agora.miner.service import load_miner_engine
from agora.models.base import Engine
from agora.models.batcher import BatchedEngine
from agora.net import AgoraAuth, sign_request, verify_receipt

T = TypeVar("T")
OUT = Path(__file__).resolve().parent / "out" / "bench_miner.json"
CALLER = Keypair.from_name("bob/hot")
CONCURRENCY = (1, 8, 32)
MAX_TOKENS = 64
SENTENCES = [f"Sentence number {i} is about topic {i % 17} and nothing else." for i in range(4096)]
PROMPTS = [f"Prompt {i:05d}: the network pays honest miners" for i in range(4096)]


@dataclass
class Workload:
    name: str
    model: str
    dev_key: str
    path: str

    def body(self, i: int) -> bytes:
        if self.name == "embed":
            return json.dumps({"texts": [SENTENCES[i % len(SENTENCES)]]}).encode()
        return json.dumps({"prompt": PROMPTS[i % len(PROMPTS)], "max_tokens": MAX_TOKENS}).encode()

    def call(self, engine: Engine, i: int) -> Awaitable[Any]:
        if self.name == "embed":
            return engine.embed([SENTENCES[i % len(SENTENCES)]])
        return engine.generate(PROMPTS[i % len(PROMPTS)], MAX_TOKENS)


WORKLOADS = (
    Workload("embed", "embed:minilm", "charlie", "/v1/embed"),
    Workload("generate", "generate:tiny", "ferdie", "/v1/generate"),
)


@dataclass
class Cell:
    requests: int
    seconds: float
    latencies: list[float]
    completed: int = 0  # including the warmup's
    cpu: dict[str, float] = field(default_factory=dict)  # CPU seconds by process, whole round

    @property
    def rps(self) -> float:
        return self.requests / self.seconds

    def percentile(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000

    @classmethod
    def merge(cls, cells: list[Cell]) -> Cell:
        cpu: dict[str, float] = {}
        for cell in cells:
            for name, seconds in cell.cpu.items():
                cpu[name] = cpu.get(name, 0.0) + seconds
        return cls(
            sum(c.requests for c in cells),
            sum(c.seconds for c in cells),
            [x for c in cells for x in c.latencies],
            sum(c.completed for c in cells),
            cpu,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "seconds": round(self.seconds, 3),
            "rps": round(self.rps, 1),
            "p50_ms": round(self.percentile(0.50), 2),
            "p99_ms": round(self.percentile(0.99), 2),
            "mean_ms": round(statistics.fmean(self.latencies) * 1000, 2),
            "cpu_ms_per_request": {
                name: round(1000 * seconds / max(self.completed, 1), 3)
                for name, seconds in self.cpu.items()
            },
        }


async def drive(
    concurrency: int, seconds: float, one: Callable[[int], Awaitable[None]], warmup: float
) -> Cell:
    """Keep ``concurrency`` callers busy with ``one(i)`` for ``warmup`` then ``seconds``.

    Timed with ``time.perf_counter`` (uvloop's ``loop.time()`` has millisecond resolution)."""
    counter = 0
    latencies: list[float] = []
    clock = time.perf_counter
    measure_from = clock() + warmup
    end = measure_from + seconds

    async def caller() -> None:
        nonlocal counter
        while (began := clock()) < end:
            counter += 1
            await one(counter)
            if began >= measure_from:
                latencies.append(clock() - began)

    await asyncio.gather(*(caller() for _ in range(concurrency)))
    return Cell(len(latencies), clock() - measure_from, latencies, counter)


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far (Linux /proc; 0 elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def child_pids(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir() if Path("/proc").is_dir() else ():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError):
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    found.append(int(entry.name))
    return found


def cpu_snapshot(miner_pid: int | None) -> dict[str, float]:
    """CPU seconds so far: this process (the client, or the in-process callers), and, over
    HTTP, the miner process and its engine process."""
    if miner_pid is None:
        return {"in_process": time.process_time()}
    return {
        "client": time.process_time(),
        "miner": cpu_seconds(miner_pid),
        "engine_process": sum(cpu_seconds(child) for child in child_pids(miner_pid)),
    }


# -- setting up the network ----------------------------------------------------------------------


async def _send(client: LedgerClient, key: Keypair, kind: str, body: dict[str, Any]) -> None:
    chain_id = (await client.status()).chain_id
    tx = sign_transaction(key, chain_id, kind, await client.next_nonce(key.address), body)
    info = await client.wait_for_tx(await client.submit(tx), timeout=30)
    if info.status != "included":
        raise RuntimeError(f"{kind} was rejected: {info.code}: {info.message}")


async def setup_subnet(node_url: str) -> int:
    async with LedgerClient(node_url) as client:
        await _send(client, Keypair.from_name("alice"), "create_subnet", {})
        netuid = (await client.subnets())[-1].netuid
        body = {"netuid": netuid, "hotkey": CALLER.address}
        await _send(client, Keypair.from_name("bob"), "register", body)
        return netuid


@contextlib.contextmanager
def process(args: list[str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def miner_args(
    work: Workload,
    netuid: int,
    port: int,
    node: str,
    data_dir: Path,
    threads: int | None,
    max_wait_ms: float,
    in_process: bool = False,
) -> list[str]:
    return [
        sys.executable, "-m", "agora.miner", "start", "--dev-key", work.dev_key,
        "--subnet", str(netuid), "--model", work.model, "--port", str(port), "--node", node,
        "--data-dir", str(data_dir), "--rate-limit", "1000000", "--burst", "1000000",
        "--log-level", "warning", "--max-wait-ms", str(max_wait_ms),
        *(["--threads", str(threads)] if threads else []),
        *(["--in-process"] if in_process else []),
    ]  # fmt: skip


# -- the two ways to call ------------------------------------------------------------------------


class Connection:
    """One keep-alive HTTP/1.1 connection that POSTs signed requests: a minimal load generator
    (like wrk), so that the client's own CPU takes as little as possible from the miner on a
    shared machine. The requests are the ones any client sends: ``sign_request`` headers, the
    JSON body, ``Content-Length``."""

    def __init__(self, host: str, port: int, miner: str) -> None:
        self.host, self.port, self.miner = host, port, miner
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        headers = sign_request(CALLER, self.miner, "POST", path, body)
        head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        self.writer.write(
            f"POST {path} HTTP/1.1\r\nHost: {self.host}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n{head}\r\n".encode()
            + body
        )
        status_line = await self.reader.readline()
        length = 0
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.partition(b":")
            if name.lower() == b"content-length":
                length = int(value)
        return int(status_line.split()[1]), await self.reader.readexactly(length)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def http_caller(work: Workload, pool: list[Connection]) -> Callable[[int], Awaitable[None]]:
    """``one(i)`` for concurrent callers, each taking a keep-alive connection from ``pool``."""

    async def one(i: int) -> None:
        connection = pool.pop()
        try:
            status, body = await connection.post(work.path, work.body(i))
        finally:
            pool.append(connection)
        if status != 200:
            raise RuntimeError(f"{status}: {body[:200]!r}")

    return one


def engine_caller(work: Workload, engine: Engine) -> Callable[[int], Awaitable[None]]:
    async def one(i: int) -> None:
        await work.call(engine, i)

    return one


async def bench_workload(
    work: Workload,
    url: str,
    miner: str,
    miner_pid: int,
    engine: Engine,
    seconds: float,
    warmup: float,
    rounds: int,
) -> dict[int, dict[str, Cell]]:
    """Both ways at each concurrency, in alternating rounds, so that a change in the machine's
    load during the run weighs on both alike."""
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    results: dict[int, dict[str, Cell]] = {}
    async with httpx.AsyncClient(
        base_url=url, auth=AgoraAuth(CALLER, miner), limits=limits, timeout=60
    ) as http:
        # a valid, receipted answer first (the load below does not re-check every one)
        body = work.body(0)
        response = await http.post(work.path, content=body)
        response.raise_for_status()
        verify_receipt(response.json()["agora_receipt"], body, response.content, miner=miner)
        await work.call(engine, 0)
        parsed = httpx.URL(url)
        for concurrency in CONCURRENCY:
            pool = [Connection(parsed.host, parsed.port or 80, miner) for _ in range(concurrency)]
            ways = {
                "http": http_caller(work, pool),
                "in_process": engine_caller(work, engine),
            }
            cells: dict[str, list[Cell]] = {name: [] for name in ways}
            for round_ in range(rounds):
                for name, one in ways.items():
                    pid = miner_pid if name == "http" else None
                    before = cpu_snapshot(pid)
                    cell = await drive(
                        concurrency, seconds / rounds, one, warmup if not round_ else 0
                    )
                    after = cpu_snapshot(pid)
                    cell.cpu = {k: after[k] - before[k] for k in after}
                    cells[name].append(cell)
            results[concurrency] = {name: Cell.merge(parts) for name, parts in cells.items()}
            for connection in pool:
                connection.close()
    return results


def batching(engine: BatchedEngine) -> str:
    """How the in-process engine batched: its batcher's calls, or (continuous batching) the
    rows of its decoding steps."""
    steps = getattr(getattr(engine.engine, "_decoder", None), "step_rows", None)
    if engine.continuous_batching and steps:
        return f"continuous batching: mean {sum(steps) / len(steps):.1f} rows per decoding step"
    batcher = engine.embed_batcher if engine.task == "embed" else engine.generate_batcher
    sizes = batcher.batch_sizes
    return f"mean batch {sum(sizes) / max(1, len(sizes)):.1f} requests in {len(sizes)} model calls"


def _run(coro: Coroutine[Any, Any, T]) -> T:
    """On uvloop when installed, as the miner runs (``agora miner start``)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


# -- the run -------------------------------------------------------------------------------------


def table(report: dict[str, Any]) -> str:
    lines = [
        f"{'workload':<9} {'clients':>7} | {'HTTP req/s':>10} {'p50 ms':>7} {'p99 ms':>7} | "
        f"{'in-proc req/s':>13} {'p50 ms':>7} {'p99 ms':>7} | {'HTTP/in-proc':>12} | "
        f"{'CPU ms/req: engine, miner, client | in-proc':>43}",
        "-" * 144,
    ]
    for name, rows in report["results"].items():
        for concurrency, row in rows.items():
            http, local = row["http"], row["in_process"]
            cpu, cpu_local = http["cpu_ms_per_request"], local["cpu_ms_per_request"]
            lines.append(
                f"{name:<9} {concurrency:>7} | {http['rps']:>10.1f} {http['p50_ms']:>7.1f} "
                f"{http['p99_ms']:>7.1f} | {local['rps']:>13.1f} {local['p50_ms']:>7.1f} "
                f"{local['p99_ms']:>7.1f} | {row['ratio']:>11.0%} | "
                f"{cpu.get('engine_process', 0):>14.2f} {cpu.get('miner', 0):>6.2f} "
                f"{cpu.get('client', 0):>6.2f} | {cpu_local.get('in_process', 0):>7.2f}"
            )
    return "\n".join(lines)


async def run(
    seconds: float,
    warmup: float,
    rounds: int,
    threads: int | None,
    max_wait_ms: float,
    miner_in_process: bool,
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-miner-") as tmp:
        data_dir = Path(tmp)
        node_port = free_port()
        node_url = f"http://127.0.0.1:{node_port}"
        node_cmd = [
            sys.executable, "-m", "agora.chain", "start", "--dev", "--data-dir",
            str(data_dir / "node"), "--port", str(node_port), "--block-time", "0.2",
        ]  # fmt: skip
        report: dict[str, Any] = {"results": {}}
        with process(node_cmd, data_dir / "node.log") as node:
            wait_until_ready(f"{node_url}/v1/status", 30, node)
            netuid = await setup_subnet(node_url)
            for work in WORKLOADS:
                port = free_port()
                url = f"http://127.0.0.1:{port}"
                args = miner_args(
                    work, netuid, port, node_url, data_dir, threads, max_wait_ms, miner_in_process
                )
                log = data_dir / f"miner-{work.name}.log"
                print(f"{work.name}: starting the {work.model} miner…", file=sys.stderr)
                with process(args, log) as miner:
                    # the miner's own engine settings (threads, batch sizes), in this process
                    config = MinerConfig(
                        netuid=netuid,
                        model=work.model,
                        data_dir=data_dir,
                        threads=threads,
                        max_wait_ms=max_wait_ms,
                        engine_process=False,
                    )
                    engine = await load_miner_engine(config)
                    try:
                        await asyncio.to_thread(wait_until_ready, f"{url}/health", 120, miner)
                    except RuntimeError:
                        print(log.read_text(), file=sys.stderr)
                        raise
                    hotkey = Keypair.from_name(work.dev_key + "/hot").address
                    print(f"{work.name}: measuring…", file=sys.stderr)
                    try:
                        cells = await bench_workload(
                            work, url, hotkey, miner.pid, engine, seconds, warmup, rounds
                        )
                    finally:
                        report.setdefault("in_process_batching", {})[work.name] = batching(engine)
                        await engine.close()
                stopped = [line for line in log.read_text().splitlines() if "stopped after" in line]
                report.setdefault("miner_batching", {})[work.name] = (
                    stopped[-1].strip() if stopped else None
                )
                report["results"][work.name] = {
                    c: {
                        "http": ways["http"].to_json(),
                        "in_process": ways["in_process"].to_json(),
                        "ratio": round(ways["http"].rps / ways["in_process"].rps, 3),
                    }
                    for c, ways in cells.items()
                }
    return report


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=6.0, help="measured time per cell")
    parser.add_argument("--warmup", type=float, default=1.0, help="unmeasured time per cell")
    parser.add_argument(
        "--rounds", type=int, default=3, help="alternating HTTP/in-process rounds per cell"
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads, the same in the miner and in-process",
    )
    parser.add_argument(
        "--max-wait-ms",
        type=float,
        default=MinerConfig.max_wait_ms,
        help="batch wait, the same in the miner and in-process (the miner's default)",
    )
    parser.add_argument(
        "--miner-in-process",
        action="store_true",
        help="run the miner's model in its own process (--in-process) instead of an engine process",
    )
    args = parser.parse_args(argv)
    threads = args.threads or None
    started = time.perf_counter()
    load = os.getloadavg()[0]
    report = _run(
        run(
            args.seconds,
            args.warmup,
            args.rounds,
            threads,
            args.max_wait_ms,
            args.miner_in_process,
        )
    )
    report.update(
        {
            "seconds_per_cell": args.seconds,
            "rounds": args.rounds,
            "torch_threads": threads or "default",
            "max_wait_ms": args.max_wait_ms,
            "miner_engine": "in its own process" if args.miner_in_process else "engine process",
            "max_tokens": MAX_TOKENS,
            "cpus": os.cpu_count(),
            "load_average_at_start": round(load, 2),
            "python": platform.python_version(),
            "total_seconds": round(time.perf_counter() - started, 1),
        }
    )
    print(table(report))
    for name, line in report.get("miner_batching", {}).items():
        print(f"{name} miner: {line}")
        print(f"{name} in-process: {report.get('in_process_batching', {}).get(name)}")
    print(
        f"(load average at start {load:.2f}; {os.cpu_count()} CPUs; "
        f"{report['total_seconds']} s in all)"
    )
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
