"""Turning logits into the next character: temperature, top-k, top-p (nucleus), greedy.

Two implementations side by side, as llama2.c keeps its readable `sample()` beside the fast
path: `sample_next` is the definition (float64, one uniform per row per character), and
`Sampler` is the generation loop's hot path, which gives the same tokens for the same random
stream (tested). Pure numpy, deterministic for a given numpy Generator, and each row's token
depends on that row alone (never on the rest of the batch).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from toolkit.errors import UsageError


@dataclass(frozen=True)
class SamplingOptions:
    """How the next character is chosen; checked when made (the library's one check)."""

    temperature: float = 1.0  # 0 is greedy
    top_k: int = 0  # keep the k most likely; 0 keeps all
    top_p: float = 1.0  # keep the smallest set whose probability reaches p

    def __post_init__(self) -> None:
        if not np.isfinite(self.temperature) or self.temperature < 0:
            raise UsageError(f"temperature must be >= 0 (0 means greedy), got {self.temperature}")
        if self.top_k < 0:
            raise UsageError(f"top-k must be >= 0 (0 means no limit), got {self.top_k}")
        if not (0.0 < self.top_p <= 1.0):
            raise UsageError(f"top-p must be in (0, 1], got {self.top_p}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    @property
    def plain(self) -> bool:
        """Temperature alone: no top-k or top-p filter."""
        return self.top_k == 0 and self.top_p >= 1.0


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
# batch's float32 running sums take one (Sampler.rows_drawer); larger batches use float64.
SMALL_MATRIX_PRODUCT = 262_144
# Temperatures at which batch 1 computes exp(logits / T) as e^(1/T) ** logits (row_drawer).
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


class Sampler:
    """`sample_next` for one generation, with the uniforms drawn in blocks.

    Same tokens as `sample_next` for the same random stream (tested), at a fraction of its
    cost: plain temperature sampling skips the normalisation and the no-op filters, and runs
    in float32 first. The float32 draw is kept only when `u * total` is farther from every
    running sum than float32 rounding could move them (`float32_margin`): then the float64
    draw (`Float64Draw`) is the same. Otherwise (about 1 in 200 draws per row) the row is
    redone in float64, `sample_next`'s arithmetic in a different order: a draw could differ
    from it only where `u` falls within rounding (~1e-16) of a boundary. `float64_draws`
    counts the rows drawn in float64. Top-k and top-p use `sample_next`'s own arithmetic.

    `row_drawer` (batch 1) and `rows_drawer` (batch > 1) return the draw as a function with
    its buffers bound, for the generation loop. Call `close()` when done: it hands back the
    uniforms drawn but not used, so the caller's random Generator ends where one
    `rng.random(batch)` per character would have left it.
    """

    def __init__(
        self,
        batch: int,
        temperature: float = 1.0,
        top_k: int = 0,
        top_p: float = 1.0,
        rng: np.random.Generator | None = None,
        block: int = 256,
    ) -> None:
        self.options = SamplingOptions(temperature, top_k, top_p)
        self.batch = batch
        self.temperature = temperature
        self.rng = rng if rng is not None else np.random.default_rng()
        self._block = max(1, block)
        self._uniforms = np.empty((0, batch))
        self._uniform_list: list[float] = []  # batch 1: the block as Python floats
        self._used = 0
        self._state_before_block: Mapping[str, Any] | None = None
        self._float64: Float64Draw | None = None
        self._margin = 0.0  # batch > 1: set when rows_drawer's float32 path is used
        self._bounds = np.empty((0, 2, batch, 1), np.float32)

    @property
    def float64_draws(self) -> int:
        return self._float64.count if self._float64 is not None else 0

    # ----------------------------------------------------------------- the uniforms

    def _draw_block(self) -> None:
        self._state_before_block = self.rng.bit_generator.state
        # Row-major: row i holds what the i-th `rng.random(batch)` call would return.
        self._uniforms = self.rng.random((self._block, self.batch))
        if self.batch == 1:
            self._uniform_list = self._uniforms[:, 0].tolist()
        elif self._margin:  # rows_drawer's float32 path is in use
            self._set_bounds()
        self._used = 0

    def _set_bounds(self) -> None:
        """rows_drawer's float32 acceptance bounds for the block, [block, 2, batch, 1]:
        u - margin and u + margin."""
        u = self._uniforms[:, None, :, None]
        self._bounds = np.concatenate([u - self._margin, u + self._margin], 1).astype(np.float32)

    def _next_uniforms(self) -> np.ndarray:
        if self._used == len(self._uniforms):
            self._draw_block()
        u = self._uniforms[self._used]
        self._used += 1
        return u

    def close(self) -> None:
        """Rewind the random Generator past the uniforms actually used."""
        if self._state_before_block is not None and self._used < len(self._uniforms):
            self.rng.bit_generator.state = self._state_before_block
            if self._used:
                self.rng.random((self._used, self.batch))
        self._uniforms = np.empty((0, self.batch))
        self._uniform_list = []
        self._used = 0
        self._state_before_block = None

    # ----------------------------------------------------------------- the draws

    def _float64_drawer(self, rows: int, vocab_size: int) -> Float64Draw:
        self._float64 = Float64Draw(rows, vocab_size, self.temperature)
        return self._float64

    def _draw_filtered(self, logits: np.ndarray, out: np.ndarray) -> np.ndarray:
        """Top-k / top-p: the reference arithmetic (rarely the bottleneck)."""
        o = self.options
        probs = next_token_probs(logits, o.temperature, o.top_k, o.top_p)
        out[:] = inverse_cdf(probs, self._next_uniforms())
        return out

    def row_drawer(self, vocab_size: int) -> Callable[[np.ndarray], int]:
        """Batch 1's draw as a function of the [1, vocab] logits: the generation loop's hot path.

        Plain temperature sampling is two float32 numpy calls (exp(logits / T) as one
        `power`, and the running sums) and a `bisect` over a memoryview of the sums (Python
        floats, no numpy call), then a check that the two sums around `u * total` are farther
        from it than the margin; if not, the float64 draw. Call it under
        `overflow_detected()`: at very low temperatures exp overflows, which is detected and
        redone. Right after a step every numpy call is slow (cold caches) against a small
        model's step, so buffers and functions are bound once, here, not looked up per
        character.
        """
        if self.options.greedy:
            return lambda logits: int(logits.argmax())
        one = np.zeros(1, np.int32)
        if not self.options.plain:
            return lambda logits: int(self._draw_filtered(logits, one)[0])
        z32, sums32 = np.zeros((1, vocab_size), np.float32), np.zeros(vocab_size, np.float32)
        row32, view32 = z32[0], sums32.data  # a memoryview: indexing gives Python floats
        # The scale as a 0-d array: numpy converts a Python scalar operand on every call.
        scale = np.array(1.0 / self.temperature, np.float32)
        # exp(logits / T) as base ** logits, base = e^(1/T) rounded to float32: one numpy
        # call instead of two. Rounding the base moves the exponent by < |logit| * 6e-8, which
        # is within float32_margin's |logit / T| * 1.2e-7 for T <= 2; outside that range (and
        # where the base overflows) the scale and exp are separate calls.
        low, high = POWER_TEMPERATURES
        one_call = low <= self.temperature <= high
        base = np.array(math.exp(1.0 / self.temperature) if one_call else 1.0, np.float32)
        float64 = self._float64_drawer(1, vocab_size)
        u64 = np.zeros(1)
        margin = float32_margin(vocab_size)
        power, multiply, exp, accumulate = np.power, np.multiply, np.exp, np.add.accumulate
        bisect_left, (tiny, inf) = bisect.bisect_left, FLOAT32_TOTALS

        def draw(logits: np.ndarray) -> int:
            if self._used == len(self._uniform_list):
                self._draw_block()
            u = self._uniform_list[self._used]
            self._used += 1
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
            return int(float64(logits, u64, one)[0])

        return draw

    def rows_drawer(self, vocab_size: int) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
        """Batch > 1's draw as a function of the [batch, vocab] logits and the int32 [batch]
        array to write the tokens into: row_drawer's arithmetic for every row at once.

        The float32 running sums are one matrix product with a triangle of ones (numpy's
        row-wise accumulate is slower). Summed in any order, they are still within the
        margin, and the check below does not need them to be sorted: the float32 draw is kept
        when no running sum of any row lies between (u - margin) * total and
        (u + margin) * total, so that each comparison with u * total is the float64 one. Rows
        that fail are redone in float64, all rows when a total is out of range. Batches too
        large for a small single-threaded matrix product are drawn in float64 throughout.
        Call it under `overflow_detected()`.
        """
        if self.options.greedy:
            return lambda logits, out: np.argmax(logits, -1, out)
        if not self.options.plain:
            return self._draw_filtered
        float64 = self._float64_drawer(self.batch, vocab_size)
        if self.batch * vocab_size * vocab_size > SMALL_MATRIX_PRODUCT:
            return lambda logits, out: float64(logits, self._next_uniforms(), out)
        shape = (self.batch, vocab_size)
        z32, sums32 = np.zeros(shape, np.float32), np.zeros(shape, np.float32)
        triangle = np.triu(np.ones((vocab_size, vocab_size), np.float32))  # [i, j]: i <= j
        both, x_both = np.zeros((2, *shape), dtype=bool), np.zeros((2, self.batch, 1), np.float32)
        low, high = both
        total32, total_column = sums32[:, -1], sums32[:, -1:]
        scale = np.array(1.0 / self.temperature, np.float32)  # 0-d: see row_drawer
        multiply, less, nonzero, dot = np.multiply, np.less, np.count_nonzero, np.dot
        exp, smallest, largest, count = np.exp, np.minimum.reduce, np.maximum.reduce, np.add.reduce
        tiny, inf = FLOAT32_TOTALS
        self._margin = float32_margin(vocab_size)
        self._set_bounds()  # for the block in use, if any; _draw_block sets the next ones

        def draw(logits: np.ndarray, out: np.ndarray) -> np.ndarray:
            row = self._used  # _next_uniforms inlined: the uniforms are needed only to redo
            if row == len(self._uniforms):
                self._draw_block()
                row = 0
            self._used = row + 1
            multiply(logits, scale, z32)
            exp(z32, z32)
            dot(z32, triangle, sums32)
            if not (smallest(total32) > tiny and largest(total32) < inf):
                return float64(logits, self._uniforms[row], out)
            multiply(total_column, self._bounds[row], x_both)  # [2, batch, 1]
            less(sums32, x_both, both)  # [2, batch, vocab]: below low, below high
            count(high, 1, np.int32, out)  # type: ignore[call-overload]
            # low implies high, so equal counts mean no sum between the bounds; else the rows
            # where they differ (usually one) are redone in float64.
            if nonzero(low) != nonzero(high):
                bad = np.flatnonzero(count(low, 1, np.int32) != out)
                out[bad] = float64(
                    logits[bad], self._uniforms[row][bad], np.empty(len(bad), np.int32)
                )
            return out

        return draw
