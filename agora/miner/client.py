"""Calling a miner from Python: signed requests, parsed answers, and every receipt checked.

    async with MinerClient(url, my_hotkey, miner_hotkey_address) as miner:
        answer, receipt = await miner.embed(["a sentence"])
        answer, receipt = await miner.generate("Hello", max_tokens=16)
        stream = miner.stream("Hello", max_tokens=16)
        async for event in stream:                  # TokenEvent, as they come
            print(event.text, end="")
        stream.receipt                              # checked once the stream has ended

Each call sends the JSON body as exact bytes, signs them (:class:`agora.net.AgoraAuth`) and
checks the receipt with :func:`agora.net.verify_receipt` against those bytes, the bytes received
and the miner's hotkey; a receipt that does not verify raises ``InvalidReceipt``. A refusal raises
:class:`MinerCallError` with the status and code the miner sent. The client takes an
``httpx.AsyncClient`` too (tests hand it one over an ASGI transport).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx

from agora.crypto.keys import Keypair
from agora.miner.errors import MinerCallError
from agora.miner.schema import (
    EmbedResponse,
    GenerateResponse,
    Health,
    ScoreResponse,
    TokenEvent,
)
from agora.net.errors import InvalidReceipt
from agora.net.receipts import Receipt, split_stream, verify_receipt
from agora.net.signing import AgoraAuth

__all__ = ["GenerationStream", "MinerClient", "fetch_health"]


def _raise_for_error(response: httpx.Response) -> None:
    if response.status_code < 400:
        return
    code, message = f"http_{response.status_code}", response.text[:300]
    try:
        error = response.json().get("error")
    except (ValueError, AttributeError):
        error = None
    if isinstance(error, dict):
        code, message = str(error.get("code", code)), str(error.get("message", ""))
    raise MinerCallError(response.status_code, code, message)


async def fetch_health(url: str, *, timeout: float = 5.0) -> Health:
    """A miner's public ``/health``. Raises httpx.HTTPError, MinerCallError."""
    async with httpx.AsyncClient(base_url=url, timeout=timeout) as http:
        response = await http.get("/health")
    _raise_for_error(response)
    return Health.model_validate_json(response.content)


class GenerationStream:
    """A streamed generation: iterate for :class:`TokenEvent` objects; afterwards ``receipt``
    (checked), ``raw`` (every byte received) and ``text`` are set."""

    def __init__(self, client: MinerClient, body: bytes) -> None:
        self._client = client
        self._body = body
        self.receipt: Receipt | None = None
        self.raw = b""
        self.events: list[TokenEvent] = []

    @property
    def text(self) -> str:
        return "".join(event.text for event in self.events)

    @property
    def token_ids(self) -> list[int]:
        return [t for event in self.events for t in event.token_ids]

    async def __aiter__(self) -> AsyncIterator[TokenEvent]:
        raw = bytearray()
        async with self._client.http.stream(
            "POST", "/v1/generate", content=self._body, headers=_JSON
        ) as response:
            if response.status_code >= 400:
                await response.aread()
                _raise_for_error(response)
            buffer = b""
            async for data in response.aiter_bytes():
                raw += data
                buffer += data
                while b"\n\n" in buffer:
                    event, buffer = buffer.split(b"\n\n", 1)
                    parsed = _token_event(event)
                    if parsed is not None:
                        self.events.append(parsed)
                        yield parsed
        self.raw = bytes(raw)
        _, receipt = split_stream(self.raw)
        self._client.check(receipt, self._body, self.raw)
        self.receipt = receipt


def _token_event(event: bytes) -> TokenEvent | None:
    name, data = "message", b""
    for line in event.split(b"\n"):
        if line.startswith(b"event: "):
            name = line[7:].decode()
        elif line.startswith(b"data: "):
            data = line[6:]
    if name == "token":
        return TokenEvent.model_validate_json(data)
    return None  # the receipt event (checked at the end), or one this client does not know


_JSON = {"Content-Type": "application/json"}


class MinerClient:
    """Signed calls to one miner (``url``, whose hotkey is ``miner``) as ``keypair``."""

    def __init__(
        self,
        url: str | httpx.AsyncClient,
        keypair: Keypair,
        miner: str,
        *,
        timeout: float = 60.0,
    ) -> None:
        self.keypair = keypair
        self.miner = miner
        if isinstance(url, httpx.AsyncClient):
            self.http, self._owned = url, False
            self.http.auth = AgoraAuth(keypair, miner)
        else:
            self.http = httpx.AsyncClient(
                base_url=url, auth=AgoraAuth(keypair, miner), timeout=timeout
            )
            self._owned = True

    async def __aenter__(self) -> MinerClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._owned:
            await self.http.aclose()

    def check(self, receipt: Receipt, request_body: bytes, response_body: bytes) -> None:
        """Raises InvalidReceipt unless the receipt is the miner's, for these bytes."""
        verify_receipt(receipt, request_body, response_body, miner=self.miner)
        if receipt.caller != self.keypair.address:
            raise InvalidReceipt(f"wrong caller: issued to {receipt.caller}")

    async def _call(self, path: str, payload: dict[str, Any]) -> tuple[dict[str, Any], Receipt]:
        body = json.dumps(payload).encode()
        response = await self.http.post(path, content=body, headers=_JSON)
        _raise_for_error(response)
        data = response.json()
        receipt = Receipt.from_json(data.get("agora_receipt"))
        self.check(receipt, body, response.content)
        return data, receipt

    async def health(self) -> Health:
        response = await self.http.get("/health")
        _raise_for_error(response)
        return Health.model_validate_json(response.content)

    async def embed(self, texts: list[str]) -> tuple[EmbedResponse, Receipt]:
        data, receipt = await self._call("/v1/embed", {"texts": texts})
        return EmbedResponse.model_validate(data), receipt

    async def generate(
        self,
        prompt: str,
        max_tokens: int = 64,
        temperature: float = 0.0,
        seed: int | None = None,
    ) -> tuple[GenerateResponse, Receipt]:
        payload = {"prompt": prompt, "max_tokens": max_tokens, "temperature": temperature}
        if seed is not None:
            payload["seed"] = seed
        data, receipt = await self._call("/v1/generate", payload)
        return GenerateResponse.model_validate(data), receipt

    def stream(
        self,
        prompt: str,
        max_tokens: int = 64,
        temperature: float = 0.0,
        seed: int | None = None,
    ) -> GenerationStream:
        payload: dict[str, Any] = {
            "prompt": prompt,
            "max_tokens": max_tokens,
            "temperature": temperature,
            "stream": True,
        }
        if seed is not None:
            payload["seed"] = seed
        return GenerationStream(self, json.dumps(payload).encode())

    async def score(self, prompt: str, token_ids: list[int]) -> tuple[ScoreResponse, Receipt]:
        data, receipt = await self._call("/v1/score", {"prompt": prompt, "token_ids": token_ids})
        return ScoreResponse.model_validate(data), receipt
