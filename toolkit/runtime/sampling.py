"""Turning logits into the next character: temperature, top-k, top-p (nucleus), greedy.

Two implementations side by side, as llama2.c keeps its readable `sample()` beside the fast
path: `sample_next` is the definition (float64, one uniform per row per character), and the
drawers below (`OneDraw` for one row, `RowsDraw` for several) are the decoder's hot path,
which give the same token for the same uniform (tested). Pure numpy; each row's token depends
on its own logits and uniform alone (never on the rest of the batch). Where the uniforms come
from (one random stream per request) is the decoder's business (`toolkit/runtime/decode.py`).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable

import numpy as np

# --------------------------------------------------------------------------- the definition


def top_k_mask(logits: np.ndarray, k: int) -> np.ndarray:
    """True where a logit is among the k largest of its row (ties at the border kept)."""
    if k <= 0 or k >= logits.shape[-1]:
        return np.ones(logits.shape, dtype=bool)
    kth = np.partition(logits, -k, axis=-1)[..., -k][..., None]
    return np.asarray(logits >= kth)


def top_p_mask(probs: np.ndarray, p: float) -> np.ndarray:
    """True for the smallest set of most likely tokens whose probability sums to >= p."""
    if p >= 1.0:
        return np.ones(probs.shape, dtype=bool)
    order = np.argsort(-probs, axis=-1, kind="stable")
    sorted_probs = np.take_along_axis(probs, order, axis=-1)
    before = np.cumsum(sorted_probs, axis=-1) - sorted_probs  # mass strictly before each token
    keep_sorted = before < p  # the first token always has before == 0 < p
    mask = np.zeros(probs.shape, dtype=bool)
    np.put_along_axis(mask, order, keep_sorted, axis=-1)
    return mask


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return np.asarray(e / e.sum(axis=-1, keepdims=True))


def next_token_probs(
    logits: np.ndarray, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0
) -> np.ndarray:
    """The distribution sampled from, [batch, vocab] float64; temperature > 0."""
    z = logits.astype(np.float64) / temperature
    z = np.where(top_k_mask(z, top_k), z, -np.inf)
    probs = softmax(z)
    if top_p < 1.0:
        probs = np.where(top_p_mask(probs, top_p), probs, 0.0)
        probs /= probs.sum(axis=-1, keepdims=True)
    return probs


def inverse_cdf(probs: np.ndarray, u: np.ndarray) -> np.ndarray:
    """For each row, how many running sums of `probs` lie below u * total: the token."""
    cdf = np.cumsum(probs, axis=-1)
    tokens = (cdf < u[:, None] * cdf[:, -1:]).sum(axis=-1)
    return np.minimum(tokens, probs.shape[-1] - 1).astype(np.int32)


def sample_next(
    logits: np.ndarray,
    rng: np.random.Generator,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
) -> np.ndarray:
    """One token id per row, int32 [batch]. Temperature 0 is greedy (argmax)."""
    if temperature == 0:
        return np.asarray(logits.argmax(axis=-1), dtype=np.int32)
    probs = next_token_probs(logits, temperature, top_k, top_p)
    # Inverse-CDF with one uniform per row: identical draws for every runtime and batch size.
    return inverse_cdf(probs, np.asarray(rng.random(probs.shape[0])))


# --------------------------------------------------------------------------- the fast path

# A float32 draw is kept only for totals in this range: beyond it exp overflows float32, and
# below it subnormal terms lose their precision. Anything else is drawn in float64.
FLOAT32_TOTALS = (1e-20, math.inf)
# Multiply-adds up to which OpenBLAS runs a matrix product on one thread (64k * 4): the
# rows' float32 running sums take one (RowsDraw); more rows are drawn in float64.
SMALL_MATRIX_PRODUCT = 262_144
# Temperatures at which one row computes exp(logits / T) as e^(1/T) ** logits (OneDraw).
POWER_TEMPERATURES = (0.05, 2.0)


def overflow_detected() -> np.errstate:
    """The drawers' floating-point state: at very low temperatures exp overflows (and inf * 0
    in the matrix product is NaN); both are detected and the draw redone, so no warning."""
    return np.errstate(over="ignore", invalid="ignore")


def float32_margin(vocab_size: int) -> float:
    """How far from every float32 running sum `u * total` must be, as a fraction of the
    total, for the float32 draw to be the float64 draw.

    Every term that counts has |logit / T| < 89 (exp(89) overflows float32; smaller terms are
    lost below 1e-20 of the total). Rounding the scaled logit moves a term by < 89 * 1.2e-7
    of itself, exp by < 4 ulp (2.4e-7), and summing `vocab_size` terms moves a running sum by
    < vocab_size * 6e-8 of the total. Both sides of the comparison move: twice that, then
    four times for safety (1.2e-4 for 65 characters).
    """
    return 8 * (89 * 1.2e-7 + 2.4e-7 + vocab_size * 6e-8)


class Float64Draw:
    """Plain temperature sampling in float64, for [rows, vocab] logits and one uniform per row:
    the draw the float32 paths must reproduce, and what they fall back to.

    `next_token_probs`'s arithmetic minus the division by the sum (comparing the running sums
    with u * total needs none) and without the shift by the maximum: exp overflows only past
    ~709, which a character model's logits reach at very low temperatures; a row whose total
    overflowed (or vanished) is redone shifted, on its own. Buffers are made once for `rows`;
    positional `out` arguments, because numpy's keyword and casting paths cost as much as
    the arithmetic at this size.
    """

    def __init__(self, rows: int, vocab_size: int, temperature: float) -> None:
        self.rows = rows
        self.z = np.zeros((rows, vocab_size))
        self.sums = np.zeros((rows, vocab_size))
        self.below = np.zeros((rows, vocab_size), dtype=bool)
        self.threshold = np.zeros((rows, 1))
        self.divisor = np.array(temperature)  # the same division as by the Python float
        self.count = 0  # rows drawn

    def __call__(self, logits: np.ndarray, u: np.ndarray, out: np.ndarray) -> np.ndarray:
        rows = len(logits)
        if rows == self.rows:
            z, sums, below, threshold = self.z, self.sums, self.below, self.threshold
        else:  # a few rows redone from a larger batch
            z, sums = np.zeros(logits.shape), np.zeros(logits.shape)
            below, threshold = np.zeros(logits.shape, dtype=bool), np.zeros((rows, 1))
        self.count += rows
        np.copyto(z, logits)  # exact: float32 -> float64
        np.divide(z, self.divisor, z)
        np.exp(z, z)
        # Into a buffer of their own: accumulating in place makes numpy copy the input.
        np.add.accumulate(z, 1, None, sums)
        total = sums[:, -1]
        if not (np.minimum.reduce(total) > 0.0 and np.maximum.reduce(total) < math.inf):
            for row in np.flatnonzero(~((total > 0.0) & (total < math.inf))):
                shifted = logits[row].astype(np.float64) / self.divisor
                shifted = np.exp(shifted - shifted.max())
                np.add.accumulate(shifted, 0, None, sums[row])
        np.multiply(sums[:, -1:], u[:, None], threshold)
        np.less(sums, threshold, below)
        # How many running sums are below u * total; never all of them (the last is the total,
        # and u < 1), so no clamp is needed; NaN logits give 0.
        return np.add.reduce(below, 1, np.int32, out)  # type: ignore[call-overload]


class OneDraw:
    """Plain temperature sampling for one row: `Float64Draw`'s token at a fraction of its
    cost, the decoder's batch-1 hot path.

    Two float32 numpy calls (exp(logits / T) as one `power`, and the running sums) and a
    `bisect` over a memoryview of the sums (Python floats, no numpy call), then a check that
    the two sums around `u * total` are farther from it than `float32_margin`: then the float64
    draw is the same; if not (about 1 in 200 draws), the float64 draw. Call it under
    `overflow_detected()`. Right after a step every numpy call is slow (cold caches) against a
    small model's step, so buffers and functions are bound once, here, not per character.
    """

    def __init__(self, vocab_size: int, temperature: float) -> None:
        self.float64 = Float64Draw(1, vocab_size, temperature)
        self.draw = self._bind(vocab_size, temperature)

    @property
    def float64_draws(self) -> int:
        return self.float64.count

    def __call__(self, logits: np.ndarray, u: float) -> int:
        """The token for [1, vocab] logits and the uniform u (`draw` is the same, faster)."""
        return self.draw(logits, u)

    def _bind(self, vocab_size: int, temperature: float) -> Callable[[np.ndarray, float], int]:
        z32, sums32 = np.zeros((1, vocab_size), np.float32), np.zeros(vocab_size, np.float32)
        row32, view32 = z32[0], sums32.data  # a memoryview: indexing gives Python floats
        # The scale as a 0-d array: numpy converts a Python scalar operand on every call.
        scale = np.array(1.0 / temperature, np.float32)
        # exp(logits / T) as base ** logits, base = e^(1/T) rounded to float32: one numpy
        # call instead of two. Rounding the base moves the exponent by < |logit| * 6e-8, which
        # is within float32_margin's |logit / T| * 1.2e-7 for T <= 2; outside that range (and
        # where the base overflows) the scale and exp are separate calls.
        low, high = POWER_TEMPERATURES
        one_call = low <= temperature <= high
        base = np.array(math.exp(1.0 / temperature) if one_call else 1.0, np.float32)
        float64, u64, token64 = self.float64, np.zeros(1), np.zeros(1, np.int32)
        margin = float32_margin(vocab_size)
        power, multiply, exp, accumulate = np.power, np.multiply, np.exp, np.add.accumulate
        bisect_left, (tiny, inf) = bisect.bisect_left, FLOAT32_TOTALS

        def draw(logits: np.ndarray, u: float) -> int:
            if one_call:
                power(base, logits, z32)
            else:
                multiply(logits, scale, z32)
                exp(z32, z32)
            accumulate(row32, 0, None, sums32)
            total = view32[-1]
            if tiny < total < inf:
                x = u * total
                token = bisect_left(view32, x)
                # The sums only grow, so the two around x are the nearest ones.
                gap = margin * total
                if view32[token] - x > gap and (token == 0 or x - view32[token - 1] > gap):
                    return token
            u64[0] = u
            return int(float64(logits, u64, token64)[0])

        return draw


class RowsDraw:
    """Plain temperature sampling for `rows` rows at one temperature, each with its own
    uniform: `OneDraw`'s arithmetic for every row at once.

    The float32 running sums are one matrix product with a triangle of ones (numpy's row-wise
    accumulate is slower). Summed in any order, they are still within the margin, and the
    check below does not need them to be sorted: the float32 draw is kept when no running sum
    of any row lies between (u - margin) * total and (u + margin) * total, so that each
    comparison with u * total is the float64 one. Rows that fail are redone in float64, all
    rows when a total is out of range. Too many rows for a small single-threaded matrix
    product are drawn in float64 throughout. Call it under `overflow_detected()`.
    """

    def __init__(self, rows: int, vocab_size: int, temperature: float) -> None:
        self.rows = rows
        self.float64 = Float64Draw(rows, vocab_size, temperature)
        self.float32 = rows * vocab_size * vocab_size <= SMALL_MATRIX_PRODUCT
        if not self.float32:
            return
        shape = (rows, vocab_size)
        self._z32, self._sums32 = np.zeros(shape, np.float32), np.zeros(shape, np.float32)
        self._triangle = np.triu(np.ones((vocab_size, vocab_size), np.float32))  # i <= j
        self._below = np.zeros((2, *shape), dtype=bool)
        self._bounds = np.zeros((2, rows, 1), np.float32)
        self._x = np.zeros((2, rows, 1), np.float32)
        self._margin = np.array([[[-1.0]], [[1.0]]]) * float32_margin(vocab_size)
        self._scale = np.array(1.0 / temperature, np.float32)  # 0-d: see OneDraw

    @property
    def float64_draws(self) -> int:
        return self.float64.count

    def __call__(self, logits: np.ndarray, u: np.ndarray, out: np.ndarray) -> np.ndarray:
        """Tokens of [rows, vocab] logits for the uniforms u [rows] into `out` (int32)."""
        if not self.float32:
            return self.float64(logits, u, out)
        z32, sums32 = self._z32, self._sums32
        np.multiply(logits, self._scale, z32)
        np.exp(z32, z32)
        np.dot(z32, self._triangle, sums32)
        totals = sums32[:, -1]
        tiny, inf = FLOAT32_TOTALS
        if not (np.minimum.reduce(totals) > tiny and np.maximum.reduce(totals) < inf):
            return self.float64(logits, u, out)
        np.add(u[:, None], self._margin, self._bounds, casting="unsafe")  # [2, rows, 1]
        np.multiply(sums32[:, -1:], self._bounds, self._x)
        low, high = self._below
        np.less(sums32, self._x, self._below)  # [2, rows, vocab]: below low, below high
        np.add.reduce(high, 1, np.int32, out)  # type: ignore[call-overload]
        # low implies high, so equal counts mean no sum between the bounds; else the rows
        # where they differ (usually one) are redone in float64.
        if np.count_nonzero(low) != np.count_nonzero(high):
            bad = np.flatnonzero(np.add.reduce(low, 1, np.int32) != out)
            out[bad] = self.float64(logits[bad], u[bad], np.empty(len(bad), np.int32))
        return out


def draw_filtered(
    logits: np.ndarray, u: np.ndarray, temperature: float, top_k: int, top_p: float
) -> np.ndarray:
    """Top-k / top-p rows: `sample_next`'s own arithmetic for the given uniforms."""
    return inverse_cdf(next_token_probs(logits, temperature, top_k, top_p), u)
