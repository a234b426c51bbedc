"""TOPLOC activation proofs against honest miners and adversarial models (``make bench-verify``).

For two models built from seeds (``tiny``: 2 layers, hidden 64; ``tiny-wide``: 4 layers,
hidden 256), a validator holding the float32 reference checks:

- honest answers made under every honest variation we know of: batch sizes 1, 4 and 8, torch
  on 1 and 2 threads, KV-cache decoding and full recomputation without a cache, and the whole
  model in bfloat16 (false positives: the target is zero);
- answers from adversaries that claim the reference model: a smaller model (1 layer of the
  same family), a different model (another seed), weights with 1% and 5% relative noise,
  weight-only int8 (per-row scales) and int4 (groups of 32) quantisation, the answer to a
  prompt with one word changed (same token count, so only the activations can tell), and an
  output cut short without an end-of-sequence token.

Verification cost is the validator's CPU time (one prefill plus the comparison) over the
miner's CPU time to generate the same answers (batch 1, one thread). The validator verifies as it
does when it audits a round: `verify_generations` over the round's answers, one padded forward
pass per 8 answers of similar length (`VERIFY_BATCH`); the note also gives the cost per answer
length bucket and the cost of verifying one answer per call. Proof capture overhead compares
generation with and without building proofs. Run alone: ``python -m bench.verify_toploc [--quick]``.
"""

from __future__ import annotations

import asyncio
import base64
import json
import random
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agora.verify.activations import prefill_hidden
from agora.verify.toploc import build_proof
from bench.verify_common import VerifyRow

WORDS = {
    3: ["the", "and", "for", "cat", "dog", "sun", "map", "key"],
    5: ["miner", "chain", "block", "proof", "model", "layer", "state", "token"],
    7: ["network", "hashing", "balance", "request", "compute", "message", "storage"],
}
ADVERSARIES = ["smaller-model", "wrong-model", "perturb-1", "perturb-5", "int8", "int4"]


#: Per row, the distribution of the verdict statistics (written to bench/out/verify_toploc.json;
#: docs/verification.md quotes them to justify the thresholds).
CALIBRATION: dict[str, dict[str, list[float]]] = {}
STAT_KEYS = (
    "index_mismatches",
    "exp_mismatches",
    "position_mismatches",
    "mant_err_mean",
    "mant_err_trimmed",
)
#: Answers per padded forward pass when the validator verifies (one audit round's batch).
VERIFY_BATCH = 8
#: Answer length buckets for the cost figures (tokens): [lo, hi).
BUCKETS = ((1, 32), (32, 96), (96, 10**9))


def summarize(stats: list[dict[str, Any]]) -> dict[str, list[float]]:
    """Min, 1st percentile, median, 99th percentile and max of each statistic."""
    import numpy as np

    out = {}
    for key in STAT_KEYS:
        values = np.array([s[key] for s in stats if key in s], dtype=np.float64)
        values = values[np.isfinite(values)]
        if values.size:
            out[key] = [round(float(v), 3) for v in np.percentile(values, [0, 1, 50, 99, 100])]
    return out


@dataclass
class Answer:
    prompt: str
    token_ids: list[int]
    proof: str | None
    max_tokens: int
    seconds: float = 0.0


def make_prompt(rng: random.Random) -> list[str]:
    """Words of a probe prompt (3 to 24 of them, so prefill chunks of varied size)."""
    return [rng.choice(WORDS[rng.choice([3, 5, 7])]) for _ in range(rng.randint(3, 24))]


#: Where `changed_prompt` swaps a word: the first, the middle or the last word of the prompt.
WHERE = ("start", "middle", "end")


