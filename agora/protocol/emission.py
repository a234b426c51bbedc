"""New tokens: the block reward, its split across subnets, and the payout of each epoch.

Block reward. 1 token per block, halved each time issuance crosses the next half of what remains
below the 21M cap: 10.5M, 15.75M, 18.375M, ... The reward never takes issuance above the cap.
Issuance here counts everything minted (genesis included) plus emission accrued but not yet paid.

Split across subnets. Each block's reward is shared in proportion to the stake behind each
subnet's registered hotkeys (a hotkey registered on two subnets counts on both), or equally when
no subnet has stake. Integer remainders go one unit each to the lowest netuids. The shares accrue
in ``pending_emission`` and are minted only when paid, so emission nobody earns is never created.

Within a subnet, at each epoch (every ``tempo`` blocks, staggered by netuid as subtensor does:
when ``(block + netuid + 1) % (tempo + 1) == 0``): 18% to the owner's balance; of the rest, half to
miners in proportion to incentive and half to validators in proportion to dividends. Miners'
emission is staked to their hotkey under its owning coldkey; a validator's dividends go to the
hotkey's owner (its take) and then to every coldkey staked behind it, pro rata, as stake.
"""

from __future__ import annotations

import numpy as np

from agora.protocol import yuma
from agora.protocol.stake import add_stake_units
from agora.protocol.state import State, Subnet

PPM = 1_000_000


def block_reward(params_reward: int, cap: int, issued: int) -> int:
    """The reward of the next block given what has been issued (or accrued) so far."""
    if issued >= cap:
        return 0
    halvings = 0
    while halvings < 64 and issued >= cap - (cap >> (halvings + 1)):
        halvings += 1
    return min(params_reward >> halvings, cap - issued)


def subnet_stake(state: State, subnet: Subnet) -> int:
    return sum(state.hotkey_stake(n.hotkey) for n in subnet.neurons)


