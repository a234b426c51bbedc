"""Properties of the market over random histories (hypothesis).

After every block:

- supply is conserved with slashing burns: everything that exists (balances, stakes, locks,
  channel and market escrow) equals total_issuance - total_burned;
- every lease's escrow adds up and is never negative: deposit = paid to the provider +
  refunded to the tenant + remaining, each >= 0;
- each provider's totals (rate, resources in use, open leases and bids) equal the sums over its
  open leases and bids;
- decoding the state from JSON rebuilds the same indices;

and replaying the blocks from genesis gives the same state.
"""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agora.market.prover import commit, solve
from agora.protocol.block import apply_block
from agora.protocol.market_state import MARKET, OPEN
from agora.protocol.state import State, state_root
from agora.protocol.transactions import Transaction
from tests.protocol_kit import Chain, key

PROVIDERS = [key(f"mp{i}") for i in range(3)]
TENANTS = [key(f"mt{i}") for i in range(2)]
PRICE_UNIT = 1_000

ids = st.integers(1, 5)
action = st.one_of(
    st.tuples(st.just("register"), st.integers(0, 2), st.integers(1, 4), st.integers(0, 2)),
    st.tuples(st.just("order"), st.integers(0, 1), st.integers(1, 3), st.integers(1, 40), ids),
    st.tuples(st.just("bid"), st.integers(0, 2), ids, st.integers(1, 3), st.integers(1, 2)),
    st.tuples(st.just("withdraw"), st.integers(0, 2), ids),
    st.tuples(st.just("lease"), st.integers(0, 1), ids),
    st.tuples(st.just("close"), st.integers(0, 1), ids),
    st.tuples(st.just("cancel"), st.integers(0, 1), ids),
    st.tuples(st.just("top_up"), st.integers(0, 1), ids, st.integers(1, 20)),
    st.tuples(st.just("heartbeat"), st.integers(0, 2)),
    st.tuples(st.just("deregister"), st.integers(0, 2)),
    st.tuples(st.just("challenge"), st.integers(0, 1), ids),
    st.tuples(st.just("answer"), ids, st.booleans()),
    st.tuples(st.just("wait"), st.integers(1, 12)),
    # a whole deal (order, bid, lease) over two blocks, so that histories have leases to break
    st.tuples(st.just("deal"), st.integers(0, 1), st.integers(0, 2), st.integers(1, 3), ids),
    st.tuples(st.just("deal"), st.integers(0, 1), st.integers(0, 2), st.integers(1, 3), ids),
    # a whole challenge: posted, then answered honestly, answered wrongly, or ignored
    st.tuples(
        st.just("probe"), st.integers(0, 1), ids, st.sampled_from(["honest", "fake", "none"])
    ),
    st.tuples(
        st.just("probe"), st.integers(0, 1), ids, st.sampled_from(["honest", "fake", "none"])
    ),
)


def hardware(cpu: int, gpu: int = 0) -> dict[str, Any]:
    return {
        "cpu": cpu,
        "mem": 1024 * cpu,
        "gpu": gpu,
        "gpu_model": "T4" if gpu else "",
        "region": "",
    }


def answer_tx(chain: Chain, challenge_id: int, honest: bool) -> Transaction | None:
    challenge = chain.state.market.challenges.get(challenge_id)
    if challenge is None or not challenge.pending:
        return None
    provider = next(p for p in PROVIDERS if p.address == challenge.provider)
    last = chain.blocks[-1].hash if chain.blocks else chain.state.last_block_hash
    if challenge.status == "posted":
        seed = challenge.seed or last
        answer = (
            solve(seed, challenge.size) if honest else commit(solve(last, challenge.size).product)
        )
        return chain.tx(provider, "market_commit", challenge=challenge_id, root=answer.root)
    answer = solve(challenge.seed, challenge.size)
    values, proofs = answer.open(challenge.open_seed or last, MARKET.challenge_cells)
    if not honest:
        values = [(values[0] + 1) % 16_777_213, *values[1:]]
    return chain.tx(provider, "market_open", challenge=challenge_id, values=values, proofs=proofs)


def pick(items: list[int], index: int) -> int:
    """The ``index``-th existing id (so random steps hit real records), or an unknown one."""
    return sorted(items)[index % len(items)] if items else index


def build_tx(chain: Chain, step: tuple[Any, ...]) -> Transaction | None:
    kind = step[0]
    market = chain.state.market
    if kind == "register":
        _, p, cpu, gpu = step
        body = {**hardware(cpu, gpu), "price_info": "", "url": "http://x", "stake": 11 * 10**9}
        return chain.tx(PROVIDERS[p], "market_register", **body)
    if kind == "order":
        _, t, cpu, deposit_blocks, count = step
        return chain.tx(
            TENANTS[t],
            "market_order",
            **hardware(cpu),
            max_price=3 * PRICE_UNIT,
            deposit=deposit_blocks * PRICE_UNIT + 7,
            count=min(count, 3),
            auditor="",
        )
    if kind == "bid":
        _, p, index, price, extra = step
        open_orders = [o.id for o in market.orders.values() if o.status == OPEN]
        order_id = pick(open_orders, index)
        need = market.orders[order_id].need.cpu if order_id in market.orders else 1
        return chain.tx(
            PROVIDERS[p],
            "market_bid",
            order=order_id,
            price=price * PRICE_UNIT,
            **hardware(need + extra - 1),
        )
    if kind == "withdraw":
        return chain.tx(PROVIDERS[step[1]], "market_withdraw", bid=pick(list(market.bids), step[2]))
    if kind == "lease":
        open_bids = [b.id for b in market.bids.values() if b.status == OPEN]
        tenant = TENANTS[step[1]]
        mine = [
            b for b in open_bids if market.orders[market.bids[b].order].tenant == tenant.address
        ]
        return chain.tx(tenant, "market_lease", bid=pick(mine or open_bids, step[2]))
    leases = [x.id for x in market.leases.values() if x.status == OPEN] or list(market.leases)
    if kind == "close":
        return chain.tx(TENANTS[step[1]], "market_close", lease=pick(leases, step[2]))
    if kind == "cancel":
        return chain.tx(TENANTS[step[1]], "market_cancel", order=pick(list(market.orders), step[2]))
    if kind == "top_up":
        _, t, index, amount = step
        return chain.tx(TENANTS[t], "market_top_up", lease=pick(leases, index), amount=amount * 100)
    if kind == "heartbeat":
        return chain.tx(PROVIDERS[step[1]], "market_heartbeat")
    if kind == "deregister":
        return chain.tx(PROVIDERS[step[1]], "market_deregister")
    if kind == "challenge":
        return chain.tx(TENANTS[step[1]], "market_challenge", lease=pick(leases, step[2]), size=16)
    return answer_tx(chain, pick(list(market.challenges), step[1]), step[2])


