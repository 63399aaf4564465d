"""The decoder against the plain loop (toolkit/runtime/reference.py), over random options,
seeds, stop strings, batch sizes and memberships that change between steps.

A small deterministic step stands in for a model here (row-wise arithmetic only, so each row
is bitwise the same at any batch), which keeps hundreds of examples within a second or two;
tests/runtime/test_generation_loop.py checks the same on the committed model.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from toolkit.config import ModelConfig
from toolkit.runtime import reference
from toolkit.runtime.decode import DecodeOptions, Decoder, Group, overflow_detected
from toolkit.runtime.generator import Generator
from toolkit.vocabulary import Vocabulary

VOCAB = Vocabulary(tuple("\n :abcdehinorst"))
UNITS = 3


class ToyStep:
    """(token, h, c) -> (logits, h', c') with elementwise arithmetic only."""

    name = "toy"

    def __init__(self, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.embed = rng.standard_normal((len(VOCAB), UNITS)).astype(np.float32)
        self.out = (rng.standard_normal((UNITS, len(VOCAB))) * 2).astype(np.float32)

    def step(
        self, token: np.ndarray, h: np.ndarray, c: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        c2 = (np.float32(0.5) * c + self.embed[token][None]).astype(np.float32)
        h2 = np.tanh(c2 + np.float32(0.3) * h).astype(np.float32)
        logits = sum(h2[0, :, k : k + 1] * self.out[k] for k in range(UNITS))
        return np.asarray(logits, np.float32), h2, c2


def toy_generator() -> Generator:
    shape = ModelConfig(vocab_size=len(VOCAB), units=UNITS, layers=1)
    return Generator(ToyStep(), VOCAB, shape, "toy", "fp32")


stop_strings = st.lists(st.text(alphabet="abc :\nx", min_size=1, max_size=3), max_size=2)
options = st.builds(
    DecodeOptions,
    length=st.integers(0, 60),
    temperature=st.sampled_from([0.0, 0.05, 0.5, 0.9, 1.0, 1.7, 4.0]),
    top_k=st.sampled_from([0, 0, 1, 3, 20]),
    top_p=st.sampled_from([1.0, 1.0, 0.9, 0.3]),
    stop=stop_strings.map(tuple),
    seed=st.integers(0, 2**32),
    n=st.integers(1, 5),
)


@settings(max_examples=60, deadline=None)
@given(o=options, prompt=st.text(alphabet="abc :\n", min_size=1, max_size=5))
def test_session_equals_the_plain_loop(o: DecodeOptions, prompt: str) -> None:
    """Texts, the random stream and the state after them: the reference's (one stop string,
    as the reference takes; several are checked against the reference below)."""
    o = DecodeOptions(o.length, o.temperature, o.top_k, o.top_p, o.stop[:1], o.seed, o.n)
    gen = toy_generator()
    session = gen.session(o.n)
    session.feed(prompt)
    rng = np.random.default_rng(o.seed)
    streamed = ["" for _ in range(o.n)]

    def on_text(row: int, text: str) -> None:
        streamed[row] += text

    got = session.sample(o.length, rng=rng, options=o, on_text=on_text)
    plain = gen.session(o.n)
    plain.feed(prompt)
    ref_rng = np.random.default_rng(o.seed)
    assert plain.logits is not None
    expected, _, h, _ = reference.sample(
        gen.backend, VOCAB, plain.logits, plain.h, plain.c, o.length, ref_rng,
        o.temperature, o.top_k, o.top_p, o.stop[0] if o.stop else None,
    )  # fmt: skip
    assert got == expected
    assert streamed == got
    assert rng.random() == ref_rng.random()
    np.testing.assert_array_equal(session.h, h)


def first_stop(text: str, stops: tuple[str, ...]) -> str:
    """The text up to the first place one of `stops` ends, without it (the plain rule)."""
    for end in range(1, len(text) + 1):
        for s in stops:
            if text[:end].endswith(s):
                return text[: end - len(s)]
    return text


@settings(max_examples=60, deadline=None)
@given(o=options)
def test_several_stop_strings_cut_at_the_first_that_ends(o: DecodeOptions) -> None:
    gen = toy_generator()
    whole = gen.generate("a", options=DecodeOptions(o.length, o.temperature, seed=o.seed))
    cut = gen.generate(
        "a", options=DecodeOptions(o.length, o.temperature, stop=o.stop, seed=o.seed)
    )
    assert cut.texts[0] == first_stop(whole.texts[0], o.stop)


@settings(max_examples=60, deadline=None)
@given(
    groups=st.lists(st.tuples(options, st.integers(0, 30)), min_size=1, max_size=5),
    data=st.data(),
)
def test_rows_draw_the_same_alone_or_among_rows_that_come_and_go(
    groups: list[tuple[DecodeOptions, int]], data: st.DataObject
) -> None:
    """Groups join at different steps, and rows leave when they end (as in the server):
    each group's texts are those it gets decoded alone."""
    step = ToyStep()

    def run(members: list[tuple[DecodeOptions, int]]) -> list[list[str]]:
        decoder = Decoder(VOCAB)
        h = np.zeros((1, 0, UNITS), np.float32)
        c, logits = h.copy(), np.zeros((0, len(VOCAB)), np.float32)
        group_rows = []
        pending = sorted(range(len(members)), key=lambda i: members[i][1])
        for t in range(200):
            while pending and members[pending[0]][1] <= t:
                o = members[pending.pop(0)][0]
                rows = decoder.add(Group(o, VOCAB))
                group_rows.append((o, rows))
                start = np.zeros((1, len(rows), UNITS), np.float32)
                first, h1, c1 = step.step(np.zeros(len(rows), np.int32), start, start)
                h, c = np.concatenate([h, h1], 1), np.concatenate([c, c1], 1)
                logits = np.concatenate([logits, first])
            if not decoder.rows:
                if not pending:
                    break
                continue
            if len(decoder.rows) == 1:
                with overflow_detected():
                    tokens = np.array([decoder.step_one(logits)], np.int32)
            else:
                tokens = decoder.step(logits).copy()
            keep = [i for i, row in enumerate(decoder.rows) if row.finish is None]
            decoder.keep(keep)
            tokens, h, c = tokens[keep], h[:, keep], c[:, keep]
            logits, h, c = step.step(tokens, h, c)
        by_group = {id(rows[0].group): rows for _, rows in group_rows}
        order = sorted(by_group.values(), key=lambda rows: members_index(rows))
        return [[decoder.text(row) for row in rows] for rows in order]

    def members_index(rows: list) -> int:
        return next(i for i, (o, _) in enumerate(groups) if o is rows[0].group.options)

    together = run(groups)
    alone = [run([member])[0] for member in groups]
    assert together == alone


