"""TOPLOC activation proofs (after Ong et al., arXiv 2501.16007), in pure numpy.

While a miner generates, it keeps the last hidden state of every position it runs through the
model. Positions are grouped into *chunks* of ``chunk_size`` (32) positions, prompt and output
alike (a chunk may hold the end of the prompt and the first decoded positions). For each chunk
the miner takes, **in every position**, the ``per_position`` (4) entries of largest magnitude of
that position's hidden state, so ``k = 4 x positions`` entries per chunk (128 for a full one),
rounds their values to bfloat16 and encodes the pairs (flat index into the ``[positions,
hidden]`` block, bf16 bits) as the unique polynomial of degree ``k - 1`` over GF(65497) with
``p(index mod m) = bits`` (``m`` is the largest modulus, at most the prime, that keeps the chosen
indices distinct). Only ``m`` and the ``k`` coefficients are shipped: 2 bytes each, so ``2k + 4``
bytes per chunk, about 8 bytes per covered position, whatever the hidden size.

Why every position contributes (version 2): version 1 took the top-k of the whole flattened
chunk and made the prompt a single chunk, so a position whose entries were not among the
chunk's largest was not committed to at all; a prompt with one token changed could pass when
the change hardly spread to later positions. Now a changed token changes its own position's
hidden state, that position's committed entries no longer match, and the per-position limit
(`Thresholds.position_mismatch_frac`) fails the answer wherever the change is.

A validator recomputes the hidden states with one prefill pass over prompt plus output, takes
its own top entries per position and evaluates the miner's polynomial at its own indices. Where
the two runs agree, the polynomial returns the miner's bf16 value for that index; where the
validator's index is not one the miner chose, it returns an unrelated 16-bit number. `compare`
turns that into statistics per chunk (see `ChunkStats`) and `Thresholds` decides.

Which positions a proof covers: the hidden state at position ``t`` is what the model computes
from tokens ``0..t``; the miner runs every prompt token and every generated token except the
last one through the model, so a proof for ``P`` prompt tokens and ``n`` generated tokens covers
positions ``0 .. P + n - 2`` in ``ceil((P + n - 1) / chunk_size)`` chunks. The final token is
only covered through the logits at the position before it.

Wire format (big-endian), version 2::

    magic "TLOC" | version u8 | per_position u16 | chunk_size u16 | prompt_tokens u32
    | output_tokens u32 | chunks u16 | per chunk: modulus u16, points u16, points x coefficient u16

`decode_proof` checks every length against the header, so a truncated, padded or malformed
proof is a `ProofFormatError` naming what is wrong.

Errors::

    ProofError
     ├── ProofFormatError   the bytes are not a well-formed proof of this version
     └── ProofMismatch      the proof does not fit the answer (token counts, k, chunk layout)
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

#: The prime field the polynomial lives in: the largest prime below 2**16, so coefficients
#: fit in two bytes and every finite bf16 bit pattern (all below 0xFF81) is a field element.
PRIME = 65497
MAGIC = b"TLOC"
VERSION = 2
#: Entries committed per position: 4, so that a full chunk of 32 positions commits to 128, the
#: paper's k; see docs/verification.md for why every position contributes.
DEFAULT_PER_POSITION = 4
#: Positions per chunk, as the paper's decode steps per chunk.
DEFAULT_CHUNK = 32
#: Entries of a full chunk.
DEFAULT_K = DEFAULT_PER_POSITION * DEFAULT_CHUNK
#: A proof longer than this many bytes is refused before parsing (a 64k-token answer of
#: 32-token chunks with k = 128 is about 530 kB).
MAX_PROOF_BYTES = 4 << 20

_HEADER = struct.Struct(">4sBHHIIH")
_CHUNK_HEADER = struct.Struct(">HH")

FloatArray = npt.NDArray[np.float32]
IntArray = npt.NDArray[np.int64]


class ProofError(ValueError):
    """A proof that cannot be checked or does not fit the answer."""


class ProofFormatError(ProofError):
    """The bytes are not a well-formed proof of a version this code reads."""


class ProofMismatch(ProofError):
    """The proof is well-formed but does not describe this answer (lengths, k, layout)."""


# -- bfloat16 -----------------------------------------------------------------------------------


def to_bf16_bits(values: npt.ArrayLike) -> IntArray:
    """Round float32 values to bfloat16 (round to nearest, ties to even); their 16-bit patterns."""
    bits = np.ascontiguousarray(values, dtype=np.float32).view(np.uint32).astype(np.int64)
    rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16
    return rounded & 0xFFFF


def bf16_to_float(bits: npt.ArrayLike) -> FloatArray:
    """The float32 value of bfloat16 bit patterns (anything above 16 bits is masked off)."""
    array = (np.asarray(bits, dtype=np.int64) & 0xFFFF).astype(np.uint32) << np.uint32(16)
    return array.view(np.float32)


# -- polynomials over GF(PRIME) -----------------------------------------------------------------


def _inverse(values: IntArray) -> IntArray:
    """Multiplicative inverses mod PRIME (Fermat: a^(p-2)), vectorised square and multiply."""
    result = np.ones_like(values)
    base = values % PRIME
    exponent = PRIME - 2
    while exponent:
        if exponent & 1:
            result = result * base % PRIME
        base = base * base % PRIME
        exponent >>= 1
    return result


def _master(x: IntArray) -> IntArray:
    """Coefficients (lowest first) of prod (z - x_i) mod PRIME: a product tree whose every
    level multiplies all its pairs at once (outer products summed along anti-diagonals;
    the sums stay below 2**53, exact in float64)."""
    polys = np.stack([(-x) % PRIME, np.ones_like(x)], axis=1)
    while len(polys) > 1:
        if len(polys) % 2:
            one = np.zeros((1, polys.shape[1]), dtype=np.int64)
            one[0, 0] = 1
            polys = np.concatenate([polys, one])
        a, b = polys[0::2], polys[1::2]
        n, d = a.shape
        width = 2 * d - 1
        outer = (a[:, :, None] * b[:, None, :]).astype(np.float64).reshape(n, d * d)
        where = (np.arange(d)[:, None] + np.arange(d)[None, :]).reshape(1, -1)
        where = where + width * np.arange(n)[:, None]
        sums = np.bincount(where.ravel(), weights=outer.ravel(), minlength=n * width)
        polys = sums.astype(np.int64).reshape(n, width) % PRIME
    master: IntArray = polys[0]
    return master


def _powers(x: IntArray, count: int) -> IntArray:
    """``[x_i ** m for m < count]`` mod PRIME, by doubling (log2(count) vector steps)."""
    powers = np.ones((len(x), count), dtype=np.int64)
    step_power = x % PRIME  # x ** filled
    filled = 1
    while filled < count:
        step = min(filled, count - filled)
        powers[:, filled : filled + step] = powers[:, :step] * step_power[:, None] % PRIME
        filled += step
        step_power = step_power * step_power % PRIME
    return powers


def interpolate(xs: npt.ArrayLike, ys: npt.ArrayLike) -> IntArray:
    """Coefficients (lowest degree first) of the polynomial of degree < len(xs) through the
    points, mod PRIME. ``xs`` must be distinct field elements. O(k^2) work in O(log k)
    vectorised steps (a few hundred microseconds for k = 128).

    Lagrange: p(z) = sum_i s_i M(z) / (z - x_i) with M(z) = prod (z - x_i) and
    s_i = y_i / prod_{j != i} (x_i - x_j). Since M(z) / (z - x_i) =
    sum_d z^d sum_{m} M[d + 1 + m] x_i^m, the coefficient of z^d is
    sum_m M[d + 1 + m] S[m] with the power sums S[m] = sum_i s_i x_i^m.
    """
    x = np.asarray(xs, dtype=np.int64) % PRIME
    y = np.asarray(ys, dtype=np.int64) % PRIME
    k = len(x)
    if k == 0:
        return np.zeros(0, dtype=np.int64)
    if len(np.unique(x)) != k:
        raise ProofError("interpolation points must be distinct")
    master = _master(x)
    powers = _powers(x, k)
    # w_i = prod_{j != i} (x_i - x_j) = M'(x_i); every product below is < PRIME**2 < 2**32
    # and k of them summed fit in int64
    derivative = np.arange(1, k + 1, dtype=np.int64) * master[1 : k + 1] % PRIME
    weights = powers @ derivative % PRIME
    scale = y * _inverse(weights) % PRIME
    power_sums = scale @ powers % PRIME
    padded = np.concatenate([master, np.zeros(k, dtype=np.int64)])
    hankel = padded[1 + np.arange(k)[:, None] + np.arange(k)[None, :]]
    coefficients: IntArray = (hankel @ power_sums) % PRIME
    return coefficients


def evaluate_rows(coefficients: IntArray, points: IntArray) -> IntArray:
    """Row ``i`` of ``coefficients`` evaluated at ``points[i]`` (Horner), mod PRIME."""
    acc = np.zeros(len(points), dtype=np.int64)
    for degree in range(coefficients.shape[1] - 1, -1, -1):
        acc = (acc * points + coefficients[:, degree]) % PRIME
    return acc


def evaluate(coefficients: IntArray, points: npt.ArrayLike) -> IntArray:
    """The polynomial at each point, mod PRIME: the matrix of the points' powers (log2(k)
    vector steps, `_powers`) times the coefficients. A validator evaluates every chunk of every
    audited answer, so this replaced a Horner loop of k numpy steps per chunk. Every product is
    below PRIME**2 < 2**32, so a sum of k < 2**31 of them fits in int64."""
    z = np.asarray(points, dtype=np.int64) % PRIME
    coefficients = np.asarray(coefficients, dtype=np.int64)
    if coefficients.size == 0:
        return np.zeros(z.shape, dtype=np.int64)
    flat = z.reshape(-1)
    values: IntArray = (_powers(flat, len(coefficients)) @ coefficients % PRIME).reshape(z.shape)
    return values


def injective_modulus(indices: IntArray) -> int:
    """The largest m <= PRIME for which the indices stay distinct mod m (so that ``index mod m``
    is a field element and one point per index)."""
    for m in range(PRIME, len(indices) - 1, -1):
        if len(np.unique(indices % m)) == len(indices):
            return m
    raise ProofError("no modulus keeps these indices distinct")  # pragma: no cover


# -- chunks -------------------------------------------------------------------------------------


def chunk_layout(prompt_tokens: int, output_tokens: int, chunk_size: int) -> list[tuple[int, int]]:
    """The ``[start, end)`` positions of each chunk a proof covers: ``0 .. P + n - 2`` (see the
    module docstring) cut every ``chunk_size`` positions."""
    if prompt_tokens < 1 or output_tokens < 1 or chunk_size < 1:
        raise ProofMismatch("a proof needs at least one prompt token and one output token")
    covered_end = prompt_tokens + output_tokens - 1
    return [
        (start, min(start + chunk_size, covered_end)) for start in range(0, covered_end, chunk_size)
    ]


#: A position commits to at most this fraction of its hidden entries: small values carry a
#: rounding error that is large relative to them, so a narrow model (hidden < 32) commits to
#: fewer than `DEFAULT_PER_POSITION` entries per position, never to near-zero ones.
CHUNK_FRACTION = 8


def position_m(per_position: int, hidden: int) -> int:
    """Entries taken from each position: ``per_position``, or one eighth of the hidden size if
    that is fewer (at least one)."""
    return min(per_position, max(1, hidden // CHUNK_FRACTION))


def chunk_k(per_position: int, positions: int, hidden: int) -> int:
    """Entries a chunk of ``positions`` rows of ``hidden`` values commits to."""
    return positions * position_m(per_position, hidden)


def top_k(block: npt.ArrayLike, m: int) -> tuple[IntArray, FloatArray]:
    """Flat indices (into the ``[positions, hidden]`` block) and values of the ``m`` entries of
    largest magnitude **of every position**, sorted by index (so both sides list them in the
    same order, position by position): ``positions x m`` entries."""
    rows = np.ascontiguousarray(block, dtype=np.float32)
    if rows.ndim == 1:
        rows = rows.reshape(1, -1)
    if not np.all(np.isfinite(rows)):
        raise ProofError("hidden states are not finite; no proof can be made or checked")
    positions, hidden = rows.shape
    if m >= hidden:
        cols = np.broadcast_to(np.arange(hidden, dtype=np.int64), (positions, hidden))
    else:
        # exact ties at the m-th magnitude are vanishingly rare in float32 activations and cost
        # at most one mismatch, so a partial sort (O(n)) is enough
        cols = np.sort(np.argpartition(-np.abs(rows), m - 1, axis=1)[:, :m], axis=1)
    chosen = (cols + hidden * np.arange(positions, dtype=np.int64)[:, None]).reshape(-1)
    chosen = chosen.astype(np.int64)
    return chosen, rows.reshape(-1)[chosen]


@dataclass(frozen=True)
class ChunkProof:
    """One chunk's commitment: the modulus and the polynomial's coefficients."""

    modulus: int
    coefficients: IntArray

    @classmethod
    def build(cls, block: npt.ArrayLike, m: int) -> ChunkProof:
        """Commit to the top ``m`` entries of every position of ``block`` (``[positions,
        hidden]`` float32)."""
        indices, values = top_k(block, m)
        modulus = injective_modulus(indices)
        return cls(modulus, interpolate(indices % modulus, to_bf16_bits(values)))

    def values_at(self, indices: IntArray) -> IntArray:
        """The bf16 bit patterns the miner committed to at these indices (or noise where it
        committed to none)."""
        return evaluate(self.coefficients, np.asarray(indices, dtype=np.int64) % self.modulus)


@dataclass(frozen=True)
class Proof:
    """A whole generation's proof: the layout parameters and one `ChunkProof` per chunk
    (``per_position`` is the entries asked of each position; see `position_m`)."""

    per_position: int
    chunk_size: int
    prompt_tokens: int
    output_tokens: int
    chunks: list[ChunkProof] = field(default_factory=list)

    def layout(self) -> list[tuple[int, int]]:
        return chunk_layout(self.prompt_tokens, self.output_tokens, self.chunk_size)


def encode_proof(proof: Proof) -> bytes:
    """The wire bytes of a proof (see the module docstring)."""
    parts = [
        _HEADER.pack(
            MAGIC,
            VERSION,
            proof.per_position,
            proof.chunk_size,
            proof.prompt_tokens,
            proof.output_tokens,
            len(proof.chunks),
        )
    ]
    for chunk in proof.chunks:
        parts.append(_CHUNK_HEADER.pack(chunk.modulus, len(chunk.coefficients)))
        parts.append(np.asarray(chunk.coefficients, dtype=">u2").tobytes())
    return b"".join(parts)


def decode_proof(data: bytes) -> Proof:
    """Parse proof bytes. Raises `ProofFormatError` naming the first thing that is wrong."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise ProofFormatError("a proof must be bytes")
    data = bytes(data)
    if len(data) > MAX_PROOF_BYTES:
        raise ProofFormatError(f"proof of {len(data)} bytes exceeds the {MAX_PROOF_BYTES} limit")
    if len(data) < _HEADER.size:
        raise ProofFormatError(
            f"truncated proof: {len(data)} bytes, shorter than the {_HEADER.size}-byte header"
        )
    magic, version, per_position, chunk_size, prompt_tokens, output_tokens, count = (
        _HEADER.unpack_from(data)
    )
    if magic != MAGIC:
        raise ProofFormatError("not a TOPLOC proof (bad magic bytes)")
    if version != VERSION:
        raise ProofFormatError(f"proof version {version} is not supported (this reads {VERSION})")
    if per_position < 1 or chunk_size < 1:
        raise ProofFormatError("proof header has per_position or chunk_size of zero")
    most = per_position * chunk_size
    if prompt_tokens < 1 or output_tokens < 1:
        raise ProofFormatError("proof header has no prompt or no output tokens")
    expected_chunks = len(chunk_layout(prompt_tokens, output_tokens, chunk_size))
    if count != expected_chunks:
        raise ProofFormatError(
            f"proof header lists {count} chunks; {prompt_tokens} prompt and {output_tokens} "
            f"output tokens in chunks of {chunk_size} make {expected_chunks}"
        )
    offset = _HEADER.size
    chunks: list[ChunkProof] = []
    for i in range(count):
        if offset + _CHUNK_HEADER.size > len(data):
            raise ProofFormatError(f"truncated proof: ends inside the header of chunk {i}")
        modulus, points = _CHUNK_HEADER.unpack_from(data, offset)
        offset += _CHUNK_HEADER.size
        if not 1 <= points <= most:
            raise ProofFormatError(f"chunk {i} has {points} points; expected 1 to {most}")
        if not points <= modulus <= PRIME:
            raise ProofFormatError(f"chunk {i} has modulus {modulus}, outside {points}..{PRIME}")
        end = offset + 2 * points
        if end > len(data):
            raise ProofFormatError(
                f"truncated proof: chunk {i} needs {2 * points} bytes, {len(data) - offset} left"
            )
        coefficients = np.frombuffer(data, dtype=">u2", count=points, offset=offset)
        coefficients = coefficients.astype(np.int64)
        if np.any(coefficients >= PRIME):
            raise ProofFormatError(f"chunk {i} has a coefficient outside the field")
        chunks.append(ChunkProof(modulus, coefficients))
        offset = end
    if offset != len(data):
        raise ProofFormatError(f"proof has {len(data) - offset} unexpected bytes after the end")
    return Proof(per_position, chunk_size, prompt_tokens, output_tokens, chunks)


