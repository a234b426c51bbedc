"""Request and response shapes of the node's HTTP API, shared by the server and the client.

Amounts are integers in units (10^9 per token). Epoch figures are fixed-point integers with
``one`` meaning 1.0 (Yuma's scale), each repeated as a float under ``<name>_float`` for reading.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field


class ErrorBody(BaseModel):
    code: str = Field(description="Machine-readable, e.g. `bad_nonce`, `insufficient_balance`.")
    message: str = Field(description="What went wrong and what to do about it.")


class ErrorResponse(BaseModel):
    error: ErrorBody


class TransactionIn(BaseModel):
    """A signed transaction (see `agora.protocol.transactions`)."""

    kind: str = Field(description="transfer, create_subnet, register, add_stake, set_weights ...")
    sender: str = Field(description="Address (64 hex) that signs and pays.")
    nonce: int = Field(description="The sender's next nonce: `pending_nonce` of its account.")
    body: dict[str, Any] = Field(description="The fields of the kind, e.g. {to, amount}.")
    signature: str = Field(description="128 hex: Ed25519 over the canonical unsigned payload.")


class TxInfo(BaseModel):
    hash: str
    sender: str
    nonce: int
    kind: str
    status: Literal["pending", "included", "rejected"]
    height: int | None = Field(None, description="The block that included it.")
    index: int | None = Field(None, description="Its position in that block.")
    code: str | None = Field(None, description="Why it was rejected.")
    message: str | None = None


class Status(BaseModel):
    chain_id: str
    role: Literal["producer", "follower"]
    upstream: str | None = Field(None, description="The node a follower downloads blocks from.")
    height: int
    head_hash: str
    head_timestamp: int = Field(description="Milliseconds, from the head block's header.")
    block_time: float = Field(description="Seconds between blocks (the producer's setting).")
    producer: str
    genesis_hash: str
    total_issuance: int
    total_burned: int
    supply_cap: int
    block_reward: int = Field(description="Units the next block emits.")
    next_halving_at: int | None = Field(
        None, description="Issuance (units) at which the block reward next halves."
    )
    subnets: int
    mempool_size: int


class Stake(BaseModel):
    hotkey: str
    coldkey: str
    amount: int


class UnbondingEntry(BaseModel):
    id: int
    hotkey: str
    coldkey: str
    amount: int
    created_at: int = Field(description="The block the stake was removed in.")
    release_at: int = Field(
        description="The block at whose end it is paid to the coldkey (later while the hotkey "
        "is accused in an open dispute). Slashable until then."
    )


class Registration(BaseModel):
    netuid: int
    uid: int


class Account(BaseModel):
    address: str
    balance: int
    nonce: int = Field(description="Nonce of the next transaction once pending ones are included.")
    pending_nonce: int = Field(description="The nonce to sign the next transaction with.")
    pending: int = Field(description="Transactions of this sender in the mempool.")
    stakes: list[Stake] = Field(description="Stake this address holds, as coldkey.")
    total_staked: int
    hotkey_owner: str | None = Field(None, description="The coldkey owning it, as a hotkey.")
    stake_behind: int = Field(description="All stake behind this address as a hotkey.")
    stakers: list[Stake] = Field(description="Who stakes behind this address as a hotkey.")
    unbonding: list[UnbondingEntry] = Field(
        default_factory=list, description="Stake this address removed that is not paid yet."
    )
    total_unbonding: int = 0
    unbonding_behind: int = Field(
        0, description="Stake leaving this address as a hotkey: still slashable, not counted."
    )
    registrations: list[Registration]
    owned_subnets: list[int]


class BlockSummary(BaseModel):
    height: int
    hash: str
    parent_hash: str
    timestamp: int
    tx_count: int
    state_root: str


class BlockList(BaseModel):
    head: int
    blocks: list[BlockSummary]


class HeaderOut(BaseModel):
    chain_id: str
    height: int
    parent_hash: str
    timestamp: int
    producer: str
    tx_root: str
    state_root: str


class BlockOut(BaseModel):
    hash: str
    header: HeaderOut
    txs: list[dict[str, Any]]
    signature: str


class Genesis(BaseModel):
    hash: str = Field(description="The chain's name: a follower checks it with --genesis-hash.")
    state: dict[str, Any]


class SubnetSummary(BaseModel):
    netuid: int
    owner: str
    neurons: int
    max_uids: int
    tempo: int
    locked: int
    pending_emission: int
    registration_burn: int = Field(description="Units a registration in the next block burns.")


class Subnet(SubnetSummary):
    created_at: int
    last_epoch: int
    next_epoch_block: int
    hyperparams: dict[str, int | bool]


class SubnetList(BaseModel):
    subnets: list[SubnetSummary]


class Endpoint(BaseModel):
    ip: str
    port: int
    protocol: str


class NeuronInfo(BaseModel):
    uid: int
    hotkey: str
    coldkey: str
    stake: int
    endpoint: Endpoint | None
    rank: int
    trust: int
    consensus: int
    incentive: int
    dividends: int
    validator_trust: int
    rank_float: float
    trust_float: float
    consensus_float: float
    incentive_float: float
    dividends_float: float
    validator_trust_float: float
    validator_permit: bool
    emission: int = Field(description="Units earned in the last epoch.")
    registered_at: int
    last_update: int
    slashed: bool = Field(False, description="Upheld dispute: no incentive until it re-registers.")


class UidEmission(BaseModel):
    uid: int
    hotkey: str
    emission: int = Field(description="Units the uid earned in this epoch.")


class EpochEmission(BaseModel):
    block: int = Field(description="The block whose epoch paid this.")
    total: int
    uids: list[UidEmission]


class EmissionHistory(BaseModel):
    netuid: int
    block: int
    tempo: int
    epochs: list[EpochEmission] = Field(description="Oldest first.")


class Metagraph(BaseModel):
    netuid: int
    block: int
    one: int = Field(description="The fixed-point value meaning 1.0.")
    n: int
    neurons: list[NeuronInfo]
    weights: list[list[tuple[int, int]]] = Field(
        description="Per uid, the sparse row [[target uid, u16 weight], ...]."
    )
    bonds: list[list[tuple[int, int]]] = Field(
        description="Per uid, the sparse row [[target uid, fixed-point bond], ...]."
    )


class Channel(BaseModel):
    """A payment channel (rules in `agora.protocol.channels`)."""

    id: int
    payer: str = Field(description="Who locked the deposit and gets back what is not redeemed.")
    payee: str = Field(description="Who redeems vouchers.")
    signer: str = Field(description="Whose signature a voucher needs.")
    deposit: int = Field(description="Units ever locked in it (once closed: what was redeemed).")
    redeemed: int = Field(description="Units paid out to the payee so far.")
    remaining: int = Field(description="deposit - redeemed: what vouchers can still pay.")
    opened_at: int
    expires_at: int = Field(description="From this block on, the payer may close it.")
    closed: bool


class ChannelList(BaseModel):
    address: str
    height: int = Field(description="The block the list was read at.")
    channels: list[Channel] = Field(description="Oldest first.")


# -- the compute market (rules in `agora.protocol.market`) ----------------------------------------


class MarketHardware(BaseModel):
    cpu: int = Field(description="Cores.")
    mem: int = Field(description="MiB.")
    gpu: int = 0
    gpu_model: str = Field("", description="Empty in an order: any model.")
    region: str = Field("", description="Empty in an order: any region.")


class MarketHistory(BaseModel):
    leases_served: int
    leases_failed: int
    blocks_served: int
    blocks_lost: int = Field(description="Paid blocks refunded to tenants after failures.")
    failures: int
    slashed: int = Field(description="Units taken from the stake, compensation included.")
    challenges_passed: int
    challenges_failed: int
    uptime_ppm: int | None = Field(
        None, description="blocks_served / (blocks_served + blocks_lost) in millionths."
    )


class MarketProvider(BaseModel):
    address: str
    stake: int
    hardware: MarketHardware = Field(description="Its capacity.")
    used: MarketHardware = Field(description="What its open leases use.")
    price_info: str
    url: str = Field(description="Where its agent serves lease logs and files.")
    registered_at: int
    last_heartbeat: int
    alive_at: int
    alive_until: int = Field(description="The last block it may reach without a heartbeat.")
    active: bool
    attestations: dict[str, str] = Field(description="auditor -> attested attributes hash.")
    attributes_hash: str = Field(description="Hash of its current hardware attributes.")
    rate: int = Field(description="Units per block its open leases pay it.")
    open_leases: int
    open_bids: int
    history: MarketHistory


class MarketProviderList(BaseModel):
    height: int
    providers: list[MarketProvider]


class MarketBid(BaseModel):
    id: int
    order: int
    provider: str
    price: int = Field(description="Units per block.")
    hardware: MarketHardware = Field(description="Exactly what the provider gives.")
    deposit: int
    created_at: int
    status: Literal["open", "won", "lost", "withdrawn"]
    closed_at: int
    provider_info: MarketProvider | None = Field(
        None, description="The bidder's record (stake, history, uptime), to choose by."
    )


class MarketOrder(BaseModel):
    id: int
    tenant: str
    need: MarketHardware
    max_price: int = Field(description="Units per block.")
    deposit: int = Field(description="Escrow per lease.")
    count: int = Field(description="Leases (providers) wanted.")
    auditor: str
    created_at: int
    status: Literal["open", "filled", "cancelled"]
    bids: list[int]
    leases: list[int]
    closed_at: int
    matching_providers: int = Field(
        description="Active providers whose free hardware could serve it right now."
    )


class MarketOrderDetail(MarketOrder):
    bid_details: list[MarketBid] = Field(description="Its bids, cheapest first.")


class MarketOrderList(BaseModel):
    height: int
    orders: list[MarketOrder]


class MarketLease(BaseModel):
    id: int
    order: int
    bid: int
    tenant: str
    provider: str
    price: int = Field(description="Units per block.")
    hardware: MarketHardware
    deposit: int = Field(description="Escrow, top-ups included.")
    opened_at: int
    expires_at: int = Field(description="The last block the escrow pays for.")
    status: Literal["open", "closed"]
    challenge: int
    closed_at: int
    close_reason: str
    paid: int = Field(description="Units paid to the provider so far (final once closed).")
    refunded: int
    compensation: int
    remaining: int = Field(description="Escrow left after the current block.")
    paid_blocks: int
    height: int = Field(description="The block these figures are read at.")
    provider_url: str = Field(description="The provider agent's endpoint.")


class MarketLeaseList(BaseModel):
    height: int
    leases: list[MarketLease]


class MarketChallenge(BaseModel):
    id: int
    lease: int
    provider: str
    challenger: str
    size: int
    bond: int
    posted_at: int
    deadline: int
    status: Literal["posted", "committed", "passed", "failed", "void"]
    seed: str
    root: str
    committed_at: int
    open_seed: str
    closed_at: int
    cells: int = Field(description="Cells the provider must open.")


class MarketChallengeList(BaseModel):
    height: int
    challenges: list[MarketChallenge]


class MarketParams(BaseModel):
    params: dict[str, int]
    block_time: float = Field(description="Seconds between blocks: converts per-hour prices.")
    height: int


# -- spot checks and disputes (routes in api_disputes.py) ---------------------------------------


class DisputeVote(BaseModel):
    hotkey: str
    guilty: bool
    stake: int = Field(description="Its stake when it voted.")
    block: int
    stake_now: int = Field(0, description="Its stake now, which is what resolution counts.")
    counts: bool = Field(True, description="False once it holds no validator permit.")


class DisputePayout(BaseModel):
    hotkey: str
    amount: int


class DisputeTally(BaseModel):
    guilty: int = Field(description="Stake now behind guilty votes of current permit holders.")
    not_guilty: int
    total: int = Field(description="Stake of every permit holder but the accused.")
    needed: int = Field(description="A side wins with more than this: total // 2.")


class Dispute(BaseModel):
    id: int
    netuid: int
    status: Literal["open", "upheld", "rejected"]
    miner: str
    miner_coldkey: str
    miner_uid: int
    miner_registered_at: int
    receipt_hash: str
    receipt: dict[str, Any] = Field(description="The miner's signed receipt, as submitted.")
    evidence: dict[str, Any]
    challenger: str
    deposit: int
    receipt_block: int = Field(description="The receipt's deciding block.")
    opened_at: int
    deadline: int = Field(description="The last block in which votes count.")
    votes: list[DisputeVote]
    resolved_at: int = Field(description="-1 while open.")
    reason: str
    slashed: int = Field(description="Units taken from the miner's stake.")
    burned: int = Field(description="Of which burned (the rest is in payouts).")
    payouts: list[DisputePayout]
    deposit_to: str = Field(description="Who got the deposit: the challenger or the miner.")
    tally: DisputeTally | None = Field(None, description="While open: where the vote stands.")


class DisputeList(BaseModel):
    height: int
    disputes: list[Dispute] = Field(description="Newest first.")


class AuditMiner(BaseModel):
    uid: int
    hotkey: str
    stake: int
    slash: int = Field(description="S: what one upheld dispute takes from it.")
    required_rate_ppm: int | None = Field(description="The p it needs; null: none is enough.")
    holds: bool = Field(description="Whether the subnet's audit_rate_ppm deters it.")
    validator_permit: bool = False


class AuditReport(BaseModel):
    netuid: int
    height: int
    params: dict[str, int] = Field(description="The six audit and dispute hyperparameters.")
    economics: dict[str, int] = Field(
        description="Per answer: reward R, honest_cost C, cheat_cost c, detection_ppm d."
    )
    condition: str
    min_stake: int | None = Field(description="The least stake a miner needs to be deterred.")
    miners: list[AuditMiner]
    deterred: int = Field(description="Miners for which the condition holds.")


class BlockAfter(BaseModel):
    height: int
    hash: str
    timestamp: int
