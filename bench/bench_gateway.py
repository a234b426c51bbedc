"""The gateway's cost: the same small embedding requests, against the same miner, four ways.

What runs: a dev ledger node, a subnet, ONE miner process (``agora miner start --model
embed:minilm --threads 1``, rate limits lifted) and, in front of it:

(a) **direct**: the load generator signs each request with a registered hotkey (the ``agora.net``
    wire format) and posts ``{"texts": [...]}`` to the miner's ``/v1/embed``. Nothing in between.
(b) **agora gateway**: ``agora gateway start`` (its own process). Each request carries an API key;
    the gateway authenticates it, rate-limits, parses the OpenAI request, counts tokens with the
    model's tokenizer, reserves the worst case in the key's escrow, picks the miner, signs the
    miner request with its hotkey (plus a payment voucher when one is due), checks the miner's
    receipt (signature, hashes, token counts, price), charges the key, records usage (SQLite,
    batched) and answers in OpenAI's shape with the receipt in a header and the body.
(c) **litellm proxy**: LiteLLM's proxy (``litellm --config``, offline with
    ``LITELLM_LOCAL_MODEL_COST_MAP=True``, a master key; config ``model: openai/minilm``,
    ``api_base`` pointing at (d)) in its own process. It cannot speak to a miner, so it forwards to:
(d) **thin front**: the least an OpenAI-compatible server in front of a miner must do (own process,
    Starlette on uvicorn with httptools and uvloop, like the gateway): translate
    ``/v1/embeddings`` into a signed ``/v1/embed`` and the answer back. No keys, no escrow, no
    receipt checks, no routing.

So (b) and (c) are two proxies in front of the same work; (c)'s figures include (d)'s hop, shown
on its own line so that LiteLLM's own share can be read off ((c) - (d)). The load generator runs
in this process (asyncio, uvloop, the gateway's pooled HTTP/1.1 client) and keeps 1, 16 and 64
clients busy for a fixed time per cell; each request embeds one short sentence. The machine's
cores are shared by everything, the load generator included.

One client is measured request by request, the paths taking turns, so that each path's
latency is compared under the same conditions; more clients in rounds, each path in turn for a
slice of the time. Besides req/s and latency, each row shows the CPU time its proxy processes
spent per request (from /proc), which load from other jobs on the machine disturbs less.

Targets: the gateway adds < 2 ms at p50 over direct (one client: with more, the figure is
queueing at a saturated miner), keeps >= 80 % of direct throughput, and beats LiteLLM on both.

    python -m bench.bench_gateway                   # about 5 minutes
    python -m bench.bench_gateway --seconds 3       # shorter cells
    python -m bench.bench_gateway --cheat random    # a miner answering random vectors: the
                                                    # proxies' own cost, without model compute

LiteLLM is run from the first of: ``$AGORA_LITELLM_PYTHON``, this interpreter if it can import
``litellm``, or ``.venv-litellm/bin/python`` (it pins versions that conflict with the project's
dependencies, so it lives in its own venv: ``python -m venv .venv-litellm &&
.venv-litellm/bin/pip install "litellm[proxy]"``). Without it, its rows say so.

Results go to stdout and ``bench/out/bench_gateway.json`` (``bench_gateway_cheat.json``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from agora.chain.client import LedgerClient
from agora.chain.testing import free_port, wait_until_ready
from agora.crypto.keys import Keypair
from agora.crypto.signing import sign_transaction
from agora.gateway.httpclient import HttpPool
from agora.gateway.keys import GatewayAccount
from agora.gateway.ledger import FastKey
from agora.net.signing import sign_request
from agora.protocol.units import TOKEN

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "out" / "bench_gateway.json"  # bench_gateway_cheat.json with --cheat
CALLER = Keypair.from_name("bob/hot")  # the direct path's registered caller
MINER_KEY = "charlie"
GATEWAY_KEY = "ferdie"  # a genesis account: funded, and no miner here
CONCURRENCY = (1, 16, 64)
SENTENCES = [f"Sentence number {i} is about topic {i % 17} and nothing else." for i in range(4096)]
PATHS = ("direct miner", "agora gateway", "litellm proxy", "thin front")
QUIET_ENV = {"OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "PYTHONUNBUFFERED": "1"}


@dataclass
class Cell:
    requests: int
    errors: int
    seconds: float
    latencies: list[float]

    @property
    def rps(self) -> float:
        return self.requests / self.seconds

    def percentile(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000

    def to_json(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "errors": self.errors,
            "seconds": round(self.seconds, 3),
            "rps": round(self.rps, 1),
            "p50_ms": round(self.percentile(0.50), 2),
            "p99_ms": round(self.percentile(0.99), 2),
            "mean_ms": round(statistics.fmean(self.latencies) * 1000, 2),
        }


async def drive(
    concurrency: int, seconds: float, one: Callable[[int], Awaitable[bool]], warmup: float
) -> Cell:
    """Keep ``concurrency`` callers busy with ``one(i)`` for ``warmup`` then ``seconds``."""
    counter = errors = 0
    latencies: list[float] = []
    clock = time.perf_counter
    measure_from = clock() + warmup
    end = measure_from + seconds

    async def caller() -> None:
        nonlocal counter, errors
        while (began := clock()) < end:
            counter += 1
            ok = await one(counter)
            if began >= measure_from:
                if ok:
                    latencies.append(clock() - began)
                else:
                    errors += 1

    await asyncio.gather(*(caller() for _ in range(concurrency)))
    return Cell(len(latencies), errors, clock() - measure_from, latencies)


# -- the thin OpenAI front (path d), run as its own process --------------------------------------


def serve_front(port: int, miner_url: str, miner_hotkey: str) -> None:
    """An OpenAI-shaped ``/v1/embeddings`` that forwards to a miner's ``/v1/embed``, signed."""
    import base64

    import numpy as np
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    key = FastKey(CALLER)
    pool = HttpPool()
    host, miner_port = miner_url.removeprefix("http://").rsplit(":", 1)

    async def embeddings(request: Request) -> Response:
        data = json.loads(await request.body())
        texts = data["input"] if isinstance(data["input"], list) else [data["input"]]
        body = json.dumps({"texts": texts}).encode()
        headers = sign_request(key, miner_hotkey, "POST", "/v1/embed", body)  # type: ignore[arg-type]
        headers["Content-Type"] = "application/json"
        answer = await pool.request(
            host, int(miner_port), "POST", "/v1/embed", headers.items(), body, 60
        )
        if answer.status != 200:
            return Response(answer.body, status_code=answer.status)
        miner = json.loads(answer.body)
        b64 = data.get("encoding_format") == "base64"
        items = [
            {
                "object": "embedding",
                "index": i,
                "embedding": base64.b64encode(np.asarray(v, dtype="<f4").tobytes()).decode()
                if b64
                else v,
            }
            for i, v in enumerate(miner["embeddings"])
        ]
        tokens = miner["usage"]["prompt_tokens"]
        payload = {
            "object": "list",
            "data": items,
            "model": data["model"],
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
        return Response(json.dumps(payload).encode(), media_type="application/json")

    async def health(request: Request) -> Response:
        return Response(b"{}", media_type="application/json")

    app = Starlette(
        routes=[
            Route("/v1/embeddings", embeddings, methods=["POST"]),
            Route("/health", health, methods=["GET"]),
        ]
    )
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=port,
        log_level="warning",
        access_log=False,
        http="httptools",
        loop="auto",
    )


