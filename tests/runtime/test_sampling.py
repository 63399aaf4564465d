"""Property-based tests of the sampling functions."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from toolkit.errors import UsageError
from toolkit.runtime.decode import DecodeOptions
from toolkit.runtime.sampling import (
    next_token_probs,
    sample_next,
    softmax,
    top_k_mask,
    top_p_mask,
)

finite = st.floats(-30, 30, allow_nan=False, allow_infinity=False, width=32)
logit_rows = arrays(np.float32, st.tuples(st.integers(1, 4), st.integers(2, 40)), elements=finite)


def distinct_logits(draw_shape: tuple[int, int], seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    rows = [rng.permutation(draw_shape[1]).astype(np.float32) for _ in range(draw_shape[0])]
    return np.stack(rows) * 0.37


@settings(max_examples=60, deadline=None)
@given(logit_rows, st.floats(0.05, 5.0), st.integers(0, 50), st.floats(0.01, 1.0))
@example(np.array([[-3.3375596e-25, 0.0]], np.float32), 1.0, 0, 0.5)  # a tie, found by CI
def test_probs_are_valid_distributions(logits, temperature, top_k, top_p) -> None:
    probs = next_token_probs(logits, temperature, top_k, top_p)
    assert probs.shape == logits.shape
    assert np.all(probs >= 0)
    np.testing.assert_allclose(probs.sum(axis=-1), 1.0, rtol=1e-9)
    # A most likely token always survives every filter (any one of them when tied).
    unfiltered = next_token_probs(logits, temperature)
    is_top = unfiltered == unfiltered.max(axis=-1, keepdims=True)
    assert np.all(np.any(is_top & (probs > 0), axis=-1))


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 4), st.integers(2, 40), st.integers(1, 45), st.integers(0, 10_000))
def test_top_k_keeps_exactly_k_largest(batch, vocab, k, seed) -> None:
    logits = distinct_logits((batch, vocab), seed)
    mask = top_k_mask(logits, k)
    expected = min(k, vocab)
    assert np.all(mask.sum(-1) == expected)
    for row in range(batch):
        kept = set(np.flatnonzero(mask[row]))
        assert kept == set(np.argsort(-logits[row])[:expected])


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 4), st.integers(2, 40), st.floats(0.01, 1.0), st.integers(0, 10_000))
def test_top_p_keeps_smallest_set_reaching_p(batch, vocab, p, seed) -> None:
    probs = softmax(distinct_logits((batch, vocab), seed).astype(np.float64))
    mask = top_p_mask(probs, p)
    for row in range(batch):
        order = np.argsort(-probs[row])
        n = int(mask[row].sum())
        assert set(np.flatnonzero(mask[row])) == set(order[:n])  # a prefix of the ranking
        mass = probs[row][order[:n]].sum()
        assert mass >= p - 1e-12 or n == vocab
        if n > 1:  # minimal: without its last member the set falls short of p
            assert probs[row][order[: n - 1]].sum() < p


@settings(max_examples=40, deadline=None)
@given(logit_rows, st.integers(0, 2**31 - 1))
def test_sampling_is_deterministic_under_a_seed(logits, seed) -> None:
    a = sample_next(logits, np.random.default_rng(seed), 0.9, 5, 0.9)
    b = sample_next(logits, np.random.default_rng(seed), 0.9, 5, 0.9)
    np.testing.assert_array_equal(a, b)
    assert a.dtype == np.int32
    assert np.all((a >= 0) & (a < logits.shape[1]))
    probs = next_token_probs(logits, 0.9, 5, 0.9)
    assert np.all(probs[np.arange(len(a)), a] > 0)  # never samples a masked token


def test_greedy_is_argmax() -> None:
    logits = np.array([[0.1, 3.0, -1.0], [5.0, 4.9, 0.0]], np.float32)
    np.testing.assert_array_equal(sample_next(logits, np.random.default_rng(0), 0.0), [1, 0])


def test_sampling_matches_distribution() -> None:
    logits = np.log(np.array([[0.7, 0.2, 0.1]], np.float32))
    rng = np.random.default_rng(0)
    draws = np.array([sample_next(logits, rng, 1.0)[0] for _ in range(4000)])
    freq = np.bincount(draws, minlength=3) / len(draws)
    np.testing.assert_allclose(freq, [0.7, 0.2, 0.1], atol=0.03)


@pytest.mark.parametrize(
    ("temperature", "top_k", "top_p", "message"),
    [
        (-0.1, 0, 1.0, "temperature"),
        (float("nan"), 0, 1.0, "temperature"),
        (1.0, -1, 1.0, "top-k"),
        (1.0, 0, 0.0, "top-p"),
        (1.0, 0, 1.5, "top-p"),
    ],
)
def test_bad_sampling_args(temperature, top_k, top_p, message) -> None:
    with pytest.raises(UsageError, match=message):
        DecodeOptions(temperature=temperature, top_k=top_k, top_p=top_p)
