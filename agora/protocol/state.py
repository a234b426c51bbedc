"""The ledger's state: plain dataclasses, no behaviour beyond copying and encoding.

Everything that decides money is an ``int``. Dictionaries are keyed by addresses (hex strings) or
small integers; the canonical encoding sorts keys, so two nodes that hold the same state always
produce the same bytes and the same state root.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from agora.protocol.codec import hash_value
from agora.protocol.dispute_state import DisputeState
from agora.protocol.market_state import MarketState
from agora.protocol.params import ChainParams, Hyperparams
from agora.protocol.unbonding import UnbondingState


@dataclass
class Endpoint:
    """Where a neuron serves: announced on the ledger so validators and gateways can find it."""

    ip: str
    port: int
    protocol: str

    def to_json(self) -> dict[str, Any]:
        return {"ip": self.ip, "port": self.port, "protocol": self.protocol}


@dataclass
class Neuron:
    """A hotkey registered on a subnet under a uid, and what the last epoch said of it.

    Epoch figures (rank ... validator_trust) are fixed-point integers with ``yuma.ONE`` meaning 1.
    ``emission`` is the number of units the neuron earned in the last epoch.
    """

    uid: int
    hotkey: str
    coldkey: str
    registered_at: int
    last_update: int
    endpoint: Endpoint | None = None
    weights: dict[int, int] = field(default_factory=dict)  # target uid -> u16
    bonds: dict[int, int] = field(default_factory=dict)  # target uid -> fixed point
    validator_permit: bool = False
    rank: int = 0
    trust: int = 0
    consensus: int = 0
    incentive: int = 0
    dividends: int = 0
    validator_trust: int = 0
    emission: int = 0
    slashed: bool = False  # an upheld dispute: incentive zero until it registers again

    def clone(self) -> Neuron:
        return Neuron(
            uid=self.uid,
            hotkey=self.hotkey,
            coldkey=self.coldkey,
            registered_at=self.registered_at,
            last_update=self.last_update,
            endpoint=self.endpoint,  # endpoints are replaced, never mutated
            weights=dict(self.weights),
            bonds=dict(self.bonds),
            validator_permit=self.validator_permit,
            rank=self.rank,
            trust=self.trust,
            consensus=self.consensus,
            incentive=self.incentive,
            dividends=self.dividends,
            validator_trust=self.validator_trust,
            emission=self.emission,
            slashed=self.slashed,
        )

    def to_json(self) -> dict[str, Any]:
        doc = {
            "uid": self.uid,
            "hotkey": self.hotkey,
            "coldkey": self.coldkey,
            "registered_at": self.registered_at,
            "last_update": self.last_update,
            "endpoint": None if self.endpoint is None else self.endpoint.to_json(),
            "weights": {str(k): v for k, v in sorted(self.weights.items())},
            "bonds": {str(k): v for k, v in sorted(self.bonds.items())},
            "validator_permit": self.validator_permit,
            "rank": self.rank,
            "trust": self.trust,
            "consensus": self.consensus,
            "incentive": self.incentive,
            "dividends": self.dividends,
            "validator_trust": self.validator_trust,
            "emission": self.emission,
        }
        if self.slashed:  # only then, so that chains without disputes encode as before
            doc["slashed"] = True
        return doc

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Neuron:
        endpoint = data["endpoint"]
        return cls(
            uid=data["uid"],
            hotkey=data["hotkey"],
            coldkey=data["coldkey"],
            registered_at=data["registered_at"],
            last_update=data["last_update"],
            endpoint=None if endpoint is None else Endpoint(**endpoint),
            weights={int(k): v for k, v in data["weights"].items()},
            bonds={int(k): v for k, v in data["bonds"].items()},
            validator_permit=data["validator_permit"],
            rank=data["rank"],
            trust=data["trust"],
            consensus=data["consensus"],
            incentive=data["incentive"],
            dividends=data["dividends"],
            validator_trust=data["validator_trust"],
            emission=data["emission"],
            slashed=data.get("slashed", False),
        )


@dataclass
class WeightCommit:
    """A hash of weights a validator will reveal later (commit-reveal)."""

    commit_hash: str
    block: int


@dataclass
class Subnet:
    """A market for one kind of work, with its owner, rules and neurons (uid = list index)."""

    netuid: int
    owner: str
    locked: int
    created_at: int
    hyperparams: Hyperparams
    burn_base: int  # the burn right after the last registration (or creation)
    burn_base_block: int
    last_epoch: int = -1
    neurons: list[Neuron] = field(default_factory=list)
    commits: dict[str, WeightCommit] = field(default_factory=dict)  # hotkey -> pending commit

    def uid_of(self, hotkey: str) -> int | None:
        for neuron in self.neurons:
            if neuron.hotkey == hotkey:
                return neuron.uid
        return None

    def clone(self) -> Subnet:
        return Subnet(
            netuid=self.netuid,
            owner=self.owner,
            locked=self.locked,
            created_at=self.created_at,
            hyperparams=self.hyperparams,
            burn_base=self.burn_base,
            burn_base_block=self.burn_base_block,
            last_epoch=self.last_epoch,
            neurons=[n.clone() for n in self.neurons],
            commits=dict(self.commits),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "netuid": self.netuid,
            "owner": self.owner,
            "locked": self.locked,
            "created_at": self.created_at,
            "hyperparams": self.hyperparams.to_json(),
            "burn_base": self.burn_base,
            "burn_base_block": self.burn_base_block,
            "last_epoch": self.last_epoch,
            "neurons": [n.to_json() for n in self.neurons],
            "commits": {
                hk: {"commit_hash": c.commit_hash, "block": c.block}
                for hk, c in sorted(self.commits.items())
            },
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Subnet:
        return cls(
            netuid=data["netuid"],
            owner=data["owner"],
            locked=data["locked"],
            created_at=data["created_at"],
            hyperparams=Hyperparams.from_json(data["hyperparams"]),
            burn_base=data["burn_base"],
            burn_base_block=data["burn_base_block"],
            last_epoch=data["last_epoch"],
            neurons=[Neuron.from_json(n) for n in data["neurons"]],
            commits={hk: WeightCommit(**c) for hk, c in data["commits"].items()},
        )


@dataclass
class Channel:
    """A payment channel (rules in :mod:`agora.protocol.channels`)."""

    id: int
    payer: str
    payee: str
    signer: str
    deposit: int  # everything ever locked in it
    redeemed: int  # everything paid out to the payee
    opened_at: int
    expires_at: int
    closed: bool = False

    @property
    def remaining(self) -> int:
        return self.deposit - self.redeemed

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "payer": self.payer,
            "payee": self.payee,
            "signer": self.signer,
            "deposit": self.deposit,
            "redeemed": self.redeemed,
            "opened_at": self.opened_at,
            "expires_at": self.expires_at,
            "closed": self.closed,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Channel:
        return cls(**data)


@dataclass
class State:
    """The whole ledger after the block at ``height`` (-1 before genesis is applied: never)."""

    chain_id: str
    params: ChainParams
    default_hyperparams: Hyperparams
    producer: str  # the address allowed to sign blocks
    height: int = 0
    timestamp: int = 0  # milliseconds, from the last block header
    last_block_hash: str = "0" * 64
    balances: dict[str, int] = field(default_factory=dict)
    nonces: dict[str, int] = field(default_factory=dict)
    hotkey_owner: dict[str, str] = field(default_factory=dict)  # hotkey -> coldkey
    stakes: dict[str, dict[str, int]] = field(default_factory=dict)  # hotkey -> coldkey -> units
    subnets: dict[int, Subnet] = field(default_factory=dict)
    pending_emission: dict[int, int] = field(default_factory=dict)  # accrued, not yet minted
    total_issuance: int = 0  # every unit ever minted, genesis included
    total_burned: int = 0
    channels: dict[int, Channel] = field(default_factory=dict)
    next_channel_id: int = 1
    market: MarketState = field(default_factory=MarketState)  # rules in protocol/market.py
    disputes: DisputeState = field(default_factory=DisputeState)  # rules in protocol/disputes.py
    unbonding: UnbondingState = field(default_factory=UnbondingState)  # rules in protocol/stake.py

    def clone(self) -> State:
        """An independent copy: a block is executed on a copy and only kept if it is valid."""
        return State(
            chain_id=self.chain_id,
            params=self.params,
            default_hyperparams=self.default_hyperparams,
            producer=self.producer,
            height=self.height,
            timestamp=self.timestamp,
            last_block_hash=self.last_block_hash,
            balances=dict(self.balances),
            nonces=dict(self.nonces),
            hotkey_owner=dict(self.hotkey_owner),
            stakes={hk: dict(by_cold) for hk, by_cold in self.stakes.items()},
            subnets={netuid: s.clone() for netuid, s in self.subnets.items()},
            pending_emission=dict(self.pending_emission),
            total_issuance=self.total_issuance,
            total_burned=self.total_burned,
            channels={cid: replace(c) for cid, c in self.channels.items()},
            next_channel_id=self.next_channel_id,
            market=self.market.clone(),
            disputes=self.disputes.clone(),
            unbonding=self.unbonding.clone(),
        )

    # -- derived figures ------------------------------------------------------------------

    def balance(self, address: str) -> int:
        return self.balances.get(address, 0)

    def nonce(self, address: str) -> int:
        return self.nonces.get(address, 0)

    def hotkey_stake(self, hotkey: str) -> int:
        """All stake behind a hotkey, its owner's and its nominators'."""
        return sum(self.stakes.get(hotkey, {}).values())

    def total_stake(self) -> int:
        return sum(sum(by_cold.values()) for by_cold in self.stakes.values())

    def circulating(self) -> int:
        """Units that exist somewhere: free balances, stake, subnet locks, channel deposits and
        what the compute market holds (provider stakes, escrow, deposits, bonds), the
        deposits of open disputes and stake that is unbonding."""
        locked = sum(s.locked for s in self.subnets.values())
        escrowed = sum(c.remaining for c in self.channels.values())
        market = self.market.locked(self.height)
        disputes = self.disputes.locked() + self.unbonding.locked()
        return (
            sum(self.balances.values()) + self.total_stake() + locked + escrowed + market + disputes
        )

    # -- encoding ---------------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        doc = {
            "chain_id": self.chain_id,
            "params": self.params.to_json(),
            "default_hyperparams": self.default_hyperparams.to_json(),
            "producer": self.producer,
            "height": self.height,
            "timestamp": self.timestamp,
            "last_block_hash": self.last_block_hash,
            "balances": dict(sorted(self.balances.items())),
            "nonces": dict(sorted(self.nonces.items())),
            "hotkey_owner": dict(sorted(self.hotkey_owner.items())),
            "stakes": {hk: dict(sorted(c.items())) for hk, c in sorted(self.stakes.items())},
            "subnets": {str(k): s.to_json() for k, s in sorted(self.subnets.items())},
            "pending_emission": {str(k): v for k, v in sorted(self.pending_emission.items())},
            "total_issuance": self.total_issuance,
            "total_burned": self.total_burned,
            "channels": {str(k): c.to_json() for k, c in sorted(self.channels.items())},
            "next_channel_id": self.next_channel_id,
        }
        # A chain that never used the market encodes (and hashes) exactly as before it existed.
        if not self.market.is_pristine():
            doc["market"] = self.market.to_json()
        if not self.disputes.is_pristine():
            doc["disputes"] = self.disputes.to_json()
        if not self.unbonding.is_pristine():
            doc["unbonding"] = self.unbonding.to_json()
        return doc

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> State:
        return cls(
            chain_id=data["chain_id"],
            params=ChainParams.from_json(data["params"]),
            default_hyperparams=Hyperparams.from_json(data["default_hyperparams"]),
            producer=data["producer"],
            height=data["height"],
            timestamp=data["timestamp"],
            last_block_hash=data["last_block_hash"],
            balances=dict(data["balances"]),
            nonces=dict(data["nonces"]),
            hotkey_owner=dict(data["hotkey_owner"]),
            stakes={hk: dict(c) for hk, c in data["stakes"].items()},
            subnets={int(k): Subnet.from_json(s) for k, s in data["subnets"].items()},
            pending_emission={int(k): v for k, v in data["pending_emission"].items()},
            total_issuance=data["total_issuance"],
            total_burned=data["total_burned"],
            channels={int(k): Channel.from_json(c) for k, c in data["channels"].items()},
            next_channel_id=data["next_channel_id"],
            market=MarketState.from_json(data["market"]) if "market" in data else MarketState(),
            disputes=(
                DisputeState.from_json(data["disputes"]) if "disputes" in data else DisputeState()
            ),
            unbonding=(
                UnbondingState.from_json(data["unbonding"])
                if "unbonding" in data
                else UnbondingState()
            ),
        )


def state_root(state: State) -> str:
    """The hash every node must agree on after each block.

    A hash of the section hashes, so that a light client can later be given one section with a
    proof; today it is simply recomputed from the whole state.
    """
    doc = state.to_json()
    sections = {name: hash_value(value) for name, value in doc.items()}
    return hash_value(sections)
