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
