"""The compute market: rent CPUs and GPUs by the block, paid from escrow, checked for honesty.

A reverse auction, as Akash runs it, settled every block by rule:

    provider  market_register (stake, hardware, url) ... market_heartbeat every few blocks
    tenant    market_order (needs, max price per block, escrow per lease, how many providers)
    provider  market_bid (price per block, exactly the hardware it gives; a small deposit)
    tenant    market_lease (picks a bid: a lease opens, the escrow starts paying every block)
    anyone    market_challenge -> provider market_commit -> provider market_open (verified here)
    tenant    market_close (or the escrow runs out, or the provider fails and is slashed)

Every transaction kind, its sender and what it checks (each checks everything before it changes
anything, so a rejected transaction moves no money):

- ``market_register`` (provider): hardware in bounds (a GPU count needs a model name), an http(s)
  URL, ``stake`` added to the existing stake to reach ``min_provider_stake``; capacity may not
  shrink below what open leases use. Re-registering updates attributes (and voids attestations,
  which are of the old attributes' hash).
- ``market_deregister`` (provider): no open leases; open bids are withdrawn; the stake returns.
- ``market_attest`` (auditor): the provider exists, the auditor is not the provider, and
  ``attrs_hash`` is the hash of the provider's current hardware.
- ``market_order`` (tenant): resources possible (cpu and memory at least 1, nothing beyond the
  market's bounds, a GPU model only with GPUs), ``max_price`` > 0, ``deposit`` >= ``max_price``
  (at least one block at any acceptable bid), ``count`` in 1..``max_leases_per_order``, auditor
  empty or another address; locks ``deposit * count``.
- ``market_cancel`` (the order's tenant): the order is open; refunds the escrow of the leases it
  did not make and every open bid.
- ``market_bid`` (active provider): the order is open and not its own, the price is 1..max price,
  the offered hardware satisfies the order and lies within the provider's capacity (same GPU
  model and region), the auditor (if the order names one) attested the provider's current
  attributes, one open bid per provider per order, at most ``max_bids_per_order`` open bids;
  locks ``bid_deposit``.
- ``market_withdraw`` (the bid's provider): the bid is open; refunds its deposit.
- ``market_lease`` (the order's tenant): the bid is open (not withdrawn, won or lost), the order
  is open, the provider is active and has the capacity free, the attestation still holds. The
  bid's deposit goes back; when the order has all its leases the other bids lose and are
  refunded.
- ``market_close`` (the lease's tenant): the lease is open (a second close is refused); paid
  through the previous block, the rest refunded.
- ``market_top_up`` (the lease's tenant): open lease, positive amount; the lease runs longer.
- ``market_heartbeat`` (registered provider): proves liveness for all its leases.
- ``market_challenge`` (anyone but the provider): the lease is open with no challenge pending,
  size a power of two in the allowed range; locks ``challenge_bond``.
- ``market_commit`` (the challenged provider): the challenge awaits a commitment, its seed is
  known (from the block after the challenge), the deadline has not passed.
- ``market_open`` (the challenged provider): committed, the opening seed known, every opened cell
  verifies (Merkle path and dot product). The provider passes and earns the bond. A wrong
  opening is refused; the deadline then fails the challenge.

The three challenge transactions and their arithmetic are in
:mod:`agora.protocol.market_challenge`; settlement, liveness and slashing at the end of each block
in :mod:`agora.protocol.market_settle`; the state records in :mod:`agora.protocol.market_state`.
"""

from __future__ import annotations

import re
from typing import Any

from agora.protocol.accounts import credit, debit
from agora.protocol.codec import is_hex
from agora.protocol.errors import (
    InsufficientStake,
    InvalidParameter,
    MalformedTransaction,
    NotOwner,
    NotRegistered,
)
from agora.protocol.market_challenge import commit_challenge, open_challenge, post_challenge
from agora.protocol.market_settle import add_hardware, close_by_tenant, move_expiry, schedule_prune
from agora.protocol.market_state import (
    CANCELLED,
    FILLED,
    LOST,
    MARKET,
    OPEN,
    WITHDRAWN,
    WON,
    Bid,
    Hardware,
    Lease,
    Order,
    Provider,
    evolve,
    index_add,
)
from agora.protocol.state import State

