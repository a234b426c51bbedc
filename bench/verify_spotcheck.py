"""Spot checks of organic answers against every adversary (``make bench-verify``).

Each adversary of ``agora.miner.adversary`` answers through the miner's real core (real model,
real receipts signed by a real key) exactly what the gateway would archive, and the validator's
checks judge it:

- ``probe``: the answer the adversary gives a *validator* (what probing sees), judged by the
  same re-check as an audit. ``organic-only`` is honest here by construction.
- ``reference``: the answer it gives an *organic* caller (the gateway), re-checked per audited
  answer by :func:`agora.validator.recheck.recheck` (tokens under greedy decoding, the TOPLOC
  proof when the miner ships one, truncation, embeddings by cosine). ``detected`` counts proven
  mismatches (``guilty``), the only findings that open a dispute.
- ``spot-check``: over ``N`` organic answers at the audit rate ``p`` the network runs with (the
  ledger's default ``audit_rate_ppm``), the share of trials in which at least one of them is
  drawn by :func:`agora.protocol.audit.is_audited` (with fresh block hashes) *and* proven: the
  probability that a miner cheating on ``N`` answers is caught. With per-answer detection ``d``
  this is ``1 - (1 - p d)^N``, printed in the note.

Honest rows count false positives: the honest model's answers, greedy and sampled, streamed or
not, under concurrent load (the miner batches them, so batch sizes vary) and with torch on 1 and
2 threads. ``verify_cost`` (honest rows) is the re-check's CPU time over the miner's for the same
answers: a re-check re-runs the model (and checks the TOPLOC proof), so it costs about one
generation; that is why only a fraction ``p`` of answers is audited.

Run alone: ``python -m bench.verify_spotcheck [--quick]``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from agora.crypto.keys import Keypair
from agora.gateway.forward import generate_body
from agora.miner.adversary import load_cheat_engine
from agora.miner.core import MinerCore
from agora.miner.schema import EmbedRequest, GenerateBody
from agora.models import BatchedEngine, Engine, load_engine
from agora.models.base import torch_threads
from agora.net.receipts import split_stream
from agora.net.signing import now_ms, sign_request, verify_request
from agora.protocol.audit import is_audited
from agora.protocol.params import Hyperparams
from agora.protocol.receipts import receipt_hash
from agora.validator.recheck import Finding, recheck
from bench.verify_common import VerifyRow

MINER = Keypair.from_name("bench/spotcheck/miner")
GATEWAY = Keypair.from_name("bench/spotcheck/gateway")
VALIDATOR = Keypair.from_name("bench/spotcheck/validator")
GENERATION_ADVERSARIES = (
    "random",
    "wrong-model",
    "smaller-model",
    "perturb-1",
    "perturb-5",
    "int8",
    "int4",
    "lazy",
    "cached",
    "truncate",
    "copy",
    "organic-only",
)
EMBEDDING_ADVERSARIES = ("random", "wrong-model", "lazy", "cached", "truncate", "copy")
NETWORK_RATE_PPM = Hyperparams().audit_rate_ppm
MAX_TOKENS = 16


def prompts(count: int, seed: int) -> list[str]:
    """Prompts that do not repeat (a cache is tested on near-duplicates, as customers send)."""
    topics = ["harbour", "compiler", "glacier", "violin", "ledger", "bakery", "satellite", "river"]
    return [
        f"Question {seed}-{i}: tell me about the {topics[i % len(topics)]} near gate {i * 7 % 31}"
        for i in range(count)
    ]


@dataclass
class Served:
    receipt: dict[str, object]
    request: bytes
    response: bytes


def _signed(caller: Keypair, path: str, body: bytes):  # type: ignore[no-untyped-def]
    headers = sign_request(caller, MINER.address, "POST", path, body)
    return verify_request(
        list(headers.items()), "POST", path, body, me=MINER.address, now_ms=now_ms()
    )


async def serve_generation(
    core: MinerCore,
    caller: Keypair,
    prompt: str,
    *,
    stream: bool = False,
    temperature: float = 0.0,
    seed: int | None = None,
) -> Served:
    body = generate_body(prompt, MAX_TOKENS, temperature, seed, stream)
    signed = _signed(caller, "/v1/generate", body)
    request = GenerateBody.model_validate_json(body)
    if stream:
        data = b"".join([chunk async for chunk in await core.stream(signed, request)])
        content, receipt = split_stream(data)
        return Served(receipt.to_json(), body, content)
    answer = await core.generate(signed, request)
    cut = answer.body.rfind(b',"agora_receipt":')
    return Served(answer.receipt.to_json(), body, answer.body[:cut] + b"}")


async def serve_embedding(core: MinerCore, caller: Keypair, texts: list[str]) -> Served:
    body = json.dumps({"texts": texts}).encode()
    answer = await core.embed(_signed(caller, "/v1/embed", body), EmbedRequest(texts=texts))
    cut = answer.body.rfind(b',"agora_receipt":')
    return Served(answer.receipt.to_json(), body, answer.body[:cut] + b"}")


async def judge(reference: Engine, answers: list[Served]) -> tuple[list[Finding], float]:
    started = time.process_time()
    findings = [await recheck(reference, a.receipt, a.request, a.response) for a in answers]
    return findings, time.process_time() - started


def spot_check_trials(
    answers: list[Served], findings: list[Finding], n: int, trials: int, rate_ppm: int
) -> int:
    """Trials (fresh block hashes) in which at least one of ``n`` answers is drawn and proven.
    Answers are reused cyclically when fewer than ``n`` were made (their findings are real)."""
    names = [receipt_hash(a.receipt) for a in answers]
    caught = 0
    for trial in range(trials):
        for i in range(n):
            block = hashlib.sha256(f"bench/spotcheck/{trial}/{i}".encode()).hexdigest()
            k = i % len(answers)
            if findings[k].guilty and is_audited(block, names[k], rate_ppm):
                caught += 1
                break
    return caught


def _rows_for(
    name: str,
    task: str,
    probe: list[Finding],
    organic: list[Finding],
    answers: list[Served],
    n: int,
    trials: int,
) -> list[VerifyRow]:
    d = sum(1 for f in organic if f.guilty) / len(organic)
    p = NETWORK_RATE_PPM / 1e6
    label = f"{name} ({task})"
    unsure = sum(1 for f in organic if f.guilty is None)
    return [
        VerifyRow("probe", label, len(probe), sum(1 for f in probe if f.guilty)),
        VerifyRow(
            "reference",
            label,
            len(organic),
            sum(1 for f in organic if f.guilty),
            note=f"{unsure} inconclusive" if unsure else "",
        ),
        VerifyRow(
            "spot-check",
            label,
            trials,
            spot_check_trials(answers, organic, n, trials, NETWORK_RATE_PPM),
            note=f"p={p:.2%}, {n} answers per trial; 1-(1-pd)^N = {1 - (1 - p * d) ** n:.3f}",
        ),
    ]


async def _generation_rows(data_dir: Path, quick: bool) -> list[VerifyRow]:
    count = 12 if quick else 60
    n, trials = (200, 100) if quick else (500, 400)
    reference = await load_engine("generate:tiny", data_dir)
    rows: list[VerifyRow] = []
    try:
        # honest: sequential and concurrent (batched), greedy and sampled, streamed or not,
        # torch on 1 and 2 threads
        honest = await load_engine("generate:tiny", data_dir)
        batched = BatchedEngine(honest)
        core = MinerCore(batched, MINER, 2, 1000)
        answers: list[Served] = []
        generated = time.process_time()
        for threads in (1, 2):
            with torch_threads(threads):
                batch = prompts(count, threads)
                answers += await asyncio.gather(
                    *(
                        serve_generation(core, GATEWAY, p, stream=i % 2 == 1)
                        for i, p in enumerate(batch)
                    )
                )
                answers += [
                    await serve_generation(core, GATEWAY, p, temperature=0.8, seed=i)
                    for i, p in enumerate(batch[: count // 2])
                ]
        generated = time.process_time() - generated
        findings, spent = await judge(reference, answers)
        rows.append(
            VerifyRow(
                "reference",
                "honest (generation)",
                len(findings),
                sum(1 for f in findings if f.guilty),
                verify_cost=spent / generated if generated else None,
                note=f"{sum(1 for f in findings if f.guilty is None)} inconclusive; "
                "batched, 1/2 threads, greedy+sampled, streamed+not",
            )
        )
        await batched.embed_batcher.aclose()
        await batched.generate_batcher.aclose()
        await honest.close()
        for mode in GENERATION_ADVERSARIES:
            rows += await _adversary_rows(
                mode, "generate:tiny", "generation", reference, data_dir, count, n, trials
            )
    finally:
        await reference.close()
    return rows


async def _adversary_rows(
    mode: str,
    spec: str,
    task: str,
    reference: Engine,
    data_dir: Path,
    count: int,
    n: int,
    trials: int,
) -> list[VerifyRow]:
    honest = await load_engine(spec, data_dir)
    cheat = await load_cheat_engine(mode, spec, data_dir)
    organic_only = mode == "organic-only"

    async def is_validator(hotkey: str) -> bool:
        return hotkey == VALIDATOR.address

    core = MinerCore(
        honest if organic_only else cheat,
        MINER,
        2,
        1000,
        organic_engine=cheat if organic_only else None,
        is_validator=is_validator if organic_only else None,
    )
    try:
        texts = prompts(count, 100)
        if task == "generation":
            organic = [
                await serve_generation(core, GATEWAY, t, stream=i % 2 == 1)
                for i, t in enumerate(texts)
            ]
            probes = [await serve_generation(core, VALIDATOR, t) for t in prompts(count // 2, 200)]
        else:
            organic = [await serve_embedding(core, GATEWAY, [t]) for t in texts]
            probes = [await serve_embedding(core, VALIDATOR, [t]) for t in prompts(count // 2, 200)]
        probe_findings, _ = await judge(reference, probes)
        findings, _ = await judge(reference, organic)
        return _rows_for(mode, task, probe_findings, findings, organic, n, trials)
    finally:
        await cheat.close()
        if cheat is not honest:
            await honest.close()


async def _embedding_rows(data_dir: Path, quick: bool) -> list[VerifyRow]:
    count = 12 if quick else 60
    n, trials = (200, 100) if quick else (500, 400)
    reference = await load_engine("embed:minilm", data_dir)
    rows: list[VerifyRow] = []
    try:
        honest = await load_engine("embed:minilm", data_dir)
        core = MinerCore(BatchedEngine(honest), MINER, 1, 1000)
        texts = prompts(count * 2, 7)
        answers = list(await asyncio.gather(*(serve_embedding(core, GATEWAY, [t]) for t in texts)))
        findings, _ = await judge(reference, answers)
        rows.append(
            VerifyRow(
                "reference",
                "honest (embedding)",
                len(findings),
                sum(1 for f in findings if f.guilty),
                note="batched concurrently",
            )
        )
        for mode in EMBEDDING_ADVERSARIES:
            rows += await _adversary_rows(
                mode, "embed:minilm", "embedding", reference, data_dir, count, n, trials
            )
    finally:
        await reference.close()
    return rows


def rows(quick: bool) -> list[VerifyRow]:
    """The table's rows (see the module docstring)."""
    with tempfile.TemporaryDirectory(prefix="agora-spotcheck-") as tmp:
        data_dir = Path(tmp)

        async def run() -> list[VerifyRow]:
            return await _generation_rows(data_dir, quick) + await _embedding_rows(data_dir, quick)

        with torch_threads(1):
            return asyncio.run(run())


def main() -> None:
    quick = "--quick" in sys.argv
    print(
        f"spot checks at the network's audit rate p = {NETWORK_RATE_PPM / 1e6:.2%}; "
        "reference: >= 0.99 per audited answer above int8, 0 honest false positives"
    )
    print(f"{'layer':<11} {'adversary':<28} {'n':>5} {'caught':>6} {'rate':>7} {'cost':>6}  note")
    for row in rows(quick):
        cost = f"{row.verify_cost:.2f}" if row.verify_cost is not None else "-"
        print(
            f"{row.layer:<11} {row.adversary:<28} {row.audited:>5} {row.detected:>6} "
            f"{row.rate:>7.3f} {cost:>6}  {row.note}"
        )


if __name__ == "__main__":
    main()
