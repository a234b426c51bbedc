"""The node's read routes for the compute market, under ``/v1/market`` (mounted by ``api.py``)."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import FastAPI, Query

from agora.chain import models
from agora.chain.api import ApiError, _errors
from agora.chain.node import Node
from agora.protocol.codec import is_hex
from agora.protocol.market import free_hardware, unmet_need
from agora.protocol.market_state import MARKET
from agora.protocol.market_state import Lease as LeaseState
from agora.protocol.market_state import Order as OrderState
from agora.protocol.market_state import Provider as MarketProviderState
from agora.protocol.state import State


def _provider_json(provider: MarketProviderState) -> dict[str, Any]:
    data = provider.to_json()
    data["history"]["uptime_ppm"] = provider.history.uptime_ppm
    data["alive_until"] = provider.alive_at + MARKET.liveness_window
    data["attributes_hash"] = provider.hardware.hash
    return data


def _lease_json(state: State, lease: LeaseState) -> dict[str, Any]:
    height = state.height
    data = lease.to_json()
    if lease.status == "open":
        data["paid"] = lease.price * lease.paid_blocks(height)
    data["remaining"] = lease.remaining(height)
    data["paid_blocks"] = lease.paid_blocks(height)
    data["height"] = height
    provider = state.market.providers.get(lease.provider)
    data["provider_url"] = provider.url if provider else ""
    return data


def _order_json(state: State, order: OrderState) -> dict[str, Any]:
    data = order.to_json()
    data["matching_providers"] = sum(
        1
        for p in state.market.providers.values()
        if p.active
        and p.address != order.tenant
        and unmet_need(free_hardware(p), order.need) is None
        and (not order.auditor or p.attested_by(order.auditor))
    )
    return data


def add_market_routes(app: FastAPI, node: Node) -> None:
    """Read routes of the compute market, under ``/v1/market``."""

    def not_found(what: str, key: object) -> ApiError:
        return ApiError(404, "not_found", f"no {what} {key} (never made, or closed long ago)")

    @app.get(
        "/v1/market/params",
        response_model=models.MarketParams,
        summary="The market's parameters",
        tags=["market"],
    )
    async def market_params() -> Any:
        """Stakes, deposits, windows (in blocks) and the block time that converts per-hour
        prices into the per-block prices the ledger uses."""
        params = {k: v for k, v in MARKET.__dict__.items() if isinstance(v, int)}
        return {"params": params, "block_time": node.config.block_time, "height": node.height}

    @app.get(
        "/v1/market/providers",
        response_model=models.MarketProviderList,
        summary="Providers",
        tags=["market"],
    )
    async def market_providers(
        active_only: bool = Query(False, description="Only providers that can win bids."),
    ) -> Any:
        """Every provider with its hardware, stake and history (leases served, failures,
        slashes, uptime)."""
        state = node.state
        found = [
            _provider_json(p)
            for _, p in sorted(state.market.providers.items())
            if p.active or not active_only
        ]
        return {"height": state.height, "providers": found}

    @app.get(
        "/v1/market/providers/{address}",
        response_model=models.MarketProvider,
        summary="One provider",
        tags=["market"],
        responses=_errors(400, 404),
    )
    async def market_provider(address: str) -> Any:
        if not is_hex(address, 64):
            raise ApiError(400, "bad_address", "an address is 64 lowercase hex characters")
        provider = node.state.market.providers.get(address)
        if provider is None:
            raise not_found("provider", address[:12] + "…")
        return _provider_json(provider)

    @app.get(
        "/v1/market/orders",
        response_model=models.MarketOrderList,
        summary="Orders",
        tags=["market"],
    )
    async def market_orders(
        status: Literal["open", "filled", "cancelled"] | None = Query(None),
        tenant: str | None = Query(None, description="Only this tenant's orders."),
    ) -> Any:
        """Orders, oldest first, with how many active providers could serve each now."""
        state = node.state
        found = [
            _order_json(state, o)
            for _, o in sorted(state.market.orders.items())
            if (status is None or o.status == status) and (tenant is None or o.tenant == tenant)
        ]
        return {"height": state.height, "orders": found}

    @app.get(
        "/v1/market/orders/{order_id}",
        response_model=models.MarketOrderDetail,
        summary="One order and its bids",
        tags=["market"],
        responses=_errors(400, 404),
    )
    async def market_order(order_id: int) -> Any:
        """The order and its bids, cheapest first, each with the bidder's record."""
        state = node.state
        order = state.market.orders.get(order_id)
        if order is None:
            raise not_found("order", order_id)
        bids = []
        for bid_id in order.bids:
            bid = state.market.bids.get(bid_id)
            if bid is None:
                continue
            provider = state.market.providers.get(bid.provider)
            info = _provider_json(provider) if provider else None
            bids.append({**bid.to_json(), "provider_info": info})
        bids.sort(key=lambda b: (b["status"] != "open", b["price"], b["id"]))
        return {**_order_json(state, order), "bid_details": bids}

    @app.get(
        "/v1/market/leases",
        response_model=models.MarketLeaseList,
        summary="Leases",
        tags=["market"],
    )
    async def market_leases(
        provider: str | None = Query(None),
        tenant: str | None = Query(None),
        status: Literal["open", "closed"] | None = Query(None),
    ) -> Any:
        """Leases with what they have paid and what escrow is left, oldest first."""
        state = node.state
        found = [
            _lease_json(state, x)
            for _, x in sorted(state.market.leases.items())
            if (provider is None or x.provider == provider)
            and (tenant is None or x.tenant == tenant)
            and (status is None or x.status == status)
        ]
        return {"height": state.height, "leases": found}

    @app.get(
        "/v1/market/leases/{lease_id}",
        response_model=models.MarketLease,
        summary="One lease",
        tags=["market"],
        responses=_errors(400, 404),
    )
    async def market_lease(lease_id: int) -> Any:
        """Paid so far, escrow remaining, the block it runs out, and why it closed."""
        state = node.state
        lease = state.market.leases.get(lease_id)
        if lease is None:
            raise not_found("lease", lease_id)
        return _lease_json(state, lease)

    @app.get(
        "/v1/market/challenges",
        response_model=models.MarketChallengeList,
        summary="Hardware challenges",
        tags=["market"],
    )
    async def market_challenges(
        provider: str | None = Query(None),
        pending: bool = Query(False, description="Only challenges still awaiting an answer."),
    ) -> Any:
        """Challenges with their seeds once known: a provider's agent polls this."""
        state = node.state
        found = [
            {**c.to_json(), "cells": MARKET.challenge_cells}
            for _, c in sorted(state.market.challenges.items())
            if (provider is None or c.provider == provider) and (c.pending or not pending)
        ]
        return {"height": state.height, "challenges": found}

    @app.get(
        "/v1/market/challenges/{challenge_id}",
        response_model=models.MarketChallenge,
        summary="One challenge",
        tags=["market"],
        responses=_errors(400, 404),
    )
    async def market_challenge(challenge_id: int) -> Any:
        challenge = node.state.market.challenges.get(challenge_id)
        if challenge is None:
            raise not_found("challenge", challenge_id)
        return {**challenge.to_json(), "cells": MARKET.challenge_cells}
