"""The compute market's part of the ledger state: providers, orders, bids, leases, challenges.

Records are frozen dataclasses: a rule that changes one replaces it (``dataclasses.replace``), so
copying the market for a block is copying a few dictionaries, never thousands of objects. The
rules are in :mod:`agora.protocol.market`; the parameters they use are :data:`MARKET`.

Besides the records, :class:`MarketState` keeps *indices*: by block height, the leases that run
out of escrow in that block, the challenges whose deadline it is, the challenges waiting for that
block's hash (their seed) and the closed records to forget then; and each provider's open leases.
The indices follow from the records, so they are not encoded: ``from_json`` rebuilds them and the
state root never sees them. They make the per-block settlement a loop over what is due, not over
everything.

Escrow is never written down per block. A lease opened in block ``s`` at ``price`` units per block
has paid ``price * (h - s + 1)`` after block ``h``; it runs out in block
``expires_at = s + deposit // price - 1``. :meth:`Lease.paid_blocks` says so once, for everyone.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, TypeVar

from agora.protocol.codec import hash_value
from agora.protocol.units import TOKEN

# Statuses, as they appear in the JSON.
OPEN = "open"
FILLED = "filled"
CANCELLED = "cancelled"
WON = "won"
LOST = "lost"
WITHDRAWN = "withdrawn"
CLOSED = "closed"
POSTED = "posted"
COMMITTED = "committed"
PASSED = "passed"
FAILED = "failed"
VOID = "void"

# Why a lease closed.
EXPIRED = "expired"  # the escrow ran out: every paid block was served
BY_TENANT = "tenant"  # the tenant closed it
LIVENESS = "liveness"  # the provider missed its liveness window: slashed
CHALLENGE = "challenge"  # the provider failed or ignored a hardware challenge: slashed


@dataclass(frozen=True)
class MarketParams:
    """The market's rules in numbers. Blocks are the ledger's unit of time; amounts are units.

    They are the same on every network today (the chain presets in ``params.py`` predate the
    market); moving them into ``ChainParams`` later changes no rule.
    """

    min_provider_stake: int = 10 * TOKEN  # below this a provider cannot win bids
    bid_deposit: int = TOKEN // 100  # locked per open bid, refunded when the bid closes
    max_bids_per_order: int = 16  # open bids at once on one order
    max_leases_per_order: int = 8  # providers one order may lease (a Ray cluster)
    liveness_window: int = 10  # blocks a provider with open leases may go without a heartbeat
    challenge_bond: int = TOKEN // 10  # the challenger's stake in a challenge
    challenge_cells: int = 12  # cells of the product the provider must open
    challenge_min_size: int = 16  # matrices are size x size, a power of two in [min, max]
    challenge_max_size: int = 512
    commit_window: int = 10  # blocks after the seed to commit the product's root
    open_window: int = 10  # blocks after the opening seed to open the cells
    slash_ppm: int = 100_000  # share of the remaining stake taken per failure (10%)
    slash_reward_ppm: int = 500_000  # share of that penalty paid to the wronged (50%); rest burned
    retention: int = 1000  # blocks a closed order, bid, lease or challenge stays readable
    max_cpu: int = 4096  # cores
    max_mem: int = 64 * 1024 * 1024  # MiB (64 TiB)
    max_gpu: int = 256


MARKET = MarketParams()


@dataclass(frozen=True)
class Hardware:
    """Resources: what a provider has, what an order needs, or exactly what a bid offers.

    ``mem`` is in MiB. An empty ``gpu_model`` or ``region`` in an order means "any".
    """

    cpu: int
    mem: int
    gpu: int = 0
    gpu_model: str = ""
    region: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "cpu": self.cpu,
            "mem": self.mem,
            "gpu": self.gpu,
            "gpu_model": self.gpu_model,
            "region": self.region,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Hardware:
        return cls(**data)

    @property
    def hash(self) -> str:
        """What an auditor attests: the hash of these attributes."""
        return hash_value(self.to_json())


NO_HARDWARE = Hardware(0, 0)


@dataclass(frozen=True)
class History:
    """A provider's record on the ledger, for tenants to choose by. Never pruned."""

    leases_served: int = 0  # closed without fault (escrow ran out, or the tenant closed)
    leases_failed: int = 0  # closed because the provider failed
    blocks_served: int = 0  # paid blocks the provider kept
    blocks_lost: int = 0  # paid blocks refunded to tenants after a failure
    failures: int = 0  # liveness lapses and failed challenges
    slashed: int = 0  # units taken from its stake, compensation included
    challenges_passed: int = 0
    challenges_failed: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "leases_served": self.leases_served,
            "leases_failed": self.leases_failed,
            "blocks_served": self.blocks_served,
            "blocks_lost": self.blocks_lost,
            "failures": self.failures,
            "slashed": self.slashed,
            "challenges_passed": self.challenges_passed,
            "challenges_failed": self.challenges_failed,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> History:
        return cls(**data)

    @property
    def uptime_ppm(self) -> int | None:
        """Kept paid blocks over all paid blocks of closed leases, in millionths (None: none)."""
        total = self.blocks_served + self.blocks_lost
        return None if total == 0 else self.blocks_served * 1_000_000 // total


