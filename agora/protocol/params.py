"""Parameters: of the whole chain (fixed at genesis) and of each subnet (its owner tunes them).

Two presets keep one body of rules meaningful at two sizes, as consensus-specs does: ``dev`` for
tests and the local network (short tempos, cheap registration) and ``mainnet`` for real sizes
(subtensor's defaults where it has one).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from agora.protocol.dispute_state import MAX_DISPUTE_WINDOW
from agora.protocol.errors import InvalidParameter
from agora.protocol.units import SUPPLY_CAP, TOKEN

U16_MAX = 65535


@dataclass(frozen=True)
class ChainParams:
    """Rules that hold for the whole chain."""

    block_reward: int = TOKEN  # before halvings
    supply_cap: int = SUPPLY_CAP
    subnet_lock_cost: int = 100 * TOKEN
    max_subnets: int = 32
    owner_cut_ppm: int = 180_000  # 18% of a subnet's emission to its owner
    delegate_take_ppm: int = 180_000  # a validator hotkey's owner keeps 18% of its dividends
    max_txs_per_block: int = 20_000
    max_tx_bytes: int = 16_384
    max_burn_subnets_per_block: int = 64

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ChainParams:
        return cls(**data)


@dataclass(frozen=True)
class Hyperparams:
    """A subnet's hyperparameters. Names and meanings follow subtensor's."""

    tempo: int = 360  # blocks between epochs
    max_uids: int = 256
    max_validators: int = 64  # top-K by stake get a validator permit
    immunity_period: int = 4096  # blocks a new neuron cannot be pruned
    activity_cutoff: int = 5000  # a validator whose weights are older is inactive
    kappa: int = 32767  # u16: stake fraction the weighted median must reach
    bonds_moving_average: int = 900_000  # ppm; EMA alpha = 1 - this / 1e6
    bonds_penalty: int = U16_MAX  # u16: how much bonds follow clipped weights
    liquid_alpha_enabled: bool = False
    alpha_low: int = 45875  # u16 (0.7)
    alpha_high: int = 58982  # u16 (0.9)
    alpha_sigmoid_steepness: int = 1000
    yuma_version: int = 3  # 2 or 3
    weights_rate_limit: int = 100  # blocks between two weight settings of one hotkey
    min_allowed_weights: int = 1
    max_weight_limit: int = U16_MAX  # u16: the largest share one uid may get from a validator
    commit_reveal_enabled: bool = False
    commit_reveal_period: int = 1  # tempos between a commit and its reveal window
    min_burn: int = TOKEN // 2
    max_burn: int = 100 * TOKEN
    burn_increase_ppm: int = 1_250_000  # each registration multiplies the burn by 1.25
    burn_half_life: int = 360  # blocks for the burn to halve towards min_burn
    min_validator_stake: int = 0  # below this a hotkey may not set weights or call miners
    # Spot checks and disputes (agora/protocol/audit.py, disputes.py). The defaults are
    # mainnet's; the comment above DEV_HYPERPARAMS says why these numbers.
    audit_rate_ppm: int = 20_000  # p: the share of receipts validators audit
    slash_ppm: int = 100_000  # share of the miner hotkey's stake an upheld dispute takes
    slash_burn_ppm: int = 500_000  # share of the slash burned; the rest to guilty voters
    dispute_deposit: int = 10 * TOKEN  # paid by the challenger, lost if the dispute fails
    dispute_period: int = 300  # blocks for validators to reach a majority
    dispute_window: int = 1800  # blocks after a receipt's deciding block it may be disputed

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Hyperparams:
        return cls(**data)

    def audit_params(self) -> dict[str, int]:
        """The six spot-check and dispute parameters, by name."""
        return {name: getattr(self, name) for name in AUDIT_PARAMS}

    def updated(self, changes: dict[str, Any]) -> Hyperparams:
        """A copy with ``changes`` applied, each checked against its bounds.

        Raises InvalidParameter naming the parameter and its allowed range.
        """
        known = {f.name: f.type for f in fields(self)}
        for name, value in changes.items():
            if name not in known:
                raise InvalidParameter(
                    f"unknown hyperparameter {name!r}; known: {', '.join(sorted(known))}"
                )
            check_bounds(name, value)
        result = replace(self, **changes)
        check_consistent(result)
        return result


# Inclusive bounds an owner may choose within. Booleans are listed with None.
BOUNDS: dict[str, tuple[int, int] | None] = {
    "tempo": (1, 65535),
    "max_uids": (1, 4096),
    "max_validators": (1, 4096),
    "immunity_period": (0, 1_000_000),
    "activity_cutoff": (1, 1_000_000),
    "kappa": (0, U16_MAX),
    "bonds_moving_average": (0, 1_000_000),
    "bonds_penalty": (0, U16_MAX),
    "liquid_alpha_enabled": None,
    "alpha_low": (1, U16_MAX),
    "alpha_high": (1, U16_MAX),
    "alpha_sigmoid_steepness": (0, 32767),
    "yuma_version": (2, 3),
    "weights_rate_limit": (0, 1_000_000),
    "min_allowed_weights": (0, 4096),
    "max_weight_limit": (1, U16_MAX),
    "commit_reveal_enabled": None,
    "commit_reveal_period": (1, 100),
    "min_burn": (0, 1_000_000 * TOKEN),
    "max_burn": (1, 1_000_000 * TOKEN),
    "burn_increase_ppm": (1_000_000, 10_000_000),
    "burn_half_life": (1, 1_000_000),
    "min_validator_stake": (0, SUPPLY_CAP),
    "audit_rate_ppm": (0, 1_000_000),
    "slash_ppm": (0, 1_000_000),
    "slash_burn_ppm": (0, 1_000_000),
    "dispute_deposit": (0, 1_000_000 * TOKEN),
    "dispute_period": (1, 100_000),
    "dispute_window": (1, MAX_DISPUTE_WINDOW),
}
AUDIT_PARAMS = (
    "audit_rate_ppm",
    "slash_ppm",
    "slash_burn_ppm",
    "dispute_deposit",
    "dispute_period",
    "dispute_window",
)


def check_bounds(name: str, value: object) -> None:
    bounds = BOUNDS[name]
    if bounds is None:
        if not isinstance(value, bool):
            raise InvalidParameter(f"{name} must be true or false, got {value!r}")
        return
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidParameter(f"{name} must be an integer, got {value!r}")
    low, high = bounds
    if not low <= value <= high:
        raise InvalidParameter(f"{name}={value} is outside its bounds [{low}, {high}]")


def check_consistent(params: Hyperparams) -> None:
    """Rules that relate two parameters."""
    if params.max_validators > params.max_uids:
        raise InvalidParameter("max_validators cannot exceed max_uids")
    if params.alpha_low > params.alpha_high:
        raise InvalidParameter("alpha_low cannot exceed alpha_high")
    if params.min_burn > params.max_burn:
        raise InvalidParameter("min_burn cannot exceed max_burn")


# Audit and dispute presets, from the honesty condition p >= (C - c) / (d (R + S)) with the
# economics of agora.protocol.audit.DEFAULT_ECONOMICS: an answer pays R = 0.001 token, honest work
# costs C = R (a miner at break-even), cheating costs c = 0, an audit detects with d = 0.99.
#
# mainnet (12 s blocks): p = 2% and slash 10%. A cheat then risks p d (R + S) = 0.0198 (R + S)
# to save 0.001 token, which fails to pay once S >= 0.0495 token, i.e. for every miner carrying
# at least 0.495 token of stake (min_stake_for_honesty); at 10 tokens of stake the required p
# is 0.1%, a twentieth of what runs. 2% of organic traffic keeps validators' re-run cost
# small. Deposit 10 tokens: a spam dispute costs ten thousand answers' worth. Votes get 300
# blocks (1 hour) and a receipt can be disputed for 1800 blocks (6 hours) after its block.
#
# dev (1 s blocks, tiny stakes): p = 10% and slash 50% deter any miner carrying more than
# about 0.018 token of stake, so the local network's miners (a few tokens each) are covered,
# and tests see audits often.
# Deposit 1 token, 30 blocks to vote, 600 blocks (10 minutes) to dispute.

DEV_HYPERPARAMS = Hyperparams(
    tempo=10,
    max_uids=64,
    max_validators=8,
    immunity_period=20,
    activity_cutoff=1000,
    weights_rate_limit=1,
    min_burn=TOKEN // 10,
    max_burn=10 * TOKEN,
    burn_half_life=30,
    audit_rate_ppm=100_000,
    slash_ppm=500_000,
    slash_burn_ppm=500_000,
    dispute_deposit=TOKEN,
    dispute_period=30,
    dispute_window=600,
)
MAINNET_HYPERPARAMS = Hyperparams()
DEV_CHAIN = ChainParams(subnet_lock_cost=10 * TOKEN)
MAINNET_CHAIN = ChainParams()

PRESETS: dict[str, tuple[ChainParams, Hyperparams]] = {
    "dev": (DEV_CHAIN, DEV_HYPERPARAMS),
    "mainnet": (MAINNET_CHAIN, MAINNET_HYPERPARAMS),
}
