"""The audit loop's parts without a network: the gateway's receipt archive, the re-check of one
organic answer against the reference model, and the validator's audit book.

Answers are made by the miner's real core (real model, real receipts signed by a real key), on
the exact bytes a gateway would send and archive.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from agora.crypto.keys import Keypair
from agora.gateway.archive import ArchivedAnswer, ReceiptArchive
from agora.gateway.forward import generate_body
from agora.miner.adversary import CopiedAnswers, TruncatedAnswers, load_cheat_engine
from agora.miner.core import MinerCore
from agora.miner.schema import EmbedRequest, GenerateBody
from agora.models import Engine, load_engine
from agora.net.receipts import Receipt, split_stream
from agora.net.signing import now_ms, sign_request, verify_request
from agora.protocol.audit import is_audited
from agora.protocol.receipts import receipt_hash
from agora.validator.audit import AuditBook
from agora.validator.recheck import recheck, verify_proofs_together

pytestmark = pytest.mark.anyio

MINER = Keypair.from_name("test/audit/miner")
GATEWAY = Keypair.from_name("test/audit/gateway")
PROMPT = "Tell me about the harbour at night"


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("audit-models")


@pytest.fixture(scope="module")
def tiny(data_dir: Path) -> Iterator[Engine]:
    engine = asyncio.run(load_engine("generate:tiny", data_dir))
    yield engine
    asyncio.run(engine.close())


@pytest.fixture(scope="module")
def minilm(data_dir: Path) -> Iterator[Engine]:
    engine = asyncio.run(load_engine("embed:minilm", data_dir))
    yield engine
    asyncio.run(engine.close())


def _signed(path: str, body: bytes):  # type: ignore[no-untyped-def]
    headers = sign_request(GATEWAY, MINER.address, "POST", path, body)
    return verify_request(
        list(headers.items()), "POST", path, body, me=MINER.address, now_ms=now_ms()
    )


async def served(
    engine: Engine,
    prompt: str = PROMPT,
    max_tokens: int = 12,
    *,
    stream: bool = False,
    temperature: float = 0.0,
    seed: int | None = None,
) -> tuple[Receipt, bytes, bytes]:
    """(receipt, request bytes, response content) of one answer by ``engine`` behind the
    miner's core, exactly as the gateway archives them."""
    core = MinerCore(engine, MINER, 2, 1000)
    body = generate_body(prompt, max_tokens, temperature, seed, stream)
    signed = _signed("/v1/generate", body)
    request = GenerateBody.model_validate_json(body)
    if stream:
        data = b"".join([chunk async for chunk in await core.stream(signed, request)])
        content, receipt = split_stream(data)
        return receipt, body, content
    answer = await core.generate(signed, request)
    cut = answer.body.rfind(b',"agora_receipt":')
    return answer.receipt, body, answer.body[:cut] + b"}"


async def embedded(engine: Engine, texts: list[str]) -> tuple[Receipt, bytes, bytes]:
    core = MinerCore(engine, MINER, 1, 1000)
    body = json.dumps({"texts": texts}).encode()
    answer = await core.embed(_signed("/v1/embed", body), EmbedRequest(texts=texts))
    cut = answer.body.rfind(b',"agora_receipt":')
    return answer.receipt, body, answer.body[:cut] + b"}"


# -- the archive --------------------------------------------------------------------------------


async def test_archive_keeps_receipts_with_their_bytes_and_names_them_as_the_ledger_does(
    tmp_path: Path, tiny: Engine
) -> None:
    archive = ReceiptArchive(tmp_path / "archive.sqlite")
    receipt, request, response = await served(tiny)
    archive.add(receipt, json.dumps(receipt.to_json()).encode(), request, response, False)
    assert archive.count() == 0 and archive.pending == 1  # queued, nothing written yet
    assert archive.flush() == 1 and archive.pending == 0
    name = receipt_hash(receipt.to_json())
    (listed,) = archive.receipts(miner=MINER.address, netuid=2)
    assert listed.hash == name and listed.receipt == receipt.to_json()
    assert listed.request == b"" and listed.response == b""  # the public view has no content
    assert archive.receipts(netuid=1) == [] and archive.receipts(before_ms=receipt.timestamp) == []
    got = archive.get(name)
    assert got is not None and got.request == request and got.response == response
    # the auditor's JSON round-trips to the exact bytes
    again = ArchivedAnswer.from_json(json.loads(json.dumps(got.to_json())))
    assert again == got
    assert [a.hash for a in archive.for_audit(2, receipt.timestamp, 10)] == [name]
    assert archive.for_audit(2, receipt.timestamp + 1, 10) == []
    archive.close()
    reopened = ReceiptArchive(tmp_path / "archive.sqlite")  # durable
    assert reopened.get(name) == got
    reopened.close()


async def test_archive_retention_and_queue_are_bounded(tmp_path: Path, tiny: Engine) -> None:
    receipts = [await served(tiny, f"prompt number {i}", 2) for i in range(5)]
    archive = ReceiptArchive(tmp_path / "a.sqlite", max_rows=3, max_pending=4)
    for receipt, request, response in receipts:
        archive.add(receipt, b"", request, response, False)
    assert archive.pending == 4 and archive.dropped == 1  # the oldest queued one was dropped
    archive.flush()
    kept = archive.for_audit(2, 0, 10)
    assert len(kept) == 3  # the row cap keeps the newest
    assert [a.hash for a in kept] == [receipt_hash(r.to_json()) for r, _, _ in receipts[2:]]
    newest = max(r.timestamp for r, _, _ in receipts)
    archive.flush(now_ms=newest + int(archive.max_age_s * 1000) + 1)  # everything expired
    assert archive.count() == 0
    archive.close()
    with pytest.raises(ValueError):
        ReceiptArchive(tmp_path / "b.sqlite", max_rows=0)


