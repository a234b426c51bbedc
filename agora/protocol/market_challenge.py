"""Hardware challenges: a seeded integer matrix product that the ledger checks a few cells of.

The ledger cannot rerun a provider's workload, but it can make the provider prove, cheaply for the
ledger and at full cost for the provider, that it does arithmetic honestly and on time:

1. Anyone posts a challenge on an open lease in block ``c``. The seed is the hash of block ``c``,
   which nobody knew when the challenge was signed.
2. ``A`` and ``B`` are ``n x n`` matrices over the integers mod :data:`PRIME`, derived from the
   seed: row ``i`` of ``A`` and column ``j`` of ``B`` are each a SHA-256 stream (so the ledger can
   derive one row and one column without the rest). The provider computes ``C = A B mod PRIME``
   (``n^3`` multiply-adds) and commits the Merkle root of its cells in row-major order. For ``n``
   a power of two that tree *is* a tree over the rows: its top ``log2 n`` levels join the roots of
   the rows, each a tree over that row's cells.
3. The hash of the block that included the commitment picks ``k`` cells (with replacement). The
   provider opens each: its value and its Merkle path (``2 log2 n`` hashes).
4. The ledger checks each path against the root and recomputes each opened cell as one dot
   product of length ``n``: ``O(k n)`` work against the provider's ``O(n^3)``.

Detection. A provider that commits a matrix in which a fraction ``f`` of the cells is wrong (it
skipped rows, filled them at random, or computed in floating point that rounds) cannot change the
root after the cells are chosen, so each opened cell is wrong with probability ``f``
independently, and it passes only if all ``k`` are right: it is caught with probability
``1 - (1 - f)^k`` (:func:`detection_probability`). With ``k = 12``: 72% for ``f = 0.1``, 97% for
``f = 0.25``, 99.98% for ``f = 0.5``; a provider that fakes everything is caught with certainty
(up to a ``1/PRIME`` chance per cell of guessing a value). Repeated challenges multiply the
escape probabilities.

What it does not prove: that the work ran on the advertised GPU. Speed would need a size and a
deadline calibrated to the hardware, and the deadline here is in blocks. It does prove the
provider is there, computes exactly, and cannot answer without doing the product.

Everything here is integers and SHA-256: the ledger's path (``expected_cell``, ``opened_cells``,
``verify_opening``) is deterministic on every machine. The prover's side is in
:mod:`agora.market.prover`. The three transactions (``market_challenge``, ``market_commit``,
``market_open``) are at the end of this module; a challenge that misses a deadline fails in
:func:`agora.protocol.market_settle.settle_block`.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Sequence
from fractions import Fraction

from agora.protocol.accounts import debit
from agora.protocol.errors import InvalidParameter, MalformedTransaction, NotOwner
from agora.protocol.market_settle import end_challenge
from agora.protocol.market_state import (
    COMMITTED,
    MARKET,
    OPEN,
    PASSED,
    POSTED,
    Challenge,
    evolve,
    index_add,
    index_remove,
)
from agora.protocol.merkle import verify_proof
from agora.protocol.state import State

PRIME = 16_777_213
"""The largest prime below 2^24: products of two cells fit in 48 bits, so a provider can compute
exactly in int64 (n < 2^15) or in float64 by splitting one factor (see ``agora.market.prover``)."""

DOMAIN = b"agora/market/challenge/v1"


def _stream(seed: bytes, tag: bytes, index: int, count: int) -> list[int]:
    """``count`` values mod PRIME from SHA-256(DOMAIN | tag | seed | index | counter)."""
    values: list[int] = []
    prefix = DOMAIN + tag + seed + index.to_bytes(4, "big")
    counter = 0
    while len(values) < count:
        digest = hashlib.sha256(prefix + counter.to_bytes(4, "big")).digest()
        values.extend(word % PRIME for word in struct.unpack(">8I", digest))
        counter += 1
    return values[:count]


def a_row(seed: str, size: int, row: int) -> list[int]:
    """Row ``row`` of A."""
    return _stream(bytes.fromhex(seed), b"/A", row, size)


def b_column(seed: str, size: int, column: int) -> list[int]:
    """Column ``column`` of B."""
    return _stream(bytes.fromhex(seed), b"/B", column, size)


def expected_cell(seed: str, size: int, row: int, column: int) -> int:
    """``C[row][column]``: one dot product of length ``size`` mod PRIME."""
    pairs = zip(a_row(seed, size, row), b_column(seed, size, column), strict=True)
    total = sum(a * b for a, b in pairs)
    return total % PRIME


def cell_leaf(value: int) -> bytes:
    """A cell as a Merkle leaf: 4 bytes big-endian (the position is bound by the proof)."""
    return value.to_bytes(4, "big")


def proof_length(size: int) -> int:
    """Hashes in one cell's path: ``log2(size * size)``."""
    return 2 * (size.bit_length() - 1)


