"""The node's HTTP API: ``create_app(node)`` returns a FastAPI app, everything under ``/v1``.

Errors are JSON ``{"error": {"code": "...", "message": "..."}}``; the code is the AgoraError's
(``bad_nonce``, ``insufficient_balance`` ...) and the HTTP status says which kind of problem:

    400  malformed_json, malformed_transaction, bad_request, bad_address   fix the request
    401  bad_signature          the signature does not prove the sender signed this transaction
                                (for this chain id); empty signatures included
    404  unknown_block, unknown_subnet, unknown_transaction, unknown_channel, not_found
    409  bad_nonce              not the sender's next nonce: read ``pending_nonce`` of the account
    413  payload_too_large      the body is over the limit (checked before it is parsed)
    422  any other rule         insufficient_balance, not_owner, invalid_weights ...: the rules
                                refuse it against the current state plus the pending transactions
    429  too_many_pending, sender_rate_limited     slow down (Retry-After says when)
    500  internal_error, store_error       a bug or a failing disk: see the node's log
    502  upstream_unreachable   a follower could not forward a transaction to its upstream
    503  mempool_full           retry after the next block

A rejected request changes nothing: the mempool only holds a transaction that passed every check.
"""

from __future__ import annotations

import json
from typing import Any, Literal

import httpx
from fastapi import FastAPI, Header, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from agora import __version__
from agora.chain import models
from agora.chain.errors import (
    ChainError,
    MempoolFull,
    PayloadTooLarge,
    Refused,
)
from agora.chain.events import outcomes_by_height
from agora.chain.mempool import TxStatus
from agora.chain.node import Node
from agora.protocol.codec import is_hex
from agora.protocol.emission import block_reward, epoch_due
from agora.protocol.errors import (
    AgoraError,
    BadNonce,
    BadSignature,
    InvalidTransaction,
    MalformedTransaction,
    UnknownSubnet,
)
from agora.protocol.registry import current_burn
from agora.protocol.state import Channel as ChannelState
from agora.protocol.state import State
from agora.protocol.state import Subnet as SubnetState
from agora.protocol.subnets import get_subnet
from agora.protocol.transactions import parse_transaction

__all__ = ["ApiError", "create_app", "halving"]

MAX_BLOCKS_PER_PAGE = 100
MAX_EPOCHS_PER_PAGE = 1000
MAX_EVENT_REPLAY = 1000
DEFAULT_FIXED_ONE = 2**32


