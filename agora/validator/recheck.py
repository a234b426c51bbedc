"""Re-checking one organic answer against the validator's reference model.

An organic answer is what the gateway archived (:mod:`agora.gateway.archive`): the miner's
signed receipt, the exact request bytes the gateway sent and the exact response content the
miner sent back. :func:`recheck` decides, in this order, stopping at the first that settles it:

1. **Provenance.** The receipt is well formed and signed by its miner, and the bytes hash to its
   ``request_hash`` and ``response_hash``. If not, the answer proves nothing about the miner (a
   gateway could have altered it): the result is *unprovable*, never guilty.
2. **Model.** The receipt claims the reference's model id; another id cannot be judged here
   (inconclusive).
3. **Embeddings.** Every vector's cosine with the reference's is at least
   :data:`~agora.validator.checks.EMBED_MIN_COSINE`, as probes are checked.
4. **Truncation.** A generation that says ``"length"`` has exactly ``max_tokens`` tokens; one
   that says ``"stop"`` ends with the model's end-of-sequence token (when the reference engine
   tells which tokens those are).
5. **Activation proof.** When the answer carries a TOPLOC proof (``toploc``) and
   :mod:`agora.verify.check` is installed, the proof must verify for this prompt and these tokens.
6. **Tokens.** Greedy requests (temperature 0) are re-run: the same tokens, or a divergence at a
   near tie that the reference accepts (:func:`~agora.validator.checks.judge_divergence`).
   Sampled requests are re-run with the receipt's seed; the same tokens pass, different ones are
   inconclusive without a proof (float noise can flip a sample on another machine, and an
   honest miner must never be slashed on a guess).

A :class:`Finding` is ``guilty`` (True: a proven mismatch; False: checked and fine; None: could
not be judged), with a ``kind`` and a reason a person can read: these become a dispute's
evidence.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from agora.models import Engine, InvalidRequest, ModelError
from agora.net import InvalidReceipt, Receipt, verify_receipt
from agora.validator.checks import ProbeFailed, check_embeddings, judge_divergence
from agora.validator.prober import parse_token_events

__all__ = ["Finding", "ProofVerdicts", "recheck", "verify_proofs_together"]

log = logging.getLogger("agora.validator.audit")


@dataclass(frozen=True)
class Finding:
    """The outcome of re-checking one answer."""

    guilty: bool | None
    kind: str  # ok, unprovable, inconclusive, wrong_output, truncated, bad_proof
    reason: str
    #: sha256 (hex) of the reference's own output (its token ids or vectors as JSON), if any
    reference: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "guilty": self.guilty,
            "kind": self.kind,
            "reason": self.reason,
            "reference": self.reference,
        }


def _output_hash(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, separators=(",", ":")).encode()).hexdigest()


def _ok(reason: str) -> Finding:
    return Finding(False, "ok", reason)


def _guilty(kind: str, reason: str, reference: str | None = None) -> Finding:
    return Finding(True, kind, reason, reference)


def _unsure(kind: str, reason: str) -> Finding:
    return Finding(None, kind, reason)


#: TOPLOC verdicts computed ahead for a round of answers, keyed by (prompt, token ids, proof,
#: max_tokens): see `verify_proofs_together`.
ProofVerdicts = dict[tuple[str, tuple[int, ...], str, int], Any]


async def verify_proofs_together(
    engine: Engine, answers: Sequence[tuple[bytes, bytes]]
) -> ProofVerdicts:
    """Verify the TOPLOC proofs of a round of drawn answers (request, response bytes) in one
    batched call (`agora.verify.check.verify_generations`: one padded forward pass per few
    answers instead of one each, which is most of the saving for small models), for `recheck`
    to look up. Answers without a proof or that cannot be parsed are skipped (`recheck` judges
    them); if the batch cannot run at all, the result is empty and each answer is verified on
    its own as before."""
    try:
        from agora.verify.check import GenerationItem, verify_generations_async
    except ImportError:
        return {}
    keys: list[tuple[str, tuple[int, ...], str, int]] = []
    for request, response in answers:
        try:
            body = json.loads(request)
            prompt, max_tokens = body.get("prompt"), body.get("max_tokens")
            answer = _read_generation(response)
        except (ValueError, TypeError, AttributeError):
            continue
        if not isinstance(prompt, str) or type(max_tokens) is not int or not answer.proof:
            continue
        if len(answer.token_ids) > max_tokens:
            continue
        keys.append((prompt, tuple(answer.token_ids), answer.proof, max_tokens))
    keys = list(dict.fromkeys(keys))
    if not keys:
        return {}
    items = [GenerationItem(p, list(t), proof, m) for p, t, proof, m in keys]
    try:
        verdicts = await verify_generations_async(engine, items)
    except Exception as error:  # a bad item must not stop the round's audits
        log.info("batched TOPLOC verification fell back to one answer at a time: %s", error)
        return {}
    return dict(zip(keys, verdicts, strict=True))


async def recheck(
    engine: Engine,
    receipt: Receipt | dict[str, Any],
    request: bytes,
    response: bytes,
    proofs: ProofVerdicts | None = None,
) -> Finding:
    """Judge one archived answer (see the module docstring). Never raises for anything in the
    answer; a failure of the validator's own engine is inconclusive. ``proofs``: verdicts
    already computed for this round (`verify_proofs_together`); others are verified here."""
    try:
        if not isinstance(receipt, Receipt):
            receipt = Receipt.from_json(receipt)
        verify_receipt(receipt, request, response)
    except InvalidReceipt as error:
        return _unsure("unprovable", f"the receipt does not cover these bytes: {error}")
    if receipt.model_id != engine.model_id:
        return _unsure(
            "inconclusive",
            f"the receipt claims {receipt.model_id}; this validator's reference is "
            f"{engine.model_id}",
        )
    try:
        body = json.loads(request)
        if not isinstance(body, dict):
            raise ValueError("not an object")
    except ValueError:
        return _unsure("unprovable", "the request is not a JSON object")
    try:
        if engine.task == "embed":
            return await _embeddings(engine, body, response)
        return await _generation(engine, body, response, proofs)
    except ModelError as error:
        return _unsure("inconclusive", f"the reference engine failed: {error}")


async def _embeddings(engine: Engine, body: dict[str, Any], response: bytes) -> Finding:
    texts = body.get("texts")
    if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts) or not texts:
        return _unsure("unprovable", "the request has no texts")
    try:
        answer = json.loads(response)
        vectors = answer["embeddings"]
    except (ValueError, KeyError, TypeError):
        return _guilty("wrong_output", "the signed answer is not an embeddings answer")
    reference = await engine.embed(texts)
    judgement = check_embeddings(reference, vectors)
    if not judgement.ok:
        return _guilty("wrong_output", judgement.reason, _output_hash(reference))
    return _ok(judgement.reason)


@dataclass(frozen=True)
class _Generation:
    token_ids: list[int]
    text: str
    finish_reason: str | None
    seed: int | None
    proof: str | None


def _read_generation(response: bytes) -> _Generation:
    """The answer's tokens, from a JSON answer or an event stream (raises ValueError)."""
    if response.startswith(b"{"):
        data = json.loads(response)
        tokens = data.get("token_ids")
        if not isinstance(tokens, list) or not all(isinstance(t, int) for t in tokens):
            raise ValueError("no token_ids")
        proof = data.get("toploc")
        return _Generation(
            tokens,
            str(data.get("text", "")),
            data.get("finish_reason"),
            data.get("seed"),
            proof if isinstance(proof, str) else None,
        )
    try:
        streamed = parse_token_events(response)
    except (ProbeFailed, UnicodeDecodeError) as error:
        raise ValueError(str(error)) from None
    return _Generation(
        streamed.token_ids, streamed.text, streamed.finish_reason, None, _stream_proof(response)
    )


