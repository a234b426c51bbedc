"""RFC 6962 Merkle trees: known answers, the reference test vectors, and properties."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agora.crypto.merkle import (
    EMPTY_ROOT,
    leaf_hash,
    merkle_proof,
    merkle_root,
    node_hash,
    verify_proof,
)


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


# -- known answers, worked out by hand from the RFC's definition ---------------------------------


def test_empty_tree_root_is_sha256_of_nothing() -> None:
    expected = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    assert merkle_root([]) == EMPTY_ROOT == expected


def test_one_leaf_root_is_its_leaf_hash() -> None:
    assert merkle_root([b"a"]) == sha256(b"\x00a").hex()


def test_two_leaves() -> None:
    expected = sha256(b"\x01" + sha256(b"\x00a") + sha256(b"\x00b"))
    assert merkle_root([b"a", b"b"]) == expected.hex()


def test_three_leaves_carry_the_last_one_up_without_duplicating_it() -> None:
    ab = sha256(b"\x01" + sha256(b"\x00a") + sha256(b"\x00b"))
    expected = sha256(b"\x01" + ab + sha256(b"\x00c"))
    assert merkle_root([b"a", b"b", b"c"]) == expected.hex()
    # Bitcoin's tree would pair c with itself, making [a, b, c] and [a, b, c, c] collide.
    assert merkle_root([b"a", b"b", b"c"]) != merkle_root([b"a", b"b", b"c", b"c"])


def test_a_leaf_cannot_pose_as_an_inner_node() -> None:
    inner = leaf_hash(b"a") + leaf_hash(b"b")
    assert merkle_root([inner]) != merkle_root([b"a", b"b"])
    assert node_hash(leaf_hash(b"a"), leaf_hash(b"b")).hex() == merkle_root([b"a", b"b"])


def test_proofs_of_three_leaves_by_hand() -> None:
    leaves = [b"a", b"b", b"c"]
    a, b, c = (sha256(b"\x00" + x) for x in leaves)
    ab = sha256(b"\x01" + a + b)
    assert merkle_proof(leaves, 0) == [b.hex(), c.hex()]
    assert merkle_proof(leaves, 1) == [a.hex(), c.hex()]
    assert merkle_proof(leaves, 2) == [ab.hex()]
    assert merkle_proof([b"a"], 0) == []


# -- the Certificate Transparency reference vectors ---------------------------------------------
# From the RFC 6962 reference implementation's tests (google/certificate-transparency,
# merkle_tree_test.cc; the same vectors are in transparency-dev/merkle). Leaf indexes there are
# 1-based; they are 0-based here.

CT_LEAVES = [
    bytes.fromhex(h)
    for h in [
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    ]
]
CT_ROOTS = [
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]
CT_INCLUSION = [
    (
        0,
        8,
        [
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        5,
        8,
        [
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (2, 3, ["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"]),
    (
        1,
        5,
        [
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
]


@pytest.mark.parametrize("size", range(len(CT_ROOTS)))
def test_reference_roots(size: int) -> None:
    assert merkle_root(CT_LEAVES[:size]) == CT_ROOTS[size]


@pytest.mark.parametrize(("index", "size", "proof"), CT_INCLUSION)
def test_reference_inclusion_proofs(index: int, size: int, proof: list[str]) -> None:
    assert merkle_proof(CT_LEAVES[:size], index) == proof
    assert verify_proof(CT_ROOTS[size], CT_LEAVES[index], index, size, proof)


# -- the level-by-level construction equals the RFC's recursive definition ----------------------


def rfc_mth(leaves: list[bytes]) -> bytes:
    """MTH exactly as RFC 6962 section 2.1 writes it."""
    n = len(leaves)
    if n == 0:
        return sha256(b"")
    if n == 1:
        return sha256(b"\x00" + leaves[0])
    k = 1
    while k * 2 < n:
        k *= 2
    return sha256(b"\x01" + rfc_mth(leaves[:k]) + rfc_mth(leaves[k:]))


def rfc_path(m: int, leaves: list[bytes]) -> list[bytes]:
    """PATH(m, D[n]) exactly as RFC 6962 section 2.1.1 writes it."""
    n = len(leaves)
    if n == 1:
        return []
    k = 1
    while k * 2 < n:
        k *= 2
    if m < k:
        return [*rfc_path(m, leaves[:k]), rfc_mth(leaves[k:])]
    return [*rfc_path(m - k, leaves[k:]), rfc_mth(leaves[:k])]


leaf_lists = st.lists(st.binary(max_size=8), min_size=1, max_size=40)


@given(st.lists(st.binary(max_size=8), max_size=70))
def test_root_matches_the_rfc_definition(leaves: list[bytes]) -> None:
    assert merkle_root(leaves) == rfc_mth(leaves).hex()


@given(leaf_lists, st.data())
def test_proof_matches_the_rfc_definition(leaves: list[bytes], data: st.DataObject) -> None:
    index = data.draw(st.integers(0, len(leaves) - 1))
    assert merkle_proof(leaves, index) == [h.hex() for h in rfc_path(index, leaves)]


# -- properties --------------------------------------------------------------------------------


@given(leaf_lists)
def test_every_proof_verifies(leaves: list[bytes]) -> None:
    root = merkle_root(leaves)
    for index, leaf in enumerate(leaves):
        assert verify_proof(root, leaf, index, len(leaves), merkle_proof(leaves, index))


@given(leaf_lists, st.data())
def test_a_changed_leaf_fails(leaves: list[bytes], data: st.DataObject) -> None:
    index = data.draw(st.integers(0, len(leaves) - 1))
    proof = merkle_proof(leaves, index)
    other = data.draw(st.binary(max_size=8).filter(lambda b: b != leaves[index]))
    assert not verify_proof(merkle_root(leaves), other, index, len(leaves), proof)


@given(leaf_lists, st.data())
def test_a_wrong_index_fails(leaves: list[bytes], data: st.DataObject) -> None:
    index = data.draw(st.integers(0, len(leaves) - 1))
    proof = merkle_proof(leaves, index)
    wrong = data.draw(st.integers(-3, len(leaves) + 3).filter(lambda i: i != index))
    # A different position may legitimately hold an equal leaf; only distinct leaves must fail.
    if 0 <= wrong < len(leaves) and leaves[wrong] == leaves[index]:
        return
    assert not verify_proof(merkle_root(leaves), leaves[index], wrong, len(leaves), proof)


@given(leaf_lists, st.data())
def test_a_flipped_proof_bit_fails(leaves: list[bytes], data: st.DataObject) -> None:
    if len(leaves) < 2:
        return
    index = data.draw(st.integers(0, len(leaves) - 1))
    proof = merkle_proof(leaves, index)
    position = data.draw(st.integers(0, len(proof) - 1))
    bit = data.draw(st.integers(0, 255))
    raw = bytearray(bytes.fromhex(proof[position]))
    raw[bit // 8] ^= 1 << (bit % 8)
    tampered = [*proof[:position], raw.hex(), *proof[position + 1 :]]
    assert not verify_proof(merkle_root(leaves), leaves[index], index, len(leaves), tampered)


@given(leaf_lists, st.data())
def test_a_proof_of_the_wrong_length_fails(leaves: list[bytes], data: st.DataObject) -> None:
    index = data.draw(st.integers(0, len(leaves) - 1))
    root, n, leaf = merkle_root(leaves), len(leaves), leaves[index]
    proof = merkle_proof(leaves, index)
    assert not verify_proof(root, leaf, index, n, [*proof, "00" * 32])
    if proof:
        assert not verify_proof(root, leaf, index, n, proof[:-1])


def test_the_tree_size_must_come_with_the_root() -> None:
    # RFC 6962 proofs do not pin the size on their own: leaf 0's proof in a 4-leaf tree also
    # checks out as leaf 0 of a 3-leaf tree. Callers take n_leaves from the same signed header
    # as the root; this test records the limitation so nobody relies on the opposite.
    leaves = [b"a", b"b", b"c", b"d"]
    proof = merkle_proof(leaves, 0)
    assert verify_proof(merkle_root(leaves), b"a", 0, 3, proof)


def test_malformed_input_is_not_a_proof_and_never_raises() -> None:
    leaves = [b"a", b"b", b"c"]
    root, proof = merkle_root(leaves), merkle_proof(leaves, 0)
    assert verify_proof(root, b"a", 0, 3, proof)
    assert not verify_proof(root.upper(), b"a", 0, 3, proof)
    assert not verify_proof(root[:-2], b"a", 0, 3, proof)
    assert not verify_proof("zz" * 32, b"a", 0, 3, proof)
    assert not verify_proof(root, b"a", 0, 3, ["not hex", proof[1]])
    assert not verify_proof(root, b"a", 0, 3, [proof[0][:-2], proof[1]])
    assert not verify_proof(root, b"a", 0, 0, [])
    assert not verify_proof(root, b"a", -1, 3, proof)
    assert not verify_proof(root, b"a", 3, 3, proof)
    assert not verify_proof(EMPTY_ROOT, b"", 0, 0, [])


def test_proof_index_out_of_range() -> None:
    with pytest.raises(IndexError):
        merkle_proof([], 0)
    with pytest.raises(IndexError):
        merkle_proof([b"a"], 1)
    with pytest.raises(IndexError):
        merkle_proof([b"a"], -1)