def changed_prompt(words: list[str], rng: random.Random, where: str | None = None) -> str:
    """The prompt with one word swapped for another of the same length (same token count
    under a byte-level tokenizer): at ``where`` (one of `WHERE`), or a random word."""
    if where is None:
        i = rng.randrange(len(words))
    else:
        i = {"start": 0, "middle": len(words) // 2, "end": len(words) - 1}[where]
    options = [w for w in WORDS[len(words[i])] if w != words[i]]
    return " ".join([*words[:i], rng.choice(options), *words[i + 1 :]])


def _requests(count: int, seed: int) -> list[tuple[list[str], int, float, int]]:
    rng = random.Random(seed)
    out = []
    for i in range(count):
        temperature = 0.0 if i % 3 == 0 else 0.8
        out.append((make_prompt(rng), rng.choice([24, 48, 64, 96]), temperature, seed + i))
    return out


async def _generate(
    engine: Any, requests: list[tuple[list[str], int, float, int]], batch: int, threads: int
) -> list[Answer]:
    import torch

    from agora.models.base import GenerateRequest

    answers = []
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        for start in range(0, len(requests), batch):
            group = requests[start : start + batch]
            batch_requests = [GenerateRequest(" ".join(w), m, t, s) for w, m, t, s in group]
            began = time.process_time()
            results = await engine.generate_batch(batch_requests)
            spent = (time.process_time() - began) / len(group)
            for (words, max_tokens, _, _), result in zip(group, results, strict=True):
                answers.append(
                    Answer(" ".join(words), result.token_ids, result.proof, max_tokens, spent)
                )
    finally:
        torch.set_num_threads(previous)
    return answers


def _no_cache(engine: Any, requests: list[tuple[list[str], int, float, int]]) -> list[Answer]:
    from agora.verify.activations import generate_without_cache

    answers = []
    for words, max_tokens, _, _ in requests:
        prompt = " ".join(words)
        tokens, proof = generate_without_cache(
            engine.torch_model, engine.encode_prompt(prompt), max_tokens, engine.eos_token_ids
        )
        answers.append(Answer(prompt, tokens, proof, max_tokens))
    return answers


@dataclass
class Tally:
    audited: int = 0
    detected: int = 0
    verify_seconds: float = 0.0
    generate_seconds: float = 0.0
    proof_bytes: int = 0
    tokens: int = 0
    example: str = ""
    stats: list[dict[str, Any]] = field(default_factory=list)
    #: Per answer: did the verdict fail (in the order added), for per-group detection counts.
    flagged: list[bool] = field(default_factory=list)

    def add(self, reference: Any, answer: Answer, prompt: str | None = None) -> None:
        """Verify one answer (see `add_all`)."""
        self.add_all(reference, [answer], None if prompt is None else [prompt])

    def add_all(
        self,
        reference: Any,
        answers: list[Answer],
        prompts: list[str] | None = None,
        batch_size: int = VERIFY_BATCH,
    ) -> None:
        """Verify answers as a validator's audit round does: `verify_generations`, one padded
        forward pass per ``batch_size`` answers (``prompts``: what the validator believes each
        answer's prompt was, if not the answer's own)."""
        from agora.verify.check import GenerationItem, verify_generations

        items = [
            GenerationItem(
                prompts[i] if prompts is not None else a.prompt,
                a.token_ids,
                a.proof,
                a.max_tokens,
            )
            for i, a in enumerate(answers)
        ]
        began = time.process_time()
        verdicts = verify_generations(reference, items, batch_size=batch_size)
        self.verify_seconds += time.process_time() - began
        for answer, verdict in zip(answers, verdicts, strict=True):
            self.generate_seconds += answer.seconds
            self.audited += 1
            self.tokens += len(answer.token_ids)
            self.stats.append(verdict.stats)
            self.flagged.append(not verdict.ok)
            self.proof_bytes += len(base64.b64decode(answer.proof)) if answer.proof else 0
            if not verdict.ok:
                self.detected += 1
                self.example = self.example or verdict.reason

    def row(self, adversary: str, note: str, cost: bool = False) -> VerifyRow:
        CALIBRATION[adversary] = summarize(self.stats)
        return VerifyRow(
            layer="toploc",
            adversary=adversary,
            audited=self.audited,
            detected=self.detected,
            verify_cost=(self.verify_seconds / self.generate_seconds)
            if cost and self.generate_seconds
            else None,
            proof_bytes_per_token=self.proof_bytes / self.tokens if self.tokens else None,
            note="; ".join(x for x in (note, self.example and f"e.g. {self.example}") if x),
        )


def _cost_note(reference: Any, answers: list[Answer]) -> str:
    """The verification cost by answer length bucket (each bucket verified as its own round in
    batches of `VERIFY_BATCH`) and, for comparison, verifying one answer per call."""
    parts = [f"verified in batches of {VERIFY_BATCH}"]
    for lo, hi in BUCKETS:
        group = [a for a in answers if lo <= len(a.token_ids) < hi]
        if not group:
            continue
        tally = Tally()
        tally.add_all(reference, group)
        label = f"{lo}-{hi - 1}" if hi < 10**9 else f">={lo}"
        parts.append(
            f"{label} tokens: {tally.verify_seconds / tally.generate_seconds:.3f} (n={len(group)})"
        )
    single = Tally()
    single.add_all(reference, answers, batch_size=1)
    parts.append(f"one answer per call: {single.verify_seconds / single.generate_seconds:.3f}")
    mean = sum(len(a.token_ids) for a in answers) / len(answers)
    parts.append(f"mean answer {mean:.0f} tokens")
    return ", ".join(parts)


async def _capture_overhead(
    engine: Any, requests: list[tuple[list[str], int, float, int]]
) -> float:
    """Generation CPU time with proofs over without, minus one: the median of 9 paired runs
    (each pair back to back, so that the load of a shared machine cancels out)."""
    import statistics

    ratios = []
    for _ in range(9):
        seconds = {}
        for build in (False, True):
            engine.build_proofs = build
            answers = await _generate(engine, requests, 1, 1)
            seconds[build] = sum(a.seconds for a in answers)
        ratios.append(seconds[True] / seconds[False])
    engine.build_proofs = True
    return statistics.median(ratios) - 1.0


async def _model_rows(
    variant: str, data_dir: Path, quick: bool, log: Callable[[str], None]
) -> list[VerifyRow]:
    import torch

    from agora.models.causal_lm import CausalLMEngine
    from agora.models.tiny import ensure_tiny_model
    from agora.verify.tamper import load_tampered_engine

    torch.set_num_threads(1)
    reference = await CausalLMEngine.load(ensure_tiny_model(data_dir, variant))
    wide = variant != "tiny"
    per_config = 4 if quick else (24 if wide else 72)
    adversary_n = 4 if quick else (25 if wide else 50)
    rows: list[VerifyRow] = []

    honest = Tally()
    configs = [(b, t) for b in (1, 4, 8) for t in (1, 2)]
    for n, (batch, threads) in enumerate(configs):
        requests = _requests(per_config, seed=1000 * n + 1)
        honest.add_all(reference, await _generate(reference, requests, batch, threads))
    honest.add_all(reference, _no_cache(reference, _requests(per_config, seed=77)))
    cost_answers = await _generate(reference, _requests(per_config, seed=99), 1, 1)
    cost_tally = Tally()
    cost_tally.add_all(reference, cost_answers)
    honest.audited += cost_tally.audited
    honest.detected += cost_tally.detected
    CALIBRATION[f"honest fp32 ({variant})"] = summarize(honest.stats + cost_tally.stats)
    cost_note = _cost_note(reference, cost_answers)
    overhead = await _capture_overhead(reference, _requests(4 if quick else 8, seed=5))
    log(f"{variant}: honest fp32 done ({honest.audited} answers)")
    rows.append(
        VerifyRow(
            layer="toploc",
            adversary=f"honest fp32 ({variant})",
            audited=honest.audited,
            detected=honest.detected,
            verify_cost=cost_tally.verify_seconds / cost_tally.generate_seconds,
            proof_bytes_per_token=cost_tally.proof_bytes / cost_tally.tokens,
            note=(
                f"batch 1/4/8 x threads 1/2, KV cache and no cache; proof capture adds "
                f"{overhead:+.1%} to generation; {cost_note}"
                + (f"; e.g. {honest.example}" if honest.example else "")
            ),
        )
    )

    bf16 = await load_tampered_engine(f"generate:{variant}", "bf16", data_dir)
    tally = Tally()
    for batch, threads in ((1, 1), (4, 1), (8, 2)):
        tally.add_all(
            reference,
            await _generate(bf16, _requests(per_config, seed=batch * 31 + threads), batch, threads),
        )
    await bf16.close()
    rows.append(tally.row(f"honest bf16 ({variant})", "whole model in bfloat16, batch 1/4/8"))
    log(f"{variant}: honest bf16 done")

    for mode in ADVERSARIES:
        engine = await load_tampered_engine(f"generate:{variant}", mode, data_dir)
        tally = Tally()
        tally.add_all(
            reference,
            await _generate(
                engine, _requests(adversary_n, seed=2000 + 97 * ADVERSARIES.index(mode)), 1, 1
            ),
        )
        await engine.close()
        label = mode.replace("perturb-1", "perturb-1%").replace("perturb-5", "perturb-5%")
        rows.append(tally.row(f"{label} ({variant})", ""))
        log(f"{variant}: {mode} done")

    rng = random.Random(11)
    tally = Tally()
    changed_n = 4 if quick else 34  # per place: start, middle and end of the prompt
    by_place = []
    for n, where in enumerate(WHERE):
        requests = _requests(changed_n, seed=4242 + n)
        changed = [(changed_prompt(w, rng, where).split(" "), m, t, s) for w, m, t, s in requests]
        before = tally.detected
        tally.add_all(
            reference,
            await _generate(reference, changed, 1, 1),
            [" ".join(words) for words, *_ in requests],
        )
        by_place.append(f"{where} {tally.detected - before}/{changed_n}")
    rows.append(
        tally.row(
            f"changed prompt ({variant})",
            f"one word swapped, same token count; caught by place: {', '.join(by_place)}",
        )
    )

    tally = Tally()
    others = _requests(adversary_n, seed=909)
    tally.add_all(
        reference,
        await _generate(reference, others, 1, 1),
        [" ".join(words) for words, *_ in _requests(adversary_n, seed=808)],
    )
    rows.append(tally.row(f"cached answer ({variant})", "the answer to another prompt"))

    tally = Tally()
    for answer in await _generate(reference, _requests(adversary_n, seed=555), 1, 1):
        if len(answer.token_ids) < 2:
            continue  # an answer of one token has nothing to cut
        # the cheat stops at half the tokens and proves honestly what it did compute
        tokens = answer.token_ids[: max(1, len(answer.token_ids) // 2)]
        prompt_ids = reference.encode_prompt(answer.prompt)
        hidden = prefill_hidden(reference.torch_model, prompt_ids + tokens)
        proof = base64.b64encode(build_proof(hidden, len(prompt_ids), len(tokens))).decode()
        tally.add(reference, Answer(answer.prompt, tokens, proof, answer.max_tokens))
    rows.append(
        tally.row(f"truncated ({variant})", "half the tokens, honest proof of them, no EOS")
    )
    await reference.close()
    return rows


def rows(quick: bool) -> list[VerifyRow]:
    """Every row of this layer, for ``bench/bench_verify.py``."""

    def log(message: str) -> None:
        print(f"  [toploc] {message}", file=sys.stderr, flush=True)

    async def run() -> list[VerifyRow]:
        with tempfile.TemporaryDirectory(prefix="agora-toploc-") as tmp:
            out: list[VerifyRow] = []
            for variant in ("tiny", "tiny-wide"):
                out += await _model_rows(variant, Path(tmp), quick, log)
        if not quick:
            target = Path(__file__).parent / "out" / "verify_toploc.json"
            target.write_text(json.dumps(CALIBRATION, indent=1) + "\n")
            log(f"statistics per row (min, p1, median, p99, max) written to {target}")
        return out

    return asyncio.run(run())


if __name__ == "__main__":
    for row in rows("--quick" in sys.argv):
        print(row)