# -- processes -----------------------------------------------------------------------------------


@contextlib.contextmanager
def process(
    args: list[str], log: Path, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        proc = subprocess.Popen(
            args,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, **QUIET_ENV, **(env or {})},
            cwd=ROOT,
        )
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def litellm_python() -> str | None:
    explicit = os.environ.get("AGORA_LITELLM_PYTHON")
    if explicit:
        return explicit
    with contextlib.suppress(ImportError):
        import litellm  # noqa: F401

        return sys.executable
    local = ROOT / ".venv-litellm" / "bin" / "python"
    return str(local) if local.exists() else None


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


# -- the four ways to call -----------------------------------------------------------------------


def direct_call(pool: HttpPool, url: str, miner: str) -> Callable[[int], Awaitable[bool]]:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    key = FastKey(CALLER)

    async def one(i: int) -> bool:
        body = json.dumps({"texts": [SENTENCES[i % len(SENTENCES)]]}).encode()
        headers = sign_request(key, miner, "POST", "/v1/embed", body)  # type: ignore[arg-type]
        headers["Content-Type"] = "application/json"
        response = await pool.request(
            host, int(port), "POST", "/v1/embed", headers.items(), body, 60
        )
        return response.status == 200

    return one


def openai_call(pool: HttpPool, url: str, api_key: str) -> Callable[[int], Awaitable[bool]]:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    headers = [("Content-Type", "application/json"), ("Authorization", f"Bearer {api_key}")]

    async def one(i: int) -> bool:
        body = json.dumps({"model": "minilm", "input": SENTENCES[i % len(SENTENCES)]}).encode()
        response = await pool.request(host, int(port), "POST", "/v1/embeddings", headers, body, 60)
        return response.status == 200

    return one


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc), 0.0 elsewhere."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Path_:
    """One way to call: how to send a request, and the proxy processes it goes through."""

    name: str
    one: Callable[[int], Awaitable[bool]]
    proxies: list[int]  # pids whose CPU is the path's own overhead (the miner's is not)


