"""Turning logits into the next character: temperature, top-k, top-p (nucleus), greedy.

Pure numpy, vectorised over the batch, deterministic for a given numpy Generator.
"""

from __future__ import annotations

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
