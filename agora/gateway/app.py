"""The gateway's HTTP API (Starlette): OpenAI's routes, key management, usage, transparency.

    GET  /v1/models                 the model names served (Bearer key)
    POST /v1/embeddings             OpenAI embeddings (Bearer key)
    POST /v1/chat/completions       OpenAI chat, streamed or not (Bearer key)
    POST /v1/completions            OpenAI legacy completions, streamed or not (Bearer key)
    GET  /v1/usage                  what the key spent, per miner and model, and recent calls
    POST /v1/keys                   create a key for a channel (signed by the paying account)
    GET  /v1/keys                   the caller's keys and their escrow (signed by the account)
    POST /v1/keys/{key_id}/refresh  re-read the key's channel after a top-up (signed)
    POST /v1/keys/{key_id}/revoke   stop a key for good (signed by its account)
    GET  /v1/gateway                public: the gateway's address, chain, models, terms
    GET  /v1/gateway/miners         public: the miners it routes to and what it measured
    GET  /v1/gateway/stats          public: answers by status, errors by code, spend per key today
    GET  /v1/gateway/receipts       public: receipts of answers served (?miner=&netuid=&limit=
                                    &before=), newest first, without content
    GET  /v1/gateway/receipts/{h}   public: one receipt by its hash
    GET  /v1/gateway/audit          validators only (signed by a hotkey with a validator permit
                                    on ?netuid=): receipts with the request and response bytes
                                    (?since_ms=&limit=, or ?hash=), oldest first
                                    (agora.gateway.archive)
    GET  /health                    public: is it up

Requests to the key routes are signed with the account's coldkey in the ``agora.net`` wire
format (``AgoraAuth(coldkey, gateway_address)``), which proves the caller owns the account that
pays. Errors are OpenAI's ``{"error": {"message", "type", "param", "code"}}``; order of checks
on the OpenAI routes: key (401), rate (429), body (413, 400), model (404), context (400),
escrow (402) and spend limit (429), miners (503, 502).
"""

from __future__ import annotations

import contextlib
import json
import logging
import secrets
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from agora import __version__
from agora.chain.errors import NodeError
from agora.gateway.accounts import KeyState
from agora.gateway.config import ModelRoute
from agora.gateway.errors import (
    ApiError,
    AuthenticationFailed,
    BadRequest,
    Conflict,
    ContextTooLong,
    Forbidden,
    ModelNotFound,
    NotFound,
    PayloadTooLarge,
)
from agora.gateway.forward import Outcome, embed_body, generate_body
from agora.gateway.openai_api import (
    MAX_PROMPT_CHARS,
    GenerationCall,
    chat_chunk,
    completion_chunk,
    embeddings_response,
    generation_response,
    parse_chat,
    parse_completions,
    parse_embeddings,
    parse_json_body,
)
from agora.gateway.stats import Traffic, TrafficCounter, stats_endpoint
from agora.gateway.tokens import render_chat
from agora.net.errors import RequestRejected
from agora.net.receipts import RECEIPT_HEADER
from agora.net.signing import DEFAULT_WINDOW_MS, SignedRequest, now_ms, verify_request
from agora.protocol.units import format_amount

if TYPE_CHECKING:
    from agora.gateway.service import Gateway

__all__ = ["create_app"]

log = logging.getLogger(__name__)

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(
        json.dumps(data, separators=(",", ":")).encode(),
        status_code=status,
        media_type="application/json",
        headers=headers,
    )


def _error_response(error: ApiError) -> Response:
    return _json(error.to_json(), error.status, error.headers())


async def _read_body(request: Request, limit: int) -> bytes:
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise PayloadTooLarge(f"the body is over the {limit}-byte limit", code="body_too_large")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise PayloadTooLarge(f"the body is over the {limit}-byte limit", code="body_too_large")
    return bytes(body)


def _is_hex(text: str) -> bool:
    return all(c in "0123456789abcdef" for c in text.lower())


def _target(request: Request) -> str:
    scope = request.scope
    raw_path: bytes = scope.get("raw_path") or scope["path"].encode()
    query: bytes = scope.get("query_string", b"")
    return (raw_path + b"?" + query if query else raw_path).decode("latin-1")