@dataclass
class Result:
    latencies: list[float]
    requests: int = 0
    errors: int = 0
    seconds: float = 0.0
    proxy_cpu: float = 0.0
    miner_cpu: float = 0.0

    def add(self, cell: Cell, proxy_cpu: float, miner_cpu: float) -> None:
        self.latencies.extend(cell.latencies)
        self.requests += cell.requests
        self.errors += cell.errors
        self.seconds += cell.seconds
        self.proxy_cpu += proxy_cpu
        self.miner_cpu += miner_cpu

    @property
    def cell(self) -> Cell:
        return Cell(self.requests, self.errors, self.seconds, self.latencies)

    def to_json(self) -> dict[str, Any]:
        per = max(1, self.requests)
        return {
            **self.cell.to_json(),
            "proxy_cpu_us_per_request": round(self.proxy_cpu / per * 1e6, 1),
            "miner_cpu_us_per_request": round(self.miner_cpu / per * 1e6, 1),
        }


async def measure(
    paths: list[Path_], miner_pid: int, seconds: float, rounds: int, warmup: float
) -> dict[str, dict[int, Result]]:
    """Interleaved, so that load from anything else on the machine falls on every path alike.
    One client: request by request, the paths in turn, for ``len(paths) * seconds`` (a request's
    latency there is the whole story; req/s is 1 / mean latency). More clients: ``rounds``
    rounds, each running every path for ``seconds / rounds`` (the order rotating). Results pool
    the rounds."""
    results: dict[str, dict[int, Result]] = {p.name: {} for p in paths}
    for path in paths:
        if not await path.one(0):
            raise RuntimeError(f"{path.name}: the first request failed")
    for concurrency in CONCURRENCY:
        for path in paths:
            results[path.name][concurrency] = Result([])
        if concurrency == 1:
            await _one_by_one(paths, results, miner_pid, seconds, warmup)
        for r in range(rounds if concurrency > 1 else 0):
            order = paths[r % len(paths) :] + paths[: r % len(paths)]
            for path in order:
                proxy_before = sum(cpu_seconds(pid) for pid in path.proxies)
                miner_before = cpu_seconds(miner_pid)
                cell = await drive(concurrency, seconds / rounds, path.one, warmup)
                proxy = sum(cpu_seconds(pid) for pid in path.proxies) - proxy_before
                miner = cpu_seconds(miner_pid) - miner_before
                results[path.name][concurrency].add(cell, proxy, miner)
        for path in paths:
            cell = results[path.name][concurrency].cell
            print(
                f"  {path.name:14s} {concurrency:3d} clients: {cell.rps:7.1f} req/s  "
                f"p50 {cell.percentile(0.5):7.2f} ms  p99 {cell.percentile(0.99):7.2f} ms"
                + (f"  ({cell.errors} errors)" if cell.errors else ""),
                flush=True,
            )
    return results