def test_one_row_groups_keep_their_own_random_streams_in_a_batch() -> None:
    """Many one-row groups (the server's requests with n = 1) draw their uniforms together:
    each text is the one its group draws alone, and each stream, handed back (`sync`, as for
    a state token) mid-way and at the end, is where one draw per character leaves it, across
    refills of blocks of different sizes, rows leaving and steps with a lone row."""
    vocab = Vocabulary(tuple(chr(ord("!") + i) for i in range(65)))
    table = (np.random.default_rng(0).standard_normal((60, 65)) * 3).astype(np.float32)
    lengths, blocks = [5, 12, 60, 47, 17, 30, 1], [3, 4, 5, 7, 2, 256, 1]

    def group(k: int) -> Group:
        o = DecodeOptions(lengths[k], temperature=0.9, seed=k)
        made = Group(o, vocab, np.random.default_rng(k))
        made.block = blocks[k]
        return made

    def advanced(k: int, draws: int) -> dict:
        rng = np.random.default_rng(k)
        for _ in range(draws):
            rng.random(1)
        return rng.bit_generator.state

    decoder = Decoder(vocab)
    rows = [decoder.add(group(k))[0] for k in range(len(lengths))]
    for t in range(60):
        if not decoder.rows:
            break
        logits = np.repeat(table[t : t + 1], len(decoder.rows), 0)
        if len(decoder.rows) == 1:
            with overflow_detected():
                decoder.step_one(logits)
        else:
            decoder.step(logits)
        if t == 9:  # a state token for the longest row's stream, then it draws on
            rows[2].group.sync()
            assert rows[2].group.rng.bit_generator.state == advanced(2, 10)
        if decoder.ended:  # membership changes only when rows end, as in the server
            decoder.keep([i for i, row in enumerate(decoder.rows) if row.finish is None])
    for k, row in enumerate(rows):
        alone = Decoder(vocab)
        (single,) = alone.add(group(k))
        for t in range(lengths[k]):
            with overflow_detected():
                alone.step_one(table[t : t + 1])
        assert row.out == single.out, k
        row.group.sync()
        assert row.group.rng.bit_generator.state == advanced(k, lengths[k]), k