class ProofBuilder:
    """Builds a proof from hidden states as they come out of the decoding loop.

    Feed it the prompt's hidden states once (`add_prefill`), then one row per decoding step
    (`add_step`); a chunk is encoded as soon as it has ``chunk_size`` positions, so memory
    stays at one chunk. `finish` encodes the rest and returns the proof bytes.
    """

    def __init__(
        self, per_position: int = DEFAULT_PER_POSITION, chunk_size: int = DEFAULT_CHUNK
    ) -> None:
        if per_position < 1 or not 1 <= chunk_size < 1 << 16:
            raise ValueError("per_position must be at least 1 and chunk_size in 1..65535")
        if per_position * chunk_size >= PRIME:
            raise ValueError("per_position x chunk_size must stay below 65497 (the field)")
        self.per_position = per_position
        self.chunk_size = chunk_size
        self.prompt_tokens = 0
        self._steps = 0
        self._pending: list[FloatArray] = []
        self._chunks: list[ChunkProof] = []

    def add_prefill(self, hidden: npt.ArrayLike) -> None:
        """The ``[prompt_tokens, hidden]`` last hidden states of the prompt."""
        block = np.asarray(hidden, dtype=np.float32)
        if self.prompt_tokens or block.ndim != 2 or block.shape[0] < 1:
            raise ValueError("add_prefill takes one [positions, hidden] block, once, first")
        self.prompt_tokens = block.shape[0]
        self._pending.extend(block)
        while len(self._pending) >= self.chunk_size:
            self._flush()

    def add_step(self, hidden_row: npt.ArrayLike) -> None:
        """The last hidden state of one decoded position."""
        if not self.prompt_tokens:
            raise ValueError("add_prefill must come before add_step")
        self._pending.append(np.asarray(hidden_row, dtype=np.float32).reshape(-1))
        self._steps += 1
        if len(self._pending) >= self.chunk_size:
            self._flush()

    def _flush(self) -> None:
        """Encode the first ``chunk_size`` pending positions (or all, at the end)."""
        if self._pending:
            block = np.stack(self._pending[: self.chunk_size])
            m = position_m(self.per_position, block.shape[1])
            self._chunks.append(ChunkProof.build(block, m))
            self._pending = self._pending[self.chunk_size :]

    def finish(self, output_tokens: int) -> bytes:
        """The proof for ``output_tokens`` generated tokens (one more than the steps fed)."""
        if output_tokens != self._steps + 1:
            raise ValueError(
                f"{self._steps} decoding steps were fed for {output_tokens} output tokens; "
                "expected one step per output token but the last"
            )
        while self._pending:
            self._flush()
        proof = Proof(
            self.per_position, self.chunk_size, self.prompt_tokens, output_tokens, self._chunks
        )
        return encode_proof(proof)


