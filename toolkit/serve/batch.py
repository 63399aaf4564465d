"""The batch: its rows and their arrays, as the last step returned them."""

from __future__ import annotations

import numpy as np

from toolkit.runtime.step import StepBackend
from toolkit.serve.request import Row


class Batch:
    """The rows in batch order, with h and c [layers, rows, units] and the logits of the last
    step [rows, vocab]; gathered again only when the rows change."""

    def __init__(self, layers: int, units: int, vocab_size: int) -> None:
        self.rows: list[Row] = []
        self.h = np.zeros((layers, 0, units), np.float32)
        self.c = np.zeros_like(self.h)
        self.logits = np.zeros((0, vocab_size), np.float32)

    def __len__(self) -> int:
        return len(self.rows)

    def join(self, joining: list[tuple[Row, np.ndarray, np.ndarray, np.ndarray | None]]) -> None:
        """New rows at the end, each with its h and c [layers, units] and its logits (zeros
        when None: a prompt pass has none yet)."""
        self.rows = self.rows + [row for row, *_ in joining]
        self.h = np.concatenate([self.h, np.stack([j[1] for j in joining], 1)], 1)
        self.c = np.concatenate([self.c, np.stack([j[2] for j in joining], 1)], 1)
        zero = np.zeros(self.logits.shape[1], np.float32)
        new_logits = np.stack([zero if j[3] is None else j[3] for j in joining])
        self.logits = np.concatenate([self.logits, new_logits])

    def select(self, index: list[int], rows: list[Row] | None = None) -> None:
        """The batch becomes the rows at `index` (repeats allowed: a fork, whose new rows
        are `rows`)."""
        self.rows = rows if rows is not None else [self.rows[i] for i in index]
        self.h, self.c, self.logits = self.h[:, index], self.c[:, index], self.logits[index]

    def step(self, backend: StepBackend, tokens: np.ndarray, pad: bool) -> None:
        """Every row's next step, fed `tokens` (see padded_step)."""
        size = len(self.rows)
        logits, h, c = padded_step(backend, tokens, self.h, self.c, pad)
        self.logits, self.h, self.c = logits[:size], h[:, :size], c[:, :size]


def padded_step(
    backend: StepBackend, tokens: np.ndarray, h: np.ndarray, c: np.ndarray, pad: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One backend step, the batch padded with zero rows to a power of two when `pad`
    (LiteRT reallocates its tensors whenever the batch changes; rows are batch-invariant,
    so padding changes no row). The caller keeps the first len(tokens) rows."""
    size = len(tokens)
    if pad and size & (size - 1):
        extra = (1 << size.bit_length()) - size
        tokens = np.concatenate([tokens, np.zeros(extra, np.int32)])
        zeros = np.zeros((h.shape[0], extra, h.shape[2]), np.float32)
        h, c = np.concatenate([h, zeros], 1), np.concatenate([c, zeros], 1)
    return backend.step(tokens, np.ascontiguousarray(h), np.ascontiguousarray(c))