def deal(chain: Chain, step: tuple[Any, ...]) -> None:
    _, t, p, price, blocks = step
    market = chain.state.market
    order_id, bid_id = market.next_order_id, market.next_bid_id
    body = {**hardware(1), "max_price": 3 * PRICE_UNIT, "count": 1, "auditor": ""}
    order = chain.tx(TENANTS[t], "market_order", **body, deposit=blocks * 9 * PRICE_UNIT + 3)
    offer = chain.tx(
        PROVIDERS[p], "market_bid", order=order_id, price=price * PRICE_UNIT, **hardware(1)
    )
    chain.block([order, offer])
    check_invariants(chain.state)
    chain.block([chain.tx(TENANTS[t], "market_lease", bid=bid_id)])


def probe(chain: Chain, step: tuple[Any, ...]) -> None:
    _, t, index, mode = step
    market = chain.state.market
    leases = [x.id for x in market.leases.values() if x.status == OPEN]
    if not leases:
        return
    challenge_id = market.next_challenge_id
    chain.block([chain.tx(TENANTS[t], "market_challenge", lease=pick(leases, index), size=16)])
    if challenge_id not in chain.state.market.challenges:
        return
    for _ in range(2 if mode != "none" else 0):
        check_invariants(chain.state)
        tx = answer_tx(chain, challenge_id, mode == "honest")
        chain.block([tx] if tx is not None else [])
    for _ in range(25):  # a wrong or missing answer: run to the deadline (or the lease's end)
        challenge = chain.state.market.challenges.get(challenge_id)
        if challenge is None or not challenge.pending:
            break
        check_invariants(chain.state)
        provider = next(p for p in PROVIDERS if p.address == challenge.provider)
        alive = [chain.tx(provider, "market_heartbeat")] if mode == "fake" else []
        chain.block(alive)  # a faker stays alive: its challenge, not liveness, must fail it


def check_invariants(state: State) -> None:
    assert state.circulating() == state.total_issuance - state.total_burned
    assert all(v > 0 for v in state.balances.values())
    market = state.market
    height = state.height
    for lease in market.leases.values():
        if lease.status == OPEN:
            paid = lease.price * lease.paid_blocks(height)
            remaining = lease.remaining(height)
            assert 0 < remaining <= lease.deposit and paid + remaining == lease.deposit
            assert height < lease.expires_at
        else:
            assert lease.paid >= 0 and lease.refunded >= 0
            assert lease.paid + lease.refunded == lease.deposit
    for address, provider in market.providers.items():
        mine = [x for x in market.leases.values() if x.provider == address and x.status == OPEN]
        assert provider.rate == sum(x.price for x in mine)
        assert provider.open_leases == len(mine)
        assert provider.used.cpu == sum(x.hardware.cpu for x in mine)
        assert provider.used.gpu == sum(x.hardware.gpu for x in mine)
        bids = [b for b in market.bids.values() if b.provider == address and b.status == OPEN]
        assert provider.open_bids == len(bids)
        assert provider.stake >= 0
    decoded = State.from_json(state.to_json()).market
    for name in ("expiries", "deadlines", "want_hash", "prune", "by_provider"):
        live, rebuilt = getattr(market, name), getattr(decoded, name)
        assert {h: sorted(v) for h, v in live.items()} == {
            h: sorted(v) for h, v in rebuilt.items()
        }, name


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(action, min_size=1, max_size=40))
def test_random_market_histories_conserve_escrow_and_supply(steps: list[tuple[Any, ...]]) -> None:
    chain = Chain.new(
        {"mp0": 100, "mp1": 100, "mp2": 12, "mt0": 100, "mt1": 1},
    )
    genesis = chain.state
    chain.block(
        [
            chain.tx(
                p,
                "market_register",
                **hardware(4, 1),
                price_info="",
                url="http://x",
                stake=11 * 10**9,
            )
            for p in PROVIDERS
        ]
    )
    for step in steps:
        if step[0] == "wait":
            chain.advance(step[1])
        elif step[0] == "deal":
            deal(chain, step)
        elif step[0] == "probe":
            probe(chain, step)
        else:
            tx = build_tx(chain, step)
            chain.block([tx] if tx is not None else [])
        check_invariants(chain.state)
    replayed = genesis
    for block in chain.blocks:
        replayed = apply_block(replayed, block)
    assert state_root(replayed) == state_root(chain.state)
