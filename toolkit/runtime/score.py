"""How surprising a text is to the model: each character's log-probability given the ones
before it, and their totals in nats and bits per character.

The state rule is the one training's validation and export validation use: the state starts at
zero, the first character is fed and never predicted (its log-probability is None, as OpenAI's
`echo` reports the first prompt token), and every later character is predicted from all the
characters before it. The mean over the predicted characters is the validation loss.

Exact mode (streams=1) carries one state through the whole text. With `streams=B` the
predicted characters are split into B contiguous segments stepped side by side in one batch:
segment b, whose first predicted character is at position s, starts from the zero state at
position s - 1 - overlap, so its first `overlap` predictions are a warm-up and are not counted.
With overlap=0 and a text of 1 + B*L characters this is exactly how training computes its
validation loss over B streams.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from toolkit.config import ModelConfig
from toolkit.errors import UsageError
from toolkit.metrics import LN2
from toolkit.runtime.step import StepBackend, make_stepper
from toolkit.vocabulary import Vocabulary

# Steps whose logits are kept before they become log-probabilities: bounds the memory
# ([chunk, streams, vocab] float32) whatever the text's length, and paces the progress bar.
CHUNK_STEPS = 4096
CHUNK_VALUES = 1 << 17  # chunk * streams, at most (unless 64 steps are more)
MAX_TOP = 20


class Model(Protocol):
    """What scoring needs of a loaded model (toolkit.runtime.Generator has it)."""

    backend: StepBackend
    vocab: Vocabulary
    chars: list[str]
    shape: ModelConfig
    runtime: str
    variant: str

    def encode(self, text: str, unknown: str = "error") -> list[int]: ...


@dataclass
class Score:
    """A text's score: `logprobs[i]` is log p(char i | chars before it) in nats, NaN for the
    first character (never predicted); `top_ids`/`top_logprobs` [chars, top]: the most likely
    characters at each position, best first (the first row unused)."""

    ids: np.ndarray  # int32 [chars]: the text's token ids (unknown characters skipped)
    logprobs: np.ndarray  # float64 [chars]
    top_ids: np.ndarray  # int32 [chars, top]
    top_logprobs: np.ndarray  # float64 [chars, top]
    streams: int
    overlap: int
    elapsed_s: float
    runtime: str = ""
    variant: str = ""

    @property
    def chars(self) -> int:
        return len(self.ids)

    @property
    def scored(self) -> int:
        """Characters predicted: all but the first."""
        return max(0, len(self.ids) - 1)

    @property
    def total_nats(self) -> float:
        return float(-np.sum(self.logprobs[1:])) if self.scored else 0.0

    @property
    def nats_per_char(self) -> float:
        return self.total_nats / self.scored if self.scored else math.nan

    @property
    def bits_per_char(self) -> float:
        return self.nats_per_char / LN2

    @property
    def chars_per_sec(self) -> float:
        return self.chars / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def to_dict(self, chars: list[str], per_char: bool = True) -> dict[str, Any]:
        """The JSON `toolkit score --json` prints; `chars` is the vocabulary (id -> char)."""
        out: dict[str, Any] = {
            "chars": self.chars,
            "scored": self.scored,
            "total_nats": self.total_nats,
            "nats_per_char": _finite(self.nats_per_char),
            "bits_per_char": _finite(self.bits_per_char),
            "runtime": self.runtime,
            "variant": self.variant,
            "streams": self.streams,
            "overlap": self.overlap,
            "elapsed_s": round(self.elapsed_s, 6),
            "chars_per_sec": round(self.chars_per_sec, 1),
        }
        if not per_char:
            return out
        out["tokens"] = [chars[i] for i in self.ids.tolist()]
        out["logprobs"] = [None, *self.logprobs[1:].tolist()] if self.chars else []
        if self.top_ids.shape[1]:
            tops: list[dict[str, float] | None] = [None] if self.chars else []
            for ids, lps in zip(
                self.top_ids[1:].tolist(), self.top_logprobs[1:].tolist(), strict=True
            ):
                tops.append({chars[i]: lp for i, lp in zip(ids, lps, strict=True)})
            out["top_logprobs"] = tops
        return out


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None


def segments(n: int, streams: int, overlap: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For a text of `n` characters: each row's zero-state start, first counted target and end
    (exclusive) of its targets; the predicted positions 1..n-1 split as evenly as possible."""
    rows = max(1, min(streams, n - 1))
    bounds = 1 + (np.arange(rows + 1, dtype=np.int64) * (n - 1)) // rows
    first, end = bounds[:-1], bounds[1:]
    start = np.maximum(0, first - 1 - overlap)
    return start, first, end