__all__ = [
    "KINDS",
    "apply_market_tx",
    "attest_provider",
    "cancel_order",
    "check_hardware",
    "close_lease",
    "commit_challenge",
    "deregister_provider",
    "free_hardware",
    "heartbeat",
    "open_challenge",
    "open_lease",
    "place_bid",
    "place_order",
    "post_challenge",
    "register_provider",
    "top_up_lease",
    "unmet_need",
    "withdraw_bid",
]

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,63}")


# -- checks ----------------------------------------------------------------------------------


def _check_name(value: str, what: str) -> None:
    if value and not _NAME.fullmatch(value):
        raise MalformedTransaction(
            f"{what} {value!r} must be up to 64 letters, digits or . _ + - (e.g. A100, eu-west)"
        )


def check_hardware(hw: Hardware, what: str, *, exact: bool) -> None:
    """Bounds every machine respects. ``exact`` (an offer or a capacity) needs a GPU model
    whenever there are GPUs; an order may leave it empty (any model).
    Raises MalformedTransaction saying which resource is impossible."""
    if not 1 <= hw.cpu <= MARKET.max_cpu:
        raise MalformedTransaction(
            f"{what}: cpu={hw.cpu} is impossible; use 1..{MARKET.max_cpu} cores"
        )
    if not 1 <= hw.mem <= MARKET.max_mem:
        raise MalformedTransaction(
            f"{what}: mem={hw.mem} MiB is impossible; use 1..{MARKET.max_mem} MiB"
        )
    if not 0 <= hw.gpu <= MARKET.max_gpu:
        raise MalformedTransaction(
            f"{what}: gpu={hw.gpu} is impossible; use 0..{MARKET.max_gpu} GPUs"
        )
    _check_name(hw.gpu_model, f"{what}: gpu_model")
    _check_name(hw.region, f"{what}: region")
    if hw.gpu == 0 and hw.gpu_model:
        raise MalformedTransaction(f"{what}: gpu_model {hw.gpu_model!r} given but gpu=0")
    if exact and hw.gpu > 0 and not hw.gpu_model:
        raise MalformedTransaction(f"{what}: say which GPU model the {hw.gpu} GPUs are")


def unmet_need(offer: Hardware, need: Hardware) -> str | None:
    """What ``offer`` lacks for ``need``, or None if it satisfies it."""
    for name in ("cpu", "mem", "gpu"):
        if getattr(offer, name) < getattr(need, name):
            return f"{name}={getattr(offer, name)} is below the {getattr(need, name)} asked for"
    if need.gpu_model and offer.gpu_model != need.gpu_model:
        return f"GPU model {offer.gpu_model or 'none'!r} is not the {need.gpu_model!r} asked for"
    if need.region and offer.region != need.region:
        return f"region {offer.region or 'none'!r} is not the {need.region!r} asked for"
    return None


def free_hardware(provider: Provider) -> Hardware:
    """What the provider has not leased out (its GPU model and region)."""
    return add_hardware(provider.hardware, provider.used, -1)


def _fits(provider: Provider, offer: Hardware) -> str | None:
    """Why ``offer`` is beyond what ``provider`` has free, or None."""
    cap, used = provider.hardware, provider.used
    for name in ("cpu", "mem", "gpu"):
        free = getattr(cap, name) - getattr(used, name)
        if getattr(offer, name) > free:
            return f"{name}={getattr(offer, name)} but only {free} of {getattr(cap, name)} is free"
    if offer.gpu and offer.gpu_model != cap.gpu_model:
        return f"GPU model {offer.gpu_model!r} is not the provider's {cap.gpu_model!r}"
    if offer.region != cap.region:
        return f"region {offer.region!r} is not the provider's {cap.region!r}"
    return None


def _provider(state: State, address: str, *, active: bool = False) -> Provider:
    provider = state.market.providers.get(address)
    if provider is None:
        raise NotRegistered(
            f"{address[:12]}… is not a provider; register with market_register (agora provider "
            "start does it)"
        )
    if active and not provider.active:
        raise InvalidParameter(
            f"provider {address[:12]}… is inactive (deregistered, or its stake fell below "
            f"{MARKET.min_provider_stake} units); register again with enough stake"
        )
    return provider


