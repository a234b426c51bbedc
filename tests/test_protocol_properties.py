"""Properties of the rules over random histories (hypothesis).

- Supply is conserved except for emission and burns:
  balances + stake + locks == total_issuance - total_burned, after every block.
- No transaction ever makes a balance or a stake negative.
- Replaying the same blocks on a fresh copy of genesis gives the same state roots.
- Unbonding (with disputes in the history): removed stake is paid exactly once, never before its
  release block and after it only while its hotkey is accused; a slash reaches it but never takes
  more than the hotkey had bonded plus unbonding; the coldkey gets exactly what was not slashed.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from agora.protocol.block import apply_block
from agora.protocol.channels import voucher_signing_bytes
from agora.protocol.dispute_state import UPHELD
from agora.protocol.params import DEV_HYPERPARAMS
from agora.protocol.stake import slash_hotkey
from agora.protocol.state import State, state_root
from agora.protocol.units import TOKEN
from tests.protocol_kit import Chain, key
from tests.test_protocol_disputes import (
    ALICE,
    CAROL,
    MINERS,
    VALIDATORS,
    open_tx,
    receipt_for,
    subnet_chain,
)

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
    assert all(e.amount > 0 for e in state.unbonding.entries.values())
    assert all(e.id < state.unbonding.next_id for e in state.unbonding.entries.values())


def check_releases(before: State, after: State, gone_ids: set[int]) -> None:
    """Release rules between two consecutive states: an entry still there past its release
    block is held by an open dispute against its hotkey; one that left did so at or after its
    block, or was slashed away by a dispute upheld in this block; ids never come back."""
    height = after.height
    assert not gone_ids & set(after.unbonding.entries)
    upheld_now = {
        d.miner
        for d in after.disputes.disputes.values()
        if d.status == UPHELD and d.resolved_at == height
    }
    for entry in after.unbonding.entries.values():
        if entry.release_at <= height:
            assert after.disputes.open_against(entry.hotkey), entry
            event("an entry was held past its release block by an open dispute")
    for entry_id, entry in before.unbonding.entries.items():
        if entry_id not in after.unbonding.entries:
            assert entry.release_at <= height or entry.hotkey in upheld_now, entry
            # paid only once no dispute against its hotkey is open (disputes settle first)
            assert entry.hotkey in upheld_now or not after.disputes.open_against(entry.hotkey)
            gone_ids.add(entry_id)


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
    gone: set[int] = set()
    for step in steps:
        blocks = step[1] if step[0] == "wait" else 1
        for _ in range(blocks):
            before = chain.state
            chain.block([] if step[0] == "wait" else [build_tx(chain, step)])
            check_invariants(chain.state)
            check_releases(before, chain.state, gone)
        roots.append(state_root(chain.state))
    replayed = genesis
    replay_roots = []
    for block in chain.blocks:
        replayed = apply_block(replayed, block)
        replay_roots.append(state_root(replayed))
    assert replay_roots[-1] == roots[-1]
    assert replayed.to_json() == chain.state.to_json()


# -- unbonding with disputes ---------------------------------------------------------------

PPM = 1_000_000

cheat = st.tuples(st.just("cheat"), st.integers(0, 1))  # the miner signs a receipt
unstake = st.tuples(st.just("unstake"), st.integers(0, 1), st.integers(1, 45))  # carol, tokens
open_ = st.tuples(st.just("open"), st.integers(0, 2), st.integers(0, 5))  # validator, receipt
vote = st.tuples(st.just("vote"), st.integers(0, 2), st.integers(1, 3), st.booleans())
unbonding_action = st.one_of(  # repeated entries come up more often
    cheat,
    cheat,
    unstake,
    unstake,
    st.tuples(st.just("restake"), st.integers(0, 1), st.integers(1, 20)),
    open_,
    open_,
    vote,
    vote,
    st.tuples(st.just("wait"), st.integers(1, 8)),
    st.tuples(st.just("wait"), st.integers(1, 8)),
    # The owner changes how long votes run: entries created before fall due while disputes
    # opened after are still open, and must wait for them.
    st.tuples(st.just("period"), st.integers(2, 40)),
)


def _unbonding_tx(chain: Chain, step: tuple, receipts: list[dict[str, Any]]) -> Any:  # type: ignore[type-arg]
    kind = step[0]
    if kind == "cheat":
        receipts.append(receipt_for(chain, MINERS[step[1]], nonce=len(receipts) + 500))
        return None
    if kind in ("unstake", "restake"):
        _, m, tokens = step
        tx_kind = "remove_stake" if kind == "unstake" else "add_stake"
        return chain.tx(CAROL, tx_kind, hotkey=MINERS[m].address, amount=tokens * TOKEN - 7)
    if kind == "period":
        return chain.tx(ALICE, "set_hyperparams", netuid=1, changes={"dispute_period": step[1]})
    if kind == "open":
        _, v, r = step
        if not receipts:
            return None
        return open_tx(chain, VALIDATORS[v], receipts[r % len(receipts)])
    _, v, dispute_id, guilty = step
    return chain.tx(VALIDATORS[v], "dispute_vote", dispute_id=dispute_id, guilty=guilty)


def exposure(state: State, hotkey: str) -> int:
    """Bonded plus unbonding stake on ``hotkey``: everything a slash may reach."""
    return state.hotkey_stake(hotkey) + sum(e.amount for e in state.unbonding.of_hotkey(hotkey))


def check_block_with_unbonding(before: State, after: State, restaked: dict[str, int]) -> None:
    """carol's balance moves only by her entries paid and deposits forfeited to her, less what
    she restaked; slashes never exceed what the miner could have had when they ran."""
    height = after.height
    slashed: dict[str, int] = {}
    for d in after.disputes.disputes.values():
        if d.status == UPHELD and d.resolved_at == height:
            slashed[d.miner] = slashed.get(d.miner, 0) + d.slashed
    forfeited = sum(
        d.deposit
        for d in after.disputes.disputes.values()
        if d.resolved_at == height and d.deposit_to == CAROL.address
    )
    exact = unsure = 0  # an entry paid in a block that also slashed its hotkey lost some first
    for entry_id, entry in before.unbonding.entries.items():
        if entry_id in after.unbonding.entries or entry.release_at > height:
            continue  # kept, or slashed away (check_releases allowed it)
        if entry.hotkey in slashed:
            unsure += entry.amount
        else:
            exact += entry.amount
    gained = after.balance(CAROL.address) - before.balance(CAROL.address) + sum(restaked.values())
    assert forfeited + exact <= gained <= forfeited + exact + unsure
    minted = after.total_issuance - before.total_issuance
    for miner, units in slashed.items():
        bound = exposure(before, miner) + restaked.get(miner, 0) + minted
        assert units <= bound  # never more than it had bonded plus unbonding
        assert units * PPM <= bound * DEV_HYPERPARAMS.slash_ppm or units <= minted


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(unbonding_action, min_size=4, max_size=30))
@example(  # always run: an entry falls due while a slow dispute is open, and waits for it
    [
        ("unstake", 0, 30),
        ("period", 40),
        ("wait", 8),
        ("cheat", 0),
        ("open", 1, 0),
        ("wait", 8),
        ("vote", 0, 1, True),
        ("wait", 3),
    ]
)
def test_unbonding_with_disputes_pays_once_and_only_what_was_not_slashed(steps: list) -> None:  # type: ignore[type-arg]
    chain = subnet_chain(stakes=(400, 200, 150))  # validator 0 alone is a majority
    start, start_blocks = chain.state, len(chain.blocks)
    receipts: list[dict[str, Any]] = []
    gone: set[int] = set()
    for step in steps:
        tx = None if step[0] == "wait" else _unbonding_tx(chain, step, receipts)
        for _ in range(step[1] if step[0] == "wait" else 1):
            before = chain.state
            chain.block([] if tx is None else [tx])
            included = tx is not None and not chain.last_rejected
            restaked = {}
            if included and step[0] == "restake":
                restaked[MINERS[step[1]].address] = step[2] * TOKEN - 7
            if included and step[0] == "unstake":
                event("stake removed from a registered miner")
                if before.disputes.open_ids or receipts:
                    event("stake removed after a cheat")
            tx = None
            check_invariants(chain.state)
            check_releases(before, chain.state, gone)
            check_block_with_unbonding(before, chain.state, restaked)
    if gone:
        event("an unbonding entry was released or slashed away")
    if any(d.status == UPHELD for d in chain.state.disputes.disputes.values()):
        event("a dispute was upheld")
    replayed = start
    for block in chain.blocks[start_blocks:]:
        replayed = apply_block(replayed, block)
    assert replayed.to_json() == chain.state.to_json()


@settings(max_examples=200, deadline=None)
@given(
    bonded=st.dictionaries(st.integers(0, 3), st.integers(1, 10**12), max_size=4),
    leaving=st.lists(st.tuples(st.integers(0, 3), st.integers(1, 10**12)), max_size=6),
    slash_ppm=st.integers(0, PPM),
)
def test_a_slash_takes_each_coldkeys_share_bonded_first_then_oldest_entries(
    bonded: dict[int, int], leaving: list[tuple[int, int]], slash_ppm: int
) -> None:
    state = Chain.new({}).state.clone()
    hot = key("prop/slashed").address
    colds = [key(f"prop/cold{i}").address for i in range(4)]
    if bonded:
        state.stakes[hot] = {colds[c]: units for c, units in bonded.items()}
    for index, (c, units) in enumerate(leaving):  # release blocks out of id order on purpose
        state.unbonding.add(hot, colds[c], units, 0, 10 + (5 - index) % 3)
    had = exposure(state, hot)
    # The rule, spelled out per coldkey: its share of its own exposure, rounded down once,
    # from bonded stake first, then from its entries in (release block, id) order.
    expected_bonded: dict[str, int] = {}
    expected_entries = dict(state.unbonding.entries)
    expected_taken = 0
    for cold in colds:
        mine = [e for e in state.unbonding.of_hotkey(hot) if e.coldkey == cold]
        own = state.stakes.get(hot, {}).get(cold, 0)
        cut = (own + sum(e.amount for e in mine)) * slash_ppm // PPM
        expected_taken += cut
        if own - min(cut, own):
            expected_bonded[cold] = own - min(cut, own)
        rest = cut - min(cut, own)
        for e in mine:
            part = min(rest, e.amount)
            rest -= part
            if part == e.amount:
                del expected_entries[e.id]
            elif part:
                expected_entries[e.id] = dataclasses.replace(e, amount=e.amount - part)
    taken = slash_hotkey(state, hot, slash_ppm)
    assert taken == expected_taken <= had
    assert exposure(state, hot) == had - taken
    assert state.stakes.get(hot, {}) == expected_bonded
    assert state.unbonding.entries == expected_entries
    assert all(v > 0 for by_cold in state.stakes.values() for v in by_cold.values())
    assert all(e.amount > 0 for e in state.unbonding.entries.values())
