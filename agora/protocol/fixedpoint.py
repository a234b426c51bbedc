"""Integer fixed-point arithmetic on numpy ``int64`` arrays, for results that are bit-identical
on every machine.

Format
------
A real number ``x`` is stored as the integer ``floor(x * ONE)`` with ``ONE = 2**32`` (Q32, the
same quantum as subtensor's ``I32F32``). Proportions live in ``[0, ONE]``; ``ONE`` itself needs 33
bits, so everything is ``int64`` (never ``int32``/``uint32``).

Why the results cannot depend on the machine
--------------------------------------------
* Only integer numpy operations are used: ``+ - * >> & // min max sort take cumsum sum einsum``.
  Integer addition is associative, so a sum is the same whatever order numpy, SIMD lanes or
  threads add the terms in; integer ops never go through BLAS (numpy uses BLAS for floats
  only). No float touches a value that a result depends on (floats appear only in
  :func:`to_float`, for display).
* No intermediate overflows. Each function states its preconditions, and each product is bounded
  below ``2**63`` in its docstring. Where a product of two Q32 numbers (up to ``2**64``) could
  overflow, one factor is split into 16-bit halves: ``a*b = a*(b >> 16)*2**16 + a*(b & 0xFFFF)``,
  and ``floor(a*b / 2**32) = (a*(b >> 16) + ((a*(b & 0xFFFF)) >> 16)) >> 16`` exactly, because
  ``floor(floor(z/m)/n) == floor(z/(m*n))`` for positive ``m, n``. ``>>`` on a negative int64 is
  an arithmetic shift, i.e. ``floor``, so the identity holds for any sign.
* Rounding is always toward minus infinity (``floor``), like ``I32F32`` multiplication (a widening
  multiply followed by an arithmetic shift). Quotients of non-negative numbers are also floored,
  like ``I32F32`` division (truncation). Sums of products (:func:`mul_sum`, :func:`dot_rows`,
  :func:`dot_cols`) are computed exactly and rounded once; subtensor rounds each product, so
  those sums can differ from the chain by up to one unit of ``2**-32`` per term.
* ``exp`` uses two small tables computed with Python's :mod:`decimal` (a software implementation
  of the General Decimal Arithmetic specification; ``Decimal.exp`` is correctly rounded), then
  only integer arithmetic. The same digits come out on every platform.

Public API
----------
``ONE``, ``FRAC_BITS``, ``Q`` (the array type), :func:`ratio`, :func:`to_float`, :func:`split`,
:func:`mul_sum`, :func:`mul`, :func:`ratio_parts` (and ``WIDE``), :func:`div`, :func:`normalize`,
:func:`dot_rows` (:func:`dot_rows_parts`, :func:`combine`), :func:`dot_cols`,
:func:`exp_neg_q31`.
"""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal, localcontext
from typing import Final

import numpy as np
import numpy.typing as npt

Q = npt.NDArray[np.int64]
"""An array of Q32 fixed-point numbers (or of plain integers, where a docstring says so)."""

FRAC_BITS: Final = 32
ONE: Final = 1 << FRAC_BITS
"""The fixed-point representation of 1.0."""

WIDE: Final = FRAC_BITS + 14
"""Shift for ratios that must stay precise when small: ``x * floor(r * 2**WIDE) >> WIDE``."""

_LOW16: Final = (1 << 16) - 1


def ratio(numerator: int, denominator: int) -> int:
    """``floor(numerator / denominator * ONE)`` as a Python int, exactly (0 if denominator is 0).

    Raises:
        ValueError: if ``denominator`` is negative.
    """
    if denominator < 0:
        raise ValueError("ratio: the denominator must not be negative")
    if denominator == 0:
        return 0
    return (numerator << FRAC_BITS) // denominator


def to_float(x: Q) -> npt.NDArray[np.float64]:
    """Q32 to float64, for display and JSON output only: nothing may be computed from it."""
    return np.asarray(x, dtype=np.int64).astype(np.float64) / float(ONE)


def split(x: Q | int) -> tuple[Q, Q]:
    """``(x >> 16, x & 0xFFFF)``: the 16-bit split that keeps products in int64 (see above)."""
    arr = np.asarray(x, dtype=np.int64)
    return arr >> 16, arr & _LOW16


