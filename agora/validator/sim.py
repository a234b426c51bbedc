"""Simulated miners: one ASGI app answering for many hotkeys, honestly or not.

Tests and ``bench/bench_validator.py`` need many miners (256 in the benchmark) and miners that
misbehave in exact, known ways. Running 256 real miner processes is out of the question, so
:func:`create_sim_app` serves any number of hotkeys from one app: each request is routed by its
``X-Agora-Callee`` header, its signature checked for that hotkey (``verify_request``), and
answered with the miner API of :mod:`agora.miner.schema` and a receipt signed by that hotkey,
exactly as the real miner does it. Honest hotkeys share one reference engine behind a
``BatchedEngine``.

Behaviours (``SimBehaviour``): ``honest``; ``random`` (random unit vectors / random tokens);
``wrong-model`` (claims another model id); ``lazy`` (embeds the first text for every text /
repeats one token); ``no-receipt``; ``bad-receipt`` (signed by another key); ``slow`` (answers
after ``slow_seconds``); ``error`` (500); ``stale-hash`` (/health reports another model hash).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from agora.crypto.keys import Keypair
from agora.miner.schema import (
    EmbedRequest,
    GenerateBody,
    Health,
    ScoreRequest,
    TokenEvent,
)
from agora.models import BatchedEngine, Engine
from agora.net import (
    RequestRejected,
    embed_receipt,
    json_hash,
    make_receipt,
    receipt_event,
)
from agora.net.signing import CALLEE_HEADER, now_ms, verify_request

__all__ = ["SimBehaviour", "SimMiner", "create_sim_app"]


class SimBehaviour(StrEnum):
    HONEST = "honest"
    RANDOM = "random"
    WRONG_MODEL = "wrong-model"
    LAZY = "lazy"
    NO_RECEIPT = "no-receipt"
    BAD_RECEIPT = "bad-receipt"
    SLOW = "slow"
    ERROR = "error"
    STALE_HASH = "stale-hash"


@dataclass(frozen=True)
class SimMiner:
    keypair: Keypair
    behaviour: SimBehaviour = SimBehaviour.HONEST


def _target(request: Request) -> str:
    """The raw request target (path and query) as the caller signed it, as the guard reads it."""
    scope = request.scope
    raw_path: bytes = scope.get("raw_path") or (scope.get("root_path", "") + scope["path"]).encode()
    query: bytes = scope.get("query_string", b"")
    return (raw_path + b"?" + query if query else raw_path).decode("latin-1")


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status)


def create_sim_app(
    engine: Engine,
    miners: list[SimMiner],
    netuid: int,
    *,
    slow_seconds: float = 30.0,
    price_per_1k: int = 1000,
) -> FastAPI:
    """An app that answers for every miner in ``miners`` (see the module docstring)."""
    by_hotkey: Mapping[str, SimMiner] = {m.keypair.address: m for m in miners}
    batched = BatchedEngine(engine, max_batch_size=64, max_embed_texts=256)
    impostor = Keypair.from_name("agora/sim/impostor")
    app = FastAPI()
    served = {"n": 0}

    async def verified(request: Request) -> tuple[SimMiner, Any, bytes] | JSONResponse:
        body = await request.body()
        callee = request.headers.get(CALLEE_HEADER, "")
        miner = by_hotkey.get(callee)
        if miner is None:
            return _error(421, "wrong_callee", "no simulated miner for that hotkey")
        try:
            signed = verify_request(
                list(request.headers.items()),
                request.method,
                _target(request),
                body,
                me=callee,
                now_ms=now_ms(),
            )
        except RequestRejected as error:
            return _error(401, error.code, str(error))
        return miner, signed, body

    def receipt_for(
        miner: SimMiner, signed: Any, response_hash: str, tokens: tuple[int, int]
    ) -> Any:
        key = impostor if miner.behaviour is SimBehaviour.BAD_RECEIPT else miner.keypair
        receipt = make_receipt(
            key,
            request_hash=signed.body_sha256,
            response_hash=response_hash,
            model_id=model_id_of(miner),
            prompt_tokens=tokens[0],
            completion_tokens=tokens[1],
            price=price_per_1k * sum(tokens) // 1000,
            caller=signed.caller,
            netuid=netuid,
            nonce=signed.nonce,
        )
        if miner.behaviour is SimBehaviour.BAD_RECEIPT:  # claims the real miner signed it
            receipt = type(receipt)(**{**receipt.to_json(), "miner": miner.keypair.address})
        return receipt

    def model_id_of(miner: SimMiner) -> str:
        if miner.behaviour is SimBehaviour.WRONG_MODEL:
            task = engine.model_id.partition(":")[0]
            return f"{task}:other@{'0' * 16}"
        return engine.model_id

    async def misbehave(miner: SimMiner) -> Response | None:
        if miner.behaviour is SimBehaviour.SLOW:
            await asyncio.sleep(slow_seconds)
        if miner.behaviour is SimBehaviour.ERROR:
            return _error(500, "internal_error", "simulated failure")
        return None

    def reply(
        miner: SimMiner, signed: Any, payload: dict[str, Any], tokens: tuple[int, int]
    ) -> Response:
        served["n"] += 1
        if miner.behaviour is SimBehaviour.NO_RECEIPT:
            return JSONResponse(payload)
        receipt = receipt_for(miner, signed, json_hash(payload), tokens)
        return JSONResponse(embed_receipt(payload, receipt))

    @app.get("/health")
    async def health(request: Request) -> Response:
        # Several hotkeys share this app: the (signed) callee header says which one is asked.
        miner = by_hotkey.get(request.headers.get(CALLEE_HEADER, "")) or miners[0]
        model_hash = engine.model_hash
        if miner.behaviour is SimBehaviour.STALE_HASH:
            model_hash = "f" * 64
        return JSONResponse(
            Health(
                status="ok",
                hotkey=miner.keypair.address,
                netuid=netuid,
                model=model_id_of(miner),
                model_hash=model_hash,
                task=engine.task,
                price_per_1k_tokens=price_per_1k,
                in_flight=0,
                served=served["n"],
            ).model_dump()
        )

    @app.post("/v1/embed")
    async def embed(request: Request) -> Response:
        checked = await verified(request)
        if isinstance(checked, Response):
            return checked
        miner, signed, body = checked
        parsed = EmbedRequest.model_validate_json(body)
        failure = await misbehave(miner)
        if failure is not None:
            return failure
        texts = parsed.texts
        if miner.behaviour is SimBehaviour.RANDOM:
            rng = random.Random(signed.nonce)
            vectors = []
            for _ in texts:
                v = [rng.gauss(0, 1) for _ in range(getattr(engine, "dimension", 384) or 384)]
                norm = sum(x * x for x in v) ** 0.5
                vectors.append([x / norm for x in v])
        elif miner.behaviour is SimBehaviour.LAZY:
            first = (await batched.embed(texts[:1]))[0]
            vectors = [first for _ in texts]
        else:
            vectors = await batched.embed(texts)
        tokens = sum(len(t.split()) + 2 for t in texts)
        payload = {
            "model": model_id_of(miner),
            "embeddings": vectors,
            "usage": {"prompt_tokens": tokens, "completion_tokens": 0, "total_tokens": tokens},
        }
        return reply(miner, signed, payload, (tokens, 0))

    async def complete(miner: SimMiner, parsed: GenerateBody) -> tuple[list[int], str, str, int]:
        result = await batched.generate(
            parsed.prompt, parsed.max_tokens, parsed.temperature, parsed.seed
        )
        tokens, text = list(result.token_ids), result.text
        if miner.behaviour is SimBehaviour.RANDOM:
            rng = random.Random(parsed.prompt)
            tokens = [rng.randrange(3, 259) for _ in range(parsed.max_tokens)]
        elif miner.behaviour is SimBehaviour.LAZY:
            tokens = [tokens[0]] * len(tokens) if tokens else tokens
        return tokens, text, result.finish_reason, result.prompt_tokens

    @app.post("/v1/generate")
    async def generate(request: Request) -> Response:
        checked = await verified(request)
        if isinstance(checked, Response):
            return checked
        miner, signed, body = checked
        parsed = GenerateBody.model_validate_json(body)
        failure = await misbehave(miner)
        if failure is not None:
            return failure
        tokens, text, finish, prompt_tokens = await complete(miner, parsed)
        if not parsed.stream:
            payload = {
                "model": model_id_of(miner),
                "text": text,
                "token_ids": tokens,
                "finish_reason": finish,
                "seed": None,
                "usage": {
                    "prompt_tokens": prompt_tokens,
                    "completion_tokens": len(tokens),
                    "total_tokens": prompt_tokens + len(tokens),
                },
            }
            return reply(miner, signed, payload, (prompt_tokens, len(tokens)))

        async def events() -> AsyncIterator[bytes]:
            import hashlib

            hasher = hashlib.sha256()
            for i, token in enumerate(tokens):
                last = i == len(tokens) - 1
                event = TokenEvent(
                    text=text if last else "",
                    token_ids=[token],
                    finish_reason=finish if last else None,  # type: ignore[arg-type]
                )
                chunk = f"event: token\ndata: {event.model_dump_json()}\n\n".encode()
                hasher.update(chunk)
                yield chunk
            if miner.behaviour is not SimBehaviour.NO_RECEIPT:
                receipt = receipt_for(
                    miner, signed, hasher.hexdigest(), (prompt_tokens, len(tokens))
                )
                yield receipt_event(receipt)

        served["n"] += 1
        return StreamingResponse(events(), media_type="text/event-stream")

    @app.post("/v1/score")
    async def score(request: Request) -> Response:
        checked = await verified(request)
        if isinstance(checked, Response):
            return checked
        miner, signed, body = checked
        parsed = ScoreRequest.model_validate_json(body)
        failure = await misbehave(miner)
        if failure is not None:
            return failure
        logprobs = await batched.score(parsed.prompt, parsed.token_ids)
        if miner.behaviour is SimBehaviour.RANDOM:
            rng = random.Random(parsed.prompt)
            logprobs = [-rng.uniform(0, 10) for _ in logprobs]
        payload = {"model": model_id_of(miner), "logprobs": list(logprobs)}
        return reply(miner, signed, payload, (len(parsed.token_ids), 0))

    return app
