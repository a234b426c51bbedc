"""Weights: how a validator scores the neurons of a subnet, directly or by commit and reveal.

The checks are subtensor's (``do_set_weights``): the subnet exists; uids and weights have the same
length; the caller is registered; a caller weighting anyone but itself holds a validator permit and
the subnet's minimum stake; it respects the rate limit; uids are valid and unique; there are at
least ``min_allowed_weights`` of them; after normalisation no uid gets more than
``max_weight_limit``. Stored weights are scaled so that the largest is 65535.

Commit-reveal hides weights until they are stale, so a validator cannot copy another's: a commit
is a hash of ``{netuid, hotkey, uids, weights, salt}``; it may be revealed from
``commit_reveal_period * tempo`` blocks after the commit, for as many blocks again; a new commit
replaces an unrevealed one.
"""

from __future__ import annotations

from agora.protocol.codec import hash_value
from agora.protocol.errors import InvalidWeights, RateLimited
from agora.protocol.params import U16_MAX
from agora.protocol.registry import neuron_of
from agora.protocol.state import Neuron, State, Subnet, WeightCommit
from agora.protocol.subnets import get_subnet


def weights_commit_hash(
    netuid: int, hotkey: str, uids: list[int], weights: list[int], salt: str
) -> str:
    """The hash a validator commits to and later opens."""
    return hash_value(
        {"netuid": netuid, "hotkey": hotkey, "uids": uids, "weights": weights, "salt": salt}
    )


def max_upscale(weights: list[int]) -> list[int]:
    """Scale so that the largest weight is 65535 (subtensor's vec_u16_max_upscale_to_u16)."""
    top = max(weights)
    return [(w * U16_MAX + top // 2) // top for w in weights]


def _is_self_weight(neuron: Neuron, uids: list[int]) -> bool:
    return uids == [neuron.uid]


def _check_weights(
    state: State, subnet: Subnet, neuron: Neuron, uids: list[int], weights: list[int]
) -> None:
    hp = subnet.hyperparams
    if len(uids) != len(weights):
        raise InvalidWeights(
            f"{len(uids)} uids but {len(weights)} weights; give one weight per uid"
        )
    if not uids:
        raise InvalidWeights("no weights given")
    if len(set(uids)) != len(uids):
        raise InvalidWeights("uids must be unique")
    n = len(subnet.neurons)
    bad = [uid for uid in uids if uid >= n]
    if bad:
        raise InvalidWeights(
            f"uids {bad[:5]} do not exist; subnet {subnet.netuid} has uids 0..{n - 1}"
        )
    if sum(weights) == 0:
        raise InvalidWeights("weights are all zero; give at least one positive weight")
    if _is_self_weight(neuron, uids):
        return
    if not neuron.validator_permit:
        raise InvalidWeights(
            f"uid {neuron.uid} has no validator permit; permits go to the top "
            f"{hp.max_validators} hotkeys by stake at each epoch"
        )
    stake = state.hotkey_stake(neuron.hotkey)
    if stake < hp.min_validator_stake:
        raise InvalidWeights(
            f"setting weights needs {hp.min_validator_stake} units of stake, have {stake}"
        )
    if len(uids) < min(hp.min_allowed_weights, n):
        raise InvalidWeights(f"at least {hp.min_allowed_weights} weights are required")
    if hp.max_weight_limit < U16_MAX:
        total = sum(weights)
        largest = max(w * U16_MAX // total for w in weights)
        if largest > hp.max_weight_limit:
            raise InvalidWeights(
                f"one uid would get {largest}/65535 of your weight; "
                f"the limit is {hp.max_weight_limit}"
            )


def _check_rate_limit(subnet: Subnet, neuron: Neuron, block: int) -> None:
    limit = subnet.hyperparams.weights_rate_limit
    if block - neuron.last_update < limit:
        wait = limit - (block - neuron.last_update)
        raise RateLimited(
            f"weights were set at block {neuron.last_update}; wait {wait} more blocks"
        )


def _store(neuron: Neuron, uids: list[int], weights: list[int], block: int) -> None:
    neuron.weights = {uid: w for uid, w in zip(uids, max_upscale(weights), strict=True) if w > 0}
    neuron.last_update = block


def set_weights(
    state: State, hotkey: str, netuid: int, uids: list[int], weights: list[int], block: int
) -> None:
    """Set weights directly. Raises UnknownSubnet, NotRegistered, InvalidWeights or RateLimited."""
    subnet = get_subnet(state, netuid)
    neuron = neuron_of(subnet, hotkey)
    if subnet.hyperparams.commit_reveal_enabled:
        raise InvalidWeights(f"subnet {netuid} uses commit-reveal; commit a hash, then reveal it")
    _check_weights(state, subnet, neuron, uids, weights)
    _check_rate_limit(subnet, neuron, block)
    _store(neuron, uids, weights, block)


def reveal_window(subnet: Subnet, commit_block: int) -> tuple[int, int]:
    """Blocks [start, end) in which a commit made at ``commit_block`` can be revealed."""
    delay = subnet.hyperparams.commit_reveal_period * subnet.hyperparams.tempo
    return commit_block + delay, commit_block + 2 * delay


def commit_weights(state: State, hotkey: str, netuid: int, commit_hash: str, block: int) -> None:
    """Record a weights hash. Raises UnknownSubnet, NotRegistered, InvalidWeights, RateLimited."""
    subnet = get_subnet(state, netuid)
    neuron = neuron_of(subnet, hotkey)
    if not subnet.hyperparams.commit_reveal_enabled:
        raise InvalidWeights(f"subnet {netuid} does not use commit-reveal; set weights directly")
    previous = subnet.commits.get(hotkey)
    limit = subnet.hyperparams.weights_rate_limit
    if previous is not None and block - previous.block < limit:
        raise RateLimited(
            f"last commit at block {previous.block}; wait {limit} blocks between commits"
        )
    subnet.commits[hotkey] = WeightCommit(commit_hash=commit_hash, block=block)
    del neuron  # registration is all we needed to know


def reveal_weights(
    state: State,
    hotkey: str,
    netuid: int,
    uids: list[int],
    weights: list[int],
    salt: str,
    block: int,
) -> None:
    """Open a commit and set its weights. Raises UnknownSubnet, NotRegistered or InvalidWeights."""
    subnet = get_subnet(state, netuid)
    neuron = neuron_of(subnet, hotkey)
    commit = subnet.commits.get(hotkey)
    if commit is None:
        raise InvalidWeights("nothing to reveal: commit a weights hash first")
    start, end = reveal_window(subnet, commit.block)
    if block < start:
        raise InvalidWeights(f"too early to reveal: the window opens at block {start}")
    if block >= end:
        raise InvalidWeights(f"the commit expired at block {end}; commit again")
    if weights_commit_hash(netuid, hotkey, uids, weights, salt) != commit.commit_hash:
        raise InvalidWeights("these weights and salt do not match the committed hash")
    _check_weights(state, subnet, neuron, uids, weights)
    del subnet.commits[hotkey]
    _store(neuron, uids, weights, block)