def accrue_block_emission(state: State) -> int:
    """Share one block's reward among subnets. Returns the units accrued."""
    if not state.subnets:
        return 0
    issued = state.total_issuance + sum(state.pending_emission.values())
    reward = block_reward(state.params.block_reward, state.params.supply_cap, issued)
    if reward == 0:
        return 0
    netuids = sorted(state.subnets)
    stakes = [subnet_stake(state, state.subnets[netuid]) for netuid in netuids]
    total = sum(stakes)
    if total == 0:
        stakes, total = [1] * len(netuids), len(netuids)
    shares = [reward * s // total for s in stakes]
    remainder = reward - sum(shares)
    for index in range(remainder):
        shares[index % len(shares)] += 1
    for netuid, share in zip(netuids, shares, strict=True):
        if share:
            state.pending_emission[netuid] = state.pending_emission.get(netuid, 0) + share
    return reward


def epoch_due(netuid: int, tempo: int, block: int) -> bool:
    return (block + netuid + 1) % (tempo + 1) == 0


def _params(subnet: Subnet) -> yuma.YumaParams:
    hp = subnet.hyperparams
    return yuma.YumaParams(
        kappa=hp.kappa,
        bonds_penalty=hp.bonds_penalty,
        bonds_moving_average=hp.bonds_moving_average,
        yuma3=hp.yuma_version == 3,
        liquid_alpha=hp.liquid_alpha_enabled,
        alpha_low=hp.alpha_low,
        alpha_high=hp.alpha_high,
        alpha_sigmoid_steepness=hp.alpha_sigmoid_steepness,
        tempo=hp.tempo,
    )


def run_epoch(state: State, subnet: Subnet, block: int) -> yuma.EpochResult | None:
    """Run Yuma consensus on ``subnet`` and store what it says on each neuron (no payment)."""
    neurons = subnet.neurons
    n = len(neurons)
    if n == 0:
        return None
    stake = [state.hotkey_stake(neuron.hotkey) for neuron in neurons]
    # As on subtensor, the epoch masks with the permits the previous epoch issued and issues the
    # next ones from today's stake; the next permits decide which bond rows are kept.
    permits = [neuron.validator_permit for neuron in neurons]
    next_permits = yuma.top_k_permits(stake, subnet.hyperparams.max_validators)
    weights = np.zeros((n, n), dtype=np.int64)
    bonds = np.zeros((n, n), dtype=np.int64)
    for neuron in neurons:
        for uid, value in neuron.weights.items():
            weights[neuron.uid, uid] = value
    for neuron in neurons:  # an upheld dispute zeroes a miner's incentive: nobody's weight counts
        if neuron.slashed:
            weights[:, neuron.uid] = 0
        for uid, value in neuron.bonds.items():
            bonds[neuron.uid, uid] = value
    result = yuma.epoch(
        stake=stake,
        weights=weights,
        bonds=bonds,
        last_update=[neuron.last_update for neuron in neurons],
        block_at_registration=[neuron.registered_at for neuron in neurons],
        current_block=block,
        activity_cutoff=subnet.hyperparams.activity_cutoff,
        permits=permits,
        params=_params(subnet),
        next_permits=next_permits,
    )
    for neuron in neurons:
        uid = neuron.uid
        neuron.validator_permit = bool(next_permits[uid])
        neuron.rank = int(result.rank[uid])
        neuron.trust = int(result.trust[uid])
        neuron.consensus = int(result.consensus[uid])
        neuron.incentive = int(result.incentive[uid])
        neuron.dividends = int(result.dividends[uid])
        neuron.validator_trust = int(result.validator_trust[uid])
    for index, uid in enumerate(result.bond_rows):  # rows the epoch rewrote; others keep theirs
        row = result.bonds[index]
        neurons[int(uid)].bonds = {int(j): int(row[j]) for j in np.flatnonzero(row)}
    return result


def _pay_dividends(state: State, hotkey: str, owner: str, amount: int) -> None:
    take = amount * state.params.delegate_take_ppm // PPM
    rest = amount - take
    backers = sorted(state.stakes.get(hotkey, {}).items())
    total = sum(units for _, units in backers)
    paid = 0
    if total:
        for coldkey, units in backers:
            share = rest * units // total
            add_stake_units(state, hotkey, coldkey, share)
            paid += share
    add_stake_units(state, hotkey, owner, take + rest - paid)


def pay_epoch(state: State, subnet: Subnet, block: int) -> int:
    """Run the epoch and mint its emission. Returns the units minted."""
    pool = state.pending_emission.pop(subnet.netuid, 0)
    result = run_epoch(state, subnet, block)
    subnet.last_epoch = block
    for neuron in subnet.neurons:
        neuron.emission = 0
    owner_cut = pool * state.params.owner_cut_ppm // PPM
    rest = pool - owner_cut
    miner_pool = rest // 2
    validator_pool = rest - miner_pool
    minted = 0
    if owner_cut:
        state.balances[subnet.owner] = state.balance(subnet.owner) + owner_cut
        minted += owner_cut
    if result is not None:
        for neuron in subnet.neurons:
            incentive = miner_pool * neuron.incentive // yuma.ONE
            dividends = validator_pool * neuron.dividends // yuma.ONE
            if incentive:
                add_stake_units(state, neuron.hotkey, neuron.coldkey, incentive)
            if dividends:
                _pay_dividends(state, neuron.hotkey, neuron.coldkey, dividends)
            neuron.emission = incentive + dividends
            minted += incentive + dividends
    state.total_issuance += minted
    return minted


def end_block(state: State, block: int) -> None:
    """What every block does after its transactions: accrue emission, run epochs that are due."""
    accrue_block_emission(state)
    for netuid in sorted(state.subnets):
        subnet = state.subnets[netuid]
        if epoch_due(netuid, subnet.hyperparams.tempo, block):
            pay_epoch(state, subnet, block)