def build_proof(
    hidden: npt.ArrayLike,
    prompt_tokens: int,
    output_tokens: int,
    per_position: int = DEFAULT_PER_POSITION,
    chunk_size: int = DEFAULT_CHUNK,
) -> bytes:
    """A proof from the hidden states of every covered position at once (``[P + n - 1, H]``),
    as a validator's or a test's prefill pass produces them."""
    block = np.asarray(hidden, dtype=np.float32)
    spans = chunk_layout(prompt_tokens, output_tokens, chunk_size)
    if block.ndim != 2 or block.shape[0] < spans[-1][1]:
        raise ProofMismatch(f"need hidden states for {spans[-1][1]} positions")
    m = position_m(per_position, block.shape[1])
    chunks = [ChunkProof.build(block[a:b], m) for a, b in spans]
    return encode_proof(Proof(per_position, chunk_size, prompt_tokens, output_tokens, chunks))


# -- comparison ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ChunkStats:
    """How one chunk of the miner's proof compares with the validator's recomputation.

    Over the validator's own top-k entries of the chunk:

    - ``index_mismatches``: entries where the miner's committed value is not within
      ``Thresholds.match_ulps`` bf16 units of the validator's value: the miner did not pick
      that index (the polynomial gave noise) or its value there is far off;
    - ``exp_mismatches``: entries whose bf16 sign or exponent differs (TOPLOC's statistic);
    - ``position_mismatches``: the most index mismatches in any one position (of ``m``), and
      ``worst_position`` the position where that is (the first, on a tie): a changed token
      shows here even when the rest of the chunk agrees;
    - ``mant_err_mean`` / ``mant_err_max``: over the matched entries, the distance between
      the miner's bf16 value and the validator's float32 value in units of the bf16 mantissa's
      last place (an exact bf16 rounding is at most 0.5);
    - ``errors``: that distance for every entry (mismatches included, capped at
      ``match_ulps``), for the answer-wide statistic `trimmed_error`.
    """

    chunk: int
    positions: tuple[int, int]
    k: int
    index_mismatches: int
    exp_mismatches: int
    m: int
    position_mismatches: int
    worst_position: int
    mant_err_mean: float
    mant_err_max: float
    errors: FloatArray = field(repr=False, compare=False, default_factory=lambda: _EMPTY)


