"""The vectorised generation loop gives the same text as the plain one it replaced.

The reference below is the loop `Session.sample` used before it was vectorised (a Python loop
per row per character, `sample_next` per step, the stop string re-checked on the tail); the
fast loop must agree with it token for token, stream the same text, and leave the caller's
random Generator where the reference leaves it.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from toolkit.runtime import load
from toolkit.runtime.generator import Generator, Session, StopMatcher
from toolkit.runtime.sampling import Sampler, sample_next

COMMITTED = Path(__file__).resolve().parents[1] / "exported" / "shakespeare"


def reference_sample(
    session: Session,
    length: int,
    temperature: float,
    top_k: int,
    top_p: float,
    rng: np.random.Generator,
    stop: str | None,
) -> list[str]:
    """The pre-vectorisation loop's texts."""
    chars = session.generator.chars
    out: list[list[str]] = [[] for _ in range(session.batch)]
    done = np.zeros(session.batch, dtype=bool)
    for _ in range(length):
        assert session.logits is not None
        tokens = sample_next(session.logits, rng, temperature, top_k, top_p)
        for row, token in enumerate(tokens):
            if done[row]:
                continue
            out[row].append(chars[token])
            if stop and "".join(out[row][-len(stop) :]) == stop:
                done[row] = True
                del out[row][-len(stop) :]
        if done.all():
            break
        session._step(tokens)
    return ["".join(row) for row in out]


@pytest.fixture(scope="module")
def generator() -> Generator:
    return load(COMMITTED, runtime="onnx")


@pytest.mark.parametrize(
    ("batch", "temperature", "top_k", "top_p", "stop"),
    [
        (1, 0.8, 0, 1.0, None),
        (1, 1.0, 0, 1.0, "\n\n"),
        (1, 0.0, 0, 1.0, "the"),
        (1, 0.7, 5, 0.9, ":"),
        (5, 0.8, 0, 1.0, "\n"),
        (5, 1.3, 0, 1.0, "e "),
        (5, 0.0, 0, 1.0, None),
        (4, 0.9, 0, 0.8, "and"),
        (3, 0.6, 10, 1.0, "\x00never"),
    ],
)
def test_same_text_as_the_plain_loop(
    generator: Generator,
    batch: int,
    temperature: float,
    top_k: int,
    top_p: float,
    stop: str | None,
) -> None:
    texts = {}
    for name in ("fast", "reference"):
        rng = np.random.default_rng(7)
        session = generator.session(batch)
        session.feed("ROMEO:\n")
        streamed = ["" for _ in range(batch)]

        def on_text(row: int, text: str, streamed: list[str] = streamed) -> None:
            streamed[row] += text

        if name == "fast":
            got = session.sample(300, temperature, top_k, top_p, rng, stop, on_text)
            assert streamed == got  # the stream is the text, without any part of `stop`
        else:
            got = reference_sample(session, 300, temperature, top_k, top_p, rng, stop)
        # The random stream and the LSTM state end where the reference leaves them.
        texts[name] = (got, rng.random(), session.h.copy())
    fast, ref = texts["fast"], texts["reference"]
    assert fast[0] == ref[0]
    assert fast[1] == ref[1]
    np.testing.assert_array_equal(fast[2], ref[2])
    if stop and stop != "\x00never" and batch > 1:
        assert any(len(t) < 300 for t in fast[0])  # the stop string was exercised


def test_sampler_matches_sample_next_over_many_draws() -> None:
    rng = np.random.default_rng(0)
    # 0.01: logits / temperature past exp's range (~709), where the sums are redone shifted.
    for batch, temperature in [
        (1, 0.8),
        (1, 0.05),
        (1, 0.01),
        (1, 3.0),
        (32, 0.8),
        (32, 0.01),
        (7, 1.0),
        (64, 0.9),  # past SMALL_MATRIX_PRODUCT: float64 throughout
    ]:
        logits = (rng.standard_normal((400, batch, 65)) * 4).astype(np.float32)
        fast_rng, ref_rng = np.random.default_rng(1), np.random.default_rng(1)
        sampler = Sampler(batch, temperature, rng=fast_rng, block=64)
        fast = np.stack([sampler.draw(step).copy() for step in logits])
        sampler.close()
        ref = np.stack([sample_next(step, ref_rng, temperature) for step in logits])
        np.testing.assert_array_equal(fast, ref)
        assert fast_rng.random() == ref_rng.random()


