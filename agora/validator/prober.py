"""Calling miners: signed requests, timed, with their receipts checked.

One :class:`MinerClient` serves every round: a small connection pool per miner address and, per
request, ``AgoraAuth(validator hotkey, miner hotkey)``. Each call returns an
:class:`Answer` or raises :class:`~agora.validator.checks.ProbeFailed` with the verdict; the
receipt is checked against the exact request bytes sent and response bytes received, pinned to the
metagraph's hotkey for that uid, to this validator as caller, to the subnet and to the request's
nonce.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import time
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel, ValidationError

from agora.crypto.keys import Keypair
from agora.miner.schema import (
    ClassifyResponse,
    EmbedResponse,
    GenerateResponse,
    Health,
    ScoreResponse,
    TokenEvent,
)
from agora.net import AgoraAuth, InvalidReceipt, Receipt, extract_receipt, verify_receipt
from agora.net.receipts import RECEIPT_EVENT, RECEIPT_FIELD, RECEIPT_HEADER, split_stream
from agora.net.signing import NONCE_HEADER
from agora.validator.checks import ProbeFailed, Verdict

M = TypeVar("M", bound=BaseModel)

MAX_RESPONSE_BYTES = 16 << 20
"""The largest answer read from a miner (256 texts x 384 floats as JSON are about 2.5 MB)."""

__all__ = ["Answer", "MinerClient", "MinerTarget", "StreamedGeneration", "parse_token_events"]


@dataclass(frozen=True)
class MinerTarget:
    """A miner as the metagraph describes it."""

    uid: int
    hotkey: str
    url: str

    @classmethod
    def from_endpoint(cls, uid: int, hotkey: str, ip: str, port: int, protocol: str) -> MinerTarget:
        host = f"[{ip}]" if ":" in ip else ip
        return cls(uid, hotkey, f"{protocol}://{host}:{port}")


@dataclass(frozen=True)
class Answer:
    """A checked answer: its parsed payload, the receipt, and how long it took."""

    payload: Any
    receipt: Receipt
    latency: float
    first_token: float | None = None


@dataclass(frozen=True)
class StreamedGeneration:
    """A streamed answer put back together."""

    text: str
    token_ids: list[int]
    finish_reason: str | None


def _short(text: str, limit: int = 160) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _error_of(content: bytes, response: httpx.Response) -> str:
    try:
        error = json.loads(content)["error"]
        return f"{error['code']}: {_short(str(error['message']))}"
    except (ValueError, KeyError, TypeError):
        return _short(content.decode("utf-8", "replace")) or response.reason_phrase


def parse_token_events(content: bytes) -> StreamedGeneration:
    """The ``token`` events of a stream's content (everything before the receipt event).

    Raises:
        ProbeFailed: (malformed) an event that is not a ``token`` event with TokenEvent JSON.
    """
    text: list[str] = []
    tokens: list[int] = []
    finish: str | None = None
    for block in content.decode("utf-8", errors="strict").split("\n\n"):
        if not block.strip():
            continue
        event, data = "message", []
        for line in block.split("\n"):
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "event":
                event = value
            elif name == "data":
                data.append(value)
        if event != "token":
            raise ProbeFailed(Verdict.MALFORMED, f"unexpected {event!r} event in the stream")
        try:
            chunk = TokenEvent.model_validate_json("\n".join(data))
        except ValidationError as error:
            raise ProbeFailed(
                Verdict.MALFORMED, f"a token event is not TokenEvent JSON: {error}"
            ) from None
        text.append(chunk.text)
        tokens.extend(chunk.token_ids)
        finish = chunk.finish_reason or finish
    return StreamedGeneration("".join(text), tokens, finish)


class MinerClient:
    """Signed, timed calls to miners on behalf of one validator hotkey.

    Each miner address gets its own small connection pool (kept alive across rounds), sharing
    one TLS context: httpcore's pool scans all of its connections for every request it places,
    so one pool for hundreds of miners costs time quadratic in their number
    (``bench/bench_validator.py`` measured it). An ``http`` client, if given, serves every
    address instead. Every answer is read as a stream and cut off past ``max_response_bytes``,
    so a miner cannot exhaust the validator's memory, and the whole exchange must finish within
    ``timeout`` seconds.
    """

    def __init__(
        self,
        hotkey: Keypair,
        netuid: int,
        http: httpx.AsyncClient | None = None,
        *,
        timeout: float = 10.0,
        max_response_bytes: int = MAX_RESPONSE_BYTES,
    ) -> None:
        self.hotkey = hotkey
        self.netuid = netuid
        self.timeout = timeout
        self.max_response_bytes = max_response_bytes
        self._shared = http
        self._pools: dict[str, httpx.AsyncClient] = {}
        self._tls: ssl.SSLContext | None = None

    def _client(self, target: MinerTarget) -> httpx.AsyncClient:
        if self._shared is not None:
            return self._shared
        client = self._pools.get(target.url)
        if client is None:
            if self._tls is None:
                self._tls = ssl.create_default_context()
            client = httpx.AsyncClient(
                timeout=httpx.Timeout(self.timeout),
                limits=httpx.Limits(max_connections=8, max_keepalive_connections=4),
                verify=self._tls,
            )
            self._pools[target.url] = client
        return client

    async def forget(self, keep: set[str]) -> None:
        """Close the pools of addresses not in ``keep`` (miners that left or moved)."""
        for url in [u for u in self._pools if u not in keep]:
            await self._pools.pop(url).aclose()

    async def aclose(self) -> None:
        pools = list(self._pools.values())
        self._pools.clear()
        for client in pools:
            await client.aclose()

    # -- the endpoints ---------------------------------------------------------------------------

    async def health(self, target: MinerTarget) -> Health:
        """``GET /health`` (public; signed all the same, see :meth:`_exchange`), checked against
        the metagraph's hotkey and subnet."""
        reply = await self._exchange(target, "GET", "/health", None)
        health = _parse(Health, reply.content)
        # /health is unsigned, so a mismatch here is a failure, not proof of anything.
        if health.hotkey != target.hotkey:
            raise ProbeFailed(
                Verdict.HTTP_ERROR,
                f"the endpoint serves hotkey {health.hotkey[:16]}…, the metagraph says "
                f"{target.hotkey[:16]}… for uid {target.uid}",
            )
        if health.netuid != self.netuid:
            raise ProbeFailed(
                Verdict.HTTP_ERROR, f"the endpoint serves subnet {health.netuid}, not {self.netuid}"
            )
        return health

    async def embed(self, target: MinerTarget, texts: list[str]) -> Answer:
        body = _json_bytes({"texts": texts})
        reply = await self._exchange(target, "POST", "/v1/embed", body)
        return Answer(
            _parse(EmbedResponse, reply.content), self._receipt(target, body, reply), reply.latency
        )

    async def generate(
        self, target: MinerTarget, prompt: str, max_tokens: int, *, stream: bool = False
    ) -> Answer:
        """Greedy generation; with ``stream`` the payload is a :class:`StreamedGeneration` and
        ``first_token`` the seconds until the first bytes of the stream arrived."""
        request = {"prompt": prompt, "max_tokens": max_tokens, "temperature": 0.0, "stream": stream}
        body = _json_bytes(request)
        reply = await self._exchange(target, "POST", "/v1/generate", body)
        receipt = self._receipt(target, body, reply)
        if not stream:
            return Answer(_parse(GenerateResponse, reply.content), receipt, reply.latency)
        try:
            content, _ = split_stream(reply.content)
            streamed = parse_token_events(content)
        except InvalidReceipt as error:  # the receipt check above already found it
            raise ProbeFailed(Verdict.NO_RECEIPT, str(error)) from None
        except UnicodeDecodeError:
            raise ProbeFailed(Verdict.MALFORMED, "the stream is not UTF-8") from None
        return Answer(streamed, receipt, reply.latency, reply.first_byte)

    async def score(self, target: MinerTarget, prompt: str, token_ids: list[int]) -> Answer:
        body = _json_bytes({"prompt": prompt, "token_ids": token_ids})
        reply = await self._exchange(target, "POST", "/v1/score", body)
        return Answer(
            _parse(ScoreResponse, reply.content), self._receipt(target, body, reply), reply.latency
        )

    async def classify(self, target: MinerTarget, features: list[float]) -> Answer:
        body = _json_bytes({"features": features})
        reply = await self._exchange(target, "POST", "/v1/classify", body)
        return Answer(
            _parse(ClassifyResponse, reply.content),
            self._receipt(target, body, reply),
            reply.latency,
        )

    # -- plumbing ------------------------------------------------------------------------------

    async def _exchange(
        self, target: MinerTarget, method: str, path: str, body: bytes | None
    ) -> _Reply:
        """One signed request and its whole answer, within the timeout and the size limit.

        Every request is signed, /health too: it is public, but the signature names the hotkey
        asked for, so that one address can serve several hotkeys (agora.validator.sim does).

        Raises:
            ProbeFailed: timeout, unreachable, malformed (too large) or http_error (not 200).
        """
        headers = {"Content-Type": "application/json"} if body is not None else {}
        started = time.perf_counter()
        first: float | None = None
        chunks: list[bytes] = []
        try:
            async with asyncio.timeout(self.timeout):
                http = self._client(target)
                request = http.build_request(
                    method, target.url + path, content=body, headers=headers
                )
                response = await http.send(request, auth=self._auth(target), stream=True)
                try:
                    size = 0
                    async for chunk in response.aiter_bytes():
                        if first is None and chunk:
                            first = time.perf_counter() - started
                        size += len(chunk)
                        if size > self.max_response_bytes:
                            raise ProbeFailed(
                                Verdict.MALFORMED,
                                f"{method} {path}: the answer is over "
                                f"{self.max_response_bytes} bytes",
                            )
                        chunks.append(chunk)
                finally:
                    await response.aclose()
        except (TimeoutError, httpx.TimeoutException):
            raise ProbeFailed(Verdict.TIMEOUT, f"no answer within {self.timeout:g} s") from None
        except httpx.HTTPError as error:
            raise ProbeFailed(
                Verdict.UNREACHABLE, f"{type(error).__name__}: {_short(str(error))}"
            ) from None
        latency = time.perf_counter() - started
        content = b"".join(chunks)
        if response.status_code != 200:
            raise ProbeFailed(
                Verdict.HTTP_ERROR,
                f"{method} {path}: {response.status_code} {_error_of(content, response)}",
            )
        nonce = response.request.headers.get(NONCE_HEADER, "")
        return _Reply(response.headers, content, nonce, latency, first)

    def _auth(self, target: MinerTarget) -> AgoraAuth:
        return AgoraAuth(self.hotkey, target.hotkey)

    def _receipt(self, target: MinerTarget, body: bytes, reply: _Reply) -> Receipt:
        """The answer's receipt, checked (see the module docstring).

        Raises:
            ProbeFailed: no_receipt or bad_receipt.
        """
        content = reply.content
        if RECEIPT_HEADER not in reply.headers and _lacks_receipt(content):
            raise ProbeFailed(
                Verdict.NO_RECEIPT, "no receipt in the header, the body or the stream"
            )
        try:
            receipt = extract_receipt(reply.headers, content)
        except InvalidReceipt as error:
            verdict = Verdict.NO_RECEIPT if "no receipt" in str(error) else Verdict.BAD_RECEIPT
            raise ProbeFailed(verdict, str(error)) from None
        try:
            verify_receipt(receipt, body, content, miner=target.hotkey)
        except InvalidReceipt as error:
            raise ProbeFailed(Verdict.BAD_RECEIPT, str(error)) from None
        problems = [
            f"caller {receipt.caller[:16]}…" if receipt.caller != self.hotkey.address else "",
            f"subnet {receipt.netuid}" if receipt.netuid != self.netuid else "",
            f"nonce {receipt.nonce}" if receipt.nonce != reply.nonce else "",
        ]
        wrong = [p for p in problems if p]
        if wrong:
            raise ProbeFailed(
                Verdict.BAD_RECEIPT,
                f"the receipt was issued for another request: {', '.join(wrong)}",
            )
        return receipt


@dataclass(frozen=True)
class _Reply:
    headers: httpx.Headers
    content: bytes
    nonce: str  # of the request, as signed
    latency: float
    first_byte: float | None


def _parse(model: type[M], content: bytes) -> M:
    try:
        return model.model_validate_json(content)
    except ValidationError as error:
        problems = error.errors()
        where = ".".join(str(p) for p in problems[0]["loc"]) if problems else ""
        message = problems[0]["msg"] if problems else str(error)
        raise ProbeFailed(
            Verdict.MALFORMED, f"not a {model.__name__}: {where or 'body'}: {message}"
        ) from None


def _lacks_receipt(content: bytes) -> bool:
    """A JSON object without the receipt field, or an event stream without the receipt event
    (as opposed to a receipt that is there but malformed)."""
    if content.startswith(b"event:"):
        return b"event: " + RECEIPT_EVENT.encode() + b"\n" not in content
    return content.lstrip().startswith(b"{") and json.dumps(RECEIPT_FIELD).encode() not in content


def _json_bytes(value: dict[str, Any]) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