def _order(state: State, order_id: int) -> Order:
    order = state.market.orders.get(order_id)
    if order is None:
        raise InvalidParameter(f"no order {order_id} (never placed, or closed and forgotten)")
    return order


def _bid(state: State, bid_id: int) -> Bid:
    bid = state.market.bids.get(bid_id)
    if bid is None:
        raise InvalidParameter(f"no bid {bid_id} (never placed, or closed and forgotten)")
    return bid


def _lease(state: State, lease_id: int, tenant: str | None = None) -> Lease:
    lease = state.market.leases.get(lease_id)
    if lease is None:
        raise InvalidParameter(f"no lease {lease_id} (never opened, or closed and forgotten)")
    if tenant is not None and lease.tenant != tenant:
        raise NotOwner(f"only the tenant of lease {lease_id} can do this")
    return lease


def _refund_bid(state: State, bid: Bid, status: str, block: int) -> None:
    market = state.market
    credit(state, bid.provider, bid.deposit)
    market.bids[bid.id] = evolve(bid, status=status, closed_at=block)
    schedule_prune(market, block, "bid", bid.id)
    provider = market.providers[bid.provider]
    market.providers[bid.provider] = evolve(provider, open_bids=provider.open_bids - 1)


def _close_order(state: State, order: Order, status: str, block: int) -> Order:
    """Mark an order filled or cancelled and refund its open bids (as lost)."""
    market = state.market
    for bid_id in order.bids:
        bid = market.bids.get(bid_id)
        if bid is not None and bid.status == OPEN:
            _refund_bid(state, bid, LOST, block)
    closed = evolve(order, status=status, closed_at=block)
    market.orders[order.id] = closed
    schedule_prune(market, block, "order", order.id)
    return closed


# -- providers -------------------------------------------------------------------------------


def register_provider(
    state: State,
    sender: str,
    hardware: Hardware,
    price_info: str,
    url: str,
    stake: int,
    block: int,
) -> None:
    """Register, or update attributes and add stake. Raises MalformedTransaction,
    InvalidParameter (capacity below what open leases use), InsufficientStake or
    InsufficientBalance."""
    check_hardware(hardware, "provider hardware", exact=True)
    if not url.startswith(("http://", "https://")) or any(c.isspace() for c in url):
        raise MalformedTransaction(f"url {url!r} must be an http:// or https:// URL")
    market = state.market
    existing = market.providers.get(sender)
    total = stake + (existing.stake if existing else 0)
    if total < MARKET.min_provider_stake:
        raise InsufficientStake(
            f"a provider stakes at least {MARKET.min_provider_stake} units; this leaves it with "
            f"{total}"
        )
    if existing is not None:
        for name in ("cpu", "mem", "gpu"):
            if getattr(hardware, name) < getattr(existing.used, name):
                raise InvalidParameter(
                    f"{name}={getattr(hardware, name)} is below the {getattr(existing.used, name)}"
                    " that open leases use; shrink after they close"
                )
        if existing.open_leases and (
            hardware.region != existing.hardware.region
            or (existing.used.gpu and hardware.gpu_model != existing.hardware.gpu_model)
        ):
            raise InvalidParameter("region and GPU model cannot change under open leases")
    if stake:
        debit(state, sender, stake, "the provider stake")
    if existing is None:
        market.providers[sender] = Provider(
            address=sender,
            stake=stake,
            hardware=hardware,
            price_info=price_info,
            url=url,
            registered_at=block,
        )
    else:
        market.providers[sender] = evolve(
            existing,
            stake=total,
            hardware=hardware,
            price_info=price_info,
            url=url,
            active=True,
        )


