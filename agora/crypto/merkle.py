"""Merkle trees now live in :mod:`agora.protocol.merkle`, so that the ledger's rules can verify
proofs without importing from a layer below them. This module re-exports them unchanged for the
code and tests that import them from here."""

from __future__ import annotations

from agora.protocol.merkle import (
    EMPTY_ROOT,
    leaf_hash,
    merkle_levels,
    merkle_proof,
    merkle_root,
    node_hash,
    proof_from_levels,
    verify_proof,
)

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