_EMPTY: FloatArray = np.zeros(0, dtype=np.float32)


@dataclass(frozen=True)
class Thresholds:
    """Per chunk limits; see docs/verification.md for how they were calibrated."""

    #: A committed value this many bf16 last places or more from the validator's is a mismatch.
    match_ulps: float = 8.0
    #: Fraction of the top-k that may mismatch (index swaps at the top-k boundary).
    index_mismatch_frac: float = 0.25
    #: Fraction of the top-k whose sign or exponent may differ.
    exp_mismatch_frac: float = 0.3
    #: Fraction of one position's ``m`` entries that may mismatch: with ``m = 4``, a position
    #: fails only when all 4 of its entries differ, i.e. its hidden state is not the reference's
    #: (a changed token). Honest bf16 miners reach 2 of 4 at worst; a changed token gives 4.
    position_mismatch_frac: float = 0.75
    #: Mean mantissa error over one chunk's matched entries, in bf16 last places; applied to
    #: chunks of at least `min_entries_for_mean` entries (a mean over fewer is too noisy).
    mant_err_mean: float = 1.5
    min_entries_for_mean: int = 64
    #: The answer-wide statistic: the mean of the smallest 90% of all entries' errors
    #: (`trimmed_error`). Many entries, little noise, robust to the few boundary swaps.
    answer_trimmed_err: float = 0.80
    trim: float = 0.9

    def index_limit(self, k: int) -> int:
        return int(self.index_mismatch_frac * k)

    def exp_limit(self, k: int) -> int:
        return int(self.exp_mismatch_frac * k)

    def position_limit(self, m: int) -> int:
        return int(self.position_mismatch_frac * m)


