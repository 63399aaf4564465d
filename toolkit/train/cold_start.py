"""Cold-start quality: how well a model does from the zero state, where every generation begins.

Training carries the LSTM state across windows and validation carries it through the text,
so neither sees what a user sees: `generate --prompt "ROMEO:"` from zeros, with no line break
before the prompt. Two figures, both deterministic for a given text and model:

    line-start loss   mean nats over the first 64 characters of 256 validation windows that
                      begin at a line start, each from the zero state (and over the first 8)
    degenerate starts greedy 200 characters after each of the corpus's 40 most common
                      line-start prompts (speaker names such as "ROMEO:"; else first words of
                      lines), from zeros; degenerate = a run of >= 8 identical non-space
                      characters, < 60% letters and spaces, or fewer than half of its letters
                      in words that occur in the corpus ("UXUXXXUXXUkUXXUk..." passes the
                      first two tests)

They run on any StepBackend (numpy on the training weights, or an exported model).
"""

from __future__ import annotations

import math
import re
import time
from collections import Counter
from dataclasses import dataclass

import numpy as np

from toolkit.runtime.step import StepBackend

WINDOWS = 256
WINDOW_CHARS = 64
FIRST_CHARS = 8
PROMPTS = 40
GREEDY_CHARS = 200
SPEAKER = re.compile(r"^[^\s:][^:\n]{0,40}:$")  # a line that is just a name and a colon
WORD = re.compile(r"[^\W\d_]+(?:'[^\W\d_]+)*")  # letters, with inner apostrophes


@dataclass(frozen=True)
class ColdStart:
    line_start_loss: float  # nats/char over the first WINDOW_CHARS characters
    first_chars_loss: float  # nats/char over the first FIRST_CHARS characters
    degenerate: int  # of len(prompts)
    prompts: int
    examples: dict[str, str]  # a few prompts -> greedy text, for reports

    def to_dict(self) -> dict[str, object]:
        return {
            "cold_loss": round(self.line_start_loss, 5),
            "cold_loss_first8": round(self.first_chars_loss, 5),
            "degenerate_starts": self.degenerate,
            "cold_prompts": self.prompts,
        }


def line_start_windows(ids: np.ndarray, newline: int, count: int = WINDOWS) -> np.ndarray:
    """[count, WINDOW_CHARS + 1] windows starting right after a line break (not a blank line),
    evenly spread over the text."""
    need = WINDOW_CHARS + 1
    starts = np.flatnonzero(ids[:-need] == newline) + 1
    starts = starts[ids[starts] != newline]
    if len(starts) == 0:
        return np.zeros((0, need), np.int32)
    picked = starts[np.linspace(0, len(starts) - 1, min(count, len(starts))).astype(int)]
    return np.stack([ids[s : s + need] for s in picked]).astype(np.int32)


def common_line_starts(text: str, count: int = PROMPTS) -> list[str]:
    """The corpus's most common speaker lines ("ROMEO:"), else its most common first words."""
    lines = [line.strip() for line in text.splitlines()]
    speakers = Counter(line for line in lines if SPEAKER.match(line))
    if len(speakers) >= count // 2:
        return [name for name, _ in speakers.most_common(count)]
    words = Counter(line.split()[0] for line in lines if line.split())
    return [word for word, _ in words.most_common(count)]


def corpus_words(text: str) -> set[str]:
    return set(WORD.findall(text))


def is_degenerate(text: str, known_words: set[str] | None = None) -> bool:
    if re.search(r"(\S)\1{7,}", text):
        return True
    good = sum(ch.isalpha() or ch in " \n" for ch in text)
    if good < 0.6 * max(1, len(text)):
        return True
    if known_words:
        words = WORD.findall(text)
        letters = sum(len(w) for w in words)
        real = sum(len(w) for w in words if w in known_words)
        return real < 0.5 * letters
    return False


def measure(
    backend: StepBackend,
    layers: int,
    units: int,
    chars: list[str],
    val_ids: np.ndarray,
    prompts: list[str],
    known_words: set[str] | None = None,
) -> ColdStart:
    index = {ch: i for i, ch in enumerate(chars)}
    loss, first = _line_start_loss(backend, layers, units, val_ids, index.get("\n"))
    texts = _greedy(backend, layers, units, chars, index, prompts)
    bad = {p: t for p, t in texts.items() if is_degenerate(t, known_words)}
    examples = dict(list(bad.items())[:3] or list(texts.items())[:1])
    return ColdStart(loss, first, len(bad), len(texts), examples)


def estimate_seconds(backend: StepBackend, layers: int, units: int, prompts: int) -> float:
    """About how long `measure` takes on this backend: three of each of its two kinds of
    step timed (WINDOWS line-start windows, then the greedy starts of `prompts` prompts)."""
    total = 0.0
    for batch, steps in ((WINDOWS, WINDOW_CHARS), (max(1, prompts), GREEDY_CHARS + 10)):
        h = np.zeros((layers, batch, units), np.float32)
        tokens = np.zeros(batch, np.int32)
        backend.step(tokens, h, h)
        started = time.perf_counter()
        for _ in range(3):
            backend.step(tokens, h, h)
        total += (time.perf_counter() - started) / 3 * steps
    return total


def _line_start_loss(
    backend: StepBackend, layers: int, units: int, ids: np.ndarray, newline: int | None
) -> tuple[float, float]:
    if newline is None:
        return math.nan, math.nan
    windows = line_start_windows(ids, newline)
    if len(windows) == 0:
        return math.nan, math.nan
    h = np.zeros((layers, len(windows), units), np.float32)
    c = np.zeros_like(h)
    nats = np.empty((len(windows), WINDOW_CHARS))
    for t in range(WINDOW_CHARS):
        logits, h, c = backend.step(np.ascontiguousarray(windows[:, t]), h, c)
        z = logits.astype(np.float64)
        z -= z.max(axis=1, keepdims=True)
        log_norm = np.log(np.exp(z).sum(axis=1))
        nats[:, t] = log_norm - z[np.arange(len(windows)), windows[:, t + 1]]
    return float(nats.mean()), float(nats[:, :FIRST_CHARS].mean())


def _greedy(
    backend: StepBackend,
    layers: int,
    units: int,
    chars: list[str],
    index: dict[str, int],
    prompts: list[str],
) -> dict[str, str]:
    """Greedy continuations of every prompt, in one batch (prompts of different lengths are fed
    side by side; each row starts choosing once its own prompt is in)."""
    encoded = [[index[ch] for ch in p if ch in index] for p in prompts]
    rows = [(p, e) for p, e in zip(prompts, encoded, strict=True) if e]
    if not rows:
        return {}
    longest = max(len(e) for _, e in rows)
    h = np.zeros((layers, len(rows), units), np.float32)
    c = np.zeros_like(h)
    out = np.zeros((len(rows), longest + GREEDY_CHARS), np.int32)
    token = np.array([e[0] for _, e in rows], np.int32)
    for t in range(longest + GREEDY_CHARS - 1):
        logits, h, c = backend.step(token, h, c)
        chosen = logits.argmax(axis=1).astype(np.int32)
        nxt = t + 1
        token = np.array(
            [e[nxt] if nxt < len(e) else chosen[r] for r, (_, e) in enumerate(rows)], np.int32
        )
        out[:, nxt] = token
    return {
        p: "".join(chars[i] for i in out[r, len(e) : len(e) + GREEDY_CHARS])
        for r, (p, e) in enumerate(rows)
    }
