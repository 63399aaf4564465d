"""The wheel carries the ready model: a runtime-only install generates from any folder."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from toolkit.runtime import load

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_runtime_only_wheel_generates_from_any_folder(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    build = [sys.executable, "-m", "pip", "wheel", str(REPO), "--no-deps", "--no-build-isolation"]
    subprocess.run(
        [*build, "--quiet", "-w", str(dist)],
        check=True,
        capture_output=True,
    )
    wheel = next(dist.glob("char_lstm_toolkit-*.whl"))
    assert wheel.stat().st_size <= 10 * 1024 * 1024
    names = zipfile.ZipFile(wheel).namelist()
    assert "toolkit/models/shakespeare/manifest.json" in names
    assert "toolkit/models/shakespeare/model.onnx" in names

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", f"{wheel}[onnx]"],
        capture_output=True,
        text=True,
    )
    assert pip.returncode == 0, pip.stderr[-2000:]
    elsewhere = tmp_path / "somewhere"
    elsewhere.mkdir()

    def toolkit(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(venv / "bin" / "toolkit"), *args],
            capture_output=True,
            text=True,
            cwd=elsewhere,
            timeout=300,
        )

    no_tf = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import tensorflow"], capture_output=True
    )
    assert no_tf.returncode != 0  # a runtime-only install: no TensorFlow
    generated = toolkit("generate", "--prompt", "JULIET:", "--temperature", "0", "--length", "80")
    assert generated.returncode == 0, generated.stderr
    assert generated.stderr == ""
    expected = load(REPO / "exported" / "shakespeare", runtime="onnx").generate(
        "JULIET:", length=80, temperature=0
    )
    assert generated.stdout == "JULIET:" + expected.texts[0] + "\n"
    # Commands that need TensorFlow say what to install, in one line.
    for args in (["train", "--preset", "tiny"], ["export", "runs/x"], ["bench"]):
        refused = toolkit(*args)
        assert refused.returncode == 2
        assert refused.stderr == (
            "error: this command needs TensorFlow: pip install 'char-lstm-toolkit[train]'\n"
        )