def deregister_provider(state: State, sender: str, block: int) -> int:
    """Leave the market: withdraw open bids and take the stake back. Returns the stake.
    Raises NotRegistered or InvalidParameter (open leases, already inactive with no stake)."""
    provider = _provider(state, sender)
    if provider.open_leases:
        raise InvalidParameter(
            f"provider has {provider.open_leases} open leases; it may leave once they close"
        )
    if not provider.active and provider.stake == 0:
        raise InvalidParameter("this provider has already left the market")
    market = state.market
    for _, bid in sorted(market.bids.items()):
        if bid.provider == sender and bid.status == OPEN:
            _refund_bid(state, bid, WITHDRAWN, block)
    stake = provider.stake
    credit(state, sender, stake)
    market.providers[sender] = evolve(market.providers[sender], stake=0, active=False)
    return stake


def attest_provider(state: State, auditor: str, address: str, attrs_hash: str) -> None:
    """An auditor vouches for a provider's current attributes. Raises NotRegistered,
    InvalidParameter (self-attestation, or a hash of other attributes)."""
    provider = _provider(state, address)
    if auditor == address:
        raise InvalidParameter("a provider cannot attest itself")
    current = provider.hardware.hash
    if attrs_hash != current:
        raise InvalidParameter(
            f"attrs_hash is not the hash of provider {address[:12]}…'s current attributes "
            f"({current}); read them again before attesting"
        )
    state.market.providers[address] = evolve(
        provider, attestations={**provider.attestations, auditor: attrs_hash}
    )


def heartbeat(state: State, sender: str, block: int) -> None:
    """The provider is alive (for all its leases). Raises NotRegistered."""
    provider = _provider(state, sender)
    state.market.providers[sender] = evolve(
        provider, last_heartbeat=block, alive_at=max(provider.alive_at, block)
    )


# -- orders and bids -------------------------------------------------------------------------


def place_order(
    state: State,
    tenant: str,
    need: Hardware,
    max_price: int,
    deposit: int,
    count: int,
    auditor: str,
    block: int,
) -> int:
    """Open an order and lock ``deposit * count``. Returns its id. Raises MalformedTransaction
    (impossible resources or terms) or InsufficientBalance."""
    check_hardware(need, "order", exact=False)
    if max_price <= 0:
        raise MalformedTransaction("max_price must be at least 1 unit per block")
    if deposit < max_price:
        raise MalformedTransaction(
            f"deposit {deposit} does not cover one block at the max price {max_price}"
        )
    if not 1 <= count <= MARKET.max_leases_per_order:
        raise MalformedTransaction(
            f"count must be 1..{MARKET.max_leases_per_order} providers, got {count}"
        )
    if auditor and (not is_hex(auditor, 64) or auditor == tenant):
        raise MalformedTransaction("auditor must be empty or another account's address")
    debit(state, tenant, deposit * count, f"this order's escrow ({count} x {deposit})")
    market = state.market
    order_id = market.next_order_id
    market.next_order_id += 1
    market.orders[order_id] = Order(
        id=order_id,
        tenant=tenant,
        need=need,
        max_price=max_price,
        deposit=deposit,
        count=count,
        auditor=auditor,
        created_at=block,
    )
    return order_id


def cancel_order(state: State, tenant: str, order_id: int, block: int) -> int:
    """Stop taking bids; refund the unused escrow and open bids. Returns the escrow refunded.
    Raises InvalidParameter (unknown or not open) or NotOwner."""
    order = _order(state, order_id)
    if order.tenant != tenant:
        raise NotOwner(f"only the tenant of order {order_id} can cancel it")
    if order.status != OPEN:
        raise InvalidParameter(f"order {order_id} is already {order.status}")
    refund = order.escrow
    credit(state, tenant, refund)
    _close_order(state, order, CANCELLED, block)
    return refund


