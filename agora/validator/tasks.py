"""What a probe is, per kind of subnet: the reference work of a round and the check of one miner.

A round has two steps. ``prepare(seed)`` builds the round's pool of inputs
(:mod:`agora.validator.probes`) and runs the reference model on it once, whatever the number of
miners. ``probe(client, target, plan)`` then asks one miner, in this order, stopping at the first
failure:

1. ``GET /health``: it answers for the metagraph's hotkey and subnet, and serves the reference's
   model (same full ``model_hash``, same ``task``).
2. The main request, on the miner's own draw from the pool: ``/v1/embed`` (a batch of 3 to 8
   texts), or ``/v1/generate`` (one greedy prompt, streamed on odd rounds so the streaming path is
   checked too). The answer's ``model`` and the receipt's ``model_id`` must be the reference's
   ``model_id``; the receipt must verify (:mod:`agora.validator.prober`).
3. For generators, ``/v1/score`` of the reference's own tokens, checked against the reference's
   logprobs.

ZK subnets (``classify:``) need no reference run: the miner classifies one held-out row of the
dataset (drawn with the round's seeded generator) and its EZKL proof is verified against the
verification key this validator derived itself from the same model spec, and against the row
asked and the label and scores answered (:mod:`agora.zk.proof`).

Answers are compared as :mod:`agora.validator.checks` describes. Tokens for throughput are
counted by the validator's own tokenizer, never taken from the miner.
"""

from __future__ import annotations

import asyncio
import logging
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

from agora.models import Engine, InvalidRequest, ModelError
from agora.validator import probes
from agora.validator.checks import (
    ProbeFailed,
    Verdict,
    check_embeddings,
    check_logprobs,
    judge_divergence,
)
from agora.validator.prober import Answer, MinerClient, MinerTarget, StreamedGeneration
from agora.validator.scoring import ProbeOutcome

__all__ = [
    "ClassifyTask",
    "EmbedTask",
    "GenerateTask",
    "ProbeTask",
    "RoundPlan",
    "run_round",
    "task_for",
]

log = logging.getLogger("agora.validator")


@dataclass
class RoundPlan:
    """One round's inputs and the reference's answers to them."""

    seed: bytes
    round_no: int
    inputs: list[str]
    reference: Any  # per task: vectors, or (tokens, logprobs, text) per prompt
    token_counts: list[int]