def _run_loop(coro: Any) -> Any:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


async def measure_all(
    urls: dict[str, str],
    miner_hotkey: str,
    gateway_key: str,
    master: str,
    skipped: dict[str, str],
    pids: dict[str, int],
    seconds: float,
    rounds: int,
    warmup: float,
) -> dict[str, dict[int, Result]]:
    pool = HttpPool()
    try:
        paths = [
            Path_("direct miner", direct_call(pool, urls["miner"], miner_hotkey), []),
            Path_(
                "agora gateway", openai_call(pool, urls["gateway"], gateway_key), [pids["gateway"]]
            ),
            Path_(
                "litellm proxy",
                openai_call(pool, urls["litellm"], master),
                [pids["litellm"], pids["front"]],
            ),
            Path_("thin front", openai_call(pool, urls["front"], "none"), [pids["front"]]),
        ]
        paths = [p for p in paths if p.name not in skipped]
        return await measure(paths, pids["miner"], seconds, rounds, warmup)
    finally:
        await pool.aclose()


async def _one_by_one(
    paths: list[Path_],
    results: dict[str, dict[int, Result]],
    miner_pid: int,
    seconds: float,
    warmup: float,
) -> None:
    clock = time.perf_counter
    samples: dict[str, list[float]] = {p.name: [] for p in paths}
    cpu = {p.name: [0.0, 0.0] for p in paths}
    errors = dict.fromkeys(samples, 0)
    started = clock()
    end = started + warmup + seconds * len(paths)
    i = 0
    while clock() < end:
        for path in paths:
            i += 1
            proxy_before = sum(cpu_seconds(pid) for pid in path.proxies)
            miner_before = cpu_seconds(miner_pid)
            began = clock()
            ok = await path.one(i)
            took = clock() - began
            if began - started < warmup:
                continue
            if ok:
                samples[path.name].append(took)
            else:
                errors[path.name] += 1
            cpu[path.name][0] += sum(cpu_seconds(pid) for pid in path.proxies) - proxy_before
            cpu[path.name][1] += cpu_seconds(miner_pid) - miner_before
    for path in paths:
        latencies = samples[path.name]
        cell = Cell(len(latencies), errors[path.name], sum(latencies), latencies)
        results[path.name][1].add(cell, *cpu[path.name])


# -- report -----------------------------------------------------------------------------------


def report(results: dict[str, dict[int, Result]], skipped: dict[str, str]) -> dict[str, Any]:
    direct = {c: r.cell for c, r in results["direct miner"].items()}
    print()
    header = (
        f"{'path':15s} {'clients':>7s} {'req/s':>8s} {'p50 ms':>8s} {'p99 ms':>8s} "
        f"{'+p50 ms':>8s} {'vs direct':>9s} {'proxy CPU/req':>14s}"
    )
    print(header)
    print("-" * len(header))
    for name in PATHS:
        if name in skipped:
            print(f"{name:15s} {skipped[name]}")
            continue
        for concurrency, result in results[name].items():
            cell, base = result.cell, direct[concurrency]
            added = cell.percentile(0.5) - base.percentile(0.5)
            cpu = result.to_json()["proxy_cpu_us_per_request"]
            print(
                f"{name:15s} {concurrency:7d} {cell.rps:8.1f} {cell.percentile(0.5):8.2f} "
                f"{cell.percentile(0.99):8.2f} {added:+8.2f} {cell.rps / base.rps:9.0%} "
                f"{cpu:11.0f} us"
            )
    gateway = {c: r.cell for c, r in results["agora gateway"].items()}
    added = {c: gateway[c].percentile(0.5) - direct[c].percentile(0.5) for c in CONCURRENCY}
    kept = {c: gateway[c].rps / direct[c].rps for c in CONCURRENCY}
    verdict: dict[str, Any] = {
        "gateway_added_p50_ms": {str(c): round(v, 2) for c, v in added.items()},
        "gateway_throughput_vs_direct": {str(c): round(v, 3) for c, v in kept.items()},
        "added_p50_under_2ms_at_1_client": added[1] < 2.0,
        "throughput_at_least_80pct": all(v >= 0.8 for v in kept.values()),
    }
    if "litellm proxy" in results:
        lite = {c: r.cell for c, r in results["litellm proxy"].items()}
        verdict["beats_litellm_rps"] = all(gateway[c].rps > lite[c].rps for c in CONCURRENCY)
        verdict["beats_litellm_p50"] = all(
            gateway[c].percentile(0.5) < lite[c].percentile(0.5) for c in CONCURRENCY
        )
    print()
    print(
        "agora gateway adds "
        + ", ".join(f"{added[c]:+.2f} ms at p50 with {c}" for c in CONCURRENCY)
        + " and keeps "
        + ", ".join(f"{kept[c]:.0%}" for c in CONCURRENCY)
        + " of direct throughput"
    )
    print(
        f"targets: < 2 ms added at p50 (1 client): {verdict['added_p50_under_2ms_at_1_client']}; "
        ">= 80% of direct "
        f"throughput: {verdict['throughput_at_least_80pct']}; beats LiteLLM on req/s and p50: "
        f"{verdict.get('beats_litellm_rps', skipped.get('litellm proxy'))} / "
        f"{verdict.get('beats_litellm_p50', skipped.get('litellm proxy'))}"
    )
    return verdict


