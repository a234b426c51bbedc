"""The provider's side of a hardware challenge: compute the product, commit, open the cells.

The ledger's side (deriving A and B, picking cells, verifying) is
:mod:`agora.protocol.market_challenge`; this module derives the same matrices in full and does the
``n^3`` work. Exact arithmetic matters: the product is taken mod a prime just below 2^24, so a
cell's products are below 2^48 and a float64 product of length ``n`` is exact only while
``n * 2^48 < 2^53``. :func:`exact_product` splits B into 12-bit halves so that each float64
matrix product (fast BLAS) stays exact for any ``n <= 2^16``; :func:`float64_product` is the
tempting shortcut that rounds, kept as a faker for tests and the benchmark.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from agora.protocol.market_challenge import (
    PRIME,
    a_row,
    b_column,
    cell_leaf,
    opened_cells,
)
from agora.protocol.merkle import merkle_levels, proof_from_levels

IntMatrix = npt.NDArray[np.int64]


def matrices(seed: str, size: int) -> tuple[IntMatrix, IntMatrix]:
    """A and B as the ledger defines them (row ``i`` of A, column ``j`` of B)."""
    a = np.array([a_row(seed, size, i) for i in range(size)], dtype=np.int64)
    b = np.array([b_column(seed, size, j) for j in range(size)], dtype=np.int64).T
    return a, np.ascontiguousarray(b)


def exact_product(a: IntMatrix, b: IntMatrix) -> IntMatrix:
    """``A B mod PRIME`` exactly, with float64 BLAS: B = hi * 2^12 + lo, each part below 2^12,
    so every partial sum stays below 2^36 * n <= 2^52."""
    if a.shape[0] > 1 << 16:
        raise ValueError("exact_product is exact for n <= 65536")
    af = a.astype(np.float64)
    hi = (b >> 12).astype(np.float64)
    lo = (b & 0xFFF).astype(np.float64)
    high = np.rint(af @ hi).astype(np.int64) % PRIME
    low = np.rint(af @ lo).astype(np.int64) % PRIME
    return np.asarray((high * 4096 + low) % PRIME, dtype=np.int64)


def float64_product(a: IntMatrix, b: IntMatrix) -> IntMatrix:
    """The shortcut: one float64 product, which rounds once sums pass 2^53 (from n = 128)."""
    product = a.astype(np.float64) @ b.astype(np.float64)
    return np.asarray(np.fmod(product, PRIME).astype(np.int64) % PRIME, dtype=np.int64)


def float32_product(a: IntMatrix, b: IntMatrix) -> IntMatrix:
    """Lower precision still: nearly every cell is wrong."""
    product = a.astype(np.float32) @ b.astype(np.float32)
    return np.asarray(np.fmod(product.astype(np.float64), PRIME).astype(np.int64), dtype=np.int64)


@dataclass
class Commitment:
    """A product and its Merkle tree over the cells in row-major order."""

    product: IntMatrix
    levels: list[list[bytes]]

    @property
    def root(self) -> str:
        return self.levels[-1][0].hex()

    @property
    def size(self) -> int:
        return int(self.product.shape[0])

    def open(self, open_seed: str, cells: int) -> tuple[list[int], list[str]]:
        """Values and the flat list of Merkle paths of the cells the opening seed picks."""
        values: list[int] = []
        proofs: list[str] = []
        size = self.size
        for row, column in opened_cells(open_seed, size, cells):
            values.append(int(self.product[row, column]))
            proofs.extend(proof_from_levels(self.levels, row * size + column))
        return values, proofs


def commit(product: IntMatrix) -> Commitment:
    """Build the tree over ``product``'s cells (any matrix: honest or not)."""
    flat = product.reshape(-1)
    leaves = [cell_leaf(int(value)) for value in flat.tolist()]
    return Commitment(product, merkle_levels(leaves))


def solve(seed: str, size: int) -> Commitment:
    """The honest answer to a challenge with this seed and size."""
    a, b = matrices(seed, size)
    return commit(exact_product(a, b))
