"""``LedgerClient``: the node's HTTP API from Python, async.

    async with LedgerClient("http://127.0.0.1:9944") as node:
        tx = sign_transaction(alice, (await node.status()).chain_id, "transfer",
                              await node.next_nonce(alice.address), {"to": bob, "amount": 10**9})
        info = await node.submit_and_wait(tx)     # TransactionRejected if left out

It takes a base URL or an ``httpx.AsyncClient`` (tests hand it one over an ASGI transport). Error
responses raise NodeError(code, message); a node that does not answer raises NodeUnreachable.
``run(coro)`` is the one sync helper, for scripts.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Coroutine
from typing import Any, TypeVar

import httpx

from agora.chain.errors import NodeError, NodeUnreachable, TransactionRejected
from agora.chain.models import (
    Account,
    AuditReport,
    BlockAfter,
    BlockList,
    Channel,
    Dispute,
    MarketChallenge,
    MarketLease,
    MarketOrder,
    MarketOrderDetail,
    MarketParams,
    MarketProvider,
    Metagraph,
    Status,
    Subnet,
    SubnetSummary,
    TxInfo,
)
from agora.crypto.keys import Keypair
from agora.crypto.signing import sign_transaction
from agora.protocol.transactions import Transaction

__all__ = ["DEFAULT_URL", "LedgerClient", "iter_sse", "run"]

DEFAULT_URL = "http://127.0.0.1:9944"
T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run one coroutine to completion from sync code."""
    return asyncio.run(coro)


