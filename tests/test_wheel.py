"""The wheel carries the ready model: a runtime-only install generates from any folder.

Offline: the wheel goes into a fresh venv with --no-deps, and its runtime dependencies
(`char-lstm-toolkit[onnx]`, resolved from the installed metadata) are linked in from the
test's own environment, without TensorFlow or anything else the extra does not name.
"""

from __future__ import annotations

import subprocess
import sys
import sysconfig
import zipfile
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from toolkit.runtime import load

REPO = Path(__file__).resolve().parents[1]


def dependency_closure(requirement: str) -> set[str]:
    """The installed distributions `requirement` needs, transitively (markers evaluated)."""
    found: set[str] = set()
    todo = [(Requirement(requirement), "")]
    while todo:
        req, via_extra = todo.pop()
        if req.marker is not None and not req.marker.evaluate({"extra": via_extra}):
            continue
        name = metadata.distribution(req.name).metadata["Name"]
        key = name.lower().replace("_", "-")
        if key in found and not req.extras:
            continue
        found.add(key)
        for extra in ["", *req.extras]:
            todo += [(Requirement(r), extra) for r in metadata.requires(name) or []]
    return found


def link_distributions(names: set[str], folder: Path, skip: str) -> None:
    """Symlinks to each distribution's top-level files and its metadata, in `folder`."""
    folder.mkdir()
    for name in names - {skip}:
        dist = metadata.distribution(name)
        site = Path(str(dist.locate_file("")))
        tops = {Path(str(f)).parts[0] for f in dist.files or [] if not str(f).startswith("..")}
        for top in tops:
            if (site / top).exists() and not (folder / top).exists():
                (folder / top).symlink_to(site / top)


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
    assert "toolkit/models/shakespeare/tokenizer.json" in names

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    deps = tmp_path / "deps"
    link_distributions(dependency_closure("char-lstm-toolkit[onnx]"), deps, "char-lstm-toolkit")
    assert not (deps / "tensorflow").exists()
    version = sysconfig.get_python_version()
    (venv / "lib" / f"python{version}" / "site-packages" / "deps.pth").write_text(f"{deps}\n")
    offline = ["--quiet", "--no-deps", "--no-index", str(wheel)]
    pip = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", *offline],
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
    scored = toolkit("score", "--text", "JULIET:\nAy me!")  # no TensorFlow needed either
    assert scored.returncode == 0 and " bits/char, " in scored.stdout, scored.stderr
    # Commands that need TensorFlow say what to install, in one line.
    for args in (["train", "--preset", "tiny"], ["export", "runs/x"], ["bench"]):
        refused = toolkit(*args)
        assert refused.returncode == 2
        assert refused.stderr == (
            "error: this command needs TensorFlow: pip install 'char-lstm-toolkit[train]'\n"
        )
