"""The tenant's side: order, pick a bid, run a job, read its output, close.

    async with Tenant(alice, LedgerClient(url)) as tenant:
        order_id = await tenant.order(parse_resources("cpu=1,mem=2GiB"), max_price, deposit)
        bids = (await tenant.order_detail(order_id)).bid_details      # cheapest first
        lease_id = await tenant.lease(bids[0].id)
        await tenant.run(lease_id, ["python", "train.py"], {"train.py": source})
        print((await tenant.logs(lease_id))["data"])
        await tenant.close(lease_id)

Ledger transactions are signed with the tenant's key and waited for; requests to a provider's
agent are signed with the same key (:class:`agora.net.AgoraAuth`), which is how the agent knows
the caller is the lease's tenant.
"""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import httpx

from agora.chain.client import LedgerClient
from agora.chain.errors import NodeError
from agora.chain.models import MarketLease, MarketOrderDetail, TxInfo
from agora.crypto.keys import Keypair
from agora.crypto.signing import sign_transaction
from agora.net.signing import AgoraAuth
from agora.protocol.market_state import Hardware

__all__ = ["ProviderError", "Tenant", "ray_env"]


class ProviderError(Exception):
    """The provider's agent refused or could not be reached."""

    def __init__(self, code: str, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.code = code
        self.status = status


class Tenant:
    def __init__(self, keypair: Keypair, ledger: LedgerClient, *, timeout: float = 30.0) -> None:
        self.keypair = keypair
        self.address = keypair.address
        self.ledger = ledger
        self.timeout = timeout
        self._chain_id: str | None = None
        self._providers: dict[str, httpx.AsyncClient] = {}

    async def __aenter__(self) -> Tenant:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        for client in self._providers.values():
            await client.aclose()
        self._providers.clear()
        await self.ledger.aclose()

    # -- the ledger ------------------------------------------------------------------------

    async def send(self, kind: str, body: dict[str, Any]) -> TxInfo:
        """Sign, submit and wait for the block. Raises NodeError / TransactionRejected."""
        if self._chain_id is None:
            self._chain_id = (await self.ledger.status()).chain_id
        nonce = await self.ledger.next_nonce(self.address)
        tx = sign_transaction(self.keypair, self._chain_id, kind, nonce, body)
        return await self.ledger.submit_and_wait(tx, timeout=self.timeout)

    async def order(
        self, need: Hardware, max_price: int, deposit: int, count: int = 1, auditor: str = ""
    ) -> int:
        """Place an order; returns its id once a block includes it."""
        body = {
            **need.to_json(),
            "max_price": max_price,
            "deposit": deposit,
            "count": count,
            "auditor": auditor,
        }
        info = await self.send("market_order", body)
        mine = await self.ledger.market_orders(tenant=self.address)
        placed = [o.id for o in mine if o.created_at == info.height]
        if not placed:
            raise NodeError("not_found", "the order was included but cannot be found")
        return max(placed)

    async def order_detail(self, order_id: int) -> MarketOrderDetail:
        return await self.ledger.market_order(order_id)

    async def wait_for_bids(
        self, order_id: int, count: int = 1, timeout: float = 30.0, poll: float = 0.1
    ) -> MarketOrderDetail:
        """Until the order has ``count`` open bids. Raises TimeoutError."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            detail = await self.ledger.market_order(order_id)
            if sum(b.status == "open" for b in detail.bid_details) >= count:
                return detail
            if loop.time() > deadline:
                raise TimeoutError(
                    f"order {order_id} has fewer than {count} bids after {timeout:g}s "
                    f"({detail.matching_providers} providers could serve it)"
                )
            await asyncio.sleep(poll)

    async def lease(self, bid_id: int) -> int:
        """Accept a bid; returns the new lease's id."""
        await self.send("market_lease", {"bid": bid_id})
        for lease in await self.ledger.market_leases(tenant=self.address):
            if lease.bid == bid_id:
                return lease.id
        raise NodeError("not_found", f"the lease of bid {bid_id} cannot be found")

    async def close(self, lease_id: int) -> MarketLease:
        await self.send("market_close", {"lease": lease_id})
        return await self.ledger.market_lease(lease_id)

    async def top_up(self, lease_id: int, amount: int) -> None:
        await self.send("market_top_up", {"lease": lease_id, "amount": amount})

    async def challenge(self, lease_id: int, size: int = 64) -> TxInfo:
        return await self.send("market_challenge", {"lease": lease_id, "size": size})

    # -- the provider's agent --------------------------------------------------------------

    async def _provider(self, lease_id: int) -> tuple[httpx.AsyncClient, MarketLease]:
        lease = await self.ledger.market_lease(lease_id)
        client = self._providers.get(lease.provider)
        if client is None:
            client = httpx.AsyncClient(
                base_url=lease.provider_url,
                auth=AgoraAuth(self.keypair, lease.provider),
                timeout=self.timeout,
            )
            self._providers[lease.provider] = client
        return client, lease

    async def _call(self, lease_id: int, method: str, path: str, **kwargs: Any) -> httpx.Response:
        client, lease = await self._provider(lease_id)
        try:
            response = await client.request(method, path, **kwargs)
        except httpx.HTTPError as error:
            raise ProviderError(
                "provider_unreachable",
                f"the provider of lease {lease_id} at {lease.provider_url} does not answer: "
                f"{error!r}",
            ) from None
        if response.status_code >= 400:
            try:
                body = response.json()["error"]
                code, message = str(body["code"]), str(body["message"])
            except (ValueError, KeyError, TypeError):
                code, message = f"http_{response.status_code}", response.text[:200]
            raise ProviderError(code, message, response.status_code)
        return response

    async def run(
        self,
        lease_id: int,
        argv: list[str],
        files: dict[str, bytes] | None = None,
        env: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        """Start ``argv`` in the lease's working directory (with ``files`` put there first)."""
        body = {
            "argv": argv,
            "files": {k: base64.b64encode(v).decode() for k, v in (files or {}).items()},
            "env": env or {},
        }
        response = await self._call(lease_id, "POST", f"/v1/leases/{lease_id}/run", json=body)
        result: dict[str, Any] = response.json()
        return result

    async def status(self, lease_id: int) -> dict[str, Any]:
        result: dict[str, Any] = (
            await self._call(lease_id, "GET", f"/v1/leases/{lease_id}")
        ).json()
        return result

    async def logs(self, lease_id: int, offset: int = 0) -> dict[str, Any]:
        """``{"data", "next", "running", "exit_code", ...}`` from byte ``offset`` of the log."""
        response = await self._call(
            lease_id, "GET", f"/v1/leases/{lease_id}/logs", params={"offset": offset}
        )
        result: dict[str, Any] = response.json()
        return result

    async def file(self, lease_id: int, path: str) -> bytes:
        response = await self._call(lease_id, "GET", f"/v1/leases/{lease_id}/files/{path}")
        return response.content

    async def wait_for_exit(
        self, lease_id: int, timeout: float = 60.0, poll: float = 0.1
    ) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            state = await self.status(lease_id)
            if state["started_at"] is not None and not state["running"]:
                return state
            if loop.time() > deadline:
                raise TimeoutError(f"lease {lease_id}'s job still runs after {timeout:g}s")
            await asyncio.sleep(poll)

    async def ray_cluster(self, order_id: int) -> tuple[str, str]:
        """Make the order's leases one Ray cluster: head on the first, workers on the others.
        Returns the head's address and the cluster's auth token: run jobs with
        ``RAY_ADDRESS``, ``RAY_AUTH_MODE=token`` and ``RAY_AUTH_TOKEN`` set to them."""
        detail = await self.ledger.market_order(order_id)
        if not detail.leases:
            raise ProviderError("no_leases", f"order {order_id} has no leases yet")
        head, *workers = sorted(detail.leases)
        response = await self._call(head, "POST", f"/v1/leases/{head}/ray", json={"role": "head"})
        address, token = str(response.json()["ray"]), str(response.json()["ray_token"])
        for lease_id in workers:
            body = {"role": "worker", "address": address, "token": token}
            await self._call(lease_id, "POST", f"/v1/leases/{lease_id}/ray", json=body)
        return address, token


def ray_env(address: str, token: str) -> dict[str, str]:
    """The environment a job needs to join the lease's Ray cluster."""
    return {"RAY_ADDRESS": address, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token}