def test_mixed_options_in_one_step_draw_as_each_row_alone() -> None:
    """Greedy, plain temperatures (the float32 path with its float64 redo), top-k and top-p
    rows in one step: each row's token is the one it draws alone (step_one)."""
    rng = np.random.default_rng(0)
    kinds = [
        DecodeOptions(temperature=0.8),
        DecodeOptions(temperature=0.0),
        DecodeOptions(temperature=1.3),
        DecodeOptions(temperature=0.8, top_k=5),
        DecodeOptions(temperature=0.6, top_p=0.9),
        DecodeOptions(temperature=0.02),  # exp overflows float32: the float64 redo
        DecodeOptions(temperature=3.0),
    ]
    vocab = Vocabulary(tuple(chr(ord("!") + i) for i in range(65)))
    for trial in range(300):
        logits = (rng.standard_normal((len(kinds), 65)) * 4).astype(np.float32)
        seeds = [trial * 100 + row for row in range(len(kinds))]
        decoder = Decoder(vocab)
        for o, seed in zip(kinds, seeds, strict=True):
            decoder.add(Group(o, vocab, np.random.default_rng(seed)))
        ours = decoder.step(logits)
        for row, (o, seed) in enumerate(zip(kinds, seeds, strict=True)):
            alone = Decoder(vocab)
            alone.add(Group(o, vocab, np.random.default_rng(seed)))
            with overflow_detected():
                assert ours[row] == alone.step_one(logits[row : row + 1]), (row, o)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"length": -1}, "length"),
        ({"n": 0}, "num-samples"),
        ({"stop": ("",)}, "stop"),
    ],
)
def test_bad_options_are_refused_when_made(kwargs: dict, message: str) -> None:
    from toolkit.errors import UsageError

    with pytest.raises(UsageError, match=message):
        DecodeOptions(**kwargs)


# --------------------------------------------------------------------------- controls

atoms = st.sampled_from(["a", "b", "c", " ", ":", "\n", "[abc]", "[^a]", ".", "(a|bc)", "x"])
quantifiers = st.sampled_from(["", "", "?", "*", "+", "{1,3}", "{2}"])
regexes = st.lists(st.tuples(atoms, quantifiers), min_size=1, max_size=4).map(
    lambda parts: "".join(a + q for a, q in parts)
)


