"""The customer's side of keys: open an escrow channel to a gateway, turn it into an API key,
top it up, list keys. What ``agora gateway keys ...`` runs, and what ``agora up`` calls for its
demo key (:func:`create_demo_key`).

    async with GatewayAccount("http://127.0.0.1:8000", alice_coldkey) as account:
        new = await account.create_key(deposit=10 * TOKEN, label="laptop")
        print(new["key"])                          # sk-agora-...: shown once, keep it
        await account.top_up(new["key_id"], 5 * TOKEN)

Opening the channel is a ``channel_open`` transaction signed by the account's coldkey (payee and
signer: the gateway's address, as its ``/v1/gateway`` says). Registering the key is a request to
the gateway signed by the same coldkey (``agora.net`` wire format), which proves the caller pays
for the channel it names.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from agora.chain.client import LedgerClient
from agora.chain.models import Channel
from agora.crypto.keys import Keypair
from agora.crypto.signing import sign_transaction
from agora.gateway.errors import GatewayError
from agora.net.signing import AgoraAuth
from agora.protocol.units import TOKEN

__all__ = [
    "DEFAULT_ESCROW_BLOCKS",
    "GatewayAccount",
    "GatewayCallError",
    "create_demo_key",
    "create_key_for",
]

DEFAULT_ESCROW_BLOCKS = 1_000_000


class GatewayCallError(GatewayError):
    """The gateway or the ledger refused a key operation: HTTP status, code and message."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.status = status
        self.reason = code
        self.message = message


def _raise_for(response: httpx.Response) -> Any:
    try:
        data = response.json()
    except ValueError:
        data = None
    if response.status_code < 400 and data is not None:
        return data
    error = data.get("error") if isinstance(data, dict) else None
    if isinstance(error, dict):
        raise GatewayCallError(
            response.status_code, str(error.get("code")), str(error.get("message"))
        )
    raise GatewayCallError(response.status_code, "http_error", response.text[:300])


