"""Inference backends: load times, throughput, and what dynamic batching buys.

What is timed (wall clock, one process, torch's default threads = all cores; ``--threads N``
changes that). The load average at the start is recorded: on a 2-core machine where another
process keeps a core busy, torch's 2 threads wait on each other and every figure drops several
fold, so compare runs on an idle machine.

- ``model_hash`` of the bundled all-MiniLM-L6-v2 folder (MB/s);
- embeddings (``embed:minilm``): load, one short text, 1,000 short sentences in one call, and
  256 concurrent one-text requests answered one by one versus through `BatchedEngine`;
- the tiny generator (``generate:tiny``): build, load, 128 greedy tokens, 8 prompts of 64
  tokens one after the other versus in one batch, and 16 concurrent requests through
  `BatchedEngine`;
- with ``--gguf``: the same tiny model on llama.cpp (needs llama-cpp-python and gguf);
- with ``--ray``: deploying ``generate:tiny`` as 2 Ray Serve replicas on a local Ray instance,
  and 16 concurrent requests through it.

Run:

    python -m bench.bench_models                 # embeddings and the tiny generator
    python -m bench.bench_models --gguf --ray    # plus llama.cpp and Ray Serve

Results go to stdout and ``bench/out/bench_models.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from agora.models.base import Engine, GenerateRequest
from agora.models.batcher import BatchedEngine
from agora.models.embeddings import default_model_path
from agora.models.naming import model_files, model_hash
from agora.models.registry import load_engine
from agora.models.tiny import ensure_tiny_gguf, ensure_tiny_model

OUT = Path(__file__).resolve().parent / "out" / "bench_models.json"
SENTENCES = [f"Sentence number {i} is about topic {i % 17} and nothing else." for i in range(1000)]
PROMPTS = [f"Prompt {i}: the network pays miners for honest work" for i in range(16)]


def timed(seconds: float) -> float:
    return round(seconds, 4)


async def bench_hash() -> dict[str, Any]:
    path = default_model_path()
    size = sum(full.stat().st_size for _, full in model_files(path))
    start = time.perf_counter()
    model_hash(path)
    elapsed = time.perf_counter() - start
    return {"bytes": size, "seconds": timed(elapsed), "mb_per_s": round(size / elapsed / 1e6, 1)}


async def bench_embeddings(data_dir: Path) -> dict[str, Any]:
    start = time.perf_counter()
    engine = await load_engine("embed:minilm", data_dir)
    load = time.perf_counter() - start
    await engine.embed(SENTENCES[:64])  # warm up

    singles = []
    for text in SENTENCES[:20]:
        t0 = time.perf_counter()
        await engine.embed([text])
        singles.append(time.perf_counter() - t0)

    t0 = time.perf_counter()
    await engine.embed(SENTENCES)
    bulk = time.perf_counter() - t0

    requests = SENTENCES[:256]
    t0 = time.perf_counter()
    await asyncio.gather(*(engine.embed([t]) for t in requests))
    unbatched = time.perf_counter() - t0

    batched = BatchedEngine(engine, max_embed_texts=64, max_wait_ms=5)
    t0 = time.perf_counter()
    await asyncio.gather(*(batched.embed([t]) for t in requests))
    with_batcher = time.perf_counter() - t0
    sizes = batched.embed_batcher.batch_sizes
    await batched.close()
    return {
        "load_seconds": timed(load),
        "one_text_median_ms": round(statistics.median(singles) * 1000, 2),
        "bulk_1000_sentences_per_s": round(len(SENTENCES) / bulk),
        "concurrent_256_unbatched_per_s": round(len(requests) / unbatched),
        "concurrent_256_batched_per_s": round(len(requests) / with_batcher),
        "batched_mean_batch_size": round(statistics.mean(sizes), 1),
    }


async def bench_generator(engine: Engine, prefix: str) -> dict[str, Any]:
    await engine.generate("warm up", 8)
    t0 = time.perf_counter()
    result = await engine.generate(PROMPTS[0], 128)
    greedy = time.perf_counter() - t0

    eight = [GenerateRequest(p, 64) for p in PROMPTS[:8]]
    t0 = time.perf_counter()
    for r in eight:
        await engine.generate_batch([r])
    sequential = time.perf_counter() - t0
    t0 = time.perf_counter()
    await engine.generate_batch(eight)
    together = time.perf_counter() - t0
    return {
        f"{prefix}greedy_tokens_per_s": round(result.completion_tokens / greedy),
        f"{prefix}8x64_sequential_tokens_per_s": round(8 * 64 / sequential),
        f"{prefix}8x64_one_batch_tokens_per_s": round(8 * 64 / together),
    }


async def bench_tiny(data_dir: Path) -> dict[str, Any]:
    t0 = time.perf_counter()
    ensure_tiny_model(data_dir / "fresh")
    build = time.perf_counter() - t0
    t0 = time.perf_counter()
    engine = await load_engine("generate:tiny", data_dir)
    load = time.perf_counter() - t0
    out: dict[str, Any] = {"build_seconds": timed(build), "load_seconds": timed(load)}
    out.update(await bench_generator(engine, ""))

    requests = [GenerateRequest(p, 32) for p in PROMPTS]
    t0 = time.perf_counter()
    await asyncio.gather(*(engine.generate_batch([r]) for r in requests))
    unbatched = time.perf_counter() - t0
    batched = BatchedEngine(engine, max_batch_size=16, max_wait_ms=5)
    t0 = time.perf_counter()
    await asyncio.gather(*(batched.generate(r.prompt, r.max_tokens) for r in requests))
    with_batcher = time.perf_counter() - t0
    out["concurrent_16x32_unbatched_tokens_per_s"] = round(16 * 32 / unbatched)
    out["concurrent_16x32_batched_tokens_per_s"] = round(16 * 32 / with_batcher)
    await batched.close()
    return out


async def bench_gguf(data_dir: Path) -> dict[str, Any]:
    path = ensure_tiny_gguf(data_dir)
    t0 = time.perf_counter()
    engine = await load_engine(f"gguf:{path}", data_dir)
    out: dict[str, Any] = {"load_seconds": timed(time.perf_counter() - t0)}
    out.update(await bench_generator(engine, ""))
    await engine.close()
    return out


async def bench_ray(data_dir: Path) -> dict[str, Any]:
    from agora.models.ray_serve import connect

    t0 = time.perf_counter()
    await asyncio.to_thread(connect, "local", num_cpus=os.cpu_count() or 2)
    init = time.perf_counter() - t0
    t0 = time.perf_counter()
    engine = await load_engine("generate:tiny;cpus=0.5", data_dir, ray="local", replicas=2)
    deploy = time.perf_counter() - t0
    await engine.generate("warm up", 4)
    t0 = time.perf_counter()
    await asyncio.gather(*(engine.generate(p, 32) for p in PROMPTS))
    concurrent = time.perf_counter() - t0
    await engine.close()
    return {
        "ray_init_seconds": timed(init),
        "deploy_2_replicas_seconds": timed(deploy),
        "concurrent_16x32_tokens_per_s": round(16 * 32 / concurrent),
    }


async def main(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    results: dict[str, Any] = {
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(),
            "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        }
    }
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp)
        results["model_hash"] = await bench_hash()
        results["embeddings"] = await bench_embeddings(data_dir)
        results["tiny"] = await bench_tiny(data_dir)
        if args.gguf:
            results["tiny_gguf"] = await bench_gguf(data_dir)
        if args.ray:
            results["ray_serve"] = await bench_ray(data_dir)
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--gguf", action="store_true", help="also llama.cpp (tiny GGUF)")
    parser.add_argument("--ray", action="store_true", help="also Ray Serve (2 replicas)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default: all)")
    results = asyncio.run(main(parser.parse_args()))
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(results, indent=2) + "\n")
    json.dump(results, sys.stdout, indent=2)
    print()