class LedgerClient:
    def __init__(self, node: str | httpx.AsyncClient = DEFAULT_URL, *, timeout: float = 10.0):
        if isinstance(node, httpx.AsyncClient):
            self._http, self._owned = node, False
        else:
            self._http, self._owned = httpx.AsyncClient(base_url=node, timeout=timeout), True
        self.url = str(self._http.base_url).rstrip("/")
        # Held from reading a signer's next nonce until the node holds the transaction: two
        # tasks of one process signing with one key (a validator's weights and its disputes)
        # would otherwise read the same nonce and one of them be refused with bad_nonce.
        self.nonce_lock = asyncio.Lock()

    async def __aenter__(self) -> LedgerClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._owned:
            await self._http.aclose()

    # -- plumbing -----------------------------------------------------------------------------

    async def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = await self._http.request(method, path, **kwargs)
        except (httpx.ConnectError, httpx.ConnectTimeout) as error:
            raise NodeUnreachable(self.url, str(error) or type(error).__name__) from None
        except httpx.TimeoutException:
            raise NodeUnreachable(self.url, "it did not answer in time") from None
        except (httpx.NetworkError, httpx.RemoteProtocolError) as error:
            raise NodeUnreachable(self.url, str(error) or type(error).__name__) from None
        return _json_or_raise(response)

    # -- reading ------------------------------------------------------------------------------

    async def status(self) -> Status:
        return Status.model_validate(await self._request("GET", "/v1/status"))

    async def genesis(self) -> dict[str, Any]:
        """``{"hash": ..., "state": {...}}``."""
        result: dict[str, Any] = await self._request("GET", "/v1/genesis")
        return result

    async def block(self, height: int | str = "latest") -> dict[str, Any]:
        """A block as JSON (``Block.from_json`` reads it). NodeError ``unknown_block`` if absent."""
        result: dict[str, Any] = await self._request("GET", f"/v1/blocks/{height}")
        return result

    async def blocks(self, start: int | None = None, limit: int = 20) -> BlockList:
        params: dict[str, int] = {"limit": limit}
        if start is not None:
            params["start"] = start
        return BlockList.model_validate(await self._request("GET", "/v1/blocks", params=params))

    async def account(self, address: str) -> Account:
        return Account.model_validate(await self._request("GET", f"/v1/accounts/{address}"))

    async def next_nonce(self, address: str) -> int:
        """The nonce to sign ``address``'s next transaction with (pending ones counted)."""
        return (await self.account(address)).pending_nonce

    async def subnets(self) -> list[SubnetSummary]:
        data = await self._request("GET", "/v1/subnets")
        return [SubnetSummary.model_validate(item) for item in data["subnets"]]

    async def subnet(self, netuid: int) -> Subnet:
        return Subnet.model_validate(await self._request("GET", f"/v1/subnets/{netuid}"))

    async def metagraph(self, netuid: int) -> Metagraph:
        data = await self._request("GET", f"/v1/subnets/{netuid}/metagraph")
        return Metagraph.model_validate(data)

    async def channel(self, channel_id: int) -> Channel:
        """One payment channel. NodeError ``unknown_channel`` if there is none."""
        return Channel.model_validate(await self._request("GET", f"/v1/channels/{channel_id}"))

    async def channels(
        self, address: str, *, role: str | None = None, open_only: bool = False
    ) -> list[Channel]:
        """Channels where ``address`` is payer, payee or signer (or only ``role``)."""
        params: dict[str, str] = {"open_only": "true" if open_only else "false"}
        if role is not None:
            params["role"] = role
        data = await self._request("GET", f"/v1/accounts/{address}/channels", params=params)
        return [Channel.model_validate(item) for item in data["channels"]]

    # -- the compute market -------------------------------------------------------------------

    async def market_params(self) -> MarketParams:
        return MarketParams.model_validate(await self._request("GET", "/v1/market/params"))

    async def market_providers(self, *, active_only: bool = False) -> list[MarketProvider]:
        params = {"active_only": "true" if active_only else "false"}
        data = await self._request("GET", "/v1/market/providers", params=params)
        return [MarketProvider.model_validate(item) for item in data["providers"]]

    async def market_provider(self, address: str) -> MarketProvider:
        data = await self._request("GET", f"/v1/market/providers/{address}")
        return MarketProvider.model_validate(data)

    async def market_orders(
        self, *, status: str | None = None, tenant: str | None = None
    ) -> list[MarketOrder]:
        params = {k: v for k, v in (("status", status), ("tenant", tenant)) if v is not None}
        data = await self._request("GET", "/v1/market/orders", params=params)
        return [MarketOrder.model_validate(item) for item in data["orders"]]

    async def market_order(self, order_id: int) -> MarketOrderDetail:
        """An order with its bids, cheapest first, each with the bidder's record."""
        data = await self._request("GET", f"/v1/market/orders/{order_id}")
        return MarketOrderDetail.model_validate(data)

    async def market_leases(
        self,
        *,
        provider: str | None = None,
        tenant: str | None = None,
        status: str | None = None,
    ) -> list[MarketLease]:
        pairs = (("provider", provider), ("tenant", tenant), ("status", status))
        params = {k: v for k, v in pairs if v is not None}
        data = await self._request("GET", "/v1/market/leases", params=params)
        return [MarketLease.model_validate(item) for item in data["leases"]]

    async def market_lease(self, lease_id: int) -> MarketLease:
        data = await self._request("GET", f"/v1/market/leases/{lease_id}")
        return MarketLease.model_validate(data)

    async def market_challenges(
        self, *, provider: str | None = None, pending: bool = False
    ) -> list[MarketChallenge]:
        params = {"pending": "true" if pending else "false"}
        if provider is not None:
            params["provider"] = provider
        data = await self._request("GET", "/v1/market/challenges", params=params)
        return [MarketChallenge.model_validate(item) for item in data["challenges"]]

    # -- spot checks and disputes -------------------------------------------------------------

    async def disputes(
        self,
        *,
        netuid: int | None = None,
        miner: str | None = None,
        status: str | None = None,
        limit: int = 50,
    ) -> list[Dispute]:
        """Disputes, newest first; ``status="open"`` lists the ones still taking votes."""
        pairs = (("netuid", netuid), ("miner", miner), ("status", status), ("limit", limit))
        params = {k: v for k, v in pairs if v is not None}
        data = await self._request("GET", "/v1/disputes", params=params)
        return [Dispute.model_validate(item) for item in data["disputes"]]

    async def dispute(self, dispute_id: int) -> Dispute:
        return Dispute.model_validate(await self._request("GET", f"/v1/disputes/{dispute_id}"))

    async def audit_params(self, netuid: int, **economics: int) -> AuditReport:
        """The subnet's audit parameters and honesty-condition figures. ``economics`` may set
        ``reward``, ``honest_cost``, ``cheat_cost`` and ``detection_ppm`` (per answer, units)."""
        data = await self._request("GET", f"/v1/subnets/{netuid}/audit", params=economics)
        return AuditReport.model_validate(data)

    async def block_after(self, timestamp_ms: int) -> BlockAfter | None:
        """The first block after ``timestamp_ms`` (a receipt's deciding block, whose hash seeds
        its audit draw), or None while no such block exists yet."""
        try:
            data = await self._request("GET", f"/v1/blocks/after/{timestamp_ms}")
        except NodeError as error:
            if error.code == "unknown_block":
                return None
            raise
        return BlockAfter.model_validate(data)

    async def open_dispute(
        self,
        hotkey: Keypair,
        netuid: int,
        receipt: dict[str, Any],
        evidence: dict[str, Any],
        timeout: float = 30.0,
    ) -> TxInfo:
        """Sign ``dispute_open`` with a validator hotkey and wait for its block. ``receipt`` is
        the miner's ``Receipt.to_json()``; the deposit is the subnet's ``dispute_deposit``.
        Raises TransactionRejected with the rule's reason if it was refused."""
        body = {"netuid": netuid, "receipt": receipt, "evidence": evidence}
        return await self._sign_and_wait(hotkey, "dispute_open", body, timeout)

    async def vote_dispute(
        self, hotkey: Keypair, dispute_id: int, guilty: bool, timeout: float = 30.0
    ) -> TxInfo:
        """Sign ``dispute_vote`` (one vote per validator, final) and wait for its block."""
        body = {"dispute_id": dispute_id, "guilty": guilty}
        return await self._sign_and_wait(hotkey, "dispute_vote", body, timeout)

    async def _sign_and_wait(
        self, key: Keypair, kind: str, body: dict[str, Any], timeout: float
    ) -> TxInfo:
        chain_id = (await self.status()).chain_id
        async with self.nonce_lock:
            tx = sign_transaction(key, chain_id, kind, await self.next_nonce(key.address), body)
            tx_hash = await self.submit(tx)
        info = await self.wait_for_tx(tx_hash, timeout)
        if info.status == "rejected":
            raise TransactionRejected(info.code or "rejected", info.message or "", status=422)
        return info

    # -- transactions -------------------------------------------------------------------------

    async def submit(self, tx: Transaction | dict[str, Any]) -> str:
        """Send a signed transaction; returns its hash once the mempool holds it.

        Raises NodeError: ``bad_signature``, ``bad_nonce``, ``insufficient_balance``,
        ``sender_rate_limited`` ...
        """
        body = tx.to_json() if isinstance(tx, Transaction) else tx
        data = await self._request("POST", "/v1/transactions", json=body)
        return str(data["hash"])

    async def tx_status(self, tx_hash: str) -> TxInfo:
        return TxInfo.model_validate(await self._request("GET", f"/v1/transactions/{tx_hash}"))

    async def wait_for_tx(self, tx_hash: str, timeout: float = 30.0, poll: float = 0.1) -> TxInfo:
        """Until the transaction is included or rejected; returns its status either way (check
        ``status``). Raises TimeoutError if neither happened within ``timeout`` seconds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            try:
                info = await self.tx_status(tx_hash)
            except NodeError as error:
                if error.code != "unknown_transaction":
                    raise
            else:
                if info.status != "pending":
                    return info
            if loop.time() >= deadline:
                raise TimeoutError(
                    f"transaction {tx_hash[:12]}… not included within {timeout:g}s; if the node "
                    "restarted it dropped its pending transactions: check the nonce and resubmit"
                )
            await asyncio.sleep(poll)

    async def submit_and_wait(self, tx: Transaction, timeout: float = 30.0) -> TxInfo:
        """Submit, wait for a block, and raise TransactionRejected if it was left out."""
        info = await self.wait_for_tx(await self.submit(tx), timeout)
        if info.status == "rejected":
            raise TransactionRejected(info.code or "rejected", info.message or "", status=422)
        return info

    # -- events -------------------------------------------------------------------------------

    async def events(self, last_event_id: int | None = None) -> AsyncIterator[dict[str, Any]]:
        """Block events as they happen: ``{"height", "hash", "timestamp", "tx_count", ...}``.

        With ``last_event_id`` (a height) the node first replays the blocks after it. The stream
        ends when the node stops; reconnect with the last height seen to resume.
        """
        headers = {"Accept": "text/event-stream"}
        if last_event_id is not None:
            headers["Last-Event-ID"] = str(last_event_id)
        timeout = httpx.Timeout(10.0, read=60.0)
        try:
            async with self._http.stream(
                "GET", "/v1/events", headers=headers, timeout=timeout
            ) as response:
                if response.status_code >= 400:
                    await response.aread()
                    _json_or_raise(response)
                async for event, data in iter_sse(response):
                    if event == "block":
                        yield json.loads(data)
        except (httpx.ConnectError, httpx.ConnectTimeout) as error:
            raise NodeUnreachable(self.url, str(error) or type(error).__name__) from None
        except (httpx.ReadTimeout, httpx.NetworkError, httpx.RemoteProtocolError) as error:
            raise NodeUnreachable(self.url, f"the event stream broke: {error!r}") from None


async def iter_sse(response: httpx.Response) -> AsyncIterator[tuple[str, str]]:
    """(event, data) pairs of a server-sent event stream; comments are skipped."""
    event, data = "message", list[str]()
    async for line in response.aiter_lines():
        if not line:
            if data:
                yield event, "\n".join(data)
            event, data = "message", list[str]()
        elif line.startswith(":"):
            continue
        else:
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "event":
                event = value
            elif name == "data":
                data.append(value)


def _json_or_raise(response: httpx.Response) -> Any:
    try:
        data = response.json()
    except ValueError:
        data = None
    if response.status_code < 400:
        if data is None:
            raise NodeError("bad_response", f"the node sent non-JSON: {response.text[:200]!r}")
        return data
    error = data.get("error") if isinstance(data, dict) else None
    if isinstance(error, dict):
        code, message = str(error.get("code", "error")), str(error.get("message", ""))
    else:
        code, message = f"http_{response.status_code}", response.text[:200]
    raise NodeError(code, message, response.status_code)