@settings(max_examples=50, deadline=None)
@given(
    o=options,
    regex=regexes,
    bias=st.dictionaries(st.integers(0, len(VOCAB) - 1), st.floats(-100, 100), max_size=3),
    presence=st.sampled_from([0.0, 0.7, -1.5]),
    frequency=st.sampled_from([0.0, 0.4, 2.0]),
    use_pattern=st.booleans(),
)
def test_controls_equal_the_plain_loop(
    o: DecodeOptions,
    regex: str,
    bias: dict[int, float],
    presence: float,
    frequency: float,
    use_pattern: bool,
) -> None:
    """Logit bias, penalties and a pattern through the decoder: reference.sample's texts,
    random stream and state; every patterned text matches in full within the length."""
    import re

    from toolkit.errors import UsageError
    from toolkit.runtime.pattern import compile_regex

    pattern = None
    if use_pattern:
        try:
            pattern = compile_regex(regex, VOCAB.chars)
            pattern.check_length(o.length)
        except UsageError:
            return  # refused before any step (tested in test_pattern.py)
    o = DecodeOptions(
        o.length, o.temperature, o.top_k, o.top_p, o.stop[:1], o.seed, o.n,
        logit_bias=tuple(sorted(bias.items())), presence_penalty=presence,
        frequency_penalty=frequency, regex=regex if use_pattern else None,
    )  # fmt: skip
    gen = toy_generator()
    session = gen.session(o.n)
    session.feed("a")
    rng = np.random.default_rng(o.seed)
    got = session.sample(o.length, rng=rng, options=o)
    plain = gen.session(o.n)
    plain.feed("a")
    ref_rng = np.random.default_rng(o.seed)
    assert plain.logits is not None
    expected, _, h, _ = reference.sample(
        gen.backend, VOCAB, plain.logits, plain.h, plain.c, o.length, ref_rng,
        o.temperature, o.top_k, o.top_p, o.stop[0] if o.stop else None,
        bias, presence, frequency, pattern,
    )  # fmt: skip
    assert got == expected
    assert rng.random() == ref_rng.random()
    np.testing.assert_array_equal(session.h, h)
    if pattern is not None and not o.stop:
        for text in got:
            assert re.fullmatch(regex, text, re.DOTALL) and len(text) <= o.length, text


def test_first_character_is_the_model_restricted_to_the_pattern() -> None:
    """Chi-square over 4,000 first characters: in a state that is not accepting, the
    distribution is the model's renormalised over the allowed characters; in an accepting
    one, ending takes the mass of the characters that cannot continue."""
    from toolkit.runtime.decode import log_softmax
    from toolkit.runtime.pattern import compile_regex

    gen = toy_generator()
    session = gen.session(1)
    session.feed("a")
    assert session.logits is not None
    probs = np.exp(log_softmax(session.logits / 0.9))[0]
    for regex, accepting in (("[abc:] ?x?", False), ("(b|c|:)*", True)):
        pattern = compile_regex(regex, VOCAB.chars)
        allowed = pattern.allowed(pattern.start, 5)
        expected = np.where(allowed, probs, 0.0)
        if accepting:  # the last bin: the text ends at once
            expected = np.append(expected, probs[~allowed].sum())
        else:
            expected = np.append(expected / expected.sum(), 0.0)
        firsts = gen.generate(
            "a", options=DecodeOptions(1, 0.9, regex=regex, seed=11, n=4000)
        ).texts
        observed = np.zeros(len(VOCAB) + 1)
        for text in firsts:
            observed[VOCAB.index[text] if text else len(VOCAB)] += 1
        keep = expected > 0
        assert observed[~keep].sum() == 0
        assert chi_square_z(observed[keep], expected[keep] * len(firsts)) < 4


def chi_square_z(observed: np.ndarray, expected: np.ndarray) -> float:
    """The chi-square statistic as a standard normal z (Wilson-Hilferty); 4 is p ~ 3e-5."""
    df = len(observed) - 1
    x = float(((observed - expected) ** 2 / expected).sum())
    return ((x / df) ** (1 / 3) - (1 - 2 / (9 * df))) / (2 / (9 * df)) ** 0.5


def test_log_probabilities_are_the_models_own() -> None:
    """Per character: log-softmax of the raw logits (no temperature, no filter), with the
    N most likely; the same for every row of a batch and through stop strings."""
    from toolkit.runtime.decode import log_softmax

    gen = toy_generator()
    o = DecodeOptions(40, 1.7, top_k=3, stop=("b:",), seed=5, n=3, logprobs=4)
    result = gen.generate("a", options=o)
    assert result.logprobs is not None
    for text, scores in zip(result.texts, result.logprobs, strict=True):
        assert "".join(s["char"] for s in scores) == text
        session = gen.session(1)
        session.feed("a")
        for ch, score in zip(text, scores, strict=True):
            assert session.logits is not None
            lp = log_softmax(session.logits)[0]
            assert score["logprob"] == pytest.approx(lp[VOCAB.index[ch]], abs=1e-9)
            best = np.argsort(-lp, kind="stable")[:4]
            assert list(score["top_logprobs"]) == [VOCAB.chars[t] for t in best]
            session.feed(ch)