def mul_sum(*terms: tuple[Q, Q, Q], shift: int = FRAC_BITS) -> Q:
    """``floor(sum_t x_t * f_t / 2**shift)`` elementwise (broadcasting), rounded once, exactly.

    Each term is ``(x, f_hi, f_lo)`` with ``f = f_hi * 2**16 + f_lo`` (from :func:`split` or
    :func:`ratio_parts`; ``f`` itself need not fit int64). With the default ``shift`` a Q32
    ``x`` times a Q32 ``f`` gives Q32. Preconditions: ``shift >= 16``, and the sums of
    ``x * f_hi`` and of ``x * f_lo`` stay below ``2**63`` (for ``0 <= x <= ONE`` and
    ``f_lo <= 2**16``: ``sum_t x_t * f_t <= 2**78`` is enough).
    """
    high: Q | None = None
    low: Q | None = None
    for x, f_hi, f_lo in terms:
        term_hi = np.multiply(x, f_hi, dtype=np.int64)
        term_lo = np.multiply(x, f_lo, dtype=np.int64)
        high = term_hi if high is None else _accumulate(high, term_hi)
        low = term_lo if low is None else _accumulate(low, term_lo)
    if high is None or low is None:
        raise ValueError("mul_sum needs at least one term")
    # In place: these arrays are fresh, and big ones are costly to allocate.
    low >>= 16
    high = _accumulate(high, low)
    high >>= shift - 16
    return high


def _accumulate(total: Q, term: Q) -> Q:
    """``total + term``, in place in ``total`` when the shapes allow it."""
    if total.shape == np.broadcast_shapes(total.shape, term.shape):
        total += term
        return total
    result: Q = total + term
    return result


def mul(a: Q | int, b: Q | int, *, shift: int = FRAC_BITS) -> Q:
    """``floor(a * b / 2**shift)`` elementwise (broadcasting), exactly; by default the I32F32
    product ``floor(a * b / ONE)``.

    Preconditions: ``shift >= 16``, ``|a| < 2**47`` and ``|a * b| < 2**79``; always true for Q32
    numbers in ``[-ONE, ONE]``. ``b`` is the operand that gets split, so pass the smaller
    (vector) one there.
    """
    hi, lo = split(b)
    return mul_sum((np.asarray(a, dtype=np.int64), hi, lo), shift=shift)


def ratio_parts(
    numerator: Q | int,
    denominator: Q | int,
    *,
    shift: int = FRAC_BITS,
    round_up: bool = False,
) -> tuple[Q, Q]:
    """``f = floor(numerator * 2**shift / denominator)`` (or ``ceil``) as ``(hi, lo)``.

    ``f = hi * 2**16 + lo`` with ``lo <= 2**16``, ready for :func:`mul_sum` and :func:`dot_rows`
    (with the same ``shift``); ``f`` itself may exceed int64, its parts do not. A ``shift`` above
    32 keeps a small ratio (a large denominator) precise: use :data:`WIDE`. ``(0, 0)`` where the
    denominator is 0. Preconditions: ``shift >= 16``, ``0 <= numerator * 2**(shift - 16) < 2**63``
    and ``0 <= denominator < 2**47``.
    """
    num = np.asarray(numerator, dtype=np.int64)
    den = np.asarray(denominator, dtype=np.int64)
    zero = den == 0
    divisor = np.where(zero, 1, den)
    hi, rem = np.divmod(num << (shift - 16), divisor)
    lo, rem = np.divmod(rem << 16, divisor)  # rem < divisor < 2**47
    if round_up:
        lo = lo + (rem != 0)
    return np.where(zero, 0, hi), np.where(zero, 0, lo)


def div(a: Q | int, b: Q | int) -> Q:
    """``floor(a * ONE / b)`` elementwise (broadcasting), exactly; ``0`` where ``b == 0``.

    I32F32 division of non-negative numbers (subtensor's ``safe_div``), by long division so that
    ``a * ONE`` is never formed. Preconditions: ``0 <= a``, ``0 <= b < 2**47`` and a quotient
    below ``2**63``.
    """
    a_arr = np.asarray(a, dtype=np.int64)
    b_arr = np.asarray(b, dtype=np.int64)
    zero = b_arr == 0
    divisor = np.where(zero, 1, b_arr)
    q0, rem = np.divmod(a_arr, divisor)
    q1, rem = np.divmod(rem << 16, divisor)  # rem < divisor < 2**47, so rem << 16 < 2**63
    q2 = (rem << 16) // divisor
    result: Q = np.where(zero, 0, (q0 << 32) + (q1 << 16) + q2)
    return result


def normalize(x: Q) -> Q:
    """``x / sum(x)`` elementwise, or ``x`` unchanged if the sum is 0 (``inplace_normalize``).

    Precondition: ``x >= 0`` and ``sum(x) < 2**47``.
    """
    total = int(np.sum(x, dtype=np.int64))
    if total == 0:
        return np.array(x, dtype=np.int64)
    return div(x, total)


def dot_rows_parts(matrix: Q, f_hi: Q, f_lo: Q) -> tuple[Q, Q]:
    """The exact sums ``(sum_j matrix[i, j] * f_hi[j], sum_j matrix[i, j] * f_lo[j])`` per row.

    Partial sums over blocks of columns add up exactly; :func:`combine` rounds the total once.
    Preconditions as :func:`dot_rows` (over all the blocks together).
    """
    x = np.einsum("ij,j->i", matrix, f_hi, optimize=False)
    y = np.einsum("ij,j->i", matrix, f_lo, optimize=False)
    return x, y


