"""`toolkit score` and `Generator.score`: per-character log-probabilities and their totals,
under the same state rule as training's validation loss."""

from __future__ import annotations

import itertools
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import COMMITTED_MODEL, manifest_json

from toolkit.runtime import Generator, load
from toolkit.runtime.score import segments

TEXT = "ROMEO:\nBut, soft! what light through yonder window breaks?\n\nJULIET:\nAy me!\n"


@pytest.fixture(scope="module")
def generator() -> Generator:
    return load(COMMITTED_MODEL, runtime="onnx")


def test_score_is_the_recorded_validation_loss(tiny_export: Path, small_corpus: Path) -> None:
    """Training's validation: 16 streams from zeros over the held-out end, each stream's first
    character fed, not predicted; `--streams 16 --overlap 0` is that rule."""
    source = manifest_json(tiny_export)["source"]
    text = small_corpus.read_text(encoding="utf-8")
    val = text[len(text) - int(len(text) * source["val_fraction"]) :]
    per_stream = (len(val) - 1) // 16  # training leaves out the remainder at the end
    result = load(tiny_export, runtime="onnx").score(
        val[: 16 * per_stream + 1], streams=16, overlap=0
    )
    assert result.scored == 16 * per_stream
    assert result.nats_per_char == pytest.approx(source["best_val_loss"], abs=1e-4)
    assert result.bits_per_char == pytest.approx(source["best_val_bpc"], abs=2e-4)


def test_exact_mode_is_the_plain_loop(generator: Generator) -> None:
    ids = generator.encode(TEXT)
    h = np.zeros(generator.shape.state_shape(1), np.float32)
    c = h.copy()
    expected = [math.nan]
    for token, target in itertools.pairwise(ids):
        logits, h, c = generator.backend.step(np.array([token], np.int32), h, c)
        z = logits[0].astype(np.float64)
        expected.append(float(z[target] - z.max() - np.log(np.exp(z - z.max()).sum())))
    result = generator.score(TEXT, top=3)
    assert math.isnan(result.logprobs[0])
    np.testing.assert_allclose(result.logprobs[1:], expected[1:], atol=1e-9)
    assert result.total_nats == pytest.approx(-sum(expected[1:]))
    assert result.bits_per_char == pytest.approx(result.nats_per_char / math.log(2))
    # The alternatives: best first, the chosen character's log-probability among them.
    assert np.all(np.diff(result.top_logprobs[1:], axis=1) <= 0)
    for i in range(1, len(ids)):
        if ids[i] in result.top_ids[i]:
            j = list(result.top_ids[i]).index(ids[i])
            assert result.top_logprobs[i, j] == pytest.approx(result.logprobs[i])
        else:
            assert result.top_logprobs[i, -1] >= result.logprobs[i]


@pytest.mark.parametrize(
    ("runtime", "variant", "tolerance"),
    [("numpy", "fp32", 1e-4), ("onnx", "int8", 0.02), ("tflite", "int8", 0.02)],
)
def test_every_runtime_gives_the_same_figures(
    generator: Generator, runtime: str, variant: str, tolerance: float
) -> None:
    """fp32 within 1e-4 nats/char; int8 within its validation tolerance (relative)."""
    expected = generator.score(TEXT * 3).nats_per_char
    got = load(COMMITTED_MODEL, runtime=runtime, variant=variant).score(TEXT * 3).nats_per_char
    if variant == "fp32":
        assert got == pytest.approx(expected, abs=tolerance)
    else:
        assert abs(got - expected) <= tolerance * expected


def test_streams_split_the_text_and_warm_up(generator: Generator) -> None:
    start, first, end = segments(101, 4, 10)
    assert first.tolist() == [1, 26, 51, 76] and end.tolist() == [26, 51, 76, 101]
    assert start.tolist() == [0, 15, 40, 65]
    exact = generator.score(TEXT)
    # An overlap as long as the text: every segment starts at the text's start, as exact does.
    whole = generator.score(TEXT, streams=5, overlap=len(TEXT))
    np.testing.assert_allclose(whole.logprobs[1:], exact.logprobs[1:], atol=1e-5)
    short = generator.score(TEXT, streams=5, overlap=4)
    assert short.streams == 5 and np.isfinite(short.logprobs[1:]).all()
    assert short.nats_per_char != exact.nats_per_char


def toolkit(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "toolkit", "score", *args],
        capture_output=True,
        text=True,
        input=stdin,
        timeout=120,
    )


def test_cli_json_file_and_stdin(tmp_path: Path, generator: Generator) -> None:
    proc = toolkit(str(COMMITTED_MODEL), "--text", TEXT, "--json", "--top", "2")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    expected = generator.score(TEXT)
    assert out["chars"] == len(TEXT) and out["logprobs"][0] is None
    assert out["nats_per_char"] == pytest.approx(expected.nats_per_char, abs=1e-9)
    assert out["top_logprobs"][0] is None and len(out["top_logprobs"][1]) == 2
    assert "".join(out["tokens"]) == TEXT
    (tmp_path / "t.txt").write_text(TEXT, encoding="utf-8")
    for proc in (toolkit("-", stdin=TEXT), toolkit("--file", str(tmp_path / "t.txt"))):
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.startswith(f"{expected.bits_per_char:.4f} bits/char, "), proc.stdout


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--text", "Ça va"], "'Ç'"),
        ([], "--text TEXT"),
        (["--text", "ab", "--top", "2"], "add --json"),
        (["--file", "missing.txt"], "no such file"),
        (["--file", "bad.txt"], "not valid UTF-8"),
        (["--text", "ab", "--streams", "0"], "--streams"),
    ],
)
def test_cli_errors_are_one_line(
    args: list[str], fragment: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    import toolkit.cli.entry as cli

    (tmp_path / "bad.txt").write_bytes(b"\xff\xfe")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["toolkit", "score", str(COMMITTED_MODEL), *args])
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    assert exit_info.value.code != 0
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and fragment in lines[0], lines