DEFAULT_THRESHOLDS = Thresholds()


def _ulp(values: FloatArray) -> FloatArray:
    """The bf16 last place at each value's magnitude: 2**(exponent - 7)."""
    magnitude = np.maximum(np.abs(values), np.float32(np.finfo(np.float32).tiny))
    exponent = np.floor(np.log2(magnitude))
    ulp: FloatArray = np.exp2(exponent - 7).astype(np.float32)
    return ulp


def compare_chunk(
    chunk: ChunkProof,
    block: npt.ArrayLike,
    m: int,
    index: int,
    span: tuple[int, int],
    thresholds: Thresholds,
) -> ChunkStats:
    """Statistics of one chunk: the validator's hidden states ``block`` against the proof
    (``m`` entries per position)."""
    indices, values = top_k(block, m)
    k = len(indices)
    claimed_bits = chunk.values_at(indices)
    claimed = bf16_to_float(claimed_bits)
    own_bits = to_bf16_bits(values)
    exp_mismatches = int(np.count_nonzero((claimed_bits >> 7) != (own_bits >> 7)))
    with np.errstate(invalid="ignore", over="ignore"):
        error = np.abs(claimed.astype(np.float64) - values) / _ulp(values)
    error = np.where(np.isfinite(error), error, np.inf)
    matched = error < thresholds.match_ulps
    matched_errors = error[matched]
    per_position = np.count_nonzero(~matched.reshape(-1, m), axis=1)
    return ChunkStats(
        chunk=index,
        positions=span,
        k=k,
        index_mismatches=int(k - np.count_nonzero(matched)),
        exp_mismatches=exp_mismatches,
        m=m,
        position_mismatches=int(per_position.max()),
        worst_position=span[0] + int(np.argmax(per_position)),
        mant_err_mean=float(matched_errors.mean()) if matched_errors.size else float("inf"),
        mant_err_max=float(matched_errors.max()) if matched_errors.size else float("inf"),
        errors=np.minimum(error, thresholds.match_ulps).astype(np.float32),
    )


