"""Neurons: registration by burn, pruning when a subnet is full, serving an endpoint.

The burn follows subtensor's current rule in spirit: each registration multiplies the price by
``burn_increase_ppm / 1e6`` (capped at ``max_burn``), and the price then decays towards
``min_burn`` with a half-life of ``burn_half_life`` blocks. The decay is computed when needed, not
stored each block: within each half-life it falls linearly from the value to half of it, so the
curve is continuous, monotone and exact in integers.
"""

from __future__ import annotations

import ipaddress

from agora.protocol.accounts import debit
from agora.protocol.errors import InvalidParameter, MalformedTransaction, NotOwner, NotRegistered
from agora.protocol.state import Endpoint, Neuron, State, Subnet
from agora.protocol.subnets import get_subnet

PROTOCOLS = ("http", "https")


def current_burn(subnet: Subnet, block: int) -> int:
    """The price in units to register on ``subnet`` at ``block``."""
    hp = subnet.hyperparams
    elapsed = max(0, block - subnet.burn_base_block)
    halvings, into = divmod(elapsed, hp.burn_half_life)
    value = subnet.burn_base >> min(halvings, 64)
    value -= value * into // (2 * hp.burn_half_life)
    return min(hp.max_burn, max(hp.min_burn, value))


def pick_neuron_to_prune(subnet: Subnet, block: int) -> int | None:
    """The uid to replace when the subnet is full: lowest emission outside immunity; ties go to
    the oldest registration, then the lowest uid. None when every neuron is still immune."""
    immunity = subnet.hyperparams.immunity_period
    candidates = [n for n in subnet.neurons if block - n.registered_at >= immunity]
    if not candidates:
        return None
    chosen = min(candidates, key=lambda n: (n.emission, n.registered_at, n.uid))
    return chosen.uid


def register(state: State, coldkey: str, netuid: int, hotkey: str, block: int) -> int:
    """Burn the current price from ``coldkey`` and give ``hotkey`` a uid on ``netuid``.

    Raises UnknownSubnet, NotOwner (the hotkey belongs to another coldkey), InvalidParameter
    (already registered, or the subnet is full with every neuron immune) or InsufficientBalance.
    """
    subnet = get_subnet(state, netuid)
    owner = state.hotkey_owner.get(hotkey)
    if owner is not None and owner != coldkey:
        raise NotOwner(f"hotkey {hotkey[:12]}… belongs to another coldkey")
    if subnet.uid_of(hotkey) is not None:
        raise InvalidParameter(f"hotkey {hotkey[:12]}… is already registered on subnet {netuid}")
    replace_uid: int | None = None
    if len(subnet.neurons) >= subnet.hyperparams.max_uids:
        replace_uid = pick_neuron_to_prune(subnet, block)
        if replace_uid is None:
            raise InvalidParameter(
                f"subnet {netuid} is full and every neuron is within its immunity period; "
                "try again later"
            )
    burn = current_burn(subnet, block)
    debit(state, coldkey, burn, f"registering on subnet {netuid} (burn)")
    state.total_burned += burn
    state.hotkey_owner[hotkey] = coldkey
    hp = subnet.hyperparams
    subnet.burn_base = min(hp.max_burn, max(hp.min_burn, burn * hp.burn_increase_ppm // 1_000_000))
    subnet.burn_base_block = block

    neuron = Neuron(
        uid=len(subnet.neurons) if replace_uid is None else replace_uid,
        hotkey=hotkey,
        coldkey=coldkey,
        registered_at=block,
        last_update=block,
    )
    if replace_uid is None:
        subnet.neurons.append(neuron)
    else:
        old = subnet.neurons[replace_uid]
        subnet.commits.pop(old.hotkey, None)
        subnet.neurons[replace_uid] = neuron
        for other in subnet.neurons:  # nobody's weight or bond carries over to the newcomer
            other.weights.pop(replace_uid, None)
            other.bonds.pop(replace_uid, None)
    return neuron.uid


def neuron_of(subnet: Subnet, hotkey: str) -> Neuron:
    uid = subnet.uid_of(hotkey)
    if uid is None:
        raise NotRegistered(
            f"hotkey {hotkey[:12]}… is not registered on subnet {subnet.netuid}; register it first"
        )
    return subnet.neurons[uid]


def serve(state: State, hotkey: str, netuid: int, ip: str, port: int, protocol: str) -> None:
    """Announce where a neuron answers. Raises UnknownSubnet, NotRegistered or
    MalformedTransaction (bad ip, port or protocol)."""
    subnet = get_subnet(state, netuid)
    neuron = neuron_of(subnet, hotkey)
    try:
        ipaddress.ip_address(ip)
    except ValueError:
        raise MalformedTransaction(f"{ip!r} is not an IPv4 or IPv6 address") from None
    if not 1 <= port <= 65535:
        raise MalformedTransaction(f"port {port} is outside 1..65535")
    if protocol not in PROTOCOLS:
        raise MalformedTransaction(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
    neuron.endpoint = Endpoint(ip=ip, port=port, protocol=protocol)
