"""The market's end-of-block rules: pay every open lease, close what ran out, slash what failed.

``settle_block(state, block)`` runs once per block, right after emission, in this order:

1. **Seeds.** Challenges posted (or committed) in the previous block learn its hash.
2. **Challenge deadlines.** A challenge still waiting for its commitment or opening in its
   deadline block has failed: its lease closes and its provider is slashed (below).
3. **Liveness.** A provider with open leases whose last heartbeat (or newest lease) is more than
   ``liveness_window`` blocks old has vanished: all its leases close and it is slashed once.
4. **Payment.** Each provider with open leases is credited their prices (its ``rate``): every
   open lease pays its provider for this block, from its escrow.
5. **Expiry.** A lease whose escrow cannot pay the next block closes now; what is left (less
   than one block's price) goes back to the tenant. The provider must stop.
6. **Pruning.** Orders, bids, leases and challenges closed ``retention`` blocks ago are dropped
   from the state (the blocks still hold their history; providers' records are kept forever).

Why this is cheap: escrow is never written per block. A lease's payments are
``price * blocks`` since it opened, so step 4 touches one balance per busy provider and steps
1, 2 and 5 read only the index entry of this height. For 1,000 open leases the loop is 1,000
integer additions at most (``bench/bench_market.py`` measures it).

Slashing (liveness lapse or failed challenge), for each failed lease in id order:

- the lease closes; the provider keeps the escrow's payments up to the previous block and the
  tenant gets the rest of the escrow back;
- **compensation**: blocks paid since the provider last proved itself (its last heartbeat for a
  lapse; the challenge's block for a failed challenge; never before the lease opened) are paid
  back to the tenant out of the provider's stake (as far as the stake goes);
- then a **penalty** of ``slash_ppm`` of the stake left: ``slash_reward_ppm`` of it to the wronged
  (the challenger for a challenge; the failed leases' tenants in equal shares for a lapse), the
  rest (and any indivisible remainder) **burned**;
- a provider left below ``min_provider_stake`` becomes inactive: its bids can no longer win.
"""

from __future__ import annotations

from agora.protocol.accounts import credit
from agora.protocol.market_state import (
    BY_TENANT,
    CHALLENGE,
    CLOSED,
    COMMITTED,
    EXPIRED,
    FAILED,
    LIVENESS,
    MARKET,
    OPEN,
    PASSED,
    POSTED,
    VOID,
    Challenge,
    Hardware,
    Lease,
    MarketState,
    evolve,
    index_add,
    index_remove,
)
from agora.protocol.state import State

PPM = 1_000_000


def add_hardware(a: Hardware, b: Hardware, sign: int = 1) -> Hardware:
    """Sum (or difference) of the counted resources; names are not summed."""
    return evolve(a, cpu=a.cpu + sign * b.cpu, mem=a.mem + sign * b.mem, gpu=a.gpu + sign * b.gpu)


def schedule_prune(market: MarketState, block: int, kind: str, item: int) -> None:
    market.prune.setdefault(block + MARKET.retention, []).append((kind, item))


def end_challenge(state: State, challenge: Challenge, block: int, status: str) -> None:
    """Take a challenge out of the running (``void``, ``passed`` or ``failed``) and settle its
    bond: back to the challenger unless the provider passed (then the provider earned it)."""
    market = state.market
    index_remove(market.deadlines, challenge.deadline, challenge.id)
    index_remove(market.want_hash, challenge.posted_at, challenge.id)
    if challenge.committed_at >= 0:
        index_remove(market.want_hash, challenge.committed_at, challenge.id)
    market.challenges[challenge.id] = evolve(challenge, status=status, closed_at=block)
    payee = challenge.provider if status == PASSED else challenge.challenger
    credit(state, payee, challenge.bond)
    schedule_prune(market, block, "challenge", challenge.id)
    lease = market.leases.get(challenge.lease)
    if lease is not None and lease.challenge == challenge.id:
        market.leases[lease.id] = evolve(lease, challenge=0)


def finish_lease(
    state: State, lease: Lease, block: int, reason: str, served: int, lost: int = 0, comp: int = 0
) -> None:
    """Close an open lease: ``served`` blocks were paid from escrow (``lost`` of them are being
    paid back out of the stake, ``comp`` units); the rest of the escrow goes back to the tenant.
    Voids a pending challenge on it. Updates the provider's totals and history."""
    market = state.market
    if lease.challenge:
        pending = market.challenges.get(lease.challenge)
        if pending is not None and pending.pending:
            end_challenge(state, pending, block, VOID)
        lease = market.leases[lease.id]
    paid = lease.price * served
    refunded = lease.deposit - paid
    credit(state, lease.tenant, refunded + comp)
    market.leases[lease.id] = evolve(
        lease,
        status=CLOSED,
        closed_at=block,
        close_reason=reason,
        paid=paid,
        refunded=refunded,
        compensation=comp,
    )
    index_remove(market.expiries, lease.expires_at, lease.id)
    _by_provider_remove(market, lease.provider, lease.id)
    schedule_prune(market, block, "lease", lease.id)
    provider = market.providers[lease.provider]
    history = provider.history
    failed = reason in (LIVENESS, CHALLENGE)
    market.providers[provider.address] = evolve(
        provider,
        used=add_hardware(provider.used, lease.hardware, -1),
        rate=provider.rate - lease.price,
        open_leases=provider.open_leases - 1,
        history=evolve(
            history,
            leases_served=history.leases_served + (0 if failed else 1),
            leases_failed=history.leases_failed + (1 if failed else 0),
            blocks_served=history.blocks_served + served - lost,
            blocks_lost=history.blocks_lost + lost,
        ),
    )


