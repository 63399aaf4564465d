"""Quality in one unit: bits per character (nats / ln 2), from losses or from logits."""

from __future__ import annotations

import math

import numpy as np

LN2 = math.log(2.0)


def bits_per_char(nats: float) -> float:
    return nats / LN2


def mean_bits_per_char(logits: np.ndarray, targets: np.ndarray) -> float:
    """Mean cross-entropy in bits of `targets` [...] under `logits` [..., vocab], in float64."""
    z = logits.astype(np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    log_probs = z - np.log(np.exp(z).sum(axis=-1, keepdims=True))
    picked = np.take_along_axis(log_probs, targets[..., None], axis=-1)
    return float(-picked.mean() / LN2)