@dataclass(frozen=True)
class Provider:
    """A machine (or a fleet behind one key) that rents out resources.

    ``used``, ``rate``, ``open_leases`` and ``open_bids`` sum over its open leases and bids; the
    rules keep them in step so that settlement and checks never scan every lease.
    """

    address: str
    stake: int
    hardware: Hardware  # its capacity
    price_info: str  # the operator's price policy, free text for tenants to read
    url: str  # where its agent serves lease logs and files
    registered_at: int
    last_heartbeat: int = -1  # block of the last heartbeat (-1: none yet)
    alive_at: int = -1  # last heartbeat or newest lease opening: the liveness window runs from it
    active: bool = True  # False once deregistered or slashed below the minimum stake
    attestations: dict[str, str] = field(default_factory=dict)  # auditor -> hardware hash
    used: Hardware = NO_HARDWARE  # resources of its open leases
    rate: int = 0  # units per block its open leases pay
    open_leases: int = 0
    open_bids: int = 0
    history: History = History()

    def attested_by(self, auditor: str) -> bool:
        return self.attestations.get(auditor) == self.hardware.hash

    def to_json(self) -> dict[str, Any]:
        return {
            "address": self.address,
            "stake": self.stake,
            "hardware": self.hardware.to_json(),
            "price_info": self.price_info,
            "url": self.url,
            "registered_at": self.registered_at,
            "last_heartbeat": self.last_heartbeat,
            "alive_at": self.alive_at,
            "active": self.active,
            "attestations": dict(sorted(self.attestations.items())),
            "used": self.used.to_json(),
            "rate": self.rate,
            "open_leases": self.open_leases,
            "open_bids": self.open_bids,
            "history": self.history.to_json(),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Provider:
        return cls(
            **{
                **data,
                "hardware": Hardware.from_json(data["hardware"]),
                "attestations": dict(data["attestations"]),
                "used": Hardware.from_json(data["used"]),
                "history": History.from_json(data["history"]),
            }
        )


@dataclass(frozen=True)
class Order:
    """A tenant's request: resources, the most it pays per block, escrow per lease, how many
    providers it wants. While open it holds ``deposit`` for each lease it still wants."""

    id: int
    tenant: str
    need: Hardware
    max_price: int  # units per block
    deposit: int  # escrow per lease
    count: int  # leases wanted
    auditor: str  # "" or the auditor whose attestation a bidder needs
    created_at: int
    status: str = OPEN  # open | filled | cancelled
    bids: tuple[int, ...] = ()
    leases: tuple[int, ...] = ()
    closed_at: int = -1

    @property
    def escrow(self) -> int:
        """Units the order itself holds (what its future leases will take)."""
        return self.deposit * (self.count - len(self.leases)) if self.status == OPEN else 0

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "tenant": self.tenant,
            "need": self.need.to_json(),
            "max_price": self.max_price,
            "deposit": self.deposit,
            "count": self.count,
            "auditor": self.auditor,
            "created_at": self.created_at,
            "status": self.status,
            "bids": list(self.bids),
            "leases": list(self.leases),
            "closed_at": self.closed_at,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Order:
        return cls(
            **{
                **data,
                "need": Hardware.from_json(data["need"]),
                "bids": tuple(data["bids"]),
                "leases": tuple(data["leases"]),
            }
        )


@dataclass(frozen=True)
class Bid:
    """A provider's offer on an order: a price per block and exactly the hardware it gives."""

    id: int
    order: int
    provider: str
    price: int
    hardware: Hardware
    deposit: int  # held while open
    created_at: int
    status: str = OPEN  # open | won | lost | withdrawn
    closed_at: int = -1

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "order": self.order,
            "provider": self.provider,
            "price": self.price,
            "hardware": self.hardware.to_json(),
            "deposit": self.deposit,
            "created_at": self.created_at,
            "status": self.status,
            "closed_at": self.closed_at,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Bid:
        return cls(**{**data, "hardware": Hardware.from_json(data["hardware"])})


@dataclass(frozen=True)
class Lease:
    """A provider serving a tenant at ``price`` units per block, paid from ``deposit``.

    Paid in every block from ``opened_at`` through ``expires_at`` while open. Once closed,
    ``paid`` is what the provider kept and ``refunded`` what went back to the tenant from the
    escrow (``paid + refunded == deposit``); ``compensation`` came from the provider's stake.
    """

    id: int
    order: int
    bid: int
    tenant: str
    provider: str
    price: int
    hardware: Hardware
    deposit: int  # escrow, top-ups included
    opened_at: int
    expires_at: int  # the last block the escrow pays for
    status: str = OPEN  # open | closed
    challenge: int = 0  # the open challenge on it, 0 for none
    closed_at: int = -1
    close_reason: str = ""  # expired | tenant | liveness | challenge
    paid: int = 0  # set when closed
    refunded: int = 0  # set when closed
    compensation: int = 0  # set when closed after a failure

    def paid_blocks(self, height: int) -> int:
        """Blocks paid for after block ``height`` (for a closed lease: all of them)."""
        if self.status != OPEN:
            return self.paid // self.price
        return max(0, min(height, self.expires_at) - self.opened_at + 1)

    def remaining(self, height: int) -> int:
        """Escrow left after block ``height``."""
        if self.status != OPEN:
            return 0
        return self.deposit - self.price * self.paid_blocks(height)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "order": self.order,
            "bid": self.bid,
            "tenant": self.tenant,
            "provider": self.provider,
            "price": self.price,
            "hardware": self.hardware.to_json(),
            "deposit": self.deposit,
            "opened_at": self.opened_at,
            "expires_at": self.expires_at,
            "status": self.status,
            "challenge": self.challenge,
            "closed_at": self.closed_at,
            "close_reason": self.close_reason,
            "paid": self.paid,
            "refunded": self.refunded,
            "compensation": self.compensation,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Lease:
        return cls(**{**data, "hardware": Hardware.from_json(data["hardware"])})


@dataclass(frozen=True)
class Challenge:
    """A seeded matrix-multiplication check of a lease's provider (see ``market_challenge``).

    ``posted`` -> (seed = hash of block ``posted_at``) -> provider commits ``root`` ->
    ``committed`` -> (opening seed = hash of block ``committed_at``) -> provider opens the cells
    -> ``passed``; ``failed`` if a deadline passes first; ``void`` if the lease closed meanwhile.
    """

    id: int
    lease: int
    provider: str
    challenger: str
    size: int
    bond: int
    posted_at: int
    deadline: int  # the last block in which the next step is accepted
    status: str = POSTED  # posted | committed | passed | failed | void
    seed: str = ""
    root: str = ""
    committed_at: int = -1
    open_seed: str = ""
    closed_at: int = -1

    @property
    def pending(self) -> bool:
        return self.status in (POSTED, COMMITTED)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "lease": self.lease,
            "provider": self.provider,
            "challenger": self.challenger,
            "size": self.size,
            "bond": self.bond,
            "posted_at": self.posted_at,
            "deadline": self.deadline,
            "status": self.status,
            "seed": self.seed,
            "root": self.root,
            "committed_at": self.committed_at,
            "open_seed": self.open_seed,
            "closed_at": self.closed_at,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Challenge:
        return cls(**data)


Record = TypeVar("Record")


def evolve(record: Record, **changes: Any) -> Record:
    """A copy of a frozen record with ``changes``: ``dataclasses.replace`` without re-running
    ``__init__`` (several times faster, which matters when a thousand leases close in one
    block; the records have no ``__post_init__`` to skip). Raises TypeError for a name that is
    not a field."""
    fields = record.__dict__
    unknown = changes.keys() - fields.keys()
    if unknown:
        raise TypeError(f"{type(record).__name__} has no field {sorted(unknown)}")
    new = object.__new__(type(record))
    new.__dict__.update(fields)
    new.__dict__.update(changes)
    return new


Index = dict[int, list[int]]


def index_add(index: Index, key: int, item: int) -> None:
    index.setdefault(key, []).append(item)


def index_remove(index: Index, key: int, item: int) -> None:
    bucket = index.get(key)
    if bucket is not None and item in bucket:
        bucket.remove(item)
        if not bucket:
            del index[key]


def _copy(index: dict[Any, list[Any]]) -> dict[Any, list[Any]]:
    return {key: list(items) for key, items in index.items()}


@dataclass
class MarketState:
    """Every record of the market, plus the height-keyed indices described in the module doc."""

    providers: dict[str, Provider] = field(default_factory=dict)
    orders: dict[int, Order] = field(default_factory=dict)
    bids: dict[int, Bid] = field(default_factory=dict)
    leases: dict[int, Lease] = field(default_factory=dict)
    challenges: dict[int, Challenge] = field(default_factory=dict)
    next_order_id: int = 1
    next_bid_id: int = 1
    next_lease_id: int = 1
    next_challenge_id: int = 1
    # Derived indices (not encoded): height -> ids, and provider -> its open leases.
    expiries: Index = field(default_factory=dict)  # open leases whose escrow ends in that block
    deadlines: Index = field(default_factory=dict)  # pending challenges due in that block
    want_hash: Index = field(default_factory=dict)  # challenges whose seed is that block's hash
    prune: dict[int, list[tuple[str, int]]] = field(default_factory=dict)
    by_provider: dict[str, list[int]] = field(default_factory=dict)  # open lease ids

    def clone(self) -> MarketState:
        """Records are frozen, so the record maps are copied shallowly; index lists are copied
        (appending to a list, not rebuilding a tuple, keeps a busy block linear)."""
        return MarketState(
            providers=dict(self.providers),
            orders=dict(self.orders),
            bids=dict(self.bids),
            leases=dict(self.leases),
            challenges=dict(self.challenges),
            next_order_id=self.next_order_id,
            next_bid_id=self.next_bid_id,
            next_lease_id=self.next_lease_id,
            next_challenge_id=self.next_challenge_id,
            expiries=_copy(self.expiries),
            deadlines=_copy(self.deadlines),
            want_hash=_copy(self.want_hash),
            prune=_copy(self.prune),
            by_provider=_copy(self.by_provider),
        )

    def is_pristine(self) -> bool:
        """Nothing ever happened in the market (the state then leaves it out of its JSON)."""
        return (
            not self.providers
            and not self.orders
            and not self.bids
            and not self.leases
            and not self.challenges
            and self.next_order_id == self.next_bid_id == 1
            and self.next_lease_id == self.next_challenge_id == 1
        )

    def locked(self, height: int) -> int:
        """Units the market holds after block ``height``: stakes, bid deposits, order and lease
        escrow, challenge bonds. Part of the supply (``State.circulating``)."""
        return (
            sum(p.stake for p in self.providers.values())
            + sum(b.deposit for b in self.bids.values() if b.status == OPEN)
            + sum(o.escrow for o in self.orders.values())
            + sum(lease.remaining(height) for lease in self.leases.values())
            + sum(c.bond for c in self.challenges.values() if c.pending)
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "providers": {a: p.to_json() for a, p in sorted(self.providers.items())},
            "orders": {str(k): o.to_json() for k, o in sorted(self.orders.items())},
            "bids": {str(k): b.to_json() for k, b in sorted(self.bids.items())},
            "leases": {str(k): x.to_json() for k, x in sorted(self.leases.items())},
            "challenges": {str(k): c.to_json() for k, c in sorted(self.challenges.items())},
            "next_order_id": self.next_order_id,
            "next_bid_id": self.next_bid_id,
            "next_lease_id": self.next_lease_id,
            "next_challenge_id": self.next_challenge_id,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any], retention: int = MARKET.retention) -> MarketState:
        market = cls(
            providers={a: Provider.from_json(p) for a, p in data["providers"].items()},
            orders={int(k): Order.from_json(o) for k, o in data["orders"].items()},
            bids={int(k): Bid.from_json(b) for k, b in data["bids"].items()},
            leases={int(k): Lease.from_json(x) for k, x in data["leases"].items()},
            challenges={int(k): Challenge.from_json(c) for k, c in data["challenges"].items()},
            next_order_id=data["next_order_id"],
            next_bid_id=data["next_bid_id"],
            next_lease_id=data["next_lease_id"],
            next_challenge_id=data["next_challenge_id"],
        )
        market.rebuild_indices(retention)
        return market

    def rebuild_indices(self, retention: int = MARKET.retention) -> None:
        """Derive the indices from the records (after decoding). Items within one height are in
        id order, which is also the order in which the rules add them."""
        self.expiries, self.deadlines, self.want_hash, self.by_provider = {}, {}, {}, {}
        prune: dict[int, list[tuple[str, int]]] = {}
        for lease_id, lease in sorted(self.leases.items()):
            if lease.status == OPEN:
                index_add(self.expiries, lease.expires_at, lease_id)
                self.by_provider.setdefault(lease.provider, []).append(lease_id)
            else:
                prune.setdefault(lease.closed_at + retention, []).append(("lease", lease_id))
        for challenge_id, challenge in sorted(self.challenges.items()):
            if challenge.pending:
                index_add(self.deadlines, challenge.deadline, challenge_id)
                if challenge.status == POSTED and not challenge.seed:
                    index_add(self.want_hash, challenge.posted_at, challenge_id)
                if challenge.status == COMMITTED and not challenge.open_seed:
                    index_add(self.want_hash, challenge.committed_at, challenge_id)
            else:
                prune.setdefault(challenge.closed_at + retention, []).append(
                    ("challenge", challenge_id)
                )
        for bid_id, bid in sorted(self.bids.items()):
            if bid.status != OPEN:
                prune.setdefault(bid.closed_at + retention, []).append(("bid", bid_id))
        for order_id, order in sorted(self.orders.items()):
            if order.status != OPEN:
                prune.setdefault(order.closed_at + retention, []).append(("order", order_id))
        self.prune = prune
