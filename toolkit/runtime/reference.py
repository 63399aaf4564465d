"""What `Generator.generate` does, written plainly: the loop the fast one is tested against.

As llama2.c keeps its readable loop beside the fast one: a step per character on the whole
batch, `sample_next` (one uniform per row per character), Python strings, the stop string
checked on each row's tail. `Generator.generate` must give the same texts for the same seed
and leave the random stream and the LSTM state where this leaves them (tests/runtime).
"""

from __future__ import annotations

import numpy as np

from toolkit.config import ModelConfig
from toolkit.runtime.pattern import Pattern
from toolkit.runtime.sampling import sample_next
from toolkit.runtime.step import StepBackend
from toolkit.vocabulary import Vocabulary


def feed(
    backend: StepBackend, token: int, h: np.ndarray, c: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One step with the same token in every row."""
    return backend.step(np.full(h.shape[1], token, dtype=np.int32), h, c)


def sample(
    backend: StepBackend,
    vocab: Vocabulary,
    logits: np.ndarray,
    h: np.ndarray,
    c: np.ndarray,
    length: int,
    rng: np.random.Generator,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    stop: str | None = None,
    logit_bias: dict[int, float] | None = None,
    presence_penalty: float = 0.0,
    frequency_penalty: float = 0.0,
    pattern: Pattern | None = None,
) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
    """Sample up to `length` characters per row from `logits` and the state after them; the
    texts and the state after the last step (the last character is fed too, so that a
    session continues from it), unless every row stopped first.

    Before each draw, per row: the logit bias is added, the penalties subtracted (OpenAI's
    rule: frequency x count + presence x (count > 0), over the generated characters), and a
    pattern masks the characters that cannot keep the text inside it within the characters
    left, unless the text so far is already a full match: then nothing is masked, and a
    character that cannot continue ends the text instead of being added.
    """
    batch = h.shape[1]
    texts = [""] * batch
    done = [False] * batch
    counts = np.zeros((batch, len(vocab)), np.float32)
    states = [pattern.start if pattern is not None else 0] * batch
    for i in range(length):
        z = logits.copy()
        may_end: dict[int, np.ndarray] = {}
        for row in range(batch):
            if logit_bias:
                for token, bias in logit_bias.items():
                    z[row, token] += np.float32(bias)
            if presence_penalty or frequency_penalty:
                z[row] -= frequency_penalty * counts[row] + presence_penalty * (counts[row] > 0)
            if pattern is not None and not done[row]:
                allowed = pattern.allowed(states[row], length - i)
                if not pattern.accepting[states[row]]:
                    z[row, ~allowed] = -np.inf
                elif allowed.any():
                    may_end[row] = allowed
                else:
                    done[row] = True  # a full match that nothing can continue
        tokens = sample_next(z, rng, temperature, top_k, top_p)
        for row, token in enumerate(tokens):
            if done[row]:
                continue
            if row in may_end and not may_end[row][token]:
                done[row] = True
                continue
            texts[row] += vocab.chars[token]
            counts[row, token] += 1
            if pattern is not None:
                states[row] = int(pattern.table[states[row], token])
            if stop and texts[row].endswith(stop):
                texts[row] = texts[row][: -len(stop)]
                done[row] = True
        if all(done):
            break
        logits, h, c = backend.step(tokens, h, c)
    return texts, logits, h, c


def generate(
    backend: StepBackend,
    vocab: Vocabulary,
    shape: ModelConfig,
    prompt: str,
    length: int,
    seed: int | None = None,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    num_samples: int = 1,
    stop: str | None = None,
) -> list[str]:
    """`Generator.generate(prompt, ...)`'s texts: the prompt (`vocab.start_text` if empty)
    fed from the zero state, then `sample`."""
    rng = np.random.default_rng(seed)
    h = np.zeros(shape.state_shape(num_samples), np.float32)
    c = np.zeros_like(h)
    logits = None
    for token in vocab.encode(prompt or vocab.start_text):
        logits, h, c = feed(backend, int(token), h, c)
    assert logits is not None
    texts, *_ = sample(backend, vocab, logits, h, c, length, rng, temperature, top_k, top_p, stop)
    return texts