# -- re-checking an organic answer ----------------------------------------------------------------


async def test_honest_answers_pass_streamed_or_not(tiny: Engine, minilm: Engine) -> None:
    for stream in (False, True):
        finding = await recheck(tiny, *(await served(tiny, stream=stream)))
        assert finding.guilty is False, finding
    sampled = await served(tiny, temperature=0.8, seed=42)
    assert (await recheck(tiny, *sampled)).guilty is False
    texts = ["the river at dawn", "a compiler error on line 3"]
    assert (await recheck(minilm, *(await embedded(minilm, texts)))).guilty is False


async def test_cheats_are_proven(tiny: Engine, minilm: Engine, data_dir: Path) -> None:
    impostor = await load_cheat_engine("wrong-model", "generate:tiny", data_dir)
    finding = await recheck(tiny, *(await served(impostor)))
    assert finding.guilty is True and finding.kind in ("wrong_output", "bad_proof"), finding
    await impostor.close()

    truncating = TruncatedAnswers(tiny)
    stop = await recheck(tiny, *(await served(truncating, max_tokens=12)))  # claims "stop"
    length = await recheck(tiny, *(await served(truncating, max_tokens=12)))  # claims "length"
    assert (stop.guilty, stop.kind) == (True, "truncated") and "stop" in stop.reason
    assert (length.guilty, length.kind) == (True, "truncated") and "length" in length.reason

    copier = CopiedAnswers(tiny)
    copied = await recheck(tiny, *(await served(copier, stream=True)))
    assert copied.guilty is True, copied

    random_vectors = await load_cheat_engine("random", "embed:minilm", data_dir)
    finding = await recheck(minilm, *(await embedded(random_vectors, ["hello there"])))
    assert finding.guilty is True and "cosine" in finding.reason
    await random_vectors.close()


async def test_a_round_s_proofs_are_verified_together_with_the_same_findings(
    tiny: Engine, data_dir: Path
) -> None:
    """The audit verifies the drawn answers' TOPLOC proofs in one batched call; recheck then
    reaches the finding it reaches verifying each proof alone (honest passes, cheat fails)."""
    honest = [await served(tiny, f"{PROMPT} number {i}", 10 + 4 * i) for i in range(3)]
    impostor = await load_cheat_engine("perturb-5", "generate:tiny", data_dir)
    cheat = await served(impostor, max_tokens=14)
    await impostor.close()
    answers = [*honest, cheat]
    proofs = await verify_proofs_together(tiny, [(req, resp) for _, req, resp in answers])
    assert len(proofs) == 4  # every answer carried a proof and was verified in the batch
    assert sorted(v.ok for v in proofs.values()) == [False, True, True, True]
    for answer in answers:
        together = await recheck(tiny, *answer, proofs)
        alone = await recheck(tiny, *answer)
        assert (together.guilty, together.kind, together.reason) == (
            alone.guilty,
            alone.kind,
            alone.reason,
        )
    assert (await recheck(tiny, *cheat, proofs)).kind == "bad_proof"
    assert await verify_proofs_together(tiny, [(b"not json", b"{}")]) == {}


async def test_bytes_that_do_not_match_the_receipt_prove_nothing(tiny: Engine) -> None:
    receipt, request, response = await served(tiny)
    forged = response.replace(b'"token_ids":[', b'"token_ids":[7,', 1)
    finding = await recheck(tiny, receipt, request, forged)
    assert finding.guilty is None and finding.kind == "unprovable"
    other = await recheck(tiny, receipt, request.replace(b"harbour", b"harbor"), response)
    assert other.guilty is None and "request hash" in other.reason
    tampered = {**receipt.to_json(), "price": receipt.price + 1}
    assert (await recheck(tiny, tampered, request, response)).kind == "unprovable"


# -- the draw and the book ------------------------------------------------------------------------


def test_the_draw_is_the_ledgers_and_follows_the_rate() -> None:
    block = "ab" * 32
    names = [receipt_hash({"n": i}) for i in range(2000)]
    drawn = sum(is_audited(block, name, 250_000) for name in names)
    assert 400 < drawn < 600  # a quarter, give or take sampling noise (deterministic here)
    assert all(is_audited(block, name, 1_000_000) for name in names[:50])
    assert not any(is_audited(block, name, 0) for name in names[:50])
    other = "cd" * 32  # another deciding block draws other receipts
    assert {n for n in names if is_audited(block, n, 250_000)} != {
        n for n in names if is_audited(other, n, 250_000)
    }


async def test_the_audit_book_survives_a_restart(tmp_path: Path, tiny: Engine) -> None:
    from agora.validator.recheck import Finding

    receipt, _, _ = await served(tiny)
    name = receipt_hash(receipt.to_json())
    book = AuditBook.in_dir(tmp_path)
    book.set_cursor("http://gw", 2, receipt.timestamp)
    book.record(name, receipt.to_json(), 7, True, Finding(True, "truncated", "why"), "tx1")
    book.record_vote(3, 2, MINER.address, False, "ok: fine", "cast")
    book.close()
    book = AuditBook.in_dir(tmp_path)
    assert book.cursor("http://gw", 2) == receipt.timestamp and book.cursor("http://gw", 1) == 0
    assert book.seen([name, "00" * 32]) == {name}
    (row,) = book.audited(2, drawn_only=True)
    assert (row["guilty"], row["kind"], row["dispute"], row["block"]) == (1, "truncated", "tx1", 7)
    assert book.voted(3) and not book.voted(4)
    assert book.votes(2)[0]["guilty"] == 0
    book.close()