def place_bid(
    state: State, sender: str, order_id: int, price: int, offer: Hardware, block: int
) -> int:
    """Offer ``offer`` at ``price`` per block on an order. Returns the bid id. Raises
    NotRegistered, InvalidParameter, MalformedTransaction or InsufficientBalance."""
    provider = _provider(state, sender, active=True)
    order = _order(state, order_id)
    check_hardware(offer, "bid", exact=True)
    if order.status != OPEN:
        raise InvalidParameter(f"order {order_id} is {order.status}; it takes no more bids")
    if order.tenant == sender:
        raise InvalidParameter("a provider cannot bid on its own order")
    if not 1 <= price <= order.max_price:
        raise InvalidParameter(
            f"a bid of {price} units per block is outside 1..{order.max_price}, the order's "
            "max price"
        )
    missing = unmet_need(offer, order.need)
    if missing:
        raise InvalidParameter(f"the offer does not meet order {order_id}: {missing}")
    beyond = _fits(provider, offer)
    if beyond:
        raise InvalidParameter(f"the offer is beyond this provider's capacity: {beyond}")
    if order.auditor and not provider.attested_by(order.auditor):
        raise InvalidParameter(
            f"order {order_id} needs attributes attested by {order.auditor[:12]}…; this "
            "provider's current attributes are not"
        )
    market = state.market
    open_bids = [market.bids[b] for b in order.bids if b in market.bids]
    open_bids = [b for b in open_bids if b.status == OPEN]
    if any(b.provider == sender for b in open_bids):
        raise InvalidParameter(f"this provider already has an open bid on order {order_id}")
    if len(open_bids) >= MARKET.max_bids_per_order:
        raise InvalidParameter(
            f"order {order_id} already has {MARKET.max_bids_per_order} open bids, the most it takes"
        )
    debit(state, sender, MARKET.bid_deposit, "the bid deposit")
    bid_id = market.next_bid_id
    market.next_bid_id += 1
    market.bids[bid_id] = Bid(
        id=bid_id,
        order=order_id,
        provider=sender,
        price=price,
        hardware=offer,
        deposit=MARKET.bid_deposit,
        created_at=block,
    )
    market.orders[order_id] = evolve(order, bids=(*order.bids, bid_id))
    market.providers[sender] = evolve(provider, open_bids=provider.open_bids + 1)
    return bid_id


def withdraw_bid(state: State, sender: str, bid_id: int, block: int) -> None:
    """Raises InvalidParameter (unknown or no longer open) or NotOwner."""
    bid = _bid(state, bid_id)
    if bid.provider != sender:
        raise NotOwner(f"only the provider of bid {bid_id} can withdraw it")
    if bid.status != OPEN:
        raise InvalidParameter(f"bid {bid_id} is already {bid.status}")
    _refund_bid(state, bid, WITHDRAWN, block)


# -- leases ----------------------------------------------------------------------------------


def open_lease(state: State, tenant: str, bid_id: int, block: int) -> int:
    """Accept a bid: a lease opens and is paid from this block on. Returns the lease id.
    Raises InvalidParameter (bid or order not open, provider inactive or out of capacity,
    attestation gone) or NotOwner."""
    market = state.market
    bid = _bid(state, bid_id)
    order = _order(state, bid.order)
    if order.tenant != tenant:
        raise NotOwner(f"only the tenant of order {order.id} can accept its bids")
    if bid.status == WITHDRAWN:
        raise InvalidParameter(f"bid {bid_id} was withdrawn by its provider; pick another bid")
    if bid.status != OPEN:
        raise InvalidParameter(f"bid {bid_id} has already {bid.status}; pick an open bid")
    if order.status != OPEN:
        raise InvalidParameter(f"order {order.id} is {order.status}")
    provider = _provider(state, bid.provider, active=True)
    beyond = _fits(provider, bid.hardware)
    if beyond:
        raise InvalidParameter(f"the provider no longer has the offered hardware free: {beyond}")
    if order.auditor and not provider.attested_by(order.auditor):
        raise InvalidParameter("the provider's attributes changed since the auditor attested them")
    credit(state, bid.provider, bid.deposit)
    market.bids[bid_id] = evolve(bid, status=WON, closed_at=block)
    schedule_prune(market, block, "bid", bid_id)
    lease_id = market.next_lease_id
    market.next_lease_id += 1
    expires_at = block + order.deposit // bid.price - 1
    market.leases[lease_id] = Lease(
        id=lease_id,
        order=order.id,
        bid=bid_id,
        tenant=tenant,
        provider=bid.provider,
        price=bid.price,
        hardware=bid.hardware,
        deposit=order.deposit,
        opened_at=block,
        expires_at=expires_at,
    )
    index_add(market.expiries, expires_at, lease_id)
    market.by_provider.setdefault(bid.provider, []).append(lease_id)
    market.providers[provider.address] = evolve(
        provider,
        used=add_hardware(provider.used, bid.hardware),
        rate=provider.rate + bid.price,
        open_leases=provider.open_leases + 1,
        open_bids=provider.open_bids - 1,
        alive_at=max(provider.alive_at, block),
    )
    order = evolve(order, leases=(*order.leases, lease_id))
    market.orders[order.id] = order
    if len(order.leases) == order.count:
        _close_order(state, order, FILLED, block)
    return lease_id


