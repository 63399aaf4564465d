"""Turning logits into the next character: temperature, top-k, top-p (nucleus), greedy.

Pure numpy, vectorised over the batch, deterministic for a given numpy Generator.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from toolkit.errors import UsageError


def check_sampling_args(temperature: float, top_k: int, top_p: float) -> None:
    if not np.isfinite(temperature) or temperature < 0:
        raise UsageError(f"temperature must be >= 0 (0 means greedy), got {temperature}")
    if top_k < 0:
        raise UsageError(f"top-k must be >= 0 (0 means no limit), got {top_k}")
    if not (0.0 < top_p <= 1.0):
        raise UsageError(f"top-p must be in (0, 1], got {top_p}")


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
    u = np.asarray(rng.random(probs.shape[0]))[:, None]
    cdf = np.cumsum(probs, axis=-1)
    tokens = (cdf < u * cdf[:, -1:]).sum(axis=-1)
    return np.minimum(tokens, probs.shape[-1] - 1).astype(np.int32)


class Sampler:
    """`sample_next` for one generation: the per-character hot path, vectorised over the batch.

    Same tokens as `sample_next` for the same random stream (tested), at a fraction of its
    cost: uniforms are drawn in blocks instead of once per character, and plain temperature
    sampling skips the normalisation (comparing the running sum against `u * total` needs
    none) and the no-op top-k/top-p masks. At batch 1 one step of a small int8 model takes
    ~30 us, so each numpy call here (~0.5-1.5 us) counts. The arithmetic is float64 like
    `sample_next`'s, in a different order: a draw could differ only where `u` falls within
    rounding (~1e-16) of a boundary between two characters.

    Call `close()` when done: it hands back the uniforms drawn but not used, so the caller's
    random Generator ends where one `rng.random(batch)` per character would have left it.
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
        check_sampling_args(temperature, top_k, top_p)
        self.batch = batch
        self.temperature = temperature
        self.top_k = top_k
        self.top_p = top_p
        self.rng = rng if rng is not None else np.random.default_rng()
        self.greedy = temperature == 0
        self.plain = top_k == 0 and top_p >= 1.0
        self._block = max(1, block)
        self._uniforms = np.empty((0, batch))
        self._uniform_list: list[float] = []  # batch 1: the block as Python floats
        self._used = 0
        self._state_before_block: Mapping[str, Any] | None = None
        self._one = np.zeros(1, dtype=np.int32)  # batch 1's result, reused
        # Batch > 1: running sums, thresholds and comparisons, reused every draw.
        self._rows = (np.zeros((0, 0)), np.zeros((0, 1)), np.zeros((0, 0), dtype=bool))
        self._row_draw: Callable[[np.ndarray], int] | None = None  # batch 1, see row_drawer
        self._row_vocab = 0

    def _draw_block(self) -> None:
        self._state_before_block = self.rng.bit_generator.state
        # Row-major: row i holds what the i-th `rng.random(batch)` call would return.
        self._uniforms = self.rng.random((self._block, self.batch))
        if self.batch == 1:
            self._uniform_list = self._uniforms[:, 0].tolist()
        self._used = 0

    def _next_uniforms(self) -> np.ndarray:
        if self._used == len(self._uniforms):
            self._draw_block()
        u = self._uniforms[self._used]
        self._used += 1
        return u

    def draw(self, logits: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """One token id per row, int32 [batch], into `out` if given (a new array otherwise;
        at batch 1 without `out`: an array reused by the next draw)."""
        if self.batch == 1:
            token = self.draw_one(logits)
            if out is None:
                out = self._one
            out[0] = token
            return out
        if out is None:
            out = np.empty(self.batch, dtype=np.int32)
        if self.greedy:
            np.argmax(logits, -1, out)
            return out
        u = self._next_uniforms()
        if not self.plain:  # top-k / top-p: the reference path (rarely the bottleneck)
            cdf = np.cumsum(next_token_probs(logits, self.temperature, self.top_k, self.top_p), -1)
            tokens = (cdf < u[:, None] * cdf[:, -1:]).sum(axis=-1)
            out[:] = np.minimum(tokens, logits.shape[-1] - 1)
            return out
        z, threshold, below = self._rows
        if z.shape != logits.shape:
            z, threshold, below = self._rows = (
                np.zeros(logits.shape),
                np.zeros((logits.shape[0], 1)),
                np.zeros(logits.shape, dtype=bool),
            )
        # row_drawer's arithmetic, row by row, in preallocated buffers with positional `out`.
        np.copyto(z, logits)
        np.divide(z, self.temperature, z)
        with np.errstate(over="ignore"):  # an overflowing row is redone shifted, below
            np.exp(z, z)
        np.add.accumulate(z, 1, None, z)
        total = z[:, -1]
        if not (total.min() > 0.0 and total.max() < math.inf):
            np.copyto(z, logits)
            np.divide(z, self.temperature, z)
            z -= z.max(axis=-1, keepdims=True)
            np.exp(z, z)
            np.add.accumulate(z, 1, None, z)
        np.multiply(total, u, threshold[:, 0])
        np.less(z, threshold, below)
        # How many running sums are below u * total; never all of them (the last is the
        # total, and u < 1), so no clamp is needed.
        np.sum(below, 1, np.int32, out)
        return out

    def draw_one(self, logits: np.ndarray) -> int:
        """Batch 1's token as a Python int (see `row_drawer`)."""
        if self._row_draw is None or self._row_vocab != logits.shape[-1]:
            self._row_draw = self.row_drawer(logits.shape[-1])
            self._row_vocab = logits.shape[-1]
        with np.errstate(over="ignore"):  # an overflow is detected and redone (row_drawer)
            return self._row_draw(logits)

    def row_drawer(self, vocab_size: int) -> Callable[[np.ndarray], int]:
        """Batch 1's draw as a function of the [1, vocab] logits: the generation loop's hot path.

        Plain temperature sampling is four numpy calls and a `bisect` over a memoryview of
        the running sums (Python floats, no numpy call). Call it under
        `np.errstate(over="ignore")`: at very low temperatures exp overflows, which is
        detected and redone shifted. After a step every numpy call costs
        0.5-1.5 us (cold caches) against ~25 us for the step of a small int8 model, so the
        buffers and functions are bound once, here, instead of looked up per character.
        """
        if self.greedy:
            return lambda logits: int(logits.argmax())
        if not self.plain:
            return self._draw_one_filtered
        z = np.zeros((1, vocab_size))
        row = z[0]
        view = memoryview(row)  # indexing gives Python floats, so `bisect` needs no numpy
        copyto, divide, exp, accumulate = np.copyto, np.divide, np.exp, np.add.accumulate
        bisect_left, inf, temperature, last = (
            bisect.bisect_left,
            math.inf,
            self.temperature,
            vocab_size - 1,
        )

        def draw(logits: np.ndarray) -> int:
            if self._used == len(self._uniform_list):
                self._draw_block()
            u = self._uniform_list[self._used]
            self._used += 1
            # The float64 arithmetic of next_token_probs, minus the division by the sum, and
            # without the usual shift by the maximum: exp overflows only past ~709, which a
            # char model's logits reach at very low temperatures; then it is redone shifted.
            # Positional `out` and an exact float32 -> float64 copy instead of `dtype=`:
            # numpy's keyword and casting paths cost a microsecond a call here.
            copyto(z, logits)
            divide(z, temperature, z)
            exp(z, z)
            accumulate(row, 0, None, row)
            total = view[-1]
            if not 0.0 < total < inf:
                copyto(z, logits)
                divide(z, temperature, z)
                np.subtract(z, z.max(), z)
                exp(z, z)
                accumulate(row, 0, None, row)
                total = view[-1]
            # bisect_left = how many running sums are < u * total, as searchsorted counts.
            return min(bisect_left(view, u * total), last)

        return draw

    def _draw_one_filtered(self, logits: np.ndarray) -> int:
        """Top-k / top-p at batch 1: the reference arithmetic (rarely the bottleneck)."""
        if self._used == len(self._uniform_list):
            self._draw_block()
        u = self._uniform_list[self._used]
        self._used += 1
        cdf = np.cumsum(next_token_probs(logits, self.temperature, self.top_k, self.top_p), -1)
        return min(int((cdf[0] < u * cdf[0, -1]).sum()), logits.shape[-1] - 1)

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