def is_valid_size(size: int, low: int, high: int) -> bool:
    return low <= size <= high and size & (size - 1) == 0


def opened_cells(open_seed: str, size: int, cells: int) -> list[tuple[int, int]]:
    """The ``cells`` (row, column) pairs the opening seed picks, with replacement."""
    seed = bytes.fromhex(open_seed)
    picked: list[tuple[int, int]] = []
    for t in range(cells):
        digest = hashlib.sha256(DOMAIN + b"/open" + seed + t.to_bytes(4, "big")).digest()
        index = int.from_bytes(digest[:8], "big") % (size * size)
        picked.append(divmod(index, size))
    return picked


def verify_opening(
    seed: str,
    open_seed: str,
    size: int,
    cells: int,
    root: str,
    values: Sequence[int],
    proofs: Sequence[str],
) -> str | None:
    """None if the opening proves the committed product right at every picked cell, else what is
    wrong (for the rejection message). Never raises on malformed input."""
    depth = proof_length(size)
    if len(values) != cells or len(proofs) != cells * depth:
        return (
            f"an opening has {cells} values and {cells * depth} proof hashes ({depth} per cell); "
            f"got {len(values)} and {len(proofs)}"
        )
    for t, (row, column) in enumerate(opened_cells(open_seed, size, cells)):
        value = values[t]
        if not 0 <= value < PRIME:
            return f"cell ({row}, {column}): {value} is not a value mod {PRIME}"
        path = proofs[t * depth : (t + 1) * depth]
        if not verify_proof(root, cell_leaf(value), row * size + column, size * size, path):
            return f"cell ({row}, {column}): the Merkle path does not lead to the committed root"
        expected = expected_cell(seed, size, row, column)
        if value != expected:
            return f"cell ({row}, {column}) is {value}; A B mod {PRIME} has {expected} there"
    return None


def detection_probability(wrong_fraction: Fraction, cells: int) -> Fraction:
    """Chance that ``cells`` independent picks hit at least one wrong cell: 1 - (1 - f)^k."""
    return 1 - (1 - wrong_fraction) ** cells


def _challenge(state: State, challenge_id: int, provider: str) -> Challenge:
    challenge = state.market.challenges.get(challenge_id)
    if challenge is None:
        raise InvalidParameter(f"no challenge {challenge_id}")
    if challenge.provider != provider:
        raise NotOwner(f"challenge {challenge_id} is for provider {challenge.provider[:12]}…")
    return challenge


# -- the transactions ------------------------------------------------------------------------------