def combine(high: Q, low: Q, shift: int = FRAC_BITS) -> Q:
    """``floor((high * 2**16 + low) / 2**shift)`` for the parts of a split product or sum."""
    result: Q = (high + (low >> 16)) >> (shift - 16)
    return result


def dot_rows(matrix: Q, f_hi: Q, f_lo: Q, *, shift: int = FRAC_BITS) -> Q:
    """``floor(sum_j matrix[i, j] * f[j] / 2**shift)`` for every row ``i``, rounded once, exactly.

    ``f = f_hi * 2**16 + f_lo`` as from :func:`split` or :func:`ratio_parts` (same ``shift``).
    Preconditions: ``0 <= matrix <= ONE``, ``f_lo <= 2**16``, ``matrix.shape[1] < 2**14`` and
    ``sum_j matrix[i, j] * f[j] <= 2**78`` (e.g. ``matrix[i, j] * f[j] <= 2**shift * g[j]`` with
    ``sum(g) <= ONE``). Integer sums are exact in any order, so this is order-independent.
    """
    return combine(*dot_rows_parts(matrix, f_hi, f_lo), shift)


def dot_cols(vector: Q, matrix: Q) -> Q:
    """``floor(sum_i vector[i] * matrix[i, j] / ONE)`` for every column ``j``, rounded once.

    Preconditions: ``0 <= matrix <= ONE``, ``vector >= 0``, ``sum(vector) < 2**47`` and
    ``matrix.shape[0] < 2**15``: then ``sum_i matrix * (vector >> 16) <= ONE * sum(vector) /
    2**16`` and ``sum_i matrix * (vector & 0xFFFF) < 2**15 * 2**32 * 2**16``, both in int64.
    """
    hi, lo = split(vector)
    x = np.einsum("ij,i->j", matrix, hi, optimize=False)
    y = np.einsum("ij,i->j", matrix, lo, optimize=False)
    result: Q = (x + (y >> 16)) >> 16
    return result


# --- exp ---------------------------------------------------------------------------------------

_Q31_ONE: Final = 1 << 31
_EXP_INT_MAX: Final = 23  # e**-22 * 2**31 < 1, so every larger integer part gives 0.
_EXP_FRAC_BITS: Final = 8  # the fraction's top 8 bits index a table; the rest < 2**-8 is a series


def _decimal_q31(exponent: Decimal) -> int:
    """``round(e**exponent * 2**31)``, ties to even, with 40 correctly rounded digits first."""
    with localcontext() as ctx:
        ctx.prec = 40
        value = exponent.exp() * _Q31_ONE
        return int(value.to_integral_value(rounding=ROUND_HALF_EVEN))


def _decimal_tables() -> tuple[Q, Q]:
    whole = [_decimal_q31(Decimal(-m)) for m in range(_EXP_INT_MAX)]
    steps = 1 << _EXP_FRAC_BITS
    frac = [_decimal_q31(Decimal(-i) / Decimal(steps)) for i in range(steps)]
    return np.array(whole, dtype=np.int64), np.array(frac, dtype=np.int64)


EXP_NEG_INT, EXP_NEG_FRAC = _decimal_tables()
"""``round(e**-m * 2**31)`` for ``m = 0..22`` and ``round(e**(-i/256) * 2**31)`` for ``i < 256``."""
EXP_NEG_INT.flags.writeable = False
EXP_NEG_FRAC.flags.writeable = False


def exp_neg_q31(x: Q) -> Q:
    """``e**(-x)`` for ``x >= 0``; input and output in Q31 (``2**31`` is 1.0). Error < 4e-9.

    ``x = m + i/256 + y`` with ``m`` an integer, ``i < 256`` and ``0 <= y < 1/256``:
    ``e**-x = EXP_NEG_INT[m] * EXP_NEG_FRAC[i] * (1 - y + y**2/2 - y**3/6)``; the series' error
    is below ``y**4/24 < 2**-37``. Every product is of two numbers ``<= 2**31`` (fits int64).
    """
    xa = np.asarray(x, dtype=np.int64)
    whole = xa >> 31
    frac = xa & (_Q31_ONE - 1)
    index = frac >> (31 - _EXP_FRAC_BITS)
    y = frac & ((1 << (31 - _EXP_FRAC_BITS)) - 1)
    y2 = (y * y) >> 31
    y3 = (y2 * y) >> 31
    series = _Q31_ONE - y + (y2 >> 1) - y3 // 6
    overflow = whole >= _EXP_INT_MAX
    head = EXP_NEG_INT[np.where(overflow, 0, whole)]
    value = (head * EXP_NEG_FRAC[index]) >> 31
    value = (value * series) >> 31
    result: Q = np.where(overflow, 0, value)
    return result
