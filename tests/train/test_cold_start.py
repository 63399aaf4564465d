"""Cold-start quality: zero-state metrics that carried-state validation cannot see."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from toolkit.data.corpus import split_corpus
from toolkit.runtime import load
from toolkit.train.cold_start import (
    common_line_starts,
    corpus_words,
    is_degenerate,
    line_start_windows,
    measure,
)
from toolkit.vocabulary import Vocabulary

MODEL = Path(__file__).resolve().parents[2] / "exported" / "shakespeare"


def test_windows_begin_at_line_starts() -> None:
    text = ("ab\n\ncd ef gh\n" * 40)[:400]
    vocab = Vocabulary.from_text(text)
    ids = vocab.encode(text)
    windows = line_start_windows(ids, vocab.index["\n"], count=10)
    assert len(windows) == 10 and windows.shape[1] == 65
    # Each starts a line ("ab" or "cd ef gh"), never a blank one.
    assert set(windows[:, 0]) == {vocab.index["a"], vocab.index["c"]}


def test_prompts_are_speaker_names_or_first_words(shakespeare_text: str) -> None:
    prompts = common_line_starts(shakespeare_text)
    assert len(prompts) == 40
    assert "ROMEO:" in prompts and "KING RICHARD III:" in prompts
    assert all(p.endswith(":") for p in prompts)
    prose = "The cat sat.\nThe dog ran.\nA bird sang.\nThe end.\n"
    assert common_line_starts(prose, count=2) == ["The", "A"]


def test_degenerate_text(shakespeare_text: str) -> None:
    words = corpus_words(shakespeare_text)
    assert is_degenerate("UXUXXXUXXUkUXXUkUXUkUXXUkUXXUkUXXUkUXXUk", words)
    assert is_degenerate("\nI will xxxxxxxxxx go", words)  # a run of 8 identical characters
    assert is_degenerate("&&3$ &!? 3&; ,,; $$& 3!", words)  # mostly not letters
    assert not is_degenerate("\nI will not stay the sea that we shall be so.\n\nBUCKINGHAM:", words)


def test_committed_model_starts_well_from_zeros(shakespeare_text: str) -> None:
    """benchmarks/cold_start.py's measure on the ready model: no degenerate greedy start of 40."""
    gen = load(MODEL, runtime="onnx")
    vocab = Vocabulary(tuple(gen.chars))
    _, val = split_corpus(vocab.encode(shakespeare_text), 0.1)
    result = measure(
        gen.backend,
        gen.layers,
        gen.units,
        gen.chars,
        val,
        common_line_starts(shakespeare_text),
        corpus_words(shakespeare_text),
    )
    assert result.prompts == 40
    assert result.degenerate == 0, result.examples
    # Zero state at a line start costs more than carried state (1.454), but not wildly.
    assert np.isfinite(result.line_start_loss) and result.line_start_loss < 1.7
    assert result.first_chars_loss > result.line_start_loss  # the first characters are hardest