class _GivenUniforms:
    """A stand-in random Generator that returns the given uniforms, one row per draw."""

    def __init__(self, rows: np.ndarray) -> None:
        self.rows = rows
        self.bit_generator = SimpleNamespace(state={})

    def random(self, shape: tuple[int, int]) -> np.ndarray:
        assert shape == self.rows.shape  # one block: close() has nothing to hand back
        return self.rows


def _float64_draw(logits: np.ndarray, temperature: float, u: float) -> int:
    """The float64 arithmetic the float32 draw must reproduce (Sampler._float64_row_drawer)."""
    sums = np.add.accumulate(np.exp(logits.astype(np.float64) / temperature))
    return int(np.searchsorted(sums, u * sums[-1], side="left"))


@pytest.mark.parametrize("batch", [1, 4])
@pytest.mark.parametrize("temperature", [0.8, 3.0])  # batch 1: one np.power call, then two
def test_float32_draws_are_kept_only_far_from_a_boundary(batch: int, temperature: float) -> None:
    """Uniforms on, or within rounding of, a boundary between two characters are redrawn in
    float64 and give its answer; uniforms halfway between boundaries stay in float32."""
    logits = (np.random.default_rng(5).standard_normal(65) * 2).astype(np.float32)
    sums = np.add.accumulate(np.exp(logits.astype(np.float64) / temperature))
    edges = sums[:-1] / sums[-1]
    near = [u for p in edges for u in (p, np.nextafter(p, 0), np.nextafter(p, 1), p - 1e-7)]
    wide = np.flatnonzero(np.diff(edges) > 0.002)  # 10x the margin between them
    assert len(wide) >= 5
    far = list((edges[wide] + edges[wide + 1]) / 2)
    for uniforms, redrawn in ((near, True), (far, False)):
        rows = np.resize(np.asarray(uniforms), (-(-len(uniforms) // batch), batch))  # repeats
        sampler = Sampler(batch, temperature, rng=_GivenUniforms(rows), block=len(rows))
        drawn = np.stack([sampler.draw(np.tile(logits, (batch, 1))).copy() for _ in rows])
        expected = [[_float64_draw(logits, temperature, u) for u in row] for row in rows]
        np.testing.assert_array_equal(drawn, expected)
        assert sampler.float64_draws == (rows.size if redrawn else 0)


def test_sampler_close_rewinds_unused_uniforms() -> None:
    rng, expected = np.random.default_rng(3), np.random.default_rng(3)
    sampler = Sampler(2, 1.0, rng=rng, block=100)
    logits = np.zeros((2, 5), np.float32)
    for _ in range(7):
        sampler.draw(logits)
    sampler.close()
    expected.random((7, 2))
    assert rng.random() == expected.random()


@pytest.mark.parametrize("stop", ["aab", "abab", "aaa", "b"])
def test_stop_matcher_finds_every_end_and_holds_back_prefixes(stop: str) -> None:
    chars = ["a", "b", "c"]
    rng = np.random.default_rng(4)
    text = "".join(rng.choice(chars, 400))
    matcher = StopMatcher(stop, chars, 1)
    for i, ch in enumerate(text):
        hit = matcher.advance(np.array([chars.index(ch)], np.int32))
        seen = text[: i + 1]
        assert hit == seen.endswith(stop)
        pending = int(matcher.state[0])
        # The longest tail that could still grow into `stop`.
        longest = max(k for k in range(len(stop) + 1) if seen.endswith(stop[:k]) or k == 0)
        assert pending == longest


@pytest.mark.parametrize("stop", ["abcabd", "aabaaab", "ab?ab", "?a", "abab", "c"])
def test_stop_matcher_table_is_the_longest_suffix_that_starts_stop(stop: str) -> None:
    chars = ["a", "b", "c", "d"]  # "?" is outside the vocabulary
    table = StopMatcher(stop, chars, 1).table
    for state in range(len(stop) + 1):
        for token, ch in enumerate(chars):
            text = stop[:state] + ch
            keep = max(k for k in range(min(len(text), len(stop)) + 1) if text.endswith(stop[:k]))
            assert table[state, token] == keep, (state, ch)