def check_proof_fits(
    proof: Proof,
    prompt_tokens: int,
    output_tokens: int,
    hidden: int,
    per_position: int | None = None,
) -> None:
    """Raise `ProofMismatch` if the proof was not made for an answer of these sizes."""
    if proof.prompt_tokens != prompt_tokens:
        raise ProofMismatch(
            f"proof covers a prompt of {proof.prompt_tokens} tokens; the prompt has "
            f"{prompt_tokens} (a proof for another prompt)"
        )
    if proof.output_tokens != output_tokens:
        raise ProofMismatch(
            f"proof covers {proof.output_tokens} output tokens; the answer has {output_tokens} "
            "(truncated or extended output)"
        )
    if per_position is not None and proof.per_position != per_position:
        raise ProofMismatch(
            f"proof commits to {proof.per_position} entries per position; this validator "
            f"requires {per_position}"
        )
    for i, ((a, b), chunk) in enumerate(zip(proof.layout(), proof.chunks, strict=True)):
        expected = chunk_k(proof.per_position, b - a, hidden)
        if len(chunk.coefficients) != expected:
            raise ProofMismatch(
                f"chunk {i} commits to {len(chunk.coefficients)} entries; a chunk of "
                f"{b - a} positions with hidden size {hidden} needs {expected}"
            )


