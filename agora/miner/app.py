"""The miner's HTTP API (the routes of :mod:`agora.miner.schema`), as a FastAPI app.

    app = create_app(core, guard, health=miner.health)

Layers, outside in: a counter of requests in flight, the wire guard
(:class:`agora.net.AgoraGuardMiddleware`: signature, nonce, freshness, the caller's standing,
rate limit; ``/health`` and ``/openapi.json`` are public), then the routes, which hand the
verified request to :class:`agora.miner.core.MinerCore`. Errors are
``{"error": {"code", "message"}}`` like the guard's: 400 for a request the model refuses
(``invalid_request``, ``context_too_long``, ``unsupported_operation``), 422 ``invalid_request``
for a body that is not JSON of the schema (read whatever the Content-Type), 503
``engine_closed`` while shutting down. Only answers carry receipts: an error costs nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ValidationError
from starlette.types import ASGIApp, Receive, Scope, Send

from agora.miner.core import Answer, MinerCore
from agora.miner.schema import (
    ClassifyRequest,
    ClassifyResponse,
    EmbedRequest,
    EmbedResponse,
    GenerateBody,
    GenerateResponse,
    Health,
    ScoreRequest,
    ScoreResponse,
)
from agora.models.errors import (
    ContextTooLong,
    EngineClosed,
    InvalidRequest,
    ModelError,
    UnsupportedOperation,
)
from agora.net.guard import AgoraGuardMiddleware, RequestGuard, verified_request
from agora.net.receipts import RECEIPT_HEADER
from agora.net.signing import SignedRequest

__all__ = ["PUBLIC_PATHS", "InFlight", "InFlightMiddleware", "create_app"]

log = logging.getLogger(__name__)

PUBLIC_PATHS = frozenset({"/health", "/openapi.json"})


async def _verified(request: Request) -> SignedRequest:
    # async, so FastAPI calls it inline rather than on its thread pool (a sync dependency
    # costs a thread hop per request)
    return verified_request(request)


Signed = Annotated[SignedRequest, Depends(_verified)]
M = TypeVar("M", bound=BaseModel)
Endpoint = TypeVar("Endpoint", bound=Callable[..., Awaitable[Response]])


class InvalidBody(Exception):
    """The request body is not JSON of the route's schema."""


def json_body(model: type[M]) -> Callable[[Request], Awaitable[M]]:
    """A dependency that reads the body as JSON of ``model``, whatever its Content-Type says
    (callers sign the exact bytes; the miner reads them one way only)."""

    async def parse(request: Request) -> M:
        try:
            return model.model_validate_json(await request.body())
        except ValidationError as error:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in item['loc']) or 'body'}: {item['msg']}"
                for item in error.errors()
            )
            raise InvalidBody(f"the request body does not match: {problems}") from None

    return parse


def _documented(model: type[BaseModel]) -> dict[str, Any]:
    schema = {"content": {"application/json": {"schema": model.model_json_schema()}}}
    return {"requestBody": {**schema, "required": True}}


class InFlight:
    """How many guarded HTTP requests are being handled (a stream counts until its end)."""

    def __init__(self) -> None:
        self.count = 0


class InFlightMiddleware:
    """ASGI middleware that keeps an :class:`InFlight` up to date."""

    def __init__(self, app: ASGIApp, counter: InFlight) -> None:
        self.app = app
        self.counter = counter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in PUBLIC_PATHS:
            await self.app(scope, receive, send)
            return
        self.counter.count += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.counter.count -= 1


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)


def _model_error(error: ModelError, core: MinerCore) -> JSONResponse:
    if isinstance(error, UnsupportedOperation):
        route = {"embed": "/v1/embed", "classify": "/v1/classify"}.get(
            core.engine.task, "/v1/generate or /v1/score"
        )
        return _error(
            400,
            "unsupported_operation",
            f"{error}; this miner serves {core.model_id}: call {route}",
        )
    if isinstance(error, ContextTooLong):
        return _error(400, "context_too_long", f"{error}; shorten the prompt or max_tokens")
    if isinstance(error, InvalidRequest):
        return _error(400, "invalid_request", str(error))
    if isinstance(error, EngineClosed):
        return _error(503, "engine_closed", "this miner is shutting down; call another miner")
    log.exception("model error", exc_info=error)
    return _error(500, "model_error", f"the model failed: {error}")


def _send(answer: Answer) -> Response:
    return Response(
        answer.body,
        media_type="application/json",
        headers={RECEIPT_HEADER: answer.receipt_header},
    )


def create_app(
    core: MinerCore,
    guard: RequestGuard,
    health: Callable[[InFlight], Health],
) -> FastAPI:
    """The miner's app: ``core`` does the work, ``guard`` admits callers, ``health`` builds the
    ``/health`` answer from the in-flight counter."""
    app = FastAPI(
        title="Agora miner",
        summary=f"Serves {core.model_id}; every answer carries a receipt signed by the miner.",
        docs_url=None,
        redoc_url=None,
    )
    answers: dict[int | str, dict[str, Any]] = {
        200: {"description": "The answer, with its receipt in the body and the header."}
    }

    @app.exception_handler(InvalidBody)
    async def invalid_body(request: Request, error: InvalidBody) -> JSONResponse:
        return _error(422, "invalid_request", str(error))

    def route(
        path: str, request: type[BaseModel], response: type[BaseModel]
    ) -> Callable[[Endpoint], Endpoint]:
        return app.post(
            path, response_model=response, responses=answers, openapi_extra=_documented(request)
        )

    @route("/v1/embed", EmbedRequest, EmbedResponse)
    async def embed(
        body: Annotated[EmbedRequest, Depends(json_body(EmbedRequest))], signed: Signed
    ) -> Response:
        """Embed ``texts``: one unit vector per text, in order."""
        try:
            return _send(await core.embed(signed, body))
        except ModelError as error:
            return _model_error(error, core)

    @route("/v1/generate", GenerateBody, GenerateResponse)
    async def generate(
        body: Annotated[GenerateBody, Depends(json_body(GenerateBody))], signed: Signed
    ) -> Response:
        """Complete ``prompt``; with ``"stream": true``, ``token`` events then the receipt."""
        try:
            if body.stream:
                events = await core.stream(signed, body)
                return StreamingResponse(
                    events,
                    media_type="text/event-stream",
                    headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
                )
            return _send(await core.generate(signed, body))
        except ModelError as error:
            return _model_error(error, core)

    @route("/v1/score", ScoreRequest, ScoreResponse)
    async def score(
        body: Annotated[ScoreRequest, Depends(json_body(ScoreRequest))], signed: Signed
    ) -> Response:
        """Natural-log probabilities of ``token_ids`` after ``prompt`` (for validators)."""
        try:
            return _send(await core.score(signed, body))
        except ModelError as error:
            return _model_error(error, core)

    @route("/v1/classify", ClassifyRequest, ClassifyResponse)
    async def classify(
        body: Annotated[ClassifyRequest, Depends(json_body(ClassifyRequest))], signed: Signed
    ) -> Response:
        """Classify one row of ``features``; the answer carries an EZKL proof (ZK subnets)."""
        try:
            return _send(await core.classify(signed, body))
        except ModelError as error:
            return _model_error(error, core)

    in_flight = InFlight()
    app.add_middleware(AgoraGuardMiddleware, guard=guard, public_paths=PUBLIC_PATHS)
    app.add_middleware(InFlightMiddleware, counter=in_flight)  # outermost: counts everything

    @app.get("/health", response_model=Health)
    async def health_route() -> Health:
        """Public: what this miner serves, at what price, and how busy it is."""
        return health(in_flight)

    return app