def _stream_proof(response: bytes) -> str | None:
    """The ``toploc`` of a stream's final token event (parse_token_events checked the rest)."""
    for block in reversed(response.decode().split("\n\n")):
        for line in block.split("\n"):
            if line.startswith("data:"):
                proof = json.loads(line[5:]).get("toploc")
                return proof if isinstance(proof, str) else None
    return None


def _eos_ids(engine: Engine) -> frozenset[int] | None:
    ids = getattr(engine, "eos_token_ids", None)
    if ids is None:
        inner = getattr(engine, "engine", None)  # a BatchedEngine around the real one
        ids = getattr(inner, "eos_token_ids", None)
    return frozenset(ids) if ids else None


async def _generation(
    engine: Engine, body: dict[str, Any], response: bytes, proofs: ProofVerdicts | None = None
) -> Finding:
    prompt, max_tokens = body.get("prompt"), body.get("max_tokens")
    temperature = body.get("temperature") or 0.0
    seed = body.get("seed")
    if (
        not isinstance(prompt, str)
        or isinstance(max_tokens, bool)
        or not isinstance(max_tokens, int)
    ):
        return _unsure("unprovable", "the request has no prompt or max_tokens")
    try:
        answer = _read_generation(response)
    except (ValueError, TypeError) as error:
        return _guilty("wrong_output", f"the signed answer is not a generation: {error}")
    tokens = answer.token_ids
    if len(tokens) > max_tokens:
        return _guilty("wrong_output", f"{len(tokens)} tokens for max_tokens={max_tokens}")
    truncated = _truncation(engine, answer, max_tokens)
    if truncated is not None:
        return truncated
    if answer.proof is not None:
        proof = await _check_proof(engine, prompt, tokens, answer.proof, max_tokens, proofs)
        if proof is not None:
            return proof
    if temperature == 0:
        return await _greedy(engine, prompt, max_tokens, tokens, answer.text)
    if answer.seed is None and not isinstance(seed, int):
        return _unsure("inconclusive", "a sampled answer without its seed cannot be re-run")
    rerun = await engine.generate(prompt, max_tokens, float(temperature), answer.seed or seed)
    if rerun.token_ids == tokens:
        return _ok("the same tokens as the reference with the same seed")
    return _unsure(
        "inconclusive",
        "a sampled answer differs from the reference's run with the same seed; without an "
        "activation proof that is not proof of cheating",
    )