# -- main ----------------------------------------------------------------------------------------


async def make_key(gateway: str, node: str) -> str:
    async with GatewayAccount(gateway, Keypair.from_name("alice"), node_url=node) as account:
        key = await account.create_key(
            100 * TOKEN, label="bench", rate_limit_rpm=1e6, burst=100_000
        )
    return str(key["key"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--seconds", type=float, default=12.0, help="measured seconds per path and concurrency"
    )
    parser.add_argument("--rounds", type=int, default=6, help="interleaved rounds per cell")
    parser.add_argument("--warmup", type=float, default=0.3, help="seconds before each slice")
    parser.add_argument(
        "--cheat",
        choices=["random"],
        help="serve random vectors instead of running MiniLM (measures the proxies alone)",
    )
    parser.add_argument(
        "--serve-front", nargs=3, metavar=("PORT", "MINER_URL", "HOTKEY"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.serve_front:
        port, miner_url, hotkey = args.serve_front
        serve_front(int(port), miner_url, hotkey)
        return
    with tempfile.TemporaryDirectory(prefix="agora-bench-gateway-") as tmp:
        run(Path(tmp), args.seconds, args.rounds, args.warmup, args.cheat)


def run(tmp: Path, seconds: float, rounds: int, warmup: float, cheat: str | None = None) -> None:
    py = sys.executable
    ports = {name: free_port() for name in ("node", "miner", "gateway", "front", "litellm")}
    urls = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
    miner_hotkey = Keypair.from_name(MINER_KEY + "/hot").address
    started = time.monotonic()
    with contextlib.ExitStack() as stack:
        node = stack.enter_context(
            process(
                [
                    py,
                    "-m",
                    "agora.chain",
                    "start",
                    "--dev",
                    "--data-dir",
                    str(tmp / "node"),
                    "--port",
                    str(ports["node"]),
                    "--block-time",
                    "0.5",
                ],
                tmp / "node.log",
            )
        )
        wait_until_ready(urls["node"] + "/v1/status", 30, node)
        netuid = asyncio.run(setup_subnet(urls["node"]))
        (tmp / "gateway.toml").write_text(
            f'[models.minilm]\nnetuid = {netuid}\ntask = "embed"\ntokenizer = "minilm"\n'
            'context_length = 256\nmodel_prefix = "embed:minilm@"\n'
        )
        gateway = stack.enter_context(
            process(
                [
                    py,
                    "-m",
                    "agora.gateway",
                    "start",
                    "--dev-key",
                    GATEWAY_KEY,
                    "--node",
                    urls["node"],
                    "--port",
                    str(ports["gateway"]),
                    "--data-dir",
                    str(tmp / "gateway"),
                    "--config",
                    str(tmp / "gateway.toml"),
                    "--log-level",
                    "warning",
                ],
                tmp / "gateway.log",
            )
        )
        wait_until_ready(urls["gateway"] + "/health", 60, gateway)
        miner = stack.enter_context(
            process(
                [
                    py,
                    "-m",
                    "agora.miner",
                    "start",
                    "--dev-key",
                    MINER_KEY,
                    "--subnet",
                    str(netuid),
                    "--model",
                    "embed:minilm",
                    "--port",
                    str(ports["miner"]),
                    "--node",
                    urls["node"],
                    "--data-dir",
                    str(tmp / "miner"),
                    "--rate-limit",
                    "1000000",
                    "--burst",
                    "1000000",
                    "--threads",
                    "1",
                    "--log-level",
                    "warning",
                    "--yes",
                    *(["--cheat", cheat] if cheat else []),
                ],
                tmp / "miner.log",
            )
        )
        wait_until_ready(urls["miner"] + "/health", 120, miner)
        front = stack.enter_context(
            process(
                [
                    py,
                    "-m",
                    "bench.bench_gateway",
                    "--serve-front",
                    str(ports["front"]),
                    urls["miner"],
                    miner_hotkey,
                ],
                tmp / "front.log",
            )
        )
        gateway_key = asyncio.run(make_key(urls["gateway"], urls["node"]))
        skipped: dict[str, str] = {}
        lite_python = litellm_python()
        lite: subprocess.Popen[bytes] | None = None
        master = "sk-" + secrets.token_hex(24)
        if lite_python is None:
            skipped["litellm proxy"] = (
                "LiteLLM is not installed (python -m venv .venv-litellm && "
                '.venv-litellm/bin/pip install "litellm[proxy]")'
            )
        else:
            (tmp / "litellm.yaml").write_text(
                "model_list:\n  - model_name: minilm\n    litellm_params:\n"
                f"      model: openai/minilm\n      api_base: {urls['front']}/v1\n"
                "      api_key: none\nlitellm_settings:\n  telemetry: false\n"
            )
            lite = stack.enter_context(
                process(
                    [
                        str(Path(lite_python).parent / "litellm"),
                        "--config",
                        str(tmp / "litellm.yaml"),
                        "--host",
                        "127.0.0.1",
                        "--port",
                        str(ports["litellm"]),
                    ],
                    tmp / "litellm.log",
                    env={"LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_MASTER_KEY": master},
                )
            )
            try:
                wait_until_ready(urls["litellm"] + "/health/liveliness", 180, lite)
            except RuntimeError as error:
                skipped["litellm proxy"] = f"LiteLLM did not start: {error}"
        wait_until_ready(urls["front"] + "/health", 30, front)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # until the gateway sees the miner healthy
            if httpx.get(urls["gateway"] + "/health").json()["healthy_miners"].get("minilm"):
                break
            time.sleep(0.2)
        print(
            f"set up in {time.monotonic() - started:.0f} s; measuring {seconds:g} s per path "
            f"and concurrency, in {rounds} interleaved rounds"
        )
        results = _run_loop(
            measure_all(
                urls,
                miner_hotkey,
                gateway_key,
                master,
                skipped,
                {
                    "miner": miner.pid,
                    "gateway": gateway.pid,
                    "front": front.pid,
                    "litellm": lite.pid if lite else 0,
                },
                seconds,
                rounds,
                warmup,
            )
        )
        verdict = report(results, skipped)
    out = OUT.with_name("bench_gateway_cheat.json") if cheat else OUT
    out.parent.mkdir(parents=True, exist_ok=True)
    load = os.getloadavg()
    out.write_text(
        json.dumps(
            {
                "machine": {
                    "cpus": os.cpu_count(),
                    "python": platform.python_version(),
                    "load_average": os.getloadavg(),
                },
                "seconds_per_cell": seconds,
                "miner": "embed:minilm" + (f" --cheat {cheat}" if cheat else "") + " --threads 1",
                "rounds": rounds,
                "results": {
                    name: {str(c): r.to_json() for c, r in cells.items()}
                    for name, cells in results.items()
                },
                "skipped": skipped,
                "verdict": verdict,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"load average {load[0]:.1f}; wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
