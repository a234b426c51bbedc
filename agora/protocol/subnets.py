"""Creating subnets and tuning their hyperparameters."""

from __future__ import annotations

from typing import Any

from agora.protocol.accounts import debit
from agora.protocol.errors import InvalidParameter, NotOwner, UnknownSubnet
from agora.protocol.state import State, Subnet


def get_subnet(state: State, netuid: int) -> Subnet:
    """Raises UnknownSubnet with the list of subnets that do exist."""
    subnet = state.subnets.get(netuid)
    if subnet is None:
        known = ", ".join(str(n) for n in sorted(state.subnets)) or "none yet"
        raise UnknownSubnet(f"no subnet {netuid}; existing subnets: {known}")
    return subnet


def create_subnet(state: State, owner: str, block: int) -> int:
    """Lock ``subnet_lock_cost`` from ``owner`` and open the lowest free netuid (from 1).

    Raises InvalidParameter (too many subnets) or InsufficientBalance.
    """
    if len(state.subnets) >= state.params.max_subnets:
        raise InvalidParameter(f"the chain allows at most {state.params.max_subnets} subnets")
    netuid = 1
    while netuid in state.subnets:
        netuid += 1
    lock = state.params.subnet_lock_cost
    debit(state, owner, lock, "creating a subnet (lock cost)")
    hyperparams = state.default_hyperparams
    state.subnets[netuid] = Subnet(
        netuid=netuid,
        owner=owner,
        locked=lock,
        created_at=block,
        hyperparams=hyperparams,
        burn_base=hyperparams.min_burn,
        burn_base_block=block,
    )
    return netuid


def set_hyperparams(state: State, sender: str, netuid: int, changes: dict[str, Any]) -> None:
    """Owner-only update of hyperparameters, each within its bounds.

    Raises UnknownSubnet, NotOwner or InvalidParameter.
    """
    subnet = get_subnet(state, netuid)
    if sender != subnet.owner:
        raise NotOwner(f"only the owner of subnet {netuid} may change its hyperparameters")
    if not changes:
        raise InvalidParameter("no hyperparameters to change")
    updated = subnet.hyperparams.updated(changes)
    if updated.max_uids < len(subnet.neurons):
        raise InvalidParameter(
            f"max_uids={updated.max_uids} is below the {len(subnet.neurons)} neurons registered"
        )
    subnet.hyperparams = updated
