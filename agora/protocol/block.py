"""Blocks and the one door into the state: ``apply_block``.

A block is a header, its transactions and the producer's signature over the header. Executing it
means: check the header against the state, apply every transaction in order (each checks
everything before it changes anything), run the end-of-block rules (emission, epochs), and compare
the resulting state root with the one the header claims. Time comes from the header, never from a
clock. A block is executed on a copy of the state, so a block that fails leaves the state as it
was.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from agora.protocol import accounts, channels, disputes, market, registry, stake, subnets, weights
from agora.protocol.codec import BLOCK_DOMAIN, hash_value, signing_bytes, verify_signature
from agora.protocol.emission import end_block
from agora.protocol.errors import BadNonce, InvalidBlock, InvalidTransaction, MalformedTransaction
from agora.protocol.market_settle import settle_block
from agora.protocol.params import ChainParams, Hyperparams
from agora.protocol.state import State, state_root
from agora.protocol.transactions import Transaction, check_signature, parse_transaction


@dataclass(frozen=True)
class Header:
    chain_id: str
    height: int
    parent_hash: str
    timestamp: int  # milliseconds since the epoch, as the producer's clock read it
    producer: str
    tx_root: str
    state_root: str

    def to_json(self) -> dict[str, Any]:
        return {
            "chain_id": self.chain_id,
            "height": self.height,
            "parent_hash": self.parent_hash,
            "timestamp": self.timestamp,
            "producer": self.producer,
            "tx_root": self.tx_root,
            "state_root": self.state_root,
        }

    @property
    def hash(self) -> str:
        return hash_value(self.to_json())


@dataclass(frozen=True)
class Block:
    header: Header
    txs: tuple[Transaction, ...]
    signature: str

    @property
    def hash(self) -> str:
        return self.header.hash

    def to_json(self) -> dict[str, Any]:
        return {
            "hash": self.hash,
            "header": self.header.to_json(),
            "txs": [tx.to_json() for tx in self.txs],
            "signature": self.signature,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any], max_tx_bytes: int = 16_384) -> Block:
        """Raises InvalidBlock for any malformed part."""
        try:
            header = Header(**data["header"])
            txs = tuple(parse_transaction(tx, max_tx_bytes) for tx in data["txs"])
            signature = data["signature"]
        except (KeyError, TypeError, InvalidTransaction) as error:
            raise InvalidBlock(f"malformed block: {error}") from None
        return cls(header, txs, signature)


def tx_root(txs: tuple[Transaction, ...] | list[Transaction]) -> str:
    """Commitment to the ordered transactions of a block."""
    return hash_value([tx.hash for tx in txs])


def header_signing_bytes(header: Header) -> bytes:
    return signing_bytes(BLOCK_DOMAIN, header.to_json())


def apply_transaction(state: State, tx: Transaction, block: int) -> None:
    """Check and apply one transaction at height ``block``, or raise and change nothing.

    Order: signature, nonce, then the rule of its kind. Each rule checks everything it needs
    before its first change, so a rejected transaction leaves no trace (not even a used nonce).
    Raises any InvalidTransaction.
    """
    check_signature(state.chain_id, tx)
    expected = state.nonce(tx.sender)
    if tx.nonce != expected:
        raise BadNonce(f"nonce {tx.nonce} is not the sender's next nonce {expected}")
    body, sender = tx.body, tx.sender
    kind = tx.kind
    if kind == "transfer":
        accounts.transfer(state, sender, body["to"], body["amount"])
    elif kind == "create_subnet":
        subnets.create_subnet(state, sender, block)
    elif kind == "set_hyperparams":
        subnets.set_hyperparams(state, sender, body["netuid"], body["changes"])
    elif kind == "register":
        registry.register(state, sender, body["netuid"], body["hotkey"], block)
    elif kind == "serve":
        registry.serve(state, sender, body["netuid"], body["ip"], body["port"], body["protocol"])
    elif kind == "add_stake":
        stake.add_stake(state, sender, body["hotkey"], body["amount"])
    elif kind == "remove_stake":
        stake.remove_stake(state, sender, body["hotkey"], body["amount"], block)
    elif kind == "set_weights":
        weights.set_weights(state, sender, body["netuid"], body["uids"], body["weights"], block)
    elif kind == "commit_weights":
        weights.commit_weights(state, sender, body["netuid"], body["commit_hash"], block)
    elif kind == "reveal_weights":
        weights.reveal_weights(
            state, sender, body["netuid"], body["uids"], body["weights"], body["salt"], block
        )
    elif kind == "channel_open":
        channels.open_channel(
            state, sender, body["payee"], body["signer"], body["amount"], body["timeout"], block
        )
    elif kind == "channel_top_up":
        channels.top_up_channel(state, sender, body["channel"], body["amount"], body["extend"])
    elif kind == "channel_redeem":
        channels.redeem_voucher(state, sender, body["channel"], body["cumulative"], body["voucher"])
    elif kind == "channel_close":
        channels.close_channel(state, sender, body["channel"], block)
    elif kind in market.KINDS:
        market.apply_market_tx(state, kind, sender, body, block)
    elif kind in disputes.KINDS:
        disputes.apply_dispute_tx(state, kind, sender, body, block)
    else:  # parse_transaction admits only known kinds
        raise MalformedTransaction(f"unknown kind {kind!r}")
    state.nonces[sender] = expected + 1


@dataclass(frozen=True)
class Rejected:
    tx: Transaction
    error: InvalidTransaction


def execute(
    state: State, txs: list[Transaction], timestamp: int, *, skip_invalid: bool
) -> tuple[State, list[Transaction], list[Rejected]]:
    """Execute a block body on a copy of ``state``: transactions, then end-of-block rules.

    With ``skip_invalid`` (the producer building a block) an invalid transaction is left out and
    reported; without it (anyone checking a block) the first one raises InvalidBlock.
    The copy's ``last_block_hash`` is still the parent's: the caller sets it once the header
    (which commits to the root) exists.
    """
    new = state.clone()
    height = state.height + 1
    included: list[Transaction] = []
    rejected: list[Rejected] = []
    for index, tx in enumerate(txs):
        try:
            apply_transaction(new, tx, height)
        except InvalidTransaction as error:
            if not skip_invalid:
                raise InvalidBlock(f"transaction {index} ({tx.hash[:12]}…): {error}") from error
            rejected.append(Rejected(tx, error))
            continue
        included.append(tx)
    end_block(new, height)
    settle_block(new, height)  # the compute market: pay leases, expire, slash (market_settle)
    disputes.settle_disputes(new, height)  # uphold (slash) or reject disputes that are due
    stake.release_unbonding(new, height)  # after the verdicts: pay unbonding stake that is due
    new.height = height
    new.timestamp = timestamp
    disputes.record_block_time(new)
    return new, included, rejected


def check_header(state: State, block: Block) -> None:
    """Raises InvalidBlock if the header does not follow ``state``."""
    header = block.header
    if header.chain_id != state.chain_id:
        raise InvalidBlock(f"block is for chain {header.chain_id!r}, this is {state.chain_id!r}")
    if header.height != state.height + 1:
        raise InvalidBlock(f"expected height {state.height + 1}, got {header.height}")
    if header.parent_hash != state.last_block_hash:
        raise InvalidBlock(f"block {header.height} does not extend the current head")
    if header.timestamp < state.timestamp:
        raise InvalidBlock("block timestamp goes backwards")
    if header.producer != state.producer:
        raise InvalidBlock("block is not signed by this chain's producer")
    if not verify_signature(header.producer, header_signing_bytes(header), block.signature):
        raise InvalidBlock(f"block {header.height}: producer signature does not verify")
    if len(block.txs) > state.params.max_txs_per_block:
        raise InvalidBlock(
            f"block has {len(block.txs)} transactions; the limit is "
            f"{state.params.max_txs_per_block}"
        )
    if tx_root(block.txs) != header.tx_root:
        raise InvalidBlock(f"block {header.height}: tx_root does not match its transactions")


def apply_block(state: State, block: Block) -> State:
    """The one door: the state after ``block``, or InvalidBlock and ``state`` untouched."""
    check_header(state, block)
    new, _, _ = execute(state, list(block.txs), block.header.timestamp, skip_invalid=False)
    root = state_root(new)
    if root != block.header.state_root:
        raise InvalidBlock(
            f"block {block.header.height}: state root {root[:16]}… differs from the header's "
            f"{block.header.state_root[:16]}…; the producer executed different rules or lied"
        )
    new.last_block_hash = block.hash
    return new


def genesis_state(
    chain_id: str,
    producer: str,
    balances: dict[str, int],
    params: ChainParams,
    hyperparams: Hyperparams,
    timestamp: int = 0,
) -> State:
    """State at height 0. Genesis balances count as issued. The genesis hash commits to it all."""
    state = State(
        chain_id=chain_id,
        params=params,
        default_hyperparams=hyperparams,
        producer=producer,
        timestamp=timestamp,
        balances={address: units for address, units in balances.items() if units > 0},
        total_issuance=sum(balances.values()),
    )
    state.last_block_hash = hash_value({"genesis": state.to_json()})
    return state