class ProbeTask(ABC):
    """Probing for one kind of model, against a reference engine."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    @abstractmethod
    async def prepare(self, seed: bytes, round_no: int) -> RoundPlan:
        """The round's pool and the reference's answers (run once per round)."""

    @abstractmethod
    async def _ask(
        self, client: MinerClient, target: MinerTarget, plan: RoundPlan
    ) -> tuple[Answer, int]:
        """Send the main request and check it; return the answer and the tokens it processed.

        Raises:
            ProbeFailed: with the verdict.
        """

    async def probe(
        self, client: MinerClient, target: MinerTarget, plan: RoundPlan
    ) -> ProbeOutcome:
        """Ask one miner and judge it. Never raises for anything the miner does: an unexpected
        error while judging (a bug, or an answer nobody foresaw) is logged with its traceback
        and scores as ``malformed``."""
        try:
            health = await client.health(target)
            if health.model_hash != self.engine.model_hash or health.task != self.engine.task:
                raise ProbeFailed(
                    Verdict.WRONG_MODEL,
                    f"/health says {health.task} model {health.model} "
                    f"(hash {health.model_hash[:16]}…), the subnet runs {self.engine.model_id}",
                )
            answer, tokens = await self._ask(client, target, plan)
        except ProbeFailed as failure:
            return ProbeOutcome(target.uid, target.hotkey, failure.verdict, failure.reason)
        except Exception as error:
            log.exception("probing uid %d at %s failed unexpectedly", target.uid, target.url)
            reason = f"unexpected {type(error).__name__} while judging: {error}"[:300]
            return ProbeOutcome(target.uid, target.hotkey, Verdict.MALFORMED, reason)
        return ProbeOutcome(
            target.uid,
            target.hotkey,
            Verdict.OK,
            "ok",
            latency=answer.latency,
            tokens=tokens,
            first_token=answer.first_token,
        )

    def _check_model(self, claimed: str, receipt_model: str) -> None:
        expected = self.engine.model_id
        if claimed != expected or receipt_model != expected:
            shown = claimed if claimed != expected else receipt_model
            raise ProbeFailed(
                Verdict.WRONG_MODEL, f"answered with model {shown!r}, the subnet runs {expected}"
            )


class EmbedTask(ProbeTask):
    """Embedding subnets: batches of texts, compared by cosine similarity."""

    def __init__(
        self,
        engine: Engine,
        *,
        synthetic: int = 12,
        shipped: int = 4,
        batch: tuple[int, int] = (3, 8),
    ) -> None:
        super().__init__(engine)
        self.synthetic, self.shipped, self.batch = synthetic, shipped, batch

    async def prepare(self, seed: bytes, round_no: int) -> RoundPlan:
        texts = probes.embed_pool(seed, self.synthetic, self.shipped)
        vectors = await self.engine.embed(texts)
        counts = [await self.engine.count_tokens(text) for text in texts]
        return RoundPlan(seed, round_no, texts, vectors, counts)

    async def _ask(
        self, client: MinerClient, target: MinerTarget, plan: RoundPlan
    ) -> tuple[Answer, int]:
        picks = probes.draw(plan.seed, target.uid, len(plan.inputs), *self.batch)
        answer = await client.embed(target, [plan.inputs[i] for i in picks])
        self._check_model(answer.payload.model, answer.receipt.model_id)
        judgement = check_embeddings([plan.reference[i] for i in picks], answer.payload.embeddings)
        if not judgement.ok:
            raise ProbeFailed(Verdict.WRONG_OUTPUT, judgement.reason)
        return answer, sum(plan.token_counts[i] for i in picks)


@dataclass(frozen=True)
class _Reference:
    tokens: list[int]
    logprobs: list[float]
    text: str


class GenerateTask(ProbeTask):
    """Text-generation subnets: greedy tokens, a near-tie rule, and logprobs."""

    def __init__(
        self,
        engine: Engine,
        *,
        max_tokens: int = 16,
        synthetic: int = 2,
        shipped: int = 1,
        score_probes: bool = True,
    ) -> None:
        super().__init__(engine)
        self.max_tokens = max_tokens
        self.synthetic, self.shipped = synthetic, shipped
        self.score_probes = score_probes

    async def prepare(self, seed: bytes, round_no: int) -> RoundPlan:
        prompts = probes.generate_pool(seed, self.synthetic, self.shipped)
        references = []
        counts = []
        for prompt in prompts:
            result = await self.engine.generate(prompt, self.max_tokens, 0.0)
            logprobs = await self.engine.score(prompt, result.token_ids)
            references.append(_Reference(list(result.token_ids), list(logprobs), result.text))
            counts.append(result.prompt_tokens)
        return RoundPlan(seed, round_no, prompts, references, counts)

    async def _ask(
        self, client: MinerClient, target: MinerTarget, plan: RoundPlan
    ) -> tuple[Answer, int]:
        (index,) = probes.draw(plan.seed, target.uid, len(plan.inputs), 1, 1)
        prompt, reference = plan.inputs[index], plan.reference[index]
        stream = plan.round_no % 2 == 1
        answer = await client.generate(target, prompt, self.max_tokens, stream=stream)
        if stream:  # token events carry no model: the receipt's model_id is the claim
            streamed: StreamedGeneration = answer.payload
            tokens, text, claimed = streamed.token_ids, streamed.text, self.engine.model_id
        else:
            tokens, text, claimed = (
                answer.payload.token_ids,
                answer.payload.text,
                answer.payload.model,
            )
        self._check_model(claimed, answer.receipt.model_id)
        await self._check_tokens(prompt, reference, tokens, text)
        if self.score_probes:
            scored = await client.score(target, prompt, reference.tokens)
            self._check_model(scored.payload.model, scored.receipt.model_id)
            judgement = check_logprobs(reference.logprobs, scored.payload.logprobs)
            if not judgement.ok:
                raise ProbeFailed(Verdict.WRONG_OUTPUT, f"/v1/score: {judgement.reason}")
        return answer, plan.token_counts[index] + len(tokens)

    async def _check_tokens(
        self, prompt: str, reference: _Reference, tokens: list[int], text: str
    ) -> None:
        if len(tokens) > self.max_tokens:
            raise ProbeFailed(
                Verdict.WRONG_OUTPUT, f"{len(tokens)} tokens for max_tokens={self.max_tokens}"
            )
        if tokens == reference.tokens:
            if text != reference.text:
                raise ProbeFailed(
                    Verdict.WRONG_OUTPUT,
                    f"the tokens are right but the text {text[:40]!r} is not their decoding "
                    f"{reference.text[:40]!r}",
                )
            return
        try:
            logprobs = await self.engine.score(prompt, tokens) if tokens else []
        except InvalidRequest as error:
            raise ProbeFailed(
                Verdict.WRONG_OUTPUT, f"tokens the model cannot have: {error}"
            ) from None
        except ModelError as error:  # the validator's own engine failed: not the miner's doing
            raise ProbeFailed(
                Verdict.INCONCLUSIVE, f"the reference engine failed: {error}"
            ) from None
        judgement = judge_divergence(reference.tokens, reference.logprobs, tokens, logprobs)
        if not judgement.ok:
            raise ProbeFailed(Verdict.WRONG_OUTPUT, judgement.reason)


class ClassifyTask(ProbeTask):
    """ZK subnets: one held-out row per miner, answered with a proof that must verify."""

    def __init__(self, engine: Engine) -> None:
        super().__init__(engine)
        inner: Any = engine
        while not hasattr(inner, "circuit") and hasattr(inner, "engine"):
            inner = inner.engine  # a BatchedEngine around the real one
        if not hasattr(inner, "circuit"):
            raise InvalidRequest(f"{engine.model_id} has no circuit to verify proofs with")
        self.circuit = inner.circuit

    async def prepare(self, seed: bytes, round_no: int) -> RoundPlan:
        data = self.circuit.data
        rows = [data.holdout(i) for i in range(len(data.holdout_rows))]
        return RoundPlan(seed, round_no, [str(i) for i in range(len(rows))], rows, [])

    async def _ask(
        self, client: MinerClient, target: MinerTarget, plan: RoundPlan
    ) -> tuple[Answer, int]:
        from agora.zk.errors import ProofRejected
        from agora.zk.proof import verify_classification

        (index,) = probes.draw(plan.seed, target.uid, len(plan.reference), 1, 1)
        features = plan.reference[index]
        answer = await client.classify(target, features)
        payload = answer.payload
        self._check_model(payload.model, answer.receipt.model_id)
        try:
            await asyncio.to_thread(
                verify_classification,
                self.circuit,
                features,
                payload.label,
                payload.scores,
                payload.proof,
            )
        except ProofRejected as error:
            raise ProbeFailed(Verdict.WRONG_OUTPUT, f"{error.reason}: {error}") from None
        if payload.label_name != self.circuit.label_names[payload.label]:
            raise ProbeFailed(
                Verdict.WRONG_OUTPUT,
                f"label {payload.label} is {self.circuit.label_names[payload.label]!r}, "
                f"not {payload.label_name!r}",
            )
        return answer, len(features)


def task_for(engine: Engine, **options: Any) -> ProbeTask:
    """The probe task for a reference engine's kind."""
    if engine.task == "embed":
        return EmbedTask(engine, **options)
    if engine.task == "classify":
        return ClassifyTask(engine)
    return GenerateTask(engine, **options)


async def run_round(
    task: ProbeTask,
    client: MinerClient,
    targets: list[MinerTarget],
    plan: RoundPlan,
    concurrency: int = 64,
) -> list[ProbeOutcome]:
    """Probe every target, at most ``concurrency`` at a time; outcomes in target order."""
    gate = asyncio.Semaphore(max(1, concurrency))

    async def one(target: MinerTarget) -> ProbeOutcome:
        async with gate:
            return await task.probe(client, target, plan)

    return list(await asyncio.gather(*(one(target) for target in targets)))
