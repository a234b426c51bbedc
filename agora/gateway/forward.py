"""One customer request, end to end: reserve, pick a miner, sign, send, check, retry, charge.

For every attempt the gateway signs the miner request with its hotkey (``agora.net`` wire
format, a fresh nonce), attaches a payment voucher when one is due (:mod:`.payments`), and checks
the answer's receipt before it believes anything in it:

- signed by the hotkey it called, for the gateway (``caller``), for this request (``nonce`` and
  ``request_hash``), for these bytes (``response_hash``), on the model's subnet;
- the token counts are the gateway's own (it counted the prompt with the same tokenizer, and
  counts the generated token ids), and the price is at most the miner's advertised price for
  them.

A miner that fails any of this, times out, refuses or breaks the connection is marked failed and
another is tried, within the request's deadline; the customer is charged only the receipt of the
answer it gets. Streams: once tokens have been sent to the client, a failed stream is restarted
on another miner with the same request (the same seed when sampling, so the same tokens: greedy
decoding and seeded sampling are deterministic on one model) and the tokens already sent are
checked against the new miner's and skipped, then the stream resumes. A stream whose receipt does
not check out is redone the same way on another miner, so that what is charged is always backed
by a valid receipt.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import secrets
import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass, replace
from typing import Any

from agora.crypto.keys import verify
from agora.gateway.accounts import Accounts, Hold, KeyState
from agora.gateway.archive import ReceiptArchive
from agora.gateway.config import GatewayConfig, ModelRoute
from agora.gateway.errors import ApiError, BadRequest, NoMinerAvailable, UpstreamFailed
from agora.gateway.httpclient import HttpPool, Response, UpstreamError
from agora.gateway.ledger import FastKey, Voucher
from agora.gateway.payments import VOUCHER_HEADER, MinerPayer
from agora.gateway.routing import MinerInfo, Router
from agora.gateway.store import GatewayStore, UsageRow
from agora.net.errors import InvalidReceipt
from agora.net.receipts import RECEIPT_DOMAIN, Receipt
from agora.net.signing import sign_request

__all__ = [
    "AttemptFailed",
    "Forwarder",
    "Outcome",
    "answer_price",
    "embed_body",
    "embedding_rows",
    "generate_body",
]

RECEIPT_MARKER = b',"agora_receipt":'
RECEIPT_EVENT = b"event: agora-receipt\ndata: "
TOKEN_EVENT = b"event: token\ndata: "
JSON_HEADERS = (("Content-Type", "application/json"),)


def answer_price(tokens: int, price_per_1k: int) -> int:
    """``ceil(tokens * price_per_1k / 1000)``: how miners price an answer."""
    return -(-tokens * price_per_1k // 1000)


class AttemptFailed(Exception):
    """One attempt at one miner failed. ``client_error``: the miner said the request itself is
    wrong (400), which another miner would likely say too."""

    def __init__(self, reason: str, message: str, *, client_error: bool = False) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.client_error = client_error


@dataclass
class Outcome:
    """An answer the customer is charged for."""

    request_id: str
    payload: dict[str, Any]  # the miner's answer without its receipt (embeddings: not parsed)
    receipt: Receipt
    receipt_json: bytes  # its canonical JSON, as the miner sent it
    miner: MinerInfo
    charged: int
    attempts: int

    @property
    def receipt_dict(self) -> dict[str, Any]:
        return json.loads(self.receipt_json)  # type: ignore[no-any-return]

    @property
    def receipt_header(self) -> str:
        """The ``X-Agora-Receipt`` value: base64url, unpadded, of the canonical JSON."""
        return base64.urlsafe_b64encode(self.receipt_json).rstrip(b"=").decode()


@dataclass(frozen=True)
class ParsedReceipt:
    """A receipt as received: checked for format, with its bytes and fields kept so that it is
    never re-encoded (``dataclasses.asdict`` costs more than the signature check)."""

    receipt: Receipt
    raw: bytes
    signed: dict[str, Any]  # every field but the signature
    content: bytes = b""  # the response bytes response_hash covers (kept for the archive)

    @classmethod
    def read(cls, raw: bytes) -> ParsedReceipt:
        try:
            fields = json.loads(raw)
            receipt = Receipt.from_json(fields)
        except (ValueError, InvalidReceipt) as error:
            raise AttemptFailed("bad_receipt", f"unreadable receipt: {error}") from None
        del fields["signature"]
        return cls(receipt, raw, fields)


def _refusal(response: Response) -> AttemptFailed:
    code, message = f"http_{response.status}", response.body[:300].decode("utf-8", "replace")
    try:
        error = json.loads(response.body).get("error")
        if isinstance(error, dict):
            code, message = str(error.get("code", code)), str(error.get("message", message))
    except (ValueError, AttributeError):
        pass
    client_error = response.status in (400, 422) and code not in ("body_too_large",)
    return AttemptFailed(code, f"{response.status} {code}: {message}", client_error=client_error)


class Forwarder:
    """Runs customer requests against miners (see the module docstring)."""

    def __init__(
        self,
        config: GatewayConfig,
        key: FastKey,
        router: Router,
        payer: MinerPayer,
        accounts: Accounts,
        store: GatewayStore,
        pool: HttpPool,
    ) -> None:
        self.config = config
        self.key = key
        self.router = router
        self.payer = payer
        self.accounts = accounts
        self.store = store
        self.pool = pool
        #: where answers are archived for validators' audits (set by the service; None: not kept)
        self.archive: ReceiptArchive | None = None

    # -- shared steps ---------------------------------------------------------------------------

    async def reserve(self, key: KeyState, route: ModelRoute, tokens: int) -> Hold:
        """Reserve the worst case of ``tokens`` at the dearest candidate's price.

        Raises NoMinerAvailable, EscrowExhausted, SpendLimitReached.
        """
        price = self.router.max_price(route)
        if price is None:
            raise NoMinerAvailable(
                f"no healthy miner serves {route.name} (subnet {route.netuid}) right now; retry "
                "shortly",
                code="no_miner_available",
                retry_after=self.config.health_interval_s,
            )
        return await self.accounts.reserve(key, answer_price(tokens, price))

    def _sign(
        self, miner: MinerInfo, path: str, body: bytes
    ) -> tuple[list[tuple[str, str]], str, Voucher | None]:
        signed = sign_request(self.key, miner.hotkey, "POST", path, body)  # type: ignore[arg-type]
        headers = list(signed.items())
        headers.extend(JSON_HEADERS)
        voucher = self.payer.voucher_for(miner.hotkey)
        if voucher is not None:
            headers.append((VOUCHER_HEADER, voucher.header))
        return headers, signed["X-Agora-Nonce"], voucher

    def _check_receipt(
        self,
        parsed: ParsedReceipt,
        miner: MinerInfo,
        route: ModelRoute,
        body: bytes,
        nonce: str,
        response_hash: str,
        prompt_tokens: int,
        completion_tokens: int,
    ) -> None:
        problem = None
        receipt = parsed.receipt
        if receipt.miner != miner.hotkey:
            problem = "signed by another hotkey than the one called"
        elif receipt.caller != self.key.address or receipt.nonce != nonce:
            problem = "issued for another request (caller or nonce)"
        elif receipt.request_hash != hashlib.sha256(body).hexdigest():
            problem = "request hash mismatch"
        elif receipt.response_hash != response_hash:
            problem = "response hash mismatch"
        elif receipt.netuid != route.netuid:
            problem = f"for subnet {receipt.netuid}"
        elif receipt.prompt_tokens != prompt_tokens:
            problem = f"prompt_tokens {receipt.prompt_tokens}, counted {prompt_tokens}"
        elif receipt.completion_tokens != completion_tokens:
            problem = f"completion_tokens {receipt.completion_tokens}, counted {completion_tokens}"
        elif receipt.price > answer_price(prompt_tokens + completion_tokens, miner.price_per_1k):
            problem = f"price {receipt.price} above the advertised {miner.price_per_1k} per 1k"
        elif not verify(receipt.miner, RECEIPT_DOMAIN, parsed.signed, receipt.signature):
            problem = "bad signature"
        if problem is not None:
            raise AttemptFailed("bad_receipt", f"the miner's receipt is not valid: {problem}")

    def _charge(
        self,
        key: KeyState,
        hold: Hold,
        route: ModelRoute,
        miner: MinerInfo,
        parsed: ParsedReceipt,
        body: bytes,
        stream: bool = False,
    ) -> tuple[str, int]:
        receipt = parsed.receipt
        if self.archive is not None:  # queued only: written off the request path
            self.archive.add(receipt, parsed.raw, body, parsed.content, stream)
        charged = self.accounts.charge(hold, receipt.price)
        self.payer.owe(miner.hotkey, receipt.price, miner.address)
        request_id = secrets.token_hex(12)
        self.store.add_usage(
            UsageRow(
                key_id=key.record.key_id,
                ts_ms=int(time.time() * 1000),
                request_id=request_id,
                model=route.name,
                netuid=route.netuid,
                miner=miner.hotkey,
                prompt_tokens=receipt.prompt_tokens,
                completion_tokens=receipt.completion_tokens,
                price=receipt.price,
                charged=charged,
                receipt=parsed.raw.decode(),
            )
        )
        return request_id, charged

    def _give_up(
        self, route: ModelRoute, errors: list[tuple[MinerInfo, AttemptFailed]]
    ) -> ApiError:
        if not errors:
            return NoMinerAvailable(
                f"no healthy miner serves {route.name} (subnet {route.netuid}) right now; retry "
                "shortly",
                code="no_miner_available",
                retry_after=self.config.health_interval_s,
            )
        if all(error.client_error for _, error in errors):
            return BadRequest(f"the miners refused the request: {errors[0][1].message}")
        tried = "; ".join(f"uid {m.uid}: {e.message[:160]}" for m, e in errors)
        return UpstreamFailed(
            f"{len(errors)} miner(s) failed and nothing was charged ({tried}); retry",
            code="upstream_failed",
        )

    # -- one JSON answer ------------------------------------------------------------------------

    async def call_json(
        self,
        key: KeyState,
        route: ModelRoute,
        path: str,
        body: bytes,
        prompt_tokens: int,
        max_completion: int,
    ) -> Outcome:
        """Forward a non-streamed request (``/v1/embed`` or ``/v1/generate``) and return the
        checked answer, charged.

        Raises:
            NoMinerAvailable, UpstreamFailed, BadRequest (every miner refused the request),
            EscrowExhausted, SpendLimitReached.
        """
        hold = await self.reserve(key, route, prompt_tokens + max_completion)
        try:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + self.config.request_timeout_s
            tried: set[str] = set()
            errors: list[tuple[MinerInfo, AttemptFailed]] = []
            for _ in range(self.config.max_attempts):
                remaining = deadline - loop.time()
                miner = self.router.pick(route, tried) if remaining > 0 else None
                if miner is None:
                    break
                tried.add(miner.hotkey)
                if answer_price(prompt_tokens + max_completion, miner.price_per_1k) > hold.amount:
                    continue  # raised its price since the reservation: another one
                started = time.perf_counter()
                miner.in_flight += 1
                try:
                    parsed, payload = await self._attempt_json(
                        miner,
                        route,
                        path,
                        body,
                        prompt_tokens,
                        min(remaining, self.config.attempt_timeout_s),
                    )
                except AttemptFailed as error:
                    self.router.failed(miner, error.reason)
                    errors.append((miner, error))
                    continue
                finally:
                    miner.in_flight -= 1
                self.router.succeeded(miner, time.perf_counter() - started)
                request_id, charged = self._charge(key, hold, route, miner, parsed, body)
                return Outcome(
                    request_id, payload, parsed.receipt, parsed.raw, miner, charged, len(tried)
                )
            raise self._give_up(route, errors)
        finally:
            self.accounts.release(hold)

    async def _attempt_json(
        self,
        miner: MinerInfo,
        route: ModelRoute,
        path: str,
        body: bytes,
        prompt_tokens: int,
        timeout: float,
    ) -> tuple[ParsedReceipt, dict[str, Any]]:
        headers, nonce, voucher = self._sign(miner, path, body)
        try:
            response = await self.pool.request(
                miner.host, miner.port, "POST", path, headers, body, timeout
            )
        except UpstreamError as error:
            raise AttemptFailed("timeout" if error.timeout else "unreachable", str(error)) from None
        if response.status != 200:
            raise _refusal(response)
        if voucher is not None:
            self.payer.delivered(miner.hotkey, voucher)
        data = response.body
        cut = data.rfind(RECEIPT_MARKER)
        if cut < 0 or not data.endswith(b"}"):
            raise AttemptFailed("bad_receipt", "the answer carries no agora_receipt field")
        content = data[:cut] + b"}"
        parsed = ParsedReceipt.read(data[cut + len(RECEIPT_MARKER) : -1])
        completion = 0
        payload: dict[str, Any]
        if route.task == "generate":
            try:
                payload = json.loads(content)
            except ValueError:
                raise AttemptFailed("bad_answer", "the answer is not JSON") from None
            token_ids = payload.get("token_ids") if isinstance(payload, dict) else None
            if not isinstance(token_ids, list) or not isinstance(payload.get("text"), str):
                raise AttemptFailed("bad_answer", "the answer has no text or token_ids")
            completion = len(token_ids)
        else:
            vectors = embedding_rows(content)
            if vectors is None:
                raise AttemptFailed("bad_answer", "the answer has no embeddings")
            payload = {"raw": content, "rows": vectors}
        self._check_receipt(
            parsed,
            miner,
            route,
            body,
            nonce,
            hashlib.sha256(content).hexdigest(),
            prompt_tokens,
            completion,
        )
        return replace(parsed, content=content), payload

    # -- a streamed generation ----------------------------------------------------------------

    async def stream(
        self,
        key: KeyState,
        route: ModelRoute,
        body: bytes,
        prompt_tokens: int,
        max_tokens: int,
    ) -> AsyncGenerator[dict[str, Any] | Outcome, None]:
        """Token events (the miner's ``TokenEvent`` dicts), then the charged :class:`Outcome`.

        Errors before the first event are raised as ApiError (answer them with an HTTP status);
        after it, as UpstreamFailed (end the stream with an error event). Nothing is charged
        unless the Outcome is reached.
        """
        hold = await self.reserve(key, route, prompt_tokens + max_tokens)
        try:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + self.config.request_timeout_s
            tried: set[str] = set()
            errors: list[tuple[MinerInfo, AttemptFailed]] = []
            sent: list[int] = []  # token ids already forwarded to the client
            for _ in range(self.config.max_attempts):
                remaining = deadline - loop.time()
                miner = self.router.pick(route, tried) if remaining > 0 else None
                if miner is None:
                    break
                tried.add(miner.hotkey)
                if answer_price(prompt_tokens + max_tokens, miner.price_per_1k) > hold.amount:
                    continue
                started = time.perf_counter()
                miner.in_flight += 1
                result: list[ParsedReceipt] = []
                attempt = self._attempt_stream(
                    miner,
                    route,
                    body,
                    prompt_tokens,
                    sent,
                    min(remaining, self.config.attempt_timeout_s),
                    result,
                    started,
                )
                try:
                    async with contextlib.aclosing(attempt) as events:
                        async for event in events:
                            yield event
                except AttemptFailed as error:
                    self.router.failed(miner, error.reason)
                    errors.append((miner, error))
                    continue
                finally:
                    miner.in_flight -= 1
                parsed = result[0]
                request_id, charged = self._charge(key, hold, route, miner, parsed, body, True)
                payload = {"model": parsed.receipt.model_id, "token_ids": list(sent)}
                yield Outcome(
                    request_id, payload, parsed.receipt, parsed.raw, miner, charged, len(tried)
                )
                return
            raise self._give_up(route, errors)
        finally:
            self.accounts.release(hold)

    async def _attempt_stream(
        self,
        miner: MinerInfo,
        route: ModelRoute,
        body: bytes,
        prompt_tokens: int,
        sent: list[int],
        timeout: float,
        result: list[ParsedReceipt],
        started: float,
    ) -> AsyncGenerator[dict[str, Any], None]:
        headers, nonce, voucher = self._sign(miner, "/v1/generate", body)
        try:
            response = await self.pool.stream(
                miner.host, miner.port, "POST", "/v1/generate", headers, body, timeout
            )
        except UpstreamError as error:
            raise AttemptFailed("timeout" if error.timeout else "unreachable", str(error)) from None
        async with response:
            if response.status != 200:
                try:
                    content = await response.read(timeout)
                except (UpstreamError, TimeoutError):
                    content = b""
                raise _refusal(Response(response.status, response.headers, content))
            if voucher is not None:
                self.payer.delivered(miner.hotkey, voucher)
            hasher = hashlib.sha256()
            pieces: list[bytes] = []  # what the hash covers, for the archive
            buffer = b""
            seen: list[int] = []
            receipt: ParsedReceipt | None = None
            first = True
            try:
                async for chunk in response.iter_chunks(self.config.stream_idle_timeout_s):
                    buffer += chunk
                    while receipt is None:
                        end = buffer.find(b"\n\n")
                        if end < 0:
                            break
                        event, buffer = buffer[:end], buffer[end + 2 :]
                        if event.startswith(RECEIPT_EVENT):
                            receipt = ParsedReceipt.read(event[len(RECEIPT_EVENT) :])
                            break
                        hasher.update(event + b"\n\n")
                        pieces.append(event + b"\n\n")
                        if not event.startswith(TOKEN_EVENT):
                            continue
                        token = _read_token(event[len(TOKEN_EVENT) :])
                        ids = token["token_ids"]
                        start = len(seen)
                        seen.extend(ids)
                        if len(seen) <= len(sent):
                            if seen[start:] != sent[start : len(seen)]:
                                raise AttemptFailed(
                                    "diverged",
                                    "this miner's tokens differ from those already sent",
                                )
                            continue
                        if start < len(sent):
                            raise AttemptFailed(
                                "misaligned", "cannot resume in the middle of an event"
                            )
                        sent.extend(ids)
                        if first:
                            first = False
                            self.router.succeeded(miner, time.perf_counter() - started)
                        yield token
            except UpstreamError as error:
                raise AttemptFailed(
                    "timeout" if error.timeout else "broken_stream", str(error)
                ) from None
            if receipt is None:
                raise AttemptFailed("bad_receipt", "the stream ended without a receipt")
            if len(seen) < len(sent):
                raise AttemptFailed("short_stream", "the stream ended before the tokens sent")
            self._check_receipt(
                receipt, miner, route, body, nonce, hasher.hexdigest(), prompt_tokens, len(seen)
            )
            if first:  # every token was a replay: count the latency now
                self.router.succeeded(miner, time.perf_counter() - started)
            result.append(replace(receipt, content=b"".join(pieces)))


_NUMBER_BYTES = b"0123456789eE+-."
EMBEDDINGS_START = b'{"embeddings":['
EMBEDDINGS_END = b'],"model":'


def embedding_rows(content: bytes) -> list[bytes] | None:
    """The vectors of a miner's embedding answer as raw JSON number lists (``b"0.1,-0.2"``),
    without parsing a float: the answer is normalized JSON with sorted keys, so it reads
    ``{"embeddings":[[...],[...]],"model":...}``. None if it does not look like that."""
    if not content.startswith(EMBEDDINGS_START):
        return None
    end = content.find(EMBEDDINGS_END)
    if end < 0:
        return None
    inner = content[len(EMBEDDINGS_START) : end]
    if len(inner) < 2 or inner[:1] != b"[" or inner[-1:] != b"]":
        return None
    rows = inner[1:-1].split(b"],[")
    for row in rows:
        if not row or row.translate(None, _NUMBER_BYTES + b","):
            return None
    return rows


def _read_token(data: bytes) -> dict[str, Any]:
    try:
        token = json.loads(data)
    except ValueError:
        raise AttemptFailed("bad_answer", "a token event is not JSON") from None
    if (
        not isinstance(token, dict)
        or not isinstance(token.get("text"), str)
        or not isinstance(token.get("token_ids"), list)
    ):
        raise AttemptFailed("bad_answer", "a token event lacks text or token_ids")
    return token


def _compact(value: dict[str, Any]) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def embed_body(texts: list[str]) -> bytes:
    """The exact bytes the gateway sends a miner's ``/v1/embed`` for ``texts`` (what the
    receipt's ``request_hash`` covers)."""
    return _compact({"texts": texts})


def generate_body(
    prompt: str, max_tokens: int, temperature: float, seed: int | None, stream: bool
) -> bytes:
    """The exact bytes the gateway sends a miner's ``/v1/generate``."""
    return _compact(
        {
            "prompt": prompt,
            "max_tokens": max_tokens,
            "temperature": temperature,
            "seed": seed,
            "stream": stream,
        }
    )