def post_challenge(state: State, challenger: str, lease_id: int, size: int, block: int) -> int:
    """Challenge a lease's provider to a ``size`` x ``size`` product. Returns the challenge id.
    Raises InvalidParameter, MalformedTransaction or InsufficientBalance."""
    lease = state.market.leases.get(lease_id)
    if lease is None:
        raise InvalidParameter(f"no lease {lease_id} (never opened, or closed and forgotten)")
    if lease.status != OPEN:
        raise InvalidParameter(f"lease {lease_id} is closed; only open leases are challenged")
    if challenger == lease.provider:
        raise InvalidParameter("a provider cannot challenge itself")
    if lease.challenge:
        raise InvalidParameter(f"lease {lease_id} already has challenge {lease.challenge} pending")
    low, high = MARKET.challenge_min_size, MARKET.challenge_max_size
    if not is_valid_size(size, low, high):
        raise MalformedTransaction(f"size must be a power of two in {low}..{high}, got {size}")
    debit(state, challenger, MARKET.challenge_bond, "the challenge bond")
    market = state.market
    challenge_id = market.next_challenge_id
    market.next_challenge_id += 1
    deadline = block + 1 + MARKET.commit_window
    market.challenges[challenge_id] = Challenge(
        id=challenge_id,
        lease=lease_id,
        provider=lease.provider,
        challenger=challenger,
        size=size,
        bond=MARKET.challenge_bond,
        posted_at=block,
        deadline=deadline,
    )
    index_add(market.deadlines, deadline, challenge_id)
    index_add(market.want_hash, block, challenge_id)
    market.leases[lease_id] = evolve(lease, challenge=challenge_id)
    return challenge_id


def _known_hash(state: State, recorded: str, of_block: int, block: int, what: str) -> str:
    """The hash of block ``of_block``: recorded by settlement, or the parent of ``block``."""
    if recorded:
        return recorded
    if block == of_block + 1:
        return state.last_block_hash
    raise InvalidParameter(
        f"the {what} is the hash of block {of_block}, which is not known until the next block"
    )


def commit_challenge(state: State, sender: str, challenge_id: int, root: str, block: int) -> None:
    """Commit the Merkle root of the product. Raises InvalidParameter or NotOwner."""
    challenge = _challenge(state, challenge_id, sender)
    if challenge.status != POSTED:
        raise InvalidParameter(
            f"challenge {challenge_id} is {challenge.status}, not awaiting a root"
        )
    seed = _known_hash(state, challenge.seed, challenge.posted_at, block, "seed")
    market = state.market
    deadline = block + 1 + MARKET.open_window
    index_remove(market.deadlines, challenge.deadline, challenge_id)
    index_add(market.deadlines, deadline, challenge_id)
    index_remove(market.want_hash, challenge.posted_at, challenge_id)  # its seed is known now
    index_add(market.want_hash, block, challenge_id)
    market.challenges[challenge_id] = evolve(
        challenge, status=COMMITTED, seed=seed, root=root, committed_at=block, deadline=deadline
    )


def open_challenge(
    state: State,
    sender: str,
    challenge_id: int,
    values: list[int],
    proofs: list[str],
    block: int,
) -> None:
    """Open the picked cells; the ledger verifies each. The provider passes and earns the
    bond. Raises InvalidParameter (wrong phase, seed unknown, any cell fails) or NotOwner."""
    challenge = _challenge(state, challenge_id, sender)
    if challenge.status != COMMITTED:
        raise InvalidParameter(
            f"challenge {challenge_id} is {challenge.status}, not awaiting cells"
        )
    open_seed = _known_hash(
        state, challenge.open_seed, challenge.committed_at, block, "opening seed"
    )
    problem = verify_opening(
        challenge.seed,
        open_seed,
        challenge.size,
        MARKET.challenge_cells,
        challenge.root,
        values,
        proofs,
    )
    if problem:
        raise InvalidParameter(f"challenge {challenge_id}: {problem}")
    challenge = evolve(challenge, open_seed=open_seed)
    end_challenge(state, challenge, block, PASSED)
    provider = state.market.providers[sender]
    state.market.providers[sender] = evolve(
        provider,
        history=evolve(provider.history, challenges_passed=provider.history.challenges_passed + 1),
    )
