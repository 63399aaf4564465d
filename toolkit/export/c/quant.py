"""TFLite's integer requantization, exactly, in Python ints: the emitter's constants, and the
reference the tests hold the C to.

What TFLite Micro computes in each kernel's Prepare (from the float32 scales, in double):
    QuantizeMultiplier(double)               tensorflow/lite/kernels/internal/quantization_util.cc
    QuantizeMultiplierSmallerThanOneExp       (same file; ADD's three multipliers)
and in Eval (double rounding, the default build: TFLITE_SINGLE_ROUNDING is not defined):
    MultiplyByQuantizedMultiplier(x, m, s)    = RDivPOT(SRDHM(x << max(s,0), m), max(-s,0))
    ...SmallerThanOneExp(x, m, s)             = RDivPOT(SRDHM(x, m), -s)
    SRDHM = gemmlowp::SaturatingRoundingDoublingHighMul, RDivPOT = gemmlowp::RoundingDivideByPOT.
The C template implements the same three integer functions; these are the references the
tests compare it with, and the source of every constant the emitter writes.
"""

from __future__ import annotations

import math

INT32_MIN, INT32_MAX = -(1 << 31), (1 << 31) - 1


def tflite_round(x: float) -> int:
    """std::round: half away from zero."""
    return math.floor(x + 0.5) if x >= 0 else -math.floor(-x + 0.5)


def quantize_multiplier(real: float) -> tuple[int, int]:
    """(multiplier Q31, shift) with real ~= multiplier * 2**(shift - 31); TFLite's rules."""
    if real == 0.0:
        return 0, 0
    q, shift = math.frexp(real)
    q_fixed = tflite_round(q * (1 << 31))
    if q_fixed > (1 << 31):
        raise ValueError(f"multiplier {real!r} out of range")
    if q_fixed == (1 << 31):
        q_fixed //= 2
        shift += 1
    if q_fixed > INT32_MAX:
        raise ValueError(f"multiplier {real!r} out of range")
    if shift < -31:
        shift, q_fixed = 0, 0
    return q_fixed, shift


def quantize_multiplier_smaller_than_one_exp(real: float) -> tuple[int, int]:
    if not 0.0 < real < 1.0:
        raise ValueError(f"multiplier {real!r} is not in (0, 1)")
    m, shift = quantize_multiplier(real)
    if shift > 0:
        raise ValueError(f"multiplier {real!r} has a left shift")
    return m, shift


def srdhm(a: int, b: int) -> int:
    """gemmlowp::SaturatingRoundingDoublingHighMul for int32."""
    if a == b == INT32_MIN:
        return INT32_MAX
    ab = a * b
    nudge = (1 << 30) if ab >= 0 else 1 - (1 << 30)
    num = ab + nudge
    q = abs(num) >> 31  # C's division truncates toward zero
    return q if num >= 0 else -q


def rounding_divide_by_pot(x: int, exponent: int) -> int:
    """gemmlowp::RoundingDivideByPOT: round half away from zero."""
    mask = (1 << exponent) - 1
    remainder = x & mask
    threshold = (mask >> 1) + (1 if x < 0 else 0)
    return (x >> exponent) + (1 if remainder > threshold else 0)


def mbqm(x: int, multiplier: int, shift: int) -> int:
    """MultiplyByQuantizedMultiplier(int32, ...), double rounding."""
    left = shift if shift > 0 else 0
    right = -shift if shift < 0 else 0
    shifted = x * (1 << left)
    assert INT32_MIN <= shifted <= INT32_MAX, "int32 overflow in MultiplyByQuantizedMultiplier"
    return rounding_divide_by_pot(srdhm(shifted, multiplier), right)


def mbqm_smaller_than_one_exp(x: int, multiplier: int, shift: int) -> int:
    return rounding_divide_by_pot(srdhm(x, multiplier), -shift)
