"""TOPLOC activation proofs: the encoding, honest miners passing, cheaters and forged proofs
failing with a reason, and the proof travelling in a miner's signed HTTP answer.

Models are the seeded tiny Llama (agora.models.tiny); cheaters come from agora.verify.tamper.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from agora.chain.client import LedgerClient
from agora.chain.testing import free_port, wait_until_ready
from agora.crypto.keys import Keypair
from agora.crypto.signing import sign_transaction
from agora.models.base import GenerateRequest
from agora.models.causal_lm import CausalLMEngine
from agora.models.errors import InvalidRequest
from agora.models.tiny import ensure_tiny_model
from agora.verify import toploc
from agora.verify.activations import generate_without_cache, prefill_hidden
from agora.verify.check import (
    GenerationItem,
    Verdict,
    verify_generation,
    verify_generation_async,
    verify_generations,
    verify_generations_async,
)
from agora.verify.tamper import TamperError, fake_quantize, load_tampered_engine

PROMPTS = [
    "the miner proves the token",
    "a block of random state and a long enough prompt to fill the prefill chunk",
    "verify hidden layer",
    "seed",
]
#: Reasons name the chunk and the statistic that broke its limit.
ACTIVATION_REASON = re.compile(
    r"chunk.*(top-k entries differ|exponents differ|mantissa error|entries that differ)"
)


def run(coro: Any) -> Any:
    return asyncio.run(coro)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("toploc")


@pytest.fixture(scope="module")
def reference(data_dir: Path) -> Iterator[CausalLMEngine]:
    engine = run(CausalLMEngine.load(ensure_tiny_model(data_dir, "tiny")))
    yield engine
    run(engine.close())


def generate(engine: Any, prompts: list[str], max_tokens: int = 70, **kw: Any) -> list[Any]:
    requests = [
        GenerateRequest(p, max_tokens, kw.get("temperature", 0.7), i) for i, p in enumerate(prompts)
    ]
    return run(engine.generate_batch(requests))


# -- the encoding -------------------------------------------------------------------------------


def test_polynomial_passes_through_every_point_and_nowhere_else() -> None:
    rng = np.random.default_rng(3)
    for k in (1, 2, 7, 128):
        xs = rng.choice(toploc.PRIME, k, replace=False)
        ys = rng.integers(0, toploc.PRIME, k)
        coefficients = toploc.interpolate(xs, ys)
        assert len(coefficients) == k
        assert np.array_equal(toploc.evaluate(coefficients, xs), ys)
    with pytest.raises(toploc.ProofError, match="distinct"):
        toploc.interpolate([1, 1], [2, 3])


def test_bf16_rounding_matches_torch() -> None:
    import torch

    values = np.random.default_rng(0).standard_normal(10_000).astype(np.float32) * 50
    ours = toploc.to_bf16_bits(values)
    theirs = torch.from_numpy(values).to(torch.bfloat16).view(torch.int16).numpy()
    assert np.array_equal(ours, theirs.astype(np.int64) & 0xFFFF)
    assert np.array_equal(
        toploc.bf16_to_float(ours), torch.from_numpy(values).to(torch.bfloat16).float().numpy()
    )


def test_proof_round_trip_and_size() -> None:
    rng = np.random.default_rng(1)
    hidden = rng.standard_normal((10 + 70 - 1, 64)).astype(np.float32)
    data = toploc.build_proof(hidden, prompt_tokens=10, output_tokens=70)
    proof = toploc.decode_proof(data)
    assert (proof.per_position, proof.chunk_size, proof.prompt_tokens, proof.output_tokens) == (
        4,
        32,
        10,
        70,
    )
    # positions 0 .. P + n - 2 cut every 32, prompt and output alike
    assert proof.layout() == [(0, 32), (32, 64), (64, 79)]
    assert toploc.encode_proof(proof) == data
    # header + per chunk a 4-byte header and 2 bytes per committed entry, 4 per position
    sizes = [toploc.chunk_k(4, b - a, 64) for a, b in proof.layout()]
    assert sizes == [128, 128, 60]
    assert len(data) == 19 + sum(4 + 2 * size for size in sizes)
    stats = toploc.compare(proof, hidden)
    assert toploc.judge_answer(stats) is None
    assert all(s.index_mismatches == 0 and s.mant_err_mean <= 0.5 for s in stats)


def test_every_position_is_committed_so_any_changed_position_fails() -> None:
    """The property behind catching a changed prompt token: whichever single position's hidden
    state differs (first, middle or last of a chunk, in a chunk whose other positions have far
    larger entries), its own committed entries no longer match and the answer fails there."""
    rng = np.random.default_rng(5)
    hidden = rng.standard_normal((40 + 30 - 1, 64)).astype(np.float32)
    hidden[:, :8] *= 20  # large entries in every row: which 4 are largest is row-specific
    proof = toploc.decode_proof(toploc.build_proof(hidden, 40, 30))
    for position in (0, 15, 31, 39, 68):
        other = hidden.copy()
        other[position] = rng.permutation(hidden[position])  # same values, other places
        reason = toploc.judge_answer(toploc.compare(proof, other))
        assert reason is not None and f"position {position} has" in reason, (position, reason)
        indices, _ = toploc.top_k(other[32:64], 4)
        assert len(indices) == 128 and np.array_equal(indices // 64, np.repeat(np.arange(32), 4))
    assert toploc.judge_answer(toploc.compare(proof, hidden)) is None


def test_the_builder_fed_step_by_step_equals_one_block() -> None:
    rng = np.random.default_rng(2)
    hidden = rng.standard_normal((5 + 40 - 1, 64)).astype(np.float32)
    builder = toploc.ProofBuilder()
    builder.add_prefill(hidden[:5])
    for row in hidden[5:]:
        builder.add_step(row)
    assert builder.finish(40) == toploc.build_proof(hidden, 5, 40)
    with pytest.raises(ValueError, match="one step per output token"):
        toploc.ProofBuilder().finish(3)


@pytest.mark.parametrize(
    ("mangle", "message"),
    [
        (lambda d: d[:-3], "truncated proof"),
        (lambda d: d[:10], "shorter than the 19-byte header"),
        (lambda d: d + b"\x00\x00", "unexpected bytes after the end"),
        (lambda d: b"XXXX" + d[4:], "bad magic"),
        (lambda d: d[:4] + b"\x09" + d[5:], "version 9 is not supported"),
        (lambda d: d[:17] + b"\x00\x07" + d[19:], "lists 7 chunks"),
    ],
)
def test_malformed_proofs_are_clear_errors(mangle: Any, message: str) -> None:
    hidden = np.random.default_rng(4).standard_normal((20, 64)).astype(np.float32)
    data = toploc.build_proof(hidden, 10, 11)
    with pytest.raises(toploc.ProofFormatError, match=message):
        toploc.decode_proof(mangle(data))


# -- honest miners ----------------------------------------------------------------------------


def assert_ok(verdict: Verdict) -> None:
    assert verdict.ok, verdict.reason
    assert verdict.stats["index_mismatches"] <= 4


def test_honest_generation_verifies_under_batch_threads_stream_and_cache(
    reference: CausalLMEngine,
) -> None:
    import torch

    answers = [(p, r) for p, r in zip(PROMPTS, generate(reference, PROMPTS), strict=True)]
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        answers += [(PROMPTS[1], r) for r in generate(reference, PROMPTS[1:2] * 3)]
    finally:
        torch.set_num_threads(previous)
    for prompt, result in answers:
        assert result.proof is not None and result.completion_tokens == len(result.token_ids)
        assert_ok(verify_generation(reference, prompt, result.token_ids, result.proof))

    async def streamed() -> list[Any]:
        return [c async for c in reference.stream(PROMPTS[0], 40, 0.9, 5)]

    chunks = run(streamed())
    assert all(c.proof is None for c in chunks[:-1]) and chunks[-1].proof
    tokens = [t for c in chunks for t in c.token_ids]
    assert_ok(verify_generation(reference, PROMPTS[0], tokens, chunks[-1].proof))
    # the same answer in a batch of one and in a batch of four carries a proof that verifies
    tokens, proof = generate_without_cache(
        reference.torch_model, reference.encode_prompt(PROMPTS[1]), 40, reference.eos_token_ids
    )
    assert_ok(verify_generation(reference, PROMPTS[1], tokens, proof))
    verdict = run(verify_generation_async(reference, PROMPTS[1], tokens, proof))
    assert verdict.ok and verdict.stats["chunks"] >= 2


def test_an_honest_bf16_miner_verifies(data_dir: Path, reference: CausalLMEngine) -> None:
    engine = run(load_tampered_engine("generate:tiny", "bf16", data_dir))
    try:
        for prompt, result in zip(PROMPTS, generate(engine, PROMPTS), strict=True):
            verdict = verify_generation(reference, prompt, result.token_ids, result.proof)
            assert verdict.ok, verdict.reason
    finally:
        run(engine.close())


# -- cheaters ---------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["smaller-model", "wrong-model", "perturb-1", "perturb-5", "int4"])
def test_each_adversary_model_fails_with_a_reason(
    mode: str, data_dir: Path, reference: CausalLMEngine
) -> None:
    engine = run(load_tampered_engine("generate:tiny", mode, data_dir))
    try:
        assert engine.model_id == reference.model_id  # it claims the honest model
        for prompt, result in zip(PROMPTS, generate(engine, PROMPTS), strict=True):
            verdict = verify_generation(reference, prompt, result.token_ids, result.proof)
            assert not verdict.ok, f"{mode} passed on {prompt!r}: {verdict.stats}"
            assert ACTIVATION_REASON.search(verdict.reason), verdict.reason
    finally:
        run(engine.close())


def test_quantisation_keeps_the_grid_it_claims() -> None:
    import torch

    weight = torch.randn(8, 64)
    int4 = fake_quantize(weight, 4, 32)
    scales = weight.reshape(8, 2, 32).abs().amax(-1, keepdim=True) / 7
    levels = int4.reshape(8, 2, 32) / scales
    assert torch.allclose(levels, levels.round(), atol=1e-4) and levels.abs().max() <= 8
    assert 0 < (int4 - weight).abs().max() <= scales.max() / 2 + 1e-6
    with pytest.raises(TamperError, match="unknown tamper mode"):
        run(load_tampered_engine("generate:tiny", "int3", "/nonexistent"))


def test_forged_truncated_and_misplaced_proofs_are_rejected(reference: CausalLMEngine) -> None:
    [first, second] = generate(reference, PROMPTS[1:3], max_tokens=50, temperature=0.0)
    prompt = PROMPTS[1]

    def check(tokens: list[int], proof: str | None, on: str = prompt) -> Verdict:
        verdict = verify_generation(reference, on, tokens, proof)
        assert not verdict.ok
        return verdict

    raw = base64.b64decode(first.proof)
    # forged: right shape, random coefficients
    proof = toploc.decode_proof(raw)
    rng = np.random.default_rng(9)
    chunks = [
        toploc.ChunkProof(c.modulus, rng.integers(0, toploc.PRIME, len(c.coefficients)))
        for c in proof.chunks
    ]
    forged = toploc.Proof(
        proof.per_position, proof.chunk_size, proof.prompt_tokens, proof.output_tokens, chunks
    )
    forged_b64 = base64.b64encode(toploc.encode_proof(forged)).decode()
    assert ACTIVATION_REASON.search(check(first.token_ids, forged_b64).reason)
    assert "truncated proof" in check(first.token_ids, base64.b64encode(raw[:-5]).decode()).reason
    assert "not valid base64" in check(first.token_ids, "@@not base64@@").reason
    assert "no TOPLOC proof" in check(first.token_ids, None).reason
    # a proof for another prompt: of another length (the header says so) ...
    other_prompt = check(first.token_ids, second.proof, on=prompt).reason
    assert "proof for another prompt" in other_prompt or "output tokens" in other_prompt
    # ... or of the same length, one word changed: only the activations tell
    twin = prompt.replace("random", "chosen")
    assert len(twin) == len(prompt)
    [answer] = generate(reference, [twin], max_tokens=50, temperature=0.0)
    assert ACTIVATION_REASON.search(check(answer.token_ids, answer.proof).reason)
    # a proof for other tokens: the same prompt sampled differently, cut to the same length
    [other] = generate(reference, [prompt], max_tokens=50, temperature=1.5)
    n = min(len(other.token_ids), len(first.token_ids))
    assert other.token_ids[: n - 1] != first.token_ids[: n - 1]
    hidden = prefill_hidden(
        reference.torch_model, reference.encode_prompt(prompt) + other.token_ids[:n]
    )
    other_proof = toploc.build_proof(hidden, len(reference.encode_prompt(prompt)), n)
    verdict = check(first.token_ids[:n], base64.b64encode(other_proof).decode())
    assert ACTIVATION_REASON.search(verdict.reason)
    assert "output tokens" in check(first.token_ids[:-1], first.proof).reason
    # truncation (with a correct proof of the shorter output) is caught by max_tokens
    short = first.token_ids[: len(first.token_ids) // 2]
    hidden = prefill_hidden(reference.torch_model, reference.encode_prompt(prompt) + short)
    short_proof = base64.b64encode(
        toploc.build_proof(hidden, len(reference.encode_prompt(prompt)), len(short))
    ).decode()
    assert verify_generation(reference, prompt, short, short_proof).ok
    verdict = verify_generation(reference, prompt, short, short_proof, max_tokens=50)
    assert not verdict.ok and "truncated output" in verdict.reason
    with pytest.raises(InvalidRequest, match="outside the vocabulary"):
        verify_generation(reference, prompt, [10**6], first.proof)


CHANGED = {
    # a word near the start, in the middle and at the very end, each replaced by one of the
    # same length (so the prompt keeps its token count and only the activations can tell)
    "start": ("proof of the miner and a block of state", "block of the miner and a block of state"),
    "middle": (
        "proof of the miner and a block of state",
        "proof of the token and a block of state",
    ),
    "end": ("proof of the miner and a block of state", "proof of the miner and a block of chain"),
}


@pytest.mark.parametrize("variant", ["tiny", "tiny-wide"])
def test_a_prompt_with_one_word_changed_fails_wherever_the_word_is(
    variant: str, data_dir: Path, reference: CausalLMEngine
) -> None:
    engine = reference
    if variant != "tiny":
        engine = run(CausalLMEngine.load(ensure_tiny_model(data_dir, variant)))
    try:
        for where, (prompt, changed) in CHANGED.items():
            assert len(engine.encode_prompt(prompt)) == len(engine.encode_prompt(changed))
            answers = generate(engine, [changed] * 3, max_tokens=30)
            items = [GenerationItem(prompt, a.token_ids, a.proof) for a in answers]
            for verdict in verify_generations(engine, items):
                assert not verdict.ok, f"{variant}: changed word at the {where} passed"
                assert "entries that differ" in verdict.reason, verdict.reason
    finally:
        if engine is not reference:
            run(engine.close())


def test_batched_verification_agrees_with_one_at_a_time(
    data_dir: Path, reference: CausalLMEngine
) -> None:
    """Answers of different lengths verified together (one padded pass) get the verdicts they
    get alone, in order; early failures (no proof, truncated) keep their place in the list."""
    honest = generate(reference, PROMPTS, max_tokens=45)
    cheat = run(load_tampered_engine("generate:tiny", "perturb-5", data_dir))
    try:
        [bad] = generate(cheat, PROMPTS[1:2], max_tokens=45)
    finally:
        run(cheat.close())
    items = [GenerationItem(p, a.token_ids, a.proof) for p, a in zip(PROMPTS, honest, strict=True)]
    items.insert(2, GenerationItem(PROMPTS[1], bad.token_ids, bad.proof))
    items.insert(1, GenerationItem(PROMPTS[0], honest[0].token_ids, None))
    alone = [
        verify_generation(reference, i.prompt, i.token_ids, i.proof, max_tokens=i.max_tokens)
        for i in items
    ]
    for batch_size in (2, 8):
        together = verify_generations(reference, items, batch_size=batch_size)
        assert [v.ok for v in together] == [True, False, True, False, True, True]
        assert [v.reason for v in together] == [v.reason for v in alone]
        for one, many in zip(alone, together, strict=True):
            if one.stats:
                assert many.stats["index_mismatches"] == one.stats["index_mismatches"]
                assert abs(many.stats["mant_err_trimmed"] - one.stats["mant_err_trimmed"]) < 0.02
    assert [v.ok for v in run(verify_generations_async(reference, items[:2]))] == [True, False]
    assert verify_generations(reference, []) == []
    with pytest.raises(InvalidRequest, match="outside the vocabulary"):
        verify_generations(reference, [*items, GenerationItem(PROMPTS[0], [10**6], None)])


# -- over HTTP ----------------------------------------------------------------------------------


async def _subnet(url: str) -> int:
    async with LedgerClient(url) as client:
        for key, kind, body in (
            (Keypair.from_name("alice"), "create_subnet", {}),
            (Keypair.from_name("bob"), "register", None),
        ):
            if body is None:
                body = {
                    "netuid": (await client.subnets())[-1].netuid,
                    "hotkey": Keypair.from_name("bob/hot").address,
                }
            chain_id = (await client.status()).chain_id
            nonce = await client.next_nonce(key.address)
            tx = sign_transaction(key, chain_id, kind, nonce, body)
            info = await client.wait_for_tx(await client.submit(tx), timeout=30)
            assert info.status == "included", info
        return (await client.subnets())[-1].netuid


def test_the_miner_http_answer_carries_a_proof_the_receipt_covers(
    tmp_path: Path, reference: CausalLMEngine
) -> None:
    from agora.miner import MinerClient
    from agora.net import verify_receipt

    port = free_port()
    node = subprocess.Popen(
        [sys.executable, "-m", "agora.chain", "start", "--dev",
         "--data-dir", str(tmp_path / "node"), "--port", str(port), "--block-time", "0.2"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    miner = None
    try:
        wait_until_ready(f"{url}/v1/status", 30, node)
        netuid = run(_subnet(url))
        miner_port = free_port()
        miner = subprocess.Popen(
            [sys.executable, "-m", "agora.miner", "start", "--dev-key", "ferdie",
             "--subnet", str(netuid), "--model", "generate:tiny", "--port", str(miner_port),
             "--node", url, "--data-dir", str(tmp_path / "miner"), "--log-level", "warning"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        wait_until_ready(f"http://127.0.0.1:{miner_port}/health", 90, miner)
        address = Keypair.from_name("ferdie/hot").address
        prompt = "Hello, prover"

        async def call() -> Any:
            async with MinerClient(
                f"http://127.0.0.1:{miner_port}", Keypair.from_name("bob/hot"), address
            ) as client:
                answer, receipt = await client.generate(
                    prompt, max_tokens=40, temperature=0.5, seed=3
                )
                stream = client.stream(prompt, 40, 0.5, 3)
                events = [event async for event in stream]
                return answer, receipt, events, stream

        answer, receipt, events, stream = run(call())
        assert answer.toploc
        assert_ok(verify_generation(reference, prompt, answer.token_ids, answer.toploc))
        # the streamed answer carries the same proof on its last event, under the receipt
        assert events[-1].toploc == answer.toploc and all(e.toploc is None for e in events[:-1])
        assert stream.receipt is not None
        tampered = stream.raw.replace(answer.toploc.encode(), answer.toploc[::-1].encode())
        with pytest.raises(Exception, match="response hash mismatch"):
            verify_receipt(stream.receipt, response_body=tampered)
        assert json.loads(answer.model_dump_json())["toploc"] == answer.toploc
        assert receipt.completion_tokens == len(answer.token_ids)
    finally:
        for proc in (miner, node):
            if proc is not None:
                proc.terminate()
                proc.wait(20)