class GatewayAccount:
    """A ledger account (``coldkey``) dealing with one gateway."""

    def __init__(
        self,
        gateway_url: str,
        coldkey: Keypair,
        *,
        node_url: str | None = None,
        timeout: float = 60.0,
    ) -> None:
        self.gateway_url = gateway_url.rstrip("/")
        self.coldkey = coldkey
        self.node_url = node_url
        self.timeout = timeout
        self._info: dict[str, Any] | None = None
        self._http = httpx.AsyncClient(base_url=self.gateway_url, timeout=timeout)

    async def __aenter__(self) -> GatewayAccount:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def info(self) -> dict[str, Any]:
        """The gateway's ``/v1/gateway``: its address, chain, node, models and terms."""
        if self._info is None:
            try:
                response = await self._http.get("/v1/gateway")
            except httpx.HTTPError as error:
                raise GatewayCallError(
                    0, "gateway_unreachable", f"no gateway answers at {self.gateway_url}: {error!r}"
                ) from None
            self._info = _raise_for(response)
        return self._info

    async def _ledger(self) -> LedgerClient:
        url = self.node_url or (await self.info())["node"]
        return LedgerClient(url, timeout=self.timeout)

    async def _signed(self, method: str, path: str, json: Any = None) -> Any:
        address = (await self.info())["address"]
        auth = AgoraAuth(self.coldkey, address)
        response = await self._http.request(method, path, json=json, auth=auth)
        return _raise_for(response)

    async def _send(self, kind: str, body: dict[str, Any]) -> int:
        async with await self._ledger() as ledger:
            chain_id = (await ledger.status()).chain_id
            nonce = await ledger.next_nonce(self.coldkey.address)
            tx = sign_transaction(self.coldkey, chain_id, kind, nonce, body)
            info = await ledger.wait_for_tx(await ledger.submit(tx), timeout=self.timeout)
            if info.status != "included":
                raise GatewayCallError(422, info.code or "rejected", info.message or kind)
            assert info.height is not None
            return info.height

    async def open_escrow(
        self, deposit: int, timeout_blocks: int = DEFAULT_ESCROW_BLOCKS
    ) -> Channel:
        """Open a channel to the gateway (payee = signer = the gateway) and return it."""
        gateway = (await self.info())["address"]
        height = await self._send(
            "channel_open",
            {"payee": gateway, "signer": gateway, "amount": deposit, "timeout": timeout_blocks},
        )
        async with await self._ledger() as ledger:
            channels = await ledger.channels(self.coldkey.address, role="payer", open_only=True)
        mine = [
            c
            for c in channels
            if c.payee == gateway
            and c.signer == gateway
            and c.opened_at == height
            and c.deposit == deposit
        ]
        if not mine:
            raise GatewayCallError(500, "channel_not_found", "the channel opened is not listed")
        return max(mine, key=lambda c: c.id)

    async def register(
        self,
        channel: int,
        *,
        label: str = "",
        rate_limit_rpm: float | None = None,
        burst: int | None = None,
        daily_spend_limit: int | None = None,
    ) -> dict[str, Any]:
        """Turn an open channel into an API key. The answer's ``key`` is shown only now."""
        body: dict[str, Any] = {"channel": channel, "label": label}
        if rate_limit_rpm is not None:
            body["rate_limit_rpm"] = rate_limit_rpm
        if burst is not None:
            body["burst"] = burst
        if daily_spend_limit is not None:
            body["daily_spend_limit"] = daily_spend_limit
        result: dict[str, Any] = await self._signed("POST", "/v1/keys", body)
        return result

    async def create_key(
        self,
        deposit: int,
        *,
        label: str = "",
        timeout_blocks: int = DEFAULT_ESCROW_BLOCKS,
        rate_limit_rpm: float | None = None,
        burst: int | None = None,
        daily_spend_limit: int | None = None,
    ) -> dict[str, Any]:
        """Open an escrow of ``deposit`` units and register a key on it."""
        channel = await self.open_escrow(deposit, timeout_blocks)
        return await self.register(
            channel.id,
            label=label,
            rate_limit_rpm=rate_limit_rpm,
            burst=burst,
            daily_spend_limit=daily_spend_limit,
        )

    async def keys(self) -> list[dict[str, Any]]:
        result = await self._signed("GET", "/v1/keys")
        keys: list[dict[str, Any]] = result["keys"]
        return keys

    async def key(self, key_id: str) -> dict[str, Any]:
        for key in await self.keys():
            if key["key_id"] == key_id:
                return key
        raise GatewayCallError(404, "unknown_key", f"this account has no key {key_id}")

    async def top_up(self, key_id: str, amount: int, extend: int = 0) -> dict[str, Any]:
        """Add ``amount`` units (and ``extend`` blocks) to the key's channel; the gateway sees it
        at once."""
        key = await self.key(key_id)
        await self._send(
            "channel_top_up", {"channel": key["channel"], "amount": amount, "extend": extend}
        )
        result: dict[str, Any] = await self._signed("POST", f"/v1/keys/{key_id}/refresh")
        return result

    async def revoke(self, key_id: str) -> dict[str, Any]:
        result: dict[str, Any] = await self._signed("POST", f"/v1/keys/{key_id}/revoke")
        return result


async def create_key_for(
    gateway_url: str, payer: Keypair, deposit: int, *, label: str = "", node_url: str | None = None
) -> dict[str, Any]:
    async with GatewayAccount(gateway_url, payer, node_url=node_url) as account:
        return await account.create_key(deposit, label=label)


def create_demo_key(
    gateway_url: str,
    node_url: str | None = None,
    *,
    dev_account: str = "alice",
    deposit_tokens: int = 10,
    label: str = "agora up demo",
) -> dict[str, Any]:
    """For ``agora up``: a key funded with ``deposit_tokens`` from the dev account
    ``dev_account`` (``Keypair.from_name``), against a running gateway and node. Returns the
    gateway's answer: ``key`` (the API key, shown once), ``key_id``, ``channel``, ``account``,
    ``deposit`` ... Blocks until the channel is on the ledger (a block or two).

    Raises:
        GatewayCallError: the gateway or the ledger refused (the message says why).
    """
    payer = Keypair.from_name(dev_account)
    return asyncio.run(
        create_key_for(gateway_url, payer, deposit_tokens * TOKEN, label=label, node_url=node_url)
    )
