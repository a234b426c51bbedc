"""Properties of the rules over random histories (hypothesis).

- Supply is conserved except for emission and burns:
  balances + stake + locks == total_issuance - total_burned, after every block.
- No transaction ever makes a balance or a stake negative.
- Replaying the same blocks on a fresh copy of genesis gives the same state roots.
"""

from __future__ import annotations

import dataclasses

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agora.protocol.block import apply_block
from agora.protocol.channels import voucher_signing_bytes
from agora.protocol.params import DEV_HYPERPARAMS
from agora.protocol.state import State, state_root
from agora.protocol.units import TOKEN
from tests.protocol_kit import Chain, key

COLD = [key(f"cold{i}") for i in range(3)]
HOT = [key(f"prop-hot{i}") for i in range(4)]

action = st.one_of(
    st.tuples(st.just("transfer"), st.integers(0, 2), st.integers(0, 2), st.integers(0, 3000)),
    st.tuples(st.just("create_subnet"), st.integers(0, 2)),
    st.tuples(st.just("register"), st.integers(0, 2), st.integers(1, 2), st.integers(0, 3)),
    st.tuples(st.just("add_stake"), st.integers(0, 2), st.integers(0, 3), st.integers(0, 500)),
    st.tuples(st.just("remove_stake"), st.integers(0, 2), st.integers(0, 3), st.integers(0, 500)),
    st.tuples(
        st.just("set_weights"),
        st.integers(0, 3),
        st.integers(1, 2),
        st.lists(st.integers(0, 4), min_size=1, max_size=4, unique=True),
        st.lists(st.integers(0, 65535), min_size=4, max_size=4),
    ),
    st.tuples(st.just("channel_open"), st.integers(0, 2), st.integers(0, 2), st.integers(0, 900)),
    st.tuples(st.just("channel_redeem"), st.integers(0, 2), st.integers(1, 3), st.integers(0, 900)),
    st.tuples(st.just("channel_close"), st.integers(0, 2), st.integers(1, 3)),
    st.tuples(st.just("wait"), st.integers(1, 6)),
)


def build_tx(chain: Chain, step: tuple):  # type: ignore[no-untyped-def,type-arg]
    kind = step[0]
    if kind == "transfer":
        _, a, b, tokens = step
        return chain.tx(COLD[a], "transfer", to=COLD[b].address, amount=tokens * TOKEN // 7)
    if kind == "create_subnet":
        return chain.tx(COLD[step[1]], "create_subnet")
    if kind == "register":
        _, c, netuid, h = step
        return chain.tx(COLD[c], "register", netuid=netuid, hotkey=HOT[h].address)
    if kind in ("add_stake", "remove_stake"):
        _, c, h, tokens = step
        return chain.tx(COLD[c], kind, hotkey=HOT[h].address, amount=tokens * TOKEN // 3)
    if kind == "channel_open":
        _, payer, payee, tokens = step
        return chain.tx(
            COLD[payer],
            "channel_open",
            payee=COLD[payee].address,
            signer=COLD[payer].address,
            amount=tokens * TOKEN // 9,
            timeout=3,
        )
    if kind == "channel_redeem":  # a voucher signed by the channel's payer (if it exists)
        _, payee, channel_id, tokens = step
        channel = chain.state.channels.get(channel_id)
        signer = next((k for k in COLD if channel and k.address == channel.signer), COLD[0])
        cumulative = tokens * TOKEN // 9
        signature = signer.sign(voucher_signing_bytes(chain.state.chain_id, channel_id, cumulative))
        return chain.tx(
            COLD[payee],
            "channel_redeem",
            channel=channel_id,
            cumulative=cumulative,
            voucher=signature,
        )
    if kind == "channel_close":
        return chain.tx(COLD[step[1]], "channel_close", channel=step[2])
    _, h, netuid, uids, values = step
    return chain.tx(HOT[h], "set_weights", netuid=netuid, uids=uids, weights=values[: len(uids)])


def check_invariants(state: State) -> None:
    assert state.circulating() == state.total_issuance - state.total_burned
    assert all(v > 0 for v in state.balances.values())
    assert all(v > 0 for by_cold in state.stakes.values() for v in by_cold.values())
    assert all(v >= 0 for v in state.pending_emission.values())
    assert all(0 <= c.redeemed <= c.deposit for c in state.channels.values())


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(action, min_size=1, max_size=40))
def test_random_histories_conserve_supply_and_replay_identically(steps: list) -> None:  # type: ignore[type-arg]
    hyper = dataclasses.replace(
        DEV_HYPERPARAMS,
        tempo=4,
        weights_rate_limit=1,
        immunity_period=2,
        max_uids=3,
        max_validators=2,
    )
    chain = Chain.new({"cold0": 5_000, "cold1": 5_000, "cold2": 50}, hyperparams=hyper)
    genesis = chain.state
    roots = []
    for step in steps:
        if step[0] == "wait":
            chain.advance(step[1])
        else:
            chain.block([build_tx(chain, step)])
        check_invariants(chain.state)
        roots.append(state_root(chain.state))
    replayed = genesis
    replay_roots = []
    for block in chain.blocks:
        replayed = apply_block(replayed, block)
        replay_roots.append(state_root(replayed))
    assert replay_roots[-1] == roots[-1]
    assert replayed.to_json() == chain.state.to_json()
