"""Binary Merkle trees over byte leaves, as RFC 6962 (Certificate Transparency) defines them.

Hashes are SHA-256 with domain separation, so that a leaf can never be passed off as an inner
node (the second-preimage attack on naive trees)::

    leaf_hash(d)  = SHA-256(0x00 || d)
    node_hash(l, r) = SHA-256(0x01 || l || r)

The tree hash of ``n`` leaves is::

    MTH([])     = SHA-256("")
    MTH([d0])   = leaf_hash(d0)
    MTH(D[0:n]) = node_hash(MTH(D[0:k]), MTH(D[k:n]))   k = the largest power of two < n

With an odd number of nodes on a level the last one is carried up unchanged; it is never paired
with a copy of itself. Duplicating it is the Bitcoin bug (CVE-2012-2459): the leaf lists
``[a, b, c]`` and ``[a, b, c, c]`` then share a root, so a block can be mutated without changing
its Merkle root.

Roots and proof elements travel as lowercase hex strings, like every other hash in Agora. A proof
is the RFC 6962 audit path: sibling hashes from the leaf up to the root.

The module lives in the protocol layer because the ledger's rules verify proofs (the compute
market's hardware challenges, :mod:`agora.protocol.market_challenge`); ``agora.crypto.merkle``
re-exports it. For many proofs over one large tree, build the levels once with
:func:`merkle_levels` and read each path with :func:`proof_from_levels`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from agora.protocol.codec import is_hex

__all__ = [
    "EMPTY_ROOT",
    "leaf_hash",
    "merkle_levels",
    "merkle_proof",
    "merkle_root",
    "node_hash",
    "proof_from_levels",
    "verify_proof",
]

_LEAF_PREFIX = b"\x00"
_NODE_PREFIX = b"\x01"

EMPTY_ROOT = hashlib.sha256(b"").hexdigest()
"""Root of the tree with no leaves: SHA-256 of the empty string, as RFC 6962 defines it."""


def leaf_hash(leaf: bytes) -> bytes:
    """SHA-256 of ``0x00 || leaf``."""
    return hashlib.sha256(_LEAF_PREFIX + leaf).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """SHA-256 of ``0x01 || left || right``."""
    return hashlib.sha256(_NODE_PREFIX + left + right).digest()


def _next_level(level: list[bytes]) -> list[bytes]:
    """Pair neighbours; an odd last node moves up as it is (no duplication)."""
    paired = [node_hash(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
    if len(level) % 2:
        paired.append(level[-1])
    return paired


def merkle_root(leaves: Sequence[bytes]) -> str:
    """Hex root of the RFC 6962 tree over ``leaves``; :data:`EMPTY_ROOT` when there are none.

    Built level by level, carrying an unpaired node up unchanged, which yields the same tree as
    the RFC's split at the largest power of two (the tests check both agree).
    """
    if not leaves:
        return EMPTY_ROOT
    level = [leaf_hash(leaf) for leaf in leaves]
    while len(level) > 1:
        level = _next_level(level)
    return level[0].hex()


def merkle_proof(leaves: Sequence[bytes], index: int) -> list[str]:
    """The audit path of leaf ``index``: hex sibling hashes, from the leaf's level upwards.

    Raises:
        IndexError: ``index`` is not in ``range(len(leaves))`` (the empty tree has no proofs).
    """
    if not 0 <= index < len(leaves):
        raise IndexError(f"leaf index {index} is out of range for a tree of {len(leaves)} leaves")
    level = [leaf_hash(leaf) for leaf in leaves]
    proof: list[str] = []
    position = index
    while len(level) > 1:
        sibling = position ^ 1
        if sibling < len(level):  # the last node of an odd level has no sibling and moves up
            proof.append(level[sibling].hex())
        position //= 2
        level = _next_level(level)
    return proof


def merkle_levels(leaves: Sequence[bytes]) -> list[list[bytes]]:
    """Every level of the tree, leaf hashes first and the root's level (one node) last.

    Raises:
        ValueError: there are no leaves (the empty tree has no levels to prove anything in).
    """
    if not leaves:
        raise ValueError("a tree with no leaves has no levels")
    levels = [[leaf_hash(leaf) for leaf in leaves]]
    while len(levels[-1]) > 1:
        levels.append(_next_level(levels[-1]))
    return levels


def proof_from_levels(levels: Sequence[Sequence[bytes]], index: int) -> list[str]:
    """The audit path of leaf ``index`` read from :func:`merkle_levels`; equal to
    ``merkle_proof(leaves, index)`` without rebuilding the tree for each proof.

    Raises:
        IndexError: ``index`` is not a leaf of the tree.
    """
    if not 0 <= index < len(levels[0]):
        raise IndexError(f"leaf index {index} is out of range for {len(levels[0])} leaves")
    proof: list[str] = []
    position = index
    for level in levels[:-1]:
        sibling = position ^ 1
        if sibling < len(level):
            proof.append(level[sibling].hex())
        position //= 2
    return proof


def _from_hex32(text: object) -> bytes | None:
    """32 bytes from lowercase hex (the one spelling Agora writes), else ``None``."""
    if not is_hex(text, 64):
        return None
    assert isinstance(text, str)
    return bytes.fromhex(text)


def verify_proof(root: str, leaf: bytes, index: int, n_leaves: int, proof: Sequence[str]) -> bool:
    """True when ``proof`` shows that ``leaf`` is leaf ``index`` of an ``n_leaves`` tree with
    root ``root``. Never raises: anything malformed (uppercase or bad hex, a wrong length, an
    index outside the tree, a proof too short or too long) is simply not a valid proof.

    This is the verification algorithm of RFC 9162 section 2.1.3.2: the proof must have exactly
    the length the position and tree size imply. A root does not commit to its tree size on its
    own (a proof can check out for two different sizes), so take ``n_leaves`` from the same
    signed header as ``root``, never from the prover.
    """
    expected = _from_hex32(root)
    if expected is None or not isinstance(leaf, bytes):
        return False
    if not isinstance(index, int) or not isinstance(n_leaves, int):
        return False
    if not 0 <= index < n_leaves:
        return False
    position, last = index, n_leaves - 1
    current = leaf_hash(leaf)
    for element in proof:
        sibling = _from_hex32(element)
        if sibling is None or last == 0:
            return False
        if position % 2 == 1 or position == last:
            current = node_hash(sibling, current)
            if position % 2 == 0:
                # The node was carried up unchanged: skip the levels where it had no sibling.
                while position % 2 == 0 and position != 0:
                    position >>= 1
                    last >>= 1
        else:
            current = node_hash(current, sibling)
        position >>= 1
        last >>= 1
    return last == 0 and current == expected