def close_lease(state: State, tenant: str, lease_id: int, block: int) -> int:
    """The tenant ends a lease; the provider is paid through the previous block. Returns the
    refund. Raises InvalidParameter (unknown or already closed) or NotOwner."""
    lease = _lease(state, lease_id, tenant)
    if lease.status != OPEN:
        raise InvalidParameter(
            f"lease {lease_id} is already closed ({lease.close_reason}, block {lease.closed_at})"
        )
    return close_by_tenant(state, lease, block)


def top_up_lease(state: State, tenant: str, lease_id: int, amount: int) -> None:
    """Add escrow; the lease runs longer. Raises MalformedTransaction, InvalidParameter,
    NotOwner or InsufficientBalance."""
    lease = _lease(state, lease_id, tenant)
    if amount <= 0:
        raise MalformedTransaction("top up a positive amount")
    if lease.status != OPEN:
        raise InvalidParameter(f"lease {lease_id} is closed; place a new order")
    debit(state, tenant, amount, "this top-up")
    deposit = lease.deposit + amount
    expires_at = lease.opened_at + deposit // lease.price - 1
    market = state.market
    move_expiry(market, lease, expires_at)
    market.leases[lease_id] = evolve(lease, deposit=deposit, expires_at=expires_at)


# -- dispatch --------------------------------------------------------------------------------


def _hardware(body: dict[str, Any]) -> Hardware:
    return Hardware(body["cpu"], body["mem"], body["gpu"], body["gpu_model"], body["region"])


def apply_market_tx(state: State, kind: str, sender: str, body: dict[str, Any], block: int) -> None:
    """Apply one ``market_*`` transaction (its shape already checked by ``parse_transaction``)."""
    if kind == "market_register":
        register_provider(
            state, sender, _hardware(body), body["price_info"], body["url"], body["stake"], block
        )
    elif kind == "market_deregister":
        deregister_provider(state, sender, block)
    elif kind == "market_attest":
        attest_provider(state, sender, body["provider"], body["attrs_hash"])
    elif kind == "market_order":
        place_order(
            state,
            sender,
            _hardware(body),
            body["max_price"],
            body["deposit"],
            body["count"],
            body["auditor"],
            block,
        )
    elif kind == "market_cancel":
        cancel_order(state, sender, body["order"], block)
    elif kind == "market_bid":
        place_bid(state, sender, body["order"], body["price"], _hardware(body), block)
    elif kind == "market_withdraw":
        withdraw_bid(state, sender, body["bid"], block)
    elif kind == "market_lease":
        open_lease(state, sender, body["bid"], block)
    elif kind == "market_close":
        close_lease(state, sender, body["lease"], block)
    elif kind == "market_top_up":
        top_up_lease(state, sender, body["lease"], body["amount"])
    elif kind == "market_heartbeat":
        heartbeat(state, sender, block)
    elif kind == "market_challenge":
        post_challenge(state, sender, body["lease"], body["size"], block)
    elif kind == "market_commit":
        commit_challenge(state, sender, body["challenge"], body["root"], block)
    elif kind == "market_open":
        open_challenge(state, sender, body["challenge"], body["values"], body["proofs"], block)
    else:
        raise MalformedTransaction(f"unknown market kind {kind!r}")


KINDS = frozenset(
    {
        "market_register",
        "market_deregister",
        "market_attest",
        "market_order",
        "market_cancel",
        "market_bid",
        "market_withdraw",
        "market_lease",
        "market_close",
        "market_top_up",
        "market_heartbeat",
        "market_challenge",
        "market_commit",
        "market_open",
    }
)