def score(
    generator: Model,
    text: str,
    top: int = 0,
    streams: int = 1,
    overlap: int = 256,
    unknown: str = "error",
    progress: Callable[[int, int], None] | None = None,
) -> Score:
    """Score `text` (see the module's docstring); `progress(done, total)` counts steps."""
    if not 0 <= top <= MAX_TOP:
        raise UsageError(f"top must be in 0..{MAX_TOP}, got {top}")
    if streams < 1:
        raise UsageError(f"streams must be >= 1, got {streams}")
    if overlap < 0:
        raise UsageError(f"overlap must be >= 0, got {overlap}")
    missing = generator.vocab.unknown(text) if unknown == "error" else []
    if missing:
        shown = ", ".join(repr(ch) for ch in missing[:20])
        raise UsageError(
            f"the text has characters not in the model's vocabulary: {shown}"
            " (use --unknown skip to drop them)"
        )
    started = time.perf_counter()
    ids = np.asarray(generator.encode(text, unknown), dtype=np.int32)
    n, vocab = len(ids), len(generator.chars)
    top = min(top, vocab)
    logprobs = np.full(n, np.nan)
    top_ids = np.zeros((n, top), np.int32)
    top_lps = np.full((n, top), np.nan)
    if n < 2:
        elapsed = time.perf_counter() - started
        return Score(
            ids,
            logprobs,
            top_ids,
            top_lps,
            1,
            overlap,
            elapsed,
            generator.runtime,
            generator.variant,
        )
    start, first, end = segments(n, streams, overlap)
    rows = len(start)
    steps = int((end - 1 - start).max())  # row b feeds positions start .. end-2
    h = np.zeros(generator.shape.state_shape(rows), np.float32)
    logits, h, c = generator.backend.step(ids[start], h, h.copy())
    stepper = make_stepper(generator.backend, logits, h, c)
    # At least ~20 chunks, so that a progress bar moves.
    chunk = min(steps, max(64, min(CHUNK_STEPS, CHUNK_VALUES // rows, -(-steps // 20))))
    buffer = np.empty((chunk, rows, vocab), np.float32)
    for at in range(0, steps, chunk):
        span = min(chunk, steps - at)
        position = start[None, :] + at + np.arange(span)[:, None]  # [span, rows]: fed char
        # A row past its end feeds on (the next segment's text, or the last character again);
        # those steps are not counted.
        fed = ids[np.minimum(position + 1, n - 1)]
        for t in range(span):
            buffer[t] = logits
            if at + t + 1 < steps:
                logits = stepper.advance(fed[t])
        target = position + 1
        counted = (target >= first[None, :]) & (target < end[None, :])
        if counted.any():
            where = target[counted]
            picked = buffer[:span][counted]  # [k, vocab]
            log_probs = _log_softmax(picked)
            logprobs[where] = log_probs[np.arange(len(where)), ids[where]]
            if top:
                best = np.argpartition(-log_probs, top - 1, axis=1)[:, :top]
                best_lp = np.take_along_axis(log_probs, best, axis=1)
                order = np.argsort(-best_lp, axis=1, kind="stable")
                top_ids[where] = np.take_along_axis(best, order, axis=1)
                top_lps[where] = np.take_along_axis(best_lp, order, axis=1)
        if progress is not None:
            progress(at + span, steps)
    return Score(
        ids,
        logprobs,
        top_ids,
        top_lps,
        rows,
        overlap,
        time.perf_counter() - started,
        generator.runtime,
        generator.variant,
    )


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float64)
    z -= z.max(axis=-1, keepdims=True)
    z -= np.log(np.exp(z).sum(axis=-1, keepdims=True))
    return z
