"""The miner's HTTP API: one pydantic model per request and per response.

Shared by the miner (which serves it), the validator and the gateway (which call it). Every
route but ``/health`` is guarded by :mod:`agora.net.guard` (signed by the caller's hotkey) and
every answer carries a receipt signed by the miner's hotkey (:mod:`agora.net.receipts`): in the
``X-Agora-Receipt`` header and in the ``agora_receipt`` field of JSON bodies, or as the final
``agora-receipt`` event of a stream.

    POST /v1/embed      EmbedRequest    -> EmbedResponse
    POST /v1/generate   GenerateBody    -> GenerateResponse, or with "stream": true an
                                           event stream of ``token`` events (TokenEvent JSON)
                                           then one ``agora-receipt`` event
    POST /v1/score      ScoreRequest    -> ScoreResponse     (logprobs of given tokens)
    POST /v1/classify   ClassifyRequest -> ClassifyResponse  (label, scores, EZKL proof)
    GET  /health                        -> Health            (public, unsigned)
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

MAX_TEXTS = 256
MAX_TEXT_CHARS = 16_384


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int = 0
    total_tokens: int


class EmbedRequest(BaseModel):
    texts: list[str] = Field(min_length=1, max_length=MAX_TEXTS)


class EmbedResponse(BaseModel):
    model: str = Field(description="The model id the miner ran (task:name@hash16).")
    embeddings: list[list[float]]
    usage: Usage
    agora_receipt: dict[str, Any] | None = None


class GenerateBody(BaseModel):
    prompt: str = Field(max_length=MAX_TEXT_CHARS)
    max_tokens: int = Field(default=64, ge=1, le=4096)
    temperature: float = Field(default=0.0, ge=0.0, le=100.0)
    seed: int | None = Field(default=None, ge=0, le=2**63 - 1)
    stream: bool = False


class GenerateResponse(BaseModel):
    model: str
    text: str
    token_ids: list[int]
    finish_reason: Literal["stop", "length"]
    seed: int | None
    usage: Usage
    toploc: str | None = Field(
        default=None,
        description="TOPLOC activation proof of the completion (base64; docs/verification.md). "
        "Part of the body the receipt's response_hash commits to; None for engines without one.",
    )
    agora_receipt: dict[str, Any] | None = None


class TokenEvent(BaseModel):
    """One ``token`` event of a streamed generation."""

    text: str
    token_ids: list[int]
    finish_reason: Literal["stop", "length"] | None = None
    seed: int | None = Field(
        default=None, description="The seed the tokens are sampled with (None when greedy)."
    )
    toploc: str | None = Field(
        default=None,
        description="On the final event only: the TOPLOC activation proof of the whole "
        "completion (base64), covered by the stream's receipt.",
    )


class ScoreRequest(BaseModel):
    prompt: str = Field(max_length=MAX_TEXT_CHARS)
    token_ids: list[int] = Field(max_length=4096)


class ScoreResponse(BaseModel):
    model: str
    logprobs: list[float]
    usage: Usage | None = Field(
        default=None,
        description="Scoring generates nothing: prompt_tokens counts the prompt and token_ids.",
    )
    agora_receipt: dict[str, Any] | None = None


class ClassifyRequest(BaseModel):
    features: list[float] = Field(min_length=1, max_length=1024)


class ClassifyResponse(BaseModel):
    model: str
    label: int
    label_name: str
    scores: list[float] = Field(description="The proof's public outputs (logits), dequantized.")
    proof: dict[str, Any] = Field(
        description='EZKL proof: {"instances": [[felt, ...]], "proof": "<hex>"} (agora.zk.proof).'
    )
    usage: Usage
    agora_receipt: dict[str, Any] | None = None


class Health(BaseModel):
    status: Literal["ok", "starting", "stopping"]
    hotkey: str
    netuid: int
    model: str
    model_hash: str
    task: Literal["embed", "generate", "classify"]
    price_per_1k_tokens: int = Field(description="Units charged per 1,000 tokens.")
    in_flight: int
    served: int