def compare(
    proof: Proof, hidden: npt.ArrayLike, thresholds: Thresholds = DEFAULT_THRESHOLDS
) -> list[ChunkStats]:
    """Statistics of every chunk: the validator's hidden states (``[positions >= P + n - 1,
    H]``, float32) against the proof. Call `check_proof_fits` first."""
    block = np.asarray(hidden, dtype=np.float32)
    m = position_m(proof.per_position, block.shape[1])
    return [
        compare_chunk(chunk, block[a:b], m, i, (a, b), thresholds)
        for i, ((a, b), chunk) in enumerate(zip(proof.layout(), proof.chunks, strict=True))
    ]


def judge(stats: ChunkStats, thresholds: Thresholds = DEFAULT_THRESHOLDS) -> str | None:
    """None if the chunk passes, else the reason it fails (the first limit it breaks)."""
    where = f"chunk {stats.chunk} (positions {stats.positions[0]}-{stats.positions[1] - 1})"
    limit = thresholds.position_limit(stats.m)
    if stats.position_mismatches > limit:
        return (
            f"{where}: position {stats.worst_position} has {stats.position_mismatches} of "
            f"{stats.m} entries that differ (limit {limit}); its hidden state is not the "
            "reference's (a changed token or another model)"
        )
    limit = thresholds.index_limit(stats.k)
    if stats.index_mismatches > limit:
        return (
            f"{where}: {stats.index_mismatches} of {stats.k} top-k entries differ (limit {limit})"
        )
    limit = thresholds.exp_limit(stats.k)
    if stats.exp_mismatches > limit:
        return (
            f"{where}: {stats.exp_mismatches} of {stats.k} top-k exponents differ (limit {limit})"
        )
    big_enough = stats.k >= thresholds.min_entries_for_mean
    if big_enough and stats.mant_err_mean > thresholds.mant_err_mean:
        return (
            f"{where}: mean mantissa error {stats.mant_err_mean:.2f} bf16 units "
            f"(limit {thresholds.mant_err_mean})"
        )
    return None


def trimmed_error(stats: list[ChunkStats], trim: float = DEFAULT_THRESHOLDS.trim) -> float:
    """The mean of the smallest ``trim`` fraction of every entry's error (in bf16 last places,
    mismatches counted at the cap) over all chunks of an answer."""
    errors = np.sort(np.concatenate([c.errors for c in stats])) if stats else _EMPTY
    keep = max(1, int(len(errors) * trim))
    return float(errors[:keep].mean()) if len(errors) else float("inf")


def judge_answer(
    stats: list[ChunkStats], thresholds: Thresholds = DEFAULT_THRESHOLDS
) -> str | None:
    """None if every chunk passes and the answer's pooled mantissa error is within limits,
    else the first reason it fails."""
    for chunk in stats:
        reason = judge(chunk, thresholds)
        if reason is not None:
            return reason
    pooled = trimmed_error(stats, thresholds.trim)
    if pooled > thresholds.answer_trimmed_err:
        return (
            f"all {len(stats)} chunks: trimmed mean mantissa error {pooled:.2f} bf16 units "
            f"(limit {thresholds.answer_trimmed_err})"
        )
    return None
