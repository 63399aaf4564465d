"""The pattern compiler: random regexes of the supported syntax accept exactly what Python's
re.fullmatch accepts over the vocabulary, distances are shortest paths to acceptance, allowed()
always leaves a full match within the length, and every bad pattern is one clear error."""

from __future__ import annotations

import itertools
import re

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from toolkit.runtime.pattern import Pattern, PatternError, compile_choice, compile_regex

# A small vocabulary (so every string up to 5 characters can be tried), with a newline for
# `.`; the patterns also use characters it lacks ('z', 'Q').
VOCAB = ["\n", "a", "b", "c", "x"]
MAX_LEN = 5
STRINGS = ["".join(s) for n in range(MAX_LEN + 1) for s in itertools.product(VOCAB, repeat=n)]


def _atom() -> st.SearchStrategy[str]:
    return st.sampled_from(
        ["a", "b", "x", "z", "Q", ".", "[ab]", "[^a]", "[a-c]", "[xz]", r"\n", "[^\n]", "(?:)"]
    )


def _quantified(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    quant = st.sampled_from(["?", "*", "+", "{2}", "{0,2}", "{1,3}", "{2,}"])
    return st.tuples(inner, quant).map(lambda t: f"(?:{t[0]}){t[1]}")


def _group(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return inner.map(lambda s: f"({s})")


regexes = st.recursive(
    _atom(),
    lambda inner: st.one_of(
        st.lists(inner, min_size=2, max_size=3).map("".join),
        st.lists(inner, min_size=2, max_size=3).map("|".join).map(lambda s: f"(?:{s})"),
        _quantified(inner),
        _group(inner),
    ),
    max_leaves=6,
)


def accepts(p: Pattern, text: str) -> bool:
    return p.accepts([VOCAB.index(ch) for ch in text])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(regexes)
def test_random_patterns_accept_what_re_fullmatch_accepts(regex: str) -> None:
    want = [s for s in STRINGS if re.fullmatch(regex, s)]
    try:
        p = compile_regex(regex, VOCAB)
    except PatternError as exc:
        # Only a pattern no string over the vocabulary matches may be refused (and a
        # string longer than MAX_LEN may still match: check with a longer search).
        assert "cannot be matched" in str(exc) or "matches nothing" in str(exc), exc
        assert not want
        return
    got = [s for s in STRINGS if accepts(p, s)]
    assert got == want, (regex, got[:5], want[:5])
    # Distances: 0 exactly on accepting states, and 1 + the nearest successor's elsewhere
    # (the equations that define the shortest path); every state is live and reachable.
    d, t = p.distance, p.table
    assert p.start == 0 and (d >= 0).all()
    assert ((d == 0) == p.accepting).all()
    for s in range(p.states):
        succ = [int(d[n]) for n in t[s] if n >= 0]
        if not p.accepting[s]:
            assert d[s] == 1 + min(succ)
    shortest = min((len(s) for s in want), default=None)
    if shortest is not None:
        assert d[0] == shortest
    # Allowed characters always leave a full match within what is left.
    rng = np.random.default_rng(len(regex))
    for length in range(int(d[0]), int(d[0]) + 4):
        state, text = 0, ""
        for remaining in range(length, 0, -1):
            ok = p.allowed(state, remaining)
            if not ok.any() or (p.accepting[state] and rng.random() < 0.3):
                break
            v = int(rng.choice(np.flatnonzero(ok)))
            state, text = int(t[state, v]), text + VOCAB[v]
        assert p.accepting[state] and len(text) <= length
        assert re.fullmatch(regex, text), (regex, text)


def test_realistic_patterns_and_the_length_check() -> None:
    chars = list("\n !',-.:;?ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
    name = compile_regex(r"(ROMEO|JULIET|[A-Z][a-z]{2,8}):\n", chars)
    assert name.distance[0] == 5 and name.accepts([chars.index(c) for c in "Tybalt:\n"])
    assert not name.accepts([chars.index(c) for c in "tybalt:\n"])
    name.check_length(5)
    with pytest.raises(PatternError, match=r"needs at least 5 characters, more than the length 4"):
        name.check_length(4)
    # Anchors are implied: ^...$ is the same language.
    anchored = compile_regex(r"^[A-Z][a-z]+$", chars)
    assert np.array_equal(anchored.table, compile_regex("[A-Z][a-z]+", chars).table)
    # [a-z]{0,200}x: with 200 characters left at most, only a match that ends in time.
    long = compile_regex("[a-z]{0,200}x", chars)
    assert long.table.dtype == np.int32 and long.distance[0] == 1
    ok = long.allowed(0, 1)
    assert [chars[i] for i in np.flatnonzero(ok)] == ["x"]
    assert long.allowed(0, 0).sum() == 0
    # Minimal: equivalent states merged (a counted repetition is one state per count).
    assert compile_regex("(a|b)*", VOCAB).states == 1
    assert compile_regex("[ab]{0,3}", VOCAB).states == 4
    assert compile_regex("(ab|ac)*x", VOCAB).states == 3
    # Cached by (pattern, vocabulary): the same object, read-only.
    assert compile_regex("[a-z]{0,200}x", chars) is long
    assert not long.table.flags.writeable


def test_choice() -> None:
    p = compile_choice(["yes", "no", "Ωx", "nope"], VOCAB + list("enopsy"))
    vocab = VOCAB + list("enopsy")
    for word, ok in [("yes", True), ("no", True), ("nope", True), ("nop", False), ("", False)]:
        assert p.accepts([vocab.index(c) for c in word]) is ok
    assert p.distance[0] == 2 and p.source.startswith("one of 4: 'yes', 'no', 'Ωx'")
    with pytest.raises(PatternError, match=r"no choice can be written .*missing: 'Ω'"):
        compile_choice(["Ω"], VOCAB)
    with pytest.raises(PatternError, match="at least one string"):
        compile_choice([], VOCAB)


@pytest.mark.parametrize(
    "regex,message",
    [
        ("a(?=b)", r"unsupported syntax in pattern 'a\(\?=b\)': lookahead"),
        ("(?<=a)b", "unsupported syntax"),
        (r"(a)\1", "unsupported syntax.*Group references"),
        ("a(b", "invalid pattern"),
        ("Ω+", "cannot be matched with the model's characters"),
        ("[^\\s\\S]", r"matches nothing \(no accepting path\)"),
        ("(a|b)*a(a|b){20}", "needs more than 10,000 states"),
    ],
)
def test_bad_patterns_are_one_line_errors(regex: str, message: str) -> None:
    with pytest.raises(PatternError, match=message) as info:
        compile_regex(regex, VOCAB)
    assert "\n" not in str(info.value)
    # Asked again, the same error (from the cache).
    with pytest.raises(PatternError, match=message):
        compile_regex(regex, VOCAB)


def test_state_and_time_bounds() -> None:
    with pytest.raises(PatternError, match="needs more than 50 states"):
        compile_regex("[ab]{0,100}", VOCAB, max_states=50)
    with pytest.raises(PatternError, match=r"took more than 0\.001 s to compile"):
        compile_regex("(a|b)*a(a|b){12}", VOCAB, timeout_s=0.001)


def test_a_timeout_is_not_remembered(monkeypatch: pytest.MonkeyPatch) -> None:
    """A busy moment's timeout is not cached: the same pattern compiles once time allows."""
    from types import SimpleNamespace

    from toolkit.runtime import pattern as module

    late = iter([0.0])  # the deadline is set at 0 s, every later look at the clock is at 1e9 s
    monkeypatch.setattr(module, "time", SimpleNamespace(monotonic=lambda: next(late, 1e9)))
    with pytest.raises(PatternError, match="took more than 5 s to compile"):
        compile_regex("[ab]{2,4}x", VOCAB)
    monkeypatch.undo()
    assert compile_regex("[ab]{2,4}x", VOCAB).states == 6