def slash(
    state: State,
    address: str,
    leases: list[Lease],
    block: int,
    reason: str,
    challenge: Challenge | None = None,
) -> None:
    """Close ``leases`` of provider ``address`` for a failure and slash it (module doc)."""
    market = state.market
    provider = market.providers[address]
    stake = provider.stake
    taken = 0
    # the last block the provider proved it served: its heartbeat, or before the challenge
    proven_through = provider.last_heartbeat if challenge is None else challenge.posted_at - 1
    tenants: list[str] = []
    for lease in sorted(leases, key=lambda item: item.id):
        served = block - lease.opened_at
        lost = max(0, block - max(proven_through + 1, lease.opened_at))
        comp = min(lease.price * lost, stake)
        stake -= comp
        taken += comp
        finish_lease(state, lease, block, reason, served, lost, comp)
        tenants.append(lease.tenant)
    penalty = stake * MARKET.slash_ppm // PPM
    reward = penalty * MARKET.slash_reward_ppm // PPM
    if challenge is not None:
        credit(state, challenge.challenger, reward)
        rewarded = reward
    else:
        share = reward // len(tenants) if tenants else 0
        for tenant in tenants:
            credit(state, tenant, share)
        rewarded = share * len(tenants)
    state.total_burned += penalty - rewarded
    provider = market.providers[address]
    left = stake - penalty
    history = provider.history
    market.providers[address] = evolve(
        provider,
        stake=left,
        active=provider.active and left >= MARKET.min_provider_stake,
        history=evolve(
            history,
            failures=history.failures + 1,
            slashed=history.slashed + taken + penalty,
            challenges_failed=history.challenges_failed + (1 if challenge is not None else 0),
        ),
    )


def _by_provider_remove(market: MarketState, address: str, lease_id: int) -> None:
    leases = market.by_provider.get(address)
    if leases is not None and lease_id in leases:
        leases.remove(lease_id)
        if not leases:
            del market.by_provider[address]


def open_leases_of(market: MarketState, address: str) -> list[Lease]:
    return [market.leases[lease_id] for lease_id in sorted(market.by_provider.get(address, ()))]


def settle_block(state: State, block: int) -> None:
    """The market's end-of-block rules (module doc). Pure: reads only the state."""
    market = state.market
    # 1. seeds: the previous block's hash is the parent hash of the block being executed
    for challenge_id in market.want_hash.pop(block - 1, ()):
        challenge = market.challenges[challenge_id]
        if challenge.status == POSTED and challenge.posted_at == block - 1:
            market.challenges[challenge_id] = evolve(challenge, seed=state.last_block_hash)
        elif challenge.status == COMMITTED and challenge.committed_at == block - 1:
            market.challenges[challenge_id] = evolve(challenge, open_seed=state.last_block_hash)
    # 2. challenge deadlines
    for challenge_id in list(market.deadlines.get(block, ())):
        challenge = market.challenges[challenge_id]
        if not challenge.pending or challenge.deadline != block:
            continue
        end_challenge(state, challenge, block, FAILED)
        lease = market.leases[challenge.lease]
        if lease.status == OPEN:
            slash(state, challenge.provider, [lease], block, CHALLENGE, challenge)
    market.deadlines.pop(block, None)
    # 3. liveness
    window = MARKET.liveness_window
    lapsed = [
        address
        for address, provider in market.providers.items()
        if provider.open_leases and block - provider.alive_at > window
    ]
    for address in sorted(lapsed):
        slash(state, address, open_leases_of(market, address), block, LIVENESS)
    # 4. payment for this block
    for provider in market.providers.values():
        if provider.rate:
            credit(state, provider.address, provider.rate)
    # 5. leases whose escrow ends with this block
    for lease_id in market.expiries.pop(block, ()):
        lease = market.leases[lease_id]
        if lease.status == OPEN and lease.expires_at == block:
            finish_lease(state, lease, block, EXPIRED, lease.expires_at - lease.opened_at + 1)
    # 6. forget what closed long ago
    for kind, item in market.prune.pop(block, ()):
        if kind == "order":
            market.orders.pop(item, None)
        elif kind == "bid":
            market.bids.pop(item, None)
        elif kind == "lease":
            market.leases.pop(item, None)
        else:
            market.challenges.pop(item, None)


def close_by_tenant(state: State, lease: Lease, block: int) -> int:
    """The tenant ends a lease in ``block``: paid through the previous block. Returns the
    refund."""
    served = block - lease.opened_at
    finish_lease(state, lease, block, BY_TENANT, served)
    return lease.deposit - lease.price * served


def move_expiry(market: MarketState, lease: Lease, new_expiry: int) -> None:
    index_remove(market.expiries, lease.expires_at, lease.id)
    index_add(market.expiries, new_expiry, lease.id)