def _truncation(engine: Engine, answer: _Generation, max_tokens: int) -> Finding | None:
    tokens = answer.token_ids
    if answer.finish_reason == "length" and len(tokens) != max_tokens:
        return _guilty(
            "truncated",
            f'claims "length" after {len(tokens)} tokens; max_tokens was {max_tokens}',
        )
    eos = _eos_ids(engine)
    if answer.finish_reason == "stop" and eos is not None and (not tokens or tokens[-1] not in eos):
        return _guilty(
            "truncated",
            f'claims "stop" after {len(tokens)} tokens without an end-of-sequence token',
        )
    return None


async def _check_proof(
    engine: Engine,
    prompt: str,
    tokens: Sequence[int],
    proof: str,
    max_tokens: int,
    proofs: ProofVerdicts | None = None,
) -> Finding | None:
    """A failed TOPLOC proof is guilty; a verified one or no verifier: None (go on)."""
    verdict = (proofs or {}).get((prompt, tuple(tokens), proof, max_tokens))
    if verdict is not None:
        if not verdict.ok:
            return _guilty("bad_proof", f"the activation proof does not verify: {verdict.reason}")
        return None
    try:
        from agora.verify.check import verify_generation_async
    except ImportError:
        return None
    try:
        verdict = await verify_generation_async(
            engine, prompt, list(tokens), proof, max_tokens=max_tokens
        )
    except ModelError as error:
        return _unsure("inconclusive", f"the reference engine failed on the proof: {error}")
    except Exception as error:  # a verifier that cannot handle this engine: not the miner's fault
        log.warning("TOPLOC verification could not run: %s", error)
        return None
    if not verdict.ok:
        return _guilty("bad_proof", f"the activation proof does not verify: {verdict.reason}")
    return None


async def _greedy(
    engine: Engine, prompt: str, max_tokens: int, tokens: list[int], text: str
) -> Finding:
    reference = await engine.generate(prompt, max_tokens, 0.0)
    if reference.token_ids == tokens:
        if text and text != reference.text:
            return _guilty(
                "wrong_output",
                f"the tokens are right but the text {text[:40]!r} is not their decoding",
            )
        return _ok("the same tokens as the reference")
    try:
        reference_lp = await engine.score(prompt, reference.token_ids)
        miner_lp = await engine.score(prompt, tokens) if tokens else []
    except InvalidRequest as error:
        return _guilty("wrong_output", f"tokens the model cannot produce: {error}")
    judgement = judge_divergence(reference.token_ids, reference_lp, tokens, miner_lp)
    if not judgement.ok:
        return _guilty("wrong_output", judgement.reason, _output_hash(reference.token_ids))
    return _ok(judgement.reason)
