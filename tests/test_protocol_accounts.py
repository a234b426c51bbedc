"""Transfers, nonces, signatures, and the block door: a rejected transaction changes nothing."""

from __future__ import annotations

import dataclasses

import pytest

from agora.crypto.signing import seal_block
from agora.protocol.block import Block, apply_block, execute
from agora.protocol.codec import EncodingError, canonical_bytes
from agora.protocol.errors import (
    BadNonce,
    BadSignature,
    InsufficientBalance,
    InvalidBlock,
    MalformedTransaction,
)
from agora.protocol.state import state_root
from agora.protocol.transactions import parse_transaction
from agora.protocol.units import TOKEN, format_amount, parse_amount
from tests.protocol_kit import PRODUCER, Chain, key

ALICE, BOB = key("alice"), key("bob")


def test_transfer_moves_exact_units_and_bumps_nonce() -> None:
    chain = Chain.new()
    chain.do(ALICE, "transfer", to=BOB.address, amount=3 * TOKEN + 7)
    assert chain.state.balance(ALICE.address) == 9_997 * TOKEN - 7
    assert chain.state.balance(BOB.address) == 10_003 * TOKEN + 7
    assert chain.state.nonce(ALICE.address) == 1


@pytest.mark.parametrize(
    ("amount", "error"),
    [(0, MalformedTransaction), (10_000 * TOKEN + 1, InsufficientBalance)],
)
def test_bad_transfer_is_rejected_and_changes_nothing(amount: int, error: type) -> None:
    chain = Chain.new()
    before = state_root(chain.state)
    tx = chain.tx(ALICE, "transfer", to=BOB.address, amount=amount)
    new, included, rejected = execute(chain.state, [tx], 1, skip_invalid=True)
    assert included == [] and isinstance(rejected[0].error, error)
    assert new.balance(ALICE.address) == 10_000 * TOKEN
    assert new.nonce(ALICE.address) == 0
    assert state_root(chain.state) == before


def test_replayed_transaction_is_a_bad_nonce() -> None:
    chain = Chain.new()
    tx = chain.tx(ALICE, "transfer", to=BOB.address, amount=1)
    chain.block([tx])
    chain.block([tx])
    assert isinstance(chain.last_rejected[0].error, BadNonce)
    assert chain.state.balance(BOB.address) == 10_000 * TOKEN + 1


def test_signature_for_another_chain_or_body_is_rejected() -> None:
    chain = Chain.new()
    tx = chain.tx(ALICE, "transfer", to=BOB.address, amount=1)
    forged = dataclasses.replace(tx, body={"to": BOB.address, "amount": 2})
    chain.block([forged])
    assert isinstance(chain.last_rejected[0].error, BadSignature)
    other = Chain.new()
    other.state.chain_id = "another-chain"
    other.block([tx])
    assert isinstance(other.last_rejected[0].error, BadSignature)


def test_empty_signature_is_rejected_at_parse() -> None:
    tx = Chain.new().tx(ALICE, "transfer", to=BOB.address, amount=1).to_json()
    tx["signature"] = ""
    with pytest.raises(BadSignature):
        parse_transaction(tx)


@pytest.mark.parametrize(
    "mutate",
    [
        lambda t: t.pop("nonce"),
        lambda t: t.update(kind="mint"),
        lambda t: t.update(nonce=-1),
        lambda t: t.update(nonce=True),
        lambda t: t["body"].update(amount=1.5),
        lambda t: t["body"].update(amount="1"),
        lambda t: t["body"].update(extra=1),
        lambda t: t["body"].update(to="ABC"),
        lambda t: t.update(sender="00" * 31),
    ],
)
def test_malformed_transactions_are_refused(mutate) -> None:  # type: ignore[no-untyped-def]
    tx = Chain.new().tx(ALICE, "transfer", to=BOB.address, amount=1).to_json()
    tx["body"] = dict(tx["body"])
    mutate(tx)
    with pytest.raises(MalformedTransaction):
        parse_transaction(tx)


def test_oversized_transaction_is_refused() -> None:
    tx = Chain.new().tx(ALICE, "set_hyperparams", netuid=1, changes={"x": "y" * 20_000})
    with pytest.raises(MalformedTransaction, match="limit"):
        parse_transaction(tx.to_json())


def test_a_block_with_an_invalid_transaction_is_refused_whole() -> None:
    chain = Chain.new()
    good = chain.tx(ALICE, "transfer", to=BOB.address, amount=1)
    bad = chain.tx(BOB, "transfer", to=ALICE.address, amount=10**18)
    new, _, _ = execute(chain.state, [good], 1000, skip_invalid=True)
    sealed = seal_block(PRODUCER, chain.state, new, [good, bad], 1000)
    before = state_root(chain.state)
    with pytest.raises(InvalidBlock, match="transaction 1"):
        apply_block(chain.state, sealed)
    assert state_root(chain.state) == before


def test_blocks_with_wrong_root_height_parent_or_signer_are_refused() -> None:
    chain = Chain.new()
    new, txs, _ = execute(chain.state, [], 1000, skip_invalid=True)
    sealed = seal_block(PRODUCER, chain.state, new, txs, 1000)
    wrong_root = dataclasses.replace(sealed.header, state_root="0" * 64)
    cases = [
        Block(wrong_root, sealed.txs, PRODUCER.sign(b"x")),  # signature no longer matches
        Block(sealed.header, sealed.txs, "00" * 64),
        seal_block(ALICE, chain.state, new, txs, 1000),
    ]
    for block in cases:
        with pytest.raises(InvalidBlock):
            apply_block(chain.state, block)
    chain.state = apply_block(chain.state, sealed)
    with pytest.raises(InvalidBlock, match="height"):
        apply_block(chain.state, sealed)


def test_a_lying_producer_is_caught_by_the_state_root() -> None:
    """A producer who signs a header with a root of other rules is refused."""
    from agora.crypto.signing import Header, header_signing_bytes

    chain = Chain.new()
    tx = chain.tx(ALICE, "transfer", to=BOB.address, amount=5)
    honest, included, _ = execute(chain.state, [tx], 1000, skip_invalid=True)
    honest.balances[BOB.address] += 1_000  # the producer pays itself a little extra
    sealed = seal_block(PRODUCER, chain.state, honest, included, 1000)
    with pytest.raises(InvalidBlock, match="state root"):
        apply_block(chain.state, sealed)
    assert Header and header_signing_bytes  # imported for readers: the header is what is signed


def test_canonical_bytes_refuse_floats_and_sort_keys() -> None:
    assert canonical_bytes({"b": 1, "a": [True, None, "x"]}) == b'{"a":[true,null,"x"],"b":1}'
    with pytest.raises(EncodingError):
        canonical_bytes({"a": 0.1})
    with pytest.raises(EncodingError):
        canonical_bytes({1: 2})


def test_amounts_parse_exactly() -> None:
    assert parse_amount("1.5") == 1_500_000_000
    assert parse_amount("0.000000001") == 1
    assert format_amount(1_500_000_000) == "1.5"
    assert format_amount(10 * TOKEN) == "10"
    for bad in ("abc", "-1", "0.0000000001", "nan"):
        with pytest.raises(ValueError):
            parse_amount(bad)
