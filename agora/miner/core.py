"""The miner's work, without HTTP: run the engine, count and price the tokens, sign a receipt.

Each method takes the :class:`SignedRequest` the guard admitted (its ``body_sha256`` is the hash
of the exact request bytes, and its caller and nonce go into the receipt) and the parsed request,
and returns the bytes to send:

- JSON answers are the normalized JSON of the payload (sorted keys, no spaces, ASCII; what
  :func:`agora.net.receipts.json_hash` hashes) with the receipt spliced in as its
  ``agora_receipt`` field, so the payload is serialized once and a receiver re-derives the same
  hash from the parsed body. The receipt also goes in the ``X-Agora-Receipt`` header.
- Streams are ``token`` events (a :class:`TokenEvent` as JSON each) and then the
  ``agora-receipt`` event, whose ``response_hash`` covers every byte before it.

Token counts and price: an embedding request's ``prompt_tokens`` is the sum over its texts of
the tokens the model reads (the engine's tokenizer, special tokens included, capped at the
context length since longer texts are truncated); a generation's counts are the engine's own
(prompt tokens including BOS, generated tokens including a final end-of-sequence token); a score
request reads the prompt and the scored tokens and generates nothing. The price is
``ceil((prompt_tokens + completion_tokens) * price_per_1k / 1000)`` units.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from agora.crypto.keys import Keypair
from agora.miner.pricing import answer_price
from agora.miner.schema import ClassifyRequest, EmbedRequest, GenerateBody, ScoreRequest, TokenEvent
from agora.models.base import Engine, TokenChunk
from agora.net.receipts import (
    RECEIPT_FIELD,
    Receipt,
    body_hash,
    encode_receipt_header,
    make_receipt,
    stream_with_receipt,
)
from agora.net.signing import SignedRequest
from agora.protocol.codec import canonical_bytes

__all__ = ["Answer", "MinerCore", "normalized_json", "with_receipt"]

TOKEN_EVENT = b"event: token\ndata: "


def normalized_json(payload: dict[str, Any]) -> bytes:
    """The bytes :func:`agora.net.receipts.json_hash` hashes for ``payload``."""
    return json.dumps(
        payload, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    ).encode()


def with_receipt(payload_json: bytes, receipt: Receipt) -> bytes:
    """``payload_json`` (a non-empty JSON object) with the receipt added as its last field."""
    if not payload_json.startswith(b"{") or payload_json in (b"{}", b""):
        raise ValueError("the payload must be a non-empty JSON object")
    field = json.dumps(RECEIPT_FIELD).encode()
    return payload_json[:-1] + b"," + field + b":" + canonical_bytes(receipt.to_json()) + b"}"


async def _aclose(iterator: AsyncIterator[Any]) -> None:
    """Close an async generator (stops the engine's decoding loop for a caller that left)."""
    close = getattr(iterator, "aclose", None)
    if close is not None:
        await close()


@dataclass(frozen=True)
class Answer:
    """A JSON answer ready to send: the body (receipt inside) and the receipt header value."""

    body: bytes
    receipt: Receipt

    @property
    def receipt_header(self) -> str:
        return encode_receipt_header(self.receipt)


class MinerCore:
    """Runs requests on ``engine`` and signs what it answers with ``hotkey``.

    ``engine`` is what the miner serves (normally a :class:`agora.models.BatchedEngine`, so
    concurrent calls share model calls); its ``model_id`` is the id every answer and receipt
    names. ``served`` counts answers that carried a receipt.
    """

    def __init__(
        self,
        engine: Engine,
        hotkey: Keypair,
        netuid: int,
        price_per_1k: int,
        *,
        organic_engine: Engine | None = None,
        is_validator: Callable[[str], Awaitable[bool]] | None = None,
    ) -> None:
        self.engine = engine
        self.hotkey = hotkey
        self.netuid = netuid
        self.price_per_1k = price_per_1k
        self.served = 0
        # ``--cheat organic-only`` (tests and demos only, agora.miner.adversary): callers for
        # whom ``is_validator`` is False get ``organic_engine``'s answers
        self.organic_engine = organic_engine
        self.is_validator = is_validator

    async def _engine_for(self, signed: SignedRequest) -> Engine:
        if self.organic_engine is None or self.is_validator is None:
            return self.engine
        return self.engine if await self.is_validator(signed.caller) else self.organic_engine

    @property
    def model_id(self) -> str:
        return self.engine.model_id

    def _receipt(
        self, signed: SignedRequest, response_hash: str, prompt_tokens: int, completion: int
    ) -> Receipt:
        self.served += 1
        return make_receipt(
            self.hotkey,
            request_hash=signed.body_sha256,
            response_hash=response_hash,
            model_id=self.model_id,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion,
            price=answer_price(prompt_tokens + completion, self.price_per_1k),
            caller=signed.caller,
            netuid=self.netuid,
            nonce=signed.nonce,
        )

    def _answer(
        self, signed: SignedRequest, payload: dict[str, Any], prompt_tokens: int, completion: int
    ) -> Answer:
        payload_json = normalized_json(payload)
        receipt = self._receipt(signed, body_hash(payload_json), prompt_tokens, completion)
        return Answer(with_receipt(payload_json, receipt), receipt)

    @staticmethod
    def _usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
        return {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        }

    async def count_input_tokens(self, texts: list[str]) -> int:
        """Tokens the model reads for ``texts``: each counted by the engine's tokenizer and
        capped at the context length (longer inputs are truncated)."""
        counts = await asyncio.gather(*(self.engine.count_tokens(t) for t in texts))
        limit = self.engine.context_length
        return sum(min(count, limit) for count in counts)

    # -- routes -------------------------------------------------------------------------------

    async def embed(self, signed: SignedRequest, request: EmbedRequest) -> Answer:
        """Raises ModelError subclasses (UnsupportedOperation on a generator, InvalidRequest)."""
        # Counting runs beside the batched model call (both queue on the engine's thread; the
        # counts are ahead of the batch, and cheap), so it adds almost nothing to latency.
        engine = await self._engine_for(signed)
        vectors, tokens = await asyncio.gather(
            engine.embed(request.texts), self.count_input_tokens(request.texts)
        )
        payload = {"model": self.model_id, "embeddings": vectors, "usage": self._usage(tokens, 0)}
        return self._answer(signed, payload, tokens, 0)

    async def generate(self, signed: SignedRequest, request: GenerateBody) -> Answer:
        """A non-streamed completion. Raises ModelError subclasses (ContextTooLong ...)."""
        engine = await self._engine_for(signed)
        result = await engine.generate(
            request.prompt, request.max_tokens, request.temperature, request.seed
        )
        payload = {
            "model": self.model_id,
            "text": result.text,
            "token_ids": result.token_ids,
            "finish_reason": result.finish_reason,
            "seed": result.seed,
            "usage": self._usage(result.prompt_tokens, result.completion_tokens),
            "toploc": result.proof,
        }
        return self._answer(signed, payload, result.prompt_tokens, result.completion_tokens)

    async def stream(self, signed: SignedRequest, request: GenerateBody) -> AsyncIterator[bytes]:
        """The event stream of a completion, receipt last.

        The first token is computed before this returns, so a request the engine refuses
        (ContextTooLong, UnsupportedOperation ...) raises here and can still be answered with an
        error status instead of a broken stream.
        """
        engine = await self._engine_for(signed)
        chunks = engine.stream(
            request.prompt, request.max_tokens, request.temperature, request.seed
        )
        try:
            first = await anext(chunks)
        except BaseException:
            await _aclose(chunks)
            raise
        counts = [first.prompt_tokens, first.completion_tokens]

        async def events() -> AsyncIterator[bytes]:
            try:
                chunk: TokenChunk | None = first
                while chunk is not None:
                    counts[:] = [chunk.prompt_tokens, chunk.completion_tokens]
                    event = TokenEvent(
                        text=chunk.text,
                        token_ids=chunk.token_ids,
                        finish_reason=chunk.finish_reason,
                        seed=chunk.seed,
                        toploc=chunk.proof,
                    )
                    yield TOKEN_EVENT + normalized_json(event.model_dump()) + b"\n\n"
                    chunk = await anext(chunks, None)
            finally:
                await _aclose(chunks)

        def finish(response_hash: str) -> Receipt:
            return self._receipt(signed, response_hash, counts[0], counts[1])

        return stream_with_receipt(events(), finish)

    async def classify(self, signed: SignedRequest, request: ClassifyRequest) -> Answer:
        """A proven classification (ZK subnets). Raises ModelError subclasses."""
        engine = await self._engine_for(signed)
        result = await engine.classify(request.features)
        tokens = len(request.features)
        payload = {"model": self.model_id, **result, "usage": self._usage(tokens, 0)}
        return self._answer(signed, payload, tokens, 0)

    async def score(self, signed: SignedRequest, request: ScoreRequest) -> Answer:
        """Logprobs of ``token_ids`` after ``prompt``. Raises ModelError subclasses."""
        logprobs, prompt_tokens = await asyncio.gather(
            self.engine.score(request.prompt, request.token_ids),
            self.engine.count_tokens(request.prompt),
        )
        tokens = prompt_tokens + len(request.token_ids)
        payload = {"model": self.model_id, "logprobs": logprobs, "usage": self._usage(tokens, 0)}
        return self._answer(signed, payload, tokens, 0)