class ApiError(ChainError):
    """An HTTP error with its status and code (not found, bad parameter ...)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self._code = code

    @property
    def code(self) -> str:
        return self._code


def status_of(error: AgoraError) -> int:
    """The HTTP status for an error raised while handling a request (see the module doc)."""
    if isinstance(error, ApiError):
        return error.status
    if isinstance(error, MalformedTransaction):
        return 400
    if isinstance(error, BadSignature):
        return 401
    if isinstance(error, BadNonce):
        return 409
    if isinstance(error, InvalidTransaction):
        return 422
    if isinstance(error, PayloadTooLarge):
        return 413
    if isinstance(error, MempoolFull):
        return 503
    if isinstance(error, Refused):
        return 429
    return 500


def error_response(status: int, code: str, message: str, **headers: str) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status, headers or None)


def _errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {status: {"model": models.ErrorResponse} for status in statuses}


def halving(reward: int, cap: int, issued: int) -> tuple[int, int | None]:
    """The next block's reward and the issuance at which it next halves (None: never again).

    Mirrors ``emission.block_reward``: after k halvings the threshold is cap - cap / 2^(k+1).
    """
    if issued >= cap:
        return 0, None
    halvings = 0
    while halvings < 64 and issued >= cap - (cap >> (halvings + 1)):
        halvings += 1
    current = block_reward(reward, cap, issued)
    if halvings >= 64 or current == 0:
        return current, None
    return current, cap - (cap >> (halvings + 1))


def _fixed_one() -> int:
    try:
        from agora.protocol.yuma import ONE
    except ImportError:  # yuma.py not there yet: no epoch has run, every figure is 0
        return DEFAULT_FIXED_ONE
    return int(ONE)


def _next_epoch(subnet: SubnetState, height: int) -> int:
    tempo = subnet.hyperparams.tempo
    block = height + 1
    block += (-(block + subnet.netuid + 1)) % (tempo + 1)
    assert epoch_due(subnet.netuid, tempo, block)
    return block


def _subnet_summary(state: State, subnet: SubnetState) -> dict[str, Any]:
    return {
        "netuid": subnet.netuid,
        "owner": subnet.owner,
        "neurons": len(subnet.neurons),
        "max_uids": subnet.hyperparams.max_uids,
        "tempo": subnet.hyperparams.tempo,
        "locked": subnet.locked,
        "pending_emission": state.pending_emission.get(subnet.netuid, 0),
        "registration_burn": current_burn(subnet, state.height + 1),
    }


def _tx_info(status: TxStatus) -> dict[str, Any]:
    return {
        "hash": status.hash,
        "sender": status.sender,
        "nonce": status.nonce,
        "kind": status.kind,
        "status": status.status,
        "height": status.height,
        "index": status.index,
        "code": status.code,
        "message": status.message,
    }


def _channel_json(channel: ChannelState) -> dict[str, Any]:
    return {**channel.to_json(), "remaining": channel.remaining}


def _sse(event: dict[str, Any]) -> str:
    """A block event, then one ``dispute`` event per outcome it carries (same id: a client
    resuming from that height has seen them all)."""
    height = event["height"]
    text = f"event: block\nid: {height}\ndata: {json.dumps(event)}\n\n"
    for outcome in event.get("disputes", ()):
        text += f"event: dispute\nid: {height}\ndata: {json.dumps(outcome)}\n\n"
    return text


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def create_app(node: Node) -> FastAPI:
    """The API of ``node``. The app does not start or stop the node; its owner does."""
    app = FastAPI(
        title="Agora node",
        version=__version__,
        description=(
            "The ledger node's API: submit signed transactions, read blocks, accounts, subnets "
            "and metagraphs, and follow new blocks as server-sent events. Amounts are integers "
            'in units (1 token = 10^9 units). Errors are `{"error": {"code", "message"}}`: '
            "400 malformed, 401 bad signature, 404 unknown, 409 bad nonce, 413 too large, "
            "422 refused by the rules, 429 rate limited, 503 mempool full."
        ),
    )
    app.state.node = node

    @app.exception_handler(AgoraError)
    async def agora_error(request: Request, error: AgoraError) -> JSONResponse:
        status = status_of(error)
        headers: dict[str, str] = {}
        if status in (429, 503):
            headers["Retry-After"] = str(max(1, round(node.config.block_time)))
        return error_response(status, error.code, str(error), **headers)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, error: Exception) -> JSONResponse:
        return error_response(
            500,
            "internal_error",
            f"the node failed on this request ({type(error).__name__}); "
            "this is a bug, please report it with the node's log",
        )

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, error: RequestValidationError) -> JSONResponse:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in item['loc'])}: {item['msg']}"
            for item in error.errors()
        )
        return error_response(400, "bad_request", problems or "invalid request")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(error.status_code, "http_error")
        message = str(error.detail)
        if error.status_code == 404:
            message = f"no route {request.url.path}; the API is under /v1, see /docs"
        return error_response(error.status_code, code, message)

    # -- transactions -------------------------------------------------------------------------

    limit = node.config.max_body_bytes

    @app.post(
        "/v1/transactions",
        status_code=202,
        response_model=models.TxInfo,
        summary="Submit a signed transaction",
        tags=["transactions"],
        responses=_errors(400, 401, 409, 413, 422, 429, 502, 503),
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {"schema": models.TransactionIn.model_json_schema()}
                },
            }
        },
    )
    async def submit(request: Request) -> Any:
        """Admit a signed transaction to the mempool. 202 means it passed every check against
        the current state plus the pending transactions and will go into the next block with
        room; follow it with `GET /v1/transactions/{hash}`. Submitting the same transaction
        again returns its status. A follower forwards the transaction to its upstream."""
        body = await _read_body(request, limit)
        try:
            data = json.loads(body, parse_constant=_reject_constant)
        except (ValueError, RecursionError) as error:
            raise ApiError(400, "malformed_json", f"the body is not valid JSON: {error}") from None
        if node.role == "follower":
            return await _forward(node, body)
        tx = parse_transaction(data, node.state.params.max_tx_bytes)
        return JSONResponse(_tx_info(node.submit(tx)), 202)

    @app.get(
        "/v1/transactions/{tx_hash}",
        response_model=models.TxInfo,
        summary="Status of a transaction",
        tags=["transactions"],
        responses=_errors(400, 404),
    )
    async def transaction(tx_hash: str) -> Any:
        """Pending, included (with height and index) or rejected (with code and message). The
        node remembers recent transactions only, and only those it saw since it started."""
        if not is_hex(tx_hash, 64):
            raise ApiError(400, "bad_request", "a transaction hash is 64 lowercase hex characters")
        status = node.tx_status(tx_hash)
        if status is None:
            raise ApiError(
                404,
                "unknown_transaction",
                f"this node has no record of {tx_hash[:16]}… (never submitted here, or older "
                "than what it remembers); look for it in the blocks",
            )
        return _tx_info(status)

    # -- chain --------------------------------------------------------------------------------

    @app.get(
        "/v1/status", response_model=models.Status, summary="Head of the chain", tags=["chain"]
    )
    async def status() -> Any:
        """Chain id, height and head, producer, issuance, the block reward and the issuance at
        which it next halves, and the mempool size."""
        state = node.state
        params = state.params
        issued = state.total_issuance + sum(state.pending_emission.values())
        reward, next_halving = halving(params.block_reward, params.supply_cap, issued)
        return {
            "chain_id": state.chain_id,
            "role": node.role,
            "upstream": node.config.follow,
            "height": state.height,
            "head_hash": state.last_block_hash,
            "head_timestamp": state.timestamp,
            "block_time": node.config.block_time,
            "producer": state.producer,
            "genesis_hash": node.genesis_hash,
            "total_issuance": state.total_issuance,
            "total_burned": state.total_burned,
            "supply_cap": params.supply_cap,
            "block_reward": reward,
            "next_halving_at": next_halving,
            "subnets": len(state.subnets),
            "mempool_size": len(node.mempool),
        }

    @app.get("/v1/genesis", response_model=models.Genesis, summary="Genesis state", tags=["chain"])
    async def genesis() -> Any:
        """The whole state at height 0 and its hash, which names the chain. A follower checks
        it against `--genesis-hash`."""
        return {"hash": node.genesis_hash, "state": node.genesis}

    def _block(height: int) -> JSONResponse:
        data = node.store.block_json(height) if 1 <= height <= node.height else None
        if data is None:
            hint = (
                "height 0 is the genesis state, see /v1/genesis"
                if height == 0
                else f"the head is at height {node.height}"
            )
            raise ApiError(404, "unknown_block", f"no block at height {height}; {hint}")
        return JSONResponse(data)

    @app.get(
        "/v1/blocks/latest",
        response_model=models.BlockOut,
        summary="The head block",
        tags=["chain"],
        responses=_errors(404),
    )
    async def latest_block() -> Any:
        """The last block (404 while the chain is still at genesis)."""
        return _block(node.height)

    @app.get(
        "/v1/blocks/{height}",
        response_model=models.BlockOut,
        summary="A block by height",
        tags=["chain"],
        responses=_errors(400, 404),
    )
    async def block(height: int) -> Any:
        """Header, transactions and the producer's signature: enough to re-execute it with
        `apply_block`. Heights start at 1."""
        return _block(height)

    @app.get(
        "/v1/blocks",
        response_model=models.BlockList,
        summary="Recent blocks",
        tags=["chain"],
        responses=_errors(400),
    )
    async def blocks(
        start: int | None = Query(None, ge=1, description="First height; default: the latest."),
        limit: int = Query(20, ge=1, le=MAX_BLOCKS_PER_PAGE),
    ) -> Any:
        """Summaries (height, hash, time, transaction count, state root), oldest first: blocks
        `start` ... `start + limit - 1`, or the latest `limit` blocks without `start`."""
        head = node.height
        first = max(1, head - limit + 1) if start is None else start
        summaries = node.store.summaries(first, min(limit, max(0, head - first + 1)))
        return {"head": head, "blocks": [s.__dict__ for s in summaries]}

    # -- accounts -----------------------------------------------------------------------------

    @app.get(
        "/v1/accounts/{address}",
        response_model=models.Account,
        summary="Balance, nonce and stake of an address",
        tags=["accounts"],
        responses=_errors(400),
    )
    async def account(address: str) -> Any:
        """Any address has an account: one that never received anything shows zeros. Includes
        the stake it holds as a coldkey, the stake behind it as a hotkey, stake it removed that
        is still unbonding (with the block it is paid in), and where it is registered. Sign the
        next transaction with `pending_nonce`."""
        if not is_hex(address, 64):
            raise ApiError(400, "bad_address", "an address is 64 lowercase hex characters")
        state = node.state
        held = [
            {"hotkey": hotkey, "coldkey": address, "amount": by_cold[address]}
            for hotkey, by_cold in sorted(state.stakes.items())
            if address in by_cold
        ]
        stakers = [
            {"hotkey": address, "coldkey": coldkey, "amount": amount}
            for coldkey, amount in sorted(state.stakes.get(address, {}).items())
        ]
        registrations = [
            {"netuid": netuid, "uid": neuron.uid}
            for netuid, subnet in sorted(state.subnets.items())
            for neuron in subnet.neurons
            if neuron.hotkey == address
        ]
        return {
            "address": address,
            "balance": state.balance(address),
            "nonce": state.nonce(address),
            "pending_nonce": node.mempool.pending_nonce(address),
            "pending": node.mempool.pending_count(address),
            "stakes": held,
            "total_staked": sum(item["amount"] for item in held),
            "hotkey_owner": state.hotkey_owner.get(address),
            "stake_behind": sum(item["amount"] for item in stakers),
            "stakers": stakers,
            "unbonding": [e.to_json() for e in state.unbonding.of_coldkey(address)],
            "total_unbonding": sum(e.amount for e in state.unbonding.of_coldkey(address)),
            "unbonding_behind": sum(e.amount for e in state.unbonding.of_hotkey(address)),
            "registrations": registrations,
            "owned_subnets": [n for n, s in sorted(state.subnets.items()) if s.owner == address],
        }

    # -- payment channels ---------------------------------------------------------------------

    @app.get(
        "/v1/channels/{channel_id}",
        response_model=models.Channel,
        summary="One payment channel",
        tags=["channels"],
        responses=_errors(400, 404),
    )
    async def channel(channel_id: int) -> Any:
        """Payer, payee, signer, deposit, what was redeemed and the expiry block. A voucher for
        it is redeemable up to `deposit` by the payee, signed by `signer`."""
        found = node.state.channels.get(channel_id)
        if found is None:
            raise ApiError(
                404,
                "unknown_channel",
                f"no channel {channel_id}; list an account's channels with "
                "/v1/accounts/{address}/channels",
            )
        return _channel_json(found)

    @app.get(
        "/v1/accounts/{address}/channels",
        response_model=models.ChannelList,
        summary="Payment channels of an address",
        tags=["channels", "accounts"],
        responses=_errors(400),
    )
    async def account_channels(
        address: str,
        role: Literal["payer", "payee", "signer"] | None = Query(
            None, description="Only channels where the address has this role (default: any)."
        ),
        open_only: bool = Query(False, description="Leave out closed channels."),
    ) -> Any:
        """Every channel where the address is the payer, the payee or the signer, oldest
        first."""
        if not is_hex(address, 64):
            raise ApiError(400, "bad_address", "an address is 64 lowercase hex characters")
        state = node.state
        roles = (role,) if role is not None else ("payer", "payee", "signer")
        found = [
            _channel_json(c)
            for _, c in sorted(state.channels.items())
            if any(getattr(c, r) == address for r in roles) and not (open_only and c.closed)
        ]
        return {"address": address, "height": state.height, "channels": found}

    # -- subnets ------------------------------------------------------------------------------

    def _subnet(netuid: int) -> tuple[State, SubnetState]:
        state = node.state
        try:
            return state, get_subnet(state, netuid)
        except UnknownSubnet as error:
            raise ApiError(404, error.code, str(error)) from None

    @app.get(
        "/v1/subnets", response_model=models.SubnetList, summary="All subnets", tags=["subnets"]
    )
    async def subnets() -> Any:
        """Every subnet with its owner, size, tempo, pending emission and registration price."""
        state = node.state
        return {"subnets": [_subnet_summary(state, s) for _, s in sorted(state.subnets.items())]}

    @app.get(
        "/v1/subnets/{netuid}",
        response_model=models.Subnet,
        summary="One subnet",
        tags=["subnets"],
        responses=_errors(400, 404),
    )
    async def subnet(netuid: int) -> Any:
        """Owner, hyperparameters, the burn a registration in the next block costs, emission
        accrued since the last epoch, and the block of the next epoch."""
        state, found = _subnet(netuid)
        return {
            **_subnet_summary(state, found),
            "created_at": found.created_at,
            "last_epoch": found.last_epoch,
            "next_epoch_block": _next_epoch(found, state.height),
            "hyperparams": found.hyperparams.to_json(),
        }

    @app.get(
        "/v1/subnets/{netuid}/metagraph",
        response_model=models.Metagraph,
        summary="Neurons, their scores, weights and bonds",
        tags=["subnets"],
        responses=_errors(400, 404),
    )
    async def metagraph(netuid: int) -> Any:
        """Per uid: keys, stake, endpoint and what the last epoch said (fixed-point integers
        with `one` meaning 1.0, plus `<name>_float`); and the weight and bond matrices as sparse
        rows `[[uid, value], ...]`."""
        state, found = _subnet(netuid)
        one = _fixed_one()
        neurons = []
        for n in found.neurons:
            info: dict[str, Any] = {
                "uid": n.uid,
                "hotkey": n.hotkey,
                "coldkey": n.coldkey,
                "stake": state.hotkey_stake(n.hotkey),
                "endpoint": None if n.endpoint is None else n.endpoint.to_json(),
                "validator_permit": n.validator_permit,
                "emission": n.emission,
                "registered_at": n.registered_at,
                "last_update": n.last_update,
                "slashed": n.slashed,
            }
            for name in ("rank", "trust", "consensus", "incentive", "dividends", "validator_trust"):
                value = getattr(n, name)
                info[name] = value
                info[f"{name}_float"] = value / one
            neurons.append(info)
        return {
            "netuid": netuid,
            "block": state.height,
            "one": one,
            "n": len(found.neurons),
            "neurons": neurons,
            "weights": [sorted(n.weights.items()) for n in found.neurons],
            "bonds": [sorted(n.bonds.items()) for n in found.neurons],
        }

    @app.get(
        "/v1/subnets/{netuid}/emissions",
        response_model=models.EmissionHistory,
        summary="Emission per uid over the last epochs",
        tags=["subnets"],
        responses=_errors(400, 404),
    )
    async def emissions(netuid: int, limit: int = Query(100, ge=1, le=MAX_EPOCHS_PER_PAGE)) -> Any:
        """What each uid earned in each of the last `limit` epochs, oldest first (the metagraph
        only says the last one). Read from an index the node keeps as it stores blocks."""
        state, found = _subnet(netuid)
        epochs = [
            {
                "block": height,
                "total": sum(row[2] for row in rows),
                "uids": [{"uid": uid, "hotkey": hotkey, "emission": e} for uid, hotkey, e in rows],
            }
            for height, rows in node.store.epochs(netuid, limit)
        ]
        return {
            "netuid": netuid,
            "block": state.height,
            "tempo": found.hyperparams.tempo,
            "epochs": epochs,
        }

    from agora.chain.api_disputes import add_dispute_routes  # it builds on this module
    from agora.chain.api_market import add_market_routes  # it builds on this module

    add_market_routes(app, node)
    add_dispute_routes(app, node)

    # -- events -------------------------------------------------------------------------------

    @app.get(
        "/v1/events",
        summary="New blocks as server-sent events",
        tags=["chain"],
        response_class=StreamingResponse,
        responses={200: {"content": {"text/event-stream": {}}}},
    )
    async def events(
        last_event_id: int | None = Header(
            None, description="Replay the blocks after this height first (reconnecting)."
        ),
    ) -> StreamingResponse:
        """One `block` event per new block (`id` is the height; `data` is JSON with height,
        hash, timestamp, tx_count, state_root, and `disputes` when the block resolved some),
        then one `dispute` event per dispute it resolved (`data`: id, netuid, miner, status
        `upheld`/`rejected`, resolved_at, slashed, burned, deposit_to, reason), and a keep-alive
        comment every few seconds.
        The stream ends when the node stops; reconnect with `Last-Event-ID`."""
        subscription = node.subscribe()
        head = node.height
        replay: list[dict[str, Any]] = []
        if last_event_id is not None and last_event_id < head:
            first = max(last_event_id + 1, head - MAX_EVENT_REPLAY + 1, 1)
            outcomes = outcomes_by_height(node.state, first, head)
            replay = [
                {
                    "height": s.height,
                    "hash": s.hash,
                    "timestamp": s.timestamp,
                    "tx_count": s.tx_count,
                    "state_root": s.state_root,
                    **({"disputes": outcomes[s.height]} if s.height in outcomes else {}),
                }
                for s in node.store.summaries(first, head - first + 1)
            ]

        async def stream() -> Any:
            sent = last_event_id if last_event_id is not None else head
            try:
                yield "retry: 1000\n\n"
                for old in replay:
                    yield _sse(old)
                    sent = old["height"]
                while True:
                    try:
                        event = await subscription.get(node.config.keepalive)
                    except TimeoutError:
                        yield ": keep-alive\n\n"
                        continue
                    if event is None:
                        return
                    if event["height"] > sent:
                        sent = event["height"]
                        yield _sse(event)
            finally:
                subscription.close()

        return StreamingResponse(
            stream(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    return app


async def _read_body(request: Request, limit: int) -> bytes:
    """The body, refusing anything over ``limit`` bytes before reading (Content-Length) and
    while reading (chunked or lying clients)."""
    length = request.headers.get("content-length")
    if length is not None:
        try:
            declared = int(length)
        except ValueError:
            raise ApiError(400, "bad_request", "Content-Length is not a number") from None
        if declared > limit:
            raise PayloadTooLarge(f"the body is {declared} bytes; the limit is {limit}")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise PayloadTooLarge(f"the body is over the {limit}-byte limit")
    return bytes(body)


async def _forward(node: Node, body: bytes) -> JSONResponse:
    """A follower passes submissions to its upstream and relays the answer."""
    assert node.config.follow is not None
    url = node.config.follow.rstrip("/") + "/v1/transactions"
    try:
        async with httpx.AsyncClient(timeout=10.0) as client:
            response = await client.post(
                url, content=body, headers={"Content-Type": "application/json"}
            )
        return JSONResponse(response.json(), response.status_code)
    except (TimeoutError, httpx.HTTPError, ValueError) as error:
        raise ApiError(
            502, "upstream_unreachable", f"this follower could not forward to {url}: {error!r}"
        ) from None
