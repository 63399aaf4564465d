"""Turning logits into the next character: temperature, top-k, top-p (nucleus), greedy.

Pure numpy, vectorised over the batch, deterministic for a given numpy Generator.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
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
        self._used = 0
        self._state_before_block: Mapping[str, Any] | None = None
        self._one = np.zeros(1, dtype=np.int32)  # batch 1's result, reused

    def _next_uniforms(self) -> np.ndarray:
        if self._used == len(self._uniforms):
            self._state_before_block = self.rng.bit_generator.state
            # Row-major: row i holds what the i-th `rng.random(batch)` call would return.
            self._uniforms = self.rng.random((self._block, self.batch))
            self._used = 0
        u = self._uniforms[self._used]
        self._used += 1
        return u

    def draw(self, logits: np.ndarray) -> np.ndarray:
        """One token id per row, int32 [batch] (at batch 1: valid until the next draw)."""
        if self.greedy:
            return np.asarray(logits.argmax(axis=-1), dtype=np.int32)
        u = self._next_uniforms()
        if not self.plain:  # top-k / top-p: the reference path (rarely the bottleneck)
            cdf = np.cumsum(next_token_probs(logits, self.temperature, self.top_k, self.top_p), -1)
            tokens = (cdf < u[:, None] * cdf[:, -1:]).sum(axis=-1)
            return np.minimum(tokens, logits.shape[-1] - 1).astype(np.int32)
        if self.batch == 1:
            return self._draw_one(logits, float(u[0]))
        # The same float64 arithmetic as next_token_probs, minus the division by the sum.
        z = np.divide(logits, self.temperature, dtype=np.float64)
        np.subtract(z, z.max(axis=-1, keepdims=True), out=z)
        np.exp(z, out=z)
        np.add.accumulate(z, axis=-1, out=z)
        tokens = (z < (u * z[:, -1])[:, None]).sum(axis=-1)
        return np.minimum(tokens, logits.shape[-1] - 1).astype(np.int32)

    def _draw_one(self, logits: np.ndarray, u: float) -> np.ndarray:
        """Batch 1 in four numpy calls: after a step, each costs 1-2 us (cold caches)."""
        z = np.divide(logits[0], self.temperature, dtype=np.float64)
        # Without the usual shift by the maximum: exp overflows only past ~709, which a
        # char model's logits reach at very low temperatures; then it is redone shifted.
        np.exp(z, out=z)
        np.add.accumulate(z, out=z)
        total = float(z[-1])
        if not 0.0 < total < math.inf:
            z = np.divide(logits[0], self.temperature, dtype=np.float64)
            z -= z.max()
            np.exp(z, out=z)
            np.add.accumulate(z, out=z)
            total = float(z[-1])
        token = int(z.searchsorted(u * total))  # = how many running sums are < u * total
        self._one[0] = min(token, z.shape[0] - 1)
        return self._one

    def close(self) -> None:
        """Rewind the random Generator past the uniforms actually used."""
        if self._state_before_block is not None and self._used < len(self._uniforms):
            self.rng.bit_generator.state = self._state_before_block
            if self._used:
                self.rng.random((self._used, self.batch))
        self._uniforms = np.empty((0, self.batch))
        self._used = 0
        self._state_before_block = None
