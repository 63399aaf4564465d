"""The command line end to end: train -> export -> generate, and one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


def toolkit(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "toolkit", *args],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=cwd,
        env={k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"},
    )


def assert_one_line_error(proc: subprocess.CompletedProcess, *fragments: str) -> None:
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, proc.stderr
    for fragment in fragments:
        assert fragment in errors[0], errors[0]


@pytest.mark.slow
def test_end_to_end_on_non_ascii_corpus(tmp_path: Path, shakespeare_text: str) -> None:
    corpus = tmp_path / "texts"
    corpus.mkdir()
    (corpus / "a.txt").write_text(shakespeare_text[:8000], encoding="utf-8")
    (corpus / "b.txt").write_text("Ça va? Grüße — «ja» ¡olé! 日本語\n" * 60, encoding="utf-8")
    run = tmp_path / "run"
    trained = toolkit(
        "train", "--preset", "tiny", "--data", str(corpus), "--out", str(run), "--no-progress"
    )
    assert trained.returncode == 0, trained.stderr
    assert trained.stderr == ""  # quiet: no TensorFlow start-up lines
    assert "best val loss" in trained.stdout and "bits/char" in trained.stdout
    vocab = json.loads((run / "vocab.json").read_text(encoding="utf-8"))
    assert "日" in vocab and "ß" in vocab

    exported = toolkit(
        "export", str(run), "--format", "all", "--quantize", "all", "--out", str(tmp_path / "exp")
    )
    assert exported.returncode == 0, exported.stderr
    assert exported.stderr == ""  # no converter, quantizer or LiteRT chatter
    assert "validated model.onnx" in exported.stdout
    for runtime in ("tflite", "tflm"):
        quiet = toolkit("generate", str(tmp_path / "exp"), "--runtime", runtime, "--length", "5")
        assert quiet.returncode == 0 and quiet.stderr == "", quiet.stderr
    loud = toolkit("--verbose", "generate", str(tmp_path / "exp"), "--runtime", "tflite")
    assert "XNNPACK" in loud.stderr  # --verbose shows what the runtimes say

    generated = toolkit(
        "generate",
        str(tmp_path / "exp"),
        "--prompt",
        "Grüße 日",
        "--length",
        "30",
        "--json",
        "--seed",
        "1",
        "--num-samples",
        "2",
    )
    assert generated.returncode == 0, generated.stderr
    result = json.loads(generated.stdout)
    assert len(result["texts"]) == 2 and all(len(t) == 30 for t in result["texts"])

    again = toolkit("train", "--preset", "tiny", "--data", str(corpus), "--out", str(run))
    assert_one_line_error(again, "already exists", "--resume")
    again = toolkit("export", str(run), "--format", "onnx", "--out", str(tmp_path / "exp"))
    assert_one_line_error(again, "--force")


@pytest.mark.parametrize(
    ("setup", "args", "fragments"),
    [
        (None, ["--data", "{tmp}/missing.txt"], ["corpus not found"]),
        (b"", ["--data", "{tmp}/c.txt"], ["empty"]),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00", ["--data", "{tmp}/c.txt"], ["binary"]),
        (b"\xff\xfe latin", ["--data", "{tmp}/c.txt"], ["UTF-8"]),
        (b"too short", ["--data", "{tmp}/c.txt"], ["too short"]),
        (None, ["--batch-size", "0"], ["batch-size"]),
        (None, ["--preset", "enormous"], ["'enormous' is not one of", "--help"]),
        (None, ["--resume", "{tmp}/nothing"], ["nothing to resume"]),
    ],
)
def test_train_bad_input(tmp_path: Path, setup, args, fragments) -> None:
    if setup is not None:
        (tmp_path / "c.txt").write_bytes(setup)
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    out = [] if "--resume" in args else ["--out", str(tmp_path / "run")]
    proc = toolkit("train", "--preset", "tiny", *out, *args)
    assert_one_line_error(proc, *fragments)
    assert not (tmp_path / "run").exists()


def test_export_bad_input(tmp_path: Path) -> None:
    assert_one_line_error(toolkit("export", str(tmp_path / "nope")), "run directory not found")
    assert_one_line_error(
        toolkit("export", str(tmp_path), "--format", "onnx", "--quantize", "float16"),
        "onnx has no fp16",
    )
    assert_one_line_error(toolkit("export", str(tmp_path), "--format", "pt"), "'pt' is not one of")


def test_choices_and_version() -> None:
    """Options with a few values list them, and they are the library's own lists."""
    from toolkit import __version__
    from toolkit.config import PRESETS
    from toolkit.runtime.backends import RUNTIMES
    from toolkit.runtime.manifest import FORMATS, VARIANTS

    def shown(command: str) -> str:
        return subprocess.run(
            [sys.executable, "-m", "toolkit", command, "--help"],
            capture_output=True,
            text=True,
            env={**os.environ, "COLUMNS": "200"},
        ).stdout

    generate, export, train = shown("generate"), shown("export"), shown("train")
    assert f"<{'|'.join(RUNTIMES)}>" in generate and "tflm" in RUNTIMES
    assert f"<{'|'.join(['auto', *VARIANTS])}>" in generate
    assert f"<{'|'.join(['all', *FORMATS])}>" in export
    assert f"<{'|'.join([*VARIANTS, 'all'])}>" in export  # the same words as --variant
    assert f"<{'|'.join(PRESETS)}>" in train
    assert toolkit("--version").stdout.strip() == f"char-lstm-toolkit {__version__}"
    # The manifest's older words for --quantize are still understood.
    assert (
        "onnx has no fp16"
        in toolkit("export", "x", "--format", "onnx", "--quantize", "float16").stderr
    )
