"""The fast generation loop gives the same text as the plain one (toolkit/runtime/reference.py).

The reference is a Python loop per row per character with `sample_next` per step and the stop
string re-checked on the tail; the fast loop must agree with it token for token, stream the
same text, and leave the caller's random Generator and the LSTM state where the reference
leaves them.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from toolkit.runtime import load, reference
from toolkit.runtime.decode import DecodeOptions, Decoder, Group
from toolkit.runtime.generator import Generator
from toolkit.runtime.sampling import OneDraw, RowsDraw, overflow_detected, sample_next
from toolkit.runtime.stop import stop_table
from toolkit.vocabulary import Vocabulary

COMMITTED = Path(__file__).resolve().parents[2] / "exported" / "shakespeare"


def drawer(
    batch: int, temperature: float, rng: np.random.Generator, vocab_size: int, block: int = 64
) -> tuple[Callable[[np.ndarray], np.ndarray], Decoder]:
    """One token per row through the decoder's own draw (step_one at batch 1, else step)."""
    vocab = Vocabulary([chr(ord("!") + i) for i in range(vocab_size)])
    decoder = Decoder(vocab)
    group = Group(DecodeOptions(10**9, temperature, n=batch), vocab, rng)
    group.block = block
    decoder.add(group)
    if batch == 1:

        def one(logits: np.ndarray) -> np.ndarray:
            with overflow_detected():
                return np.array([decoder.step_one(logits)], np.int32)

        return one, decoder
    return lambda logits: decoder.step(logits).copy(), decoder


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
            h = session.h
        else:
            assert session.logits is not None
            got, _, h, _ = reference.sample(
                generator.backend, generator.vocab, session.logits, session.h, session.c,
                300, rng, temperature, top_k, top_p, stop,
            )  # fmt: skip
        # The random stream and the LSTM state end where the reference leaves them.
        texts[name] = (got, rng.random(), h.copy())
    fast, ref = texts["fast"], texts["reference"]
    assert fast[0] == ref[0]
    assert fast[1] == ref[1]
    np.testing.assert_array_equal(fast[2], ref[2])
    if stop and stop != "\x00never" and batch > 1:
        assert any(len(t) < 300 for t in fast[0])  # the stop string was exercised


@pytest.mark.parametrize(
    ("prompt", "kwargs"),
    [
        ("ROMEO:", {"temperature": 0.8, "seed": 1}),
        ("", {"temperature": 0.0}),
        (
            "JULIET:\n",
            {"temperature": 1.1, "top_p": 0.9, "seed": 2, "num_samples": 3, "stop": "\n"},
        ),
        ("KING", {"temperature": 0.5, "top_k": 8, "seed": 3, "num_samples": 2}),
    ],
)
def test_generate_is_the_reference_generate(
    generator: Generator, prompt: str, kwargs: dict[str, Any]
) -> None:
    fast = generator.generate(prompt, length=200, **kwargs).texts
    plain = reference.generate(
        generator.backend, generator.vocab, generator.shape, prompt, 200, **kwargs
    )
    assert fast == plain


def test_decoder_draw_matches_sample_next_over_many_draws() -> None:
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
        draw, decoder = drawer(batch, temperature, fast_rng, 65)
        fast = np.stack([draw(step) for step in logits])
        decoder.sync()
        ref = np.stack([sample_next(step, ref_rng, temperature) for step in logits])
        np.testing.assert_array_equal(fast, ref)
        assert fast_rng.random() == ref_rng.random()


def _float64_draw(logits: np.ndarray, temperature: float, u: float) -> int:
    """The float64 arithmetic the float32 draw must reproduce (sampling.Float64Draw)."""
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
        draw: OneDraw | RowsDraw
        if batch == 1:
            draw = one = OneDraw(65, temperature)
            with overflow_detected():
                drawn = np.array([[one(logits[None], float(u[0]))] for u in rows])
        else:
            draw = many = RowsDraw(batch, 65, temperature)
            block = np.tile(logits, (batch, 1))
            with overflow_detected():
                drawn = np.stack([many(block, u, np.zeros(batch, np.int32)).copy() for u in rows])
        expected = [[_float64_draw(logits, temperature, u) for u in row] for row in rows]
        np.testing.assert_array_equal(drawn, expected)
        assert draw.float64_draws == (rows.size if redrawn else 0)


def test_group_sync_rewinds_unused_uniforms() -> None:
    rng, expected = np.random.default_rng(3), np.random.default_rng(3)
    draw, decoder = drawer(2, 1.0, rng, 5, block=100)
    logits = np.zeros((2, 5), np.float32)
    for _ in range(7):
        draw(logits)
    decoder.sync()
    expected.random((7, 2))
    assert rng.random() == expected.random()


@pytest.mark.parametrize("stop", ["aab", "abab", "aaa", "b"])
def test_stop_table_finds_every_end_and_holds_back_prefixes(stop: str) -> None:
    chars = ["a", "b", "c"]
    rng = np.random.default_rng(4)
    text = "".join(rng.choice(chars, 400))
    table, state = stop_table(stop, chars), 0
    for i, ch in enumerate(text):
        state = int(table[state, chars.index(ch)])
        hit = state == len(stop)
        seen = text[: i + 1]
        assert hit == seen.endswith(stop)
        pending = state
        # The longest tail that could still grow into `stop`.
        longest = max(k for k in range(len(stop) + 1) if seen.endswith(stop[:k]) or k == 0)
        assert pending == longest


@pytest.mark.parametrize("stop", ["abcabd", "aabaaab", "ab?ab", "?a", "abab", "c"])
def test_stop_table_is_the_longest_suffix_that_starts_stop(stop: str) -> None:
    chars = ["a", "b", "c", "d"]  # "?" is outside the vocabulary
    table = stop_table(stop, chars)
    for state in range(len(stop) + 1):
        for token, ch in enumerate(chars):
            text = stop[:state] + ch
            keep = max(k for k in range(min(len(text), len(stop)) + 1) if text.endswith(stop[:k]))
            assert table[state, token] == keep, (state, ch)