def create_app(gateway: Gateway) -> Starlette:
    """The HTTP API of a :class:`agora.gateway.service.Gateway`."""
    config = gateway.config
    accounts = gateway.accounts
    forwarder = gateway.forwarder
    traffic = Traffic()  # public aggregate counters (agora.gateway.stats)
    limit = config.max_body_bytes

    def resolve(name: str, task: str) -> ModelRoute:
        route = config.model(name)
        if route is None:
            names = ", ".join(r.name for r in config.models)
            raise ModelNotFound(f"the model {name!r} does not exist; this gateway serves: {names}")
        if route.task != task:
            what = "an embedding" if route.task == "embed" else "a generation"
            raise BadRequest(
                f"{name} is {what} model; call "
                + ("/v1/embeddings" if route.task == "embed" else "/v1/chat/completions"),
                param="model",
                code="wrong_endpoint",
            )
        return route

    async def caller(request: Request) -> tuple[KeyState, bytes]:
        key = accounts.authenticate(request.headers.get("authorization"))
        accounts.check_rate(key)
        return key, await _read_body(request, limit)

    # -- OpenAI routes --------------------------------------------------------------------------

    async def models(request: Request) -> Response:
        accounts.authenticate(request.headers.get("authorization"))
        created = gateway.started_s
        data = [
            {
                "id": r.name,
                "object": "model",
                "created": created,
                "owned_by": r.owned_by,
                "agora_subnet": r.netuid,
                "agora_task": r.task,
                "agora_context_length": r.context_length,
            }
            for r in config.models
        ]
        return _json({"object": "list", "data": data})

    async def embeddings(request: Request) -> Response:
        key, body = await caller(request)
        call = parse_embeddings(parse_json_body(body))
        route = resolve(call.model, "embed")
        counts = gateway.counters[route.name].count_many(call.texts)
        for index, count in enumerate(counts):
            if count > route.context_length:
                raise ContextTooLong(
                    f"this model's maximum context length is {route.context_length} tokens, "
                    f"however you requested {count} tokens in input[{index}]; shorten the input",
                    param="input",
                    extra={"context_length": route.context_length, "requested": count},
                )
        outcome = await forwarder.call_json(
            key, route, "/v1/embed", embed_body(call.texts), sum(counts), 0
        )
        rows = outcome.payload["rows"]
        content = embeddings_response(
            call.model,
            rows,
            call.encoding_format,
            outcome.receipt.prompt_tokens,
            outcome.receipt_json,
            outcome.charged,
        )
        return Response(
            content, media_type="application/json", headers={RECEIPT_HEADER: outcome.receipt_header}
        )

    def prepare(call: GenerationCall, route: ModelRoute) -> tuple[bytes, int, int, int | None]:
        if call.chat:
            assert call.messages is not None
            prompt = render_chat(call.messages)
            param = "messages"
        else:
            assert call.prompt is not None
            prompt, param = call.prompt, "prompt"
        if len(prompt) > MAX_PROMPT_CHARS:
            raise BadRequest(
                f"the prompt is {len(prompt)} characters; at most {MAX_PROMPT_CHARS}", param=param
            )
        prompt_tokens = gateway.counters[route.name].count(prompt)
        room = route.context_length - prompt_tokens
        max_tokens = call.max_tokens
        if max_tokens is None:
            max_tokens = min(route.default_max_tokens, room)
        if room < 1 or prompt_tokens + max_tokens > route.context_length:
            raise ContextTooLong(
                f"this model's maximum context length is {route.context_length} tokens; however "
                f"you requested {prompt_tokens + max(max_tokens, 1)} tokens ({prompt_tokens} in "
                f"the {param}, {max(max_tokens, 1)} in the completion); reduce the length of the "
                f"{param} or of max_tokens",
                param=param,
                extra={"context_length": route.context_length, "requested": prompt_tokens},
            )
        seed = None
        if call.temperature > 0:  # sampling: a seed makes the answer replayable (failover)
            seed = call.seed if call.seed is not None else secrets.randbits(63)
        body = generate_body(prompt, max_tokens, call.temperature, seed, call.stream)
        return body, prompt_tokens, max_tokens, seed

    async def generation(request: Request, chat: bool) -> Response:
        key, body = await caller(request)
        data = parse_json_body(body)
        call = parse_chat(data) if chat else parse_completions(data)
        route = resolve(call.model, "generate")
        miner_body, prompt_tokens, max_tokens, _ = prepare(call, route)
        if call.stream:
            return await streamed(key, route, call, miner_body, prompt_tokens, max_tokens)
        outcome = await forwarder.call_json(
            key, route, "/v1/generate", miner_body, prompt_tokens, max_tokens
        )
        payload = outcome.payload
        answer = generation_response(
            call,
            outcome.request_id,
            payload["text"],
            payload.get("finish_reason") or "stop",
            payload["token_ids"],
            payload.get("seed"),
            outcome.receipt,
            outcome.charged,
            miner_body,
            outcome.receipt_dict,
            toploc=payload.get("toploc"),
        )
        return _json(answer, headers={RECEIPT_HEADER: outcome.receipt_header})

    async def streamed(
        key: KeyState,
        route: ModelRoute,
        call: GenerationCall,
        miner_body: bytes,
        prompt_tokens: int,
        max_tokens: int,
    ) -> Response:
        events = forwarder.stream(key, route, miner_body, prompt_tokens, max_tokens)
        try:
            first = await anext(events)
        except BaseException:
            await events.aclose()
            raise
        created = int(time.time())
        stream_id = ("chatcmpl-" if call.chat else "cmpl-") + secrets.token_hex(12)
        usage_field = {"usage": None} if call.include_usage else {}

        def chunk(text: str | None, finish: str | None = None, **extra: Any) -> bytes:
            if call.chat:
                delta: dict[str, Any] = {} if text is None else {"content": text}
                data = chat_chunk(
                    stream_id, call.model, created, delta, finish, **usage_field, **extra
                )
            else:
                data = completion_chunk(
                    stream_id, call.model, created, text or "", finish, **usage_field, **extra
                )
            return b"data: " + json.dumps(data, separators=(",", ":")).encode() + b"\n\n"

        async def sse() -> AsyncIterator[bytes]:
            async with contextlib.aclosing(events):
                if call.chat:
                    role = chat_chunk(
                        stream_id,
                        call.model,
                        created,
                        {"role": "assistant", "content": ""},
                        **usage_field,
                    )
                    yield b"data: " + json.dumps(role, separators=(",", ":")).encode() + b"\n\n"
                item: dict[str, Any] | Outcome = first
                finish: str | None = None
                seed = None
                toploc: str | None = None
                try:
                    while not isinstance(item, Outcome):
                        finish = item.get("finish_reason") or finish
                        seed = item.get("seed", seed)
                        toploc = item.get("toploc") or toploc
                        yield chunk(item["text"], agora_token_ids=item["token_ids"])
                        item = await anext(events)
                except ApiError as error:
                    yield b"data: " + json.dumps(error.to_json()).encode() + b"\n\n"
                    return
                receipt = item.receipt
                yield chunk(
                    None if call.chat else "",
                    finish or "length",
                    agora_receipt=item.receipt_dict,
                    agora_charged=item.charged,
                    agora_seed=seed,
                    agora_toploc=toploc,
                    agora_request=miner_body.decode(),
                    system_fingerprint=receipt.model_id,
                )
                if call.include_usage:
                    p, c = receipt.prompt_tokens, receipt.completion_tokens
                    usage: dict[str, Any] = {
                        "id": stream_id,
                        "object": "chat.completion.chunk" if call.chat else "text_completion",
                        "created": created,
                        "model": call.model,
                        "choices": [],
                        "usage": {
                            "prompt_tokens": p,
                            "completion_tokens": c,
                            "total_tokens": p + c,
                        },
                    }
                    yield b"data: " + json.dumps(usage, separators=(",", ":")).encode() + b"\n\n"
                yield b"data: [DONE]\n\n"

        return StreamingResponse(sse(), media_type="text/event-stream", headers=SSE_HEADERS)

    async def chat_completions(request: Request) -> Response:
        return await generation(request, chat=True)

    async def completions(request: Request) -> Response:
        return await generation(request, chat=False)

    # -- usage ----------------------------------------------------------------------------------

    async def usage(request: Request) -> Response:
        key = accounts.authenticate(request.headers.get("authorization"))
        gateway.store.flush()
        try:
            limit_rows = max(1, min(1000, int(request.query_params.get("limit", "50"))))
            since = int(request.query_params.get("since_ms", "0"))
        except ValueError:
            raise BadRequest("limit and since_ms must be integers", param="limit") from None
        key_id = key.record.key_id
        rows = gateway.store.usage(key_id, limit_rows, since)
        return _json(
            {
                "key": key.to_json(gateway.chain.height),
                "totals": gateway.store.usage_totals(key_id, since),
                "recent": [row.to_json() for row in rows],
            }
        )

    # -- keys (signed by the paying account) ---------------------------------------------------

    async def signed(request: Request) -> tuple[SignedRequest, bytes]:
        body = await _read_body(request, 64 << 10)
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in request.headers.raw]
        now = now_ms()
        try:
            checked = verify_request(
                headers,
                request.method,
                _target(request),
                body,
                me=gateway.key.address,
                now_ms=now,
            )
            gateway.nonces.add(
                checked.caller, checked.nonce, checked.timestamp + DEFAULT_WINDOW_MS + 1, now
            )
        except RequestRejected as error:
            status = 409 if error.code == "reused_nonce" else 401
            cls = Conflict if status == 409 else AuthenticationFailed
            raise cls(
                f"{error} (sign key requests with the account's coldkey)", code=error.code
            ) from None
        return checked, body

    async def create_key(request: Request) -> Response:
        checked, body = await signed(request)
        data = parse_json_body(body)
        allowed = {"channel", "label", "rate_limit_rpm", "burst", "daily_spend_limit"}
        extra = set(data) - allowed
        if extra:
            raise BadRequest(f"unknown fields {sorted(extra)}", code="unknown_parameter")
        channel_id = data.get("channel")
        if isinstance(channel_id, bool) or not isinstance(channel_id, int) or channel_id < 1:
            raise BadRequest("channel must be a channel id", param="channel")
        rpm, burst, daily = (
            data.get("rate_limit_rpm"),
            data.get("burst"),
            data.get("daily_spend_limit"),
        )
        if rpm is not None and (not isinstance(rpm, int | float) or not 0 < rpm <= 1e6):
            raise BadRequest("rate_limit_rpm must be a number in (0, 1e6]", param="rate_limit_rpm")
        if burst is not None and (not isinstance(burst, int) or not 1 <= burst <= 100_000):
            raise BadRequest("burst must be an integer in 1..100000", param="burst")
        if daily is not None and (not isinstance(daily, int) or daily < 0):
            raise BadRequest("daily_spend_limit is in units, >= 0", param="daily_spend_limit")
        label = data.get("label") or ""
        if not isinstance(label, str):
            raise BadRequest("label must be a string", param="label")
        try:
            channel = await gateway.ledger.channel(channel_id)
        except NodeError as error:
            if error.code == "unknown_channel":
                raise NotFound(f"no channel {channel_id} on the ledger", param="channel") from None
            raise
        me = gateway.key.address
        if channel.payer != checked.caller:
            raise Forbidden(
                f"channel {channel_id} is paid by {channel.payer[:12]}…, not by the account that "
                "signed this request",
                code="not_channel_payer",
            )
        if channel.payee != me or channel.signer != me:
            raise BadRequest(
                f"channel {channel_id} must have payee and signer {me} (this gateway): the "
                "gateway signs its own vouchers, up to the deposit",
                param="channel",
                code="wrong_channel_terms",
            )
        if channel.closed:
            raise BadRequest(f"channel {channel_id} is closed", param="channel")
        if channel.remaining < config.min_deposit:
            raise BadRequest(
                f"channel {channel_id} holds {format_amount(channel.remaining)} tokens; the "
                f"minimum is {format_amount(config.min_deposit)}",
                param="channel",
                code="deposit_too_small",
            )
        if channel.expires_at - gateway.chain.height < 2 * config.min_blocks_left:
            raise BadRequest(
                f"channel {channel_id} expires at block {channel.expires_at}; open one with a "
                f"timeout of more than {2 * config.min_blocks_left} blocks",
                param="channel",
                code="channel_expiring",
            )
        key_text, key = accounts.register(
            checked.caller, channel, label=label, rpm=rpm, burst=burst, daily_limit=daily
        )
        log.info(
            "new key %s for %s… on channel %d", key.record.key_id, checked.caller[:12], channel_id
        )
        return _json({"key": key_text, **key.to_json(gateway.chain.height)}, 201)

    async def list_keys(request: Request) -> Response:
        checked, _ = await signed(request)
        height = gateway.chain.height
        keys = [k.to_json(height) for k in accounts.keys_of(checked.caller)]
        return _json({"account": checked.caller, "keys": keys})

    def owned(key_id: str, account: str) -> KeyState:
        key = accounts.by_id.get(key_id)
        if key is None:
            raise NotFound(f"no key {key_id}", code="unknown_key")
        if key.record.account != account:
            raise Forbidden(f"{key_id} belongs to another account", code="not_key_owner")
        return key

    async def refresh_key(request: Request) -> Response:
        checked, _ = await signed(request)
        key = owned(request.path_params["key_id"], checked.caller)
        await accounts.refresh(key)
        return _json(key.to_json(gateway.chain.height))

    async def revoke_key(request: Request) -> Response:
        checked, _ = await signed(request)
        key = owned(request.path_params["key_id"], checked.caller)
        key.record.revoked = True
        gateway.store.set_revoked(key.record.key_id)
        return _json(key.to_json(gateway.chain.height))

    # -- public ---------------------------------------------------------------------------------

    async def info(request: Request) -> Response:
        return _json(gateway.describe())

    async def miners(request: Request) -> Response:
        return _json(gateway.router.describe())

    # -- the receipt archive (agora.gateway.archive) ------------------------------------------

    def int_param(request: Request, name: str, default: int | None, low: int, high: int) -> Any:
        raw = request.query_params.get(name)
        if raw is None or raw == "":
            return default
        try:
            value = int(raw)
        except ValueError:
            raise BadRequest(f"{name} must be an integer, got {raw[:40]!r}", param=name) from None
        if not low <= value <= high:
            raise BadRequest(f"{name} must be between {low} and {high}", param=name)
        return value

    async def receipts(request: Request) -> Response:
        miner = request.query_params.get("miner") or None
        if miner is not None and (len(miner) != 64 or not _is_hex(miner)):
            raise BadRequest("miner must be a hotkey: 64 hex characters", param="miner")
        rows = gateway.archive.receipts(
            miner=miner,
            netuid=int_param(request, "netuid", None, 0, 65535),
            before_ms=int_param(request, "before", None, 0, 2**63 - 1),
            limit=int_param(request, "limit", 100, 1, 1000),
        )
        return _json({"receipts": [row.summary() for row in rows]})

    async def receipt(request: Request) -> Response:
        found = gateway.archive.get(request.path_params["hash"].lower())
        if found is None:
            raise NotFound(
                "no receipt with that hash here (it may be older than the retention, or not "
                "written yet: retry in a second)",
                code="unknown_receipt",
            )
        return _json(found.summary())

    permits: dict[int, tuple[float, frozenset[str]]] = {}

    async def validators_of(netuid: int) -> frozenset[str]:
        cached = permits.get(netuid)
        if cached is not None and time.monotonic() - cached[0] < 5.0:
            return cached[1]
        try:
            graph = await gateway.ledger.metagraph(netuid)
        except NodeError as error:
            if error.code in ("unknown_subnet", "not_found"):
                raise NotFound(f"subnet {netuid} does not exist", param="netuid") from None
            raise
        holders = frozenset(n.hotkey for n in graph.neurons if n.validator_permit)
        permits[netuid] = (time.monotonic(), holders)
        return holders

    async def audit(request: Request) -> Response:
        checked, _ = await signed(request)
        netuid = int_param(request, "netuid", None, 0, 65535)
        if netuid is None:
            raise BadRequest("say which subnet: ?netuid=N", param="netuid")
        if checked.caller not in await validators_of(netuid):
            raise Forbidden(
                f"hotkey {checked.caller[:12]}… holds no validator permit on subnet {netuid}: "
                "only validators may read answers' content",
                code="not_a_validator",
            )
        wanted = request.query_params.get("hash")
        if wanted:
            found = gateway.archive.get(wanted.lower())
            if found is None or found.receipt.get("netuid") != netuid:
                raise NotFound(
                    f"no archived answer {wanted[:16]}… on subnet {netuid}", code="unknown_receipt"
                )
            return _json({"netuid": netuid, "answers": [found.to_json()]})
        rows = gateway.archive.for_audit(
            netuid,
            int_param(request, "since_ms", 0, 0, 2**63 - 1),
            int_param(request, "limit", 100, 1, 500),
        )
        return _json({"netuid": netuid, "answers": [row.to_json() for row in rows]})

    async def health(request: Request) -> Response:
        healthy = {r.name: len(gateway.router.candidates(r)) for r in config.models}
        return _json({"status": "ok", "version": __version__, "healthy_miners": healthy})

    # -- errors ---------------------------------------------------------------------------------

    async def api_error(request: Request, error: Exception) -> Response:
        assert isinstance(error, ApiError)
        return _error_response(error)

    async def http_error(request: Request, error: Exception) -> Response:
        assert isinstance(error, HTTPException)
        if error.status_code == 404:
            return _error_response(
                NotFound(
                    f"no route {request.method} {request.url.path}; see /v1/gateway",
                    code="unknown_url",
                )
            )
        if error.status_code == 405:
            wrong = ApiError(
                f"{request.method} is not allowed on {request.url.path}", code="method_not_allowed"
            )
            wrong.status = 405
            return _error_response(wrong)
        return _json(
            {
                "error": {
                    "message": str(error.detail),
                    "type": "invalid_request_error",
                    "param": None,
                    "code": None,
                }
            },
            error.status_code,
        )

    async def node_error(request: Request, error: Exception) -> Response:
        return _json(
            {
                "error": {
                    "message": f"the ledger could not be read: {error}",
                    "type": "api_error",
                    "param": None,
                    "code": "ledger_unavailable",
                }
            },
            503,
        )

    async def unexpected(request: Request, error: Exception) -> Response:
        log.exception("unexpected error on %s", request.url.path, exc_info=error)
        return _json(
            {
                "error": {
                    "message": f"the gateway failed ({type(error).__name__}); nothing was "
                    "charged; see the gateway's log",
                    "type": "server_error",
                    "param": None,
                    "code": "internal_error",
                }
            },
            500,
        )

    routes = [
        Route("/v1/models", models, methods=["GET"]),
        Route("/v1/embeddings", embeddings, methods=["POST"]),
        Route("/v1/chat/completions", chat_completions, methods=["POST"]),
        Route("/v1/completions", completions, methods=["POST"]),
        Route("/v1/usage", usage, methods=["GET"]),
        Route("/v1/keys", create_key, methods=["POST"]),
        Route("/v1/keys", list_keys, methods=["GET"]),
        Route("/v1/keys/{key_id}/refresh", refresh_key, methods=["POST"]),
        Route("/v1/keys/{key_id}/revoke", revoke_key, methods=["POST"]),
        Route("/v1/gateway", info, methods=["GET"]),
        Route("/v1/gateway/miners", miners, methods=["GET"]),
        Route("/v1/gateway/stats", stats_endpoint(gateway, traffic), methods=["GET"]),
        Route("/v1/gateway/receipts", receipts, methods=["GET"]),
        Route("/v1/gateway/receipts/{hash}", receipt, methods=["GET"]),
        Route("/v1/gateway/audit", audit, methods=["GET"]),
        Route("/health", health, methods=["GET"]),
    ]
    return Starlette(
        routes=routes,
        middleware=[Middleware(TrafficCounter, traffic=traffic)],
        exception_handlers={
            ApiError: api_error,
            HTTPException: http_error,
            NodeError: node_error,
            Exception: unexpected,
        },
    )
