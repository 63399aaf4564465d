"""Shared fixtures. Models are tiny, and built once per test run: under pytest-xdist
(`make test` runs two workers) the first worker to need one trains or exports it in a folder
every worker shares, and each worker works on its own copy."""

from __future__ import annotations

import dataclasses
import fcntl
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from toolkit.logs import quiet_tensorflow_env

quiet_tensorflow_env()
# Raw corpora are prepared into the user cache on first use: keep the tests' copies out of it.
os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="toolkit-tests-cache-")

REPO = Path(__file__).resolve().parents[1]
SHARED_CORPUS = REPO.parent / "shared" / "data" / "tinyshakespeare.txt"
COMMITTED_MODEL = REPO / "exported" / "shakespeare"


def manifest_json(folder: Path) -> dict[str, Any]:
    """An export folder's manifest.json as it is on disk (its format is a promise)."""
    data: dict[str, Any] = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    return data


@dataclasses.dataclass
class CliResult:
    returncode: int
    stdout: str
    stderr: str


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Callable[..., Any]:
    """`toolkit ARGS` in this process, through the console entry point (its errors, exit codes
    and output as a user sees them): for tests whose subject is not the process itself, each
    subprocess with TensorFlow costs seconds of CPU to start."""
    from toolkit.cli.entry import main

    def run(*args: str) -> CliResult:
        monkeypatch.setattr(sys, "argv", ["toolkit", *args])
        capsys.readouterr()
        try:
            main()
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        out = capsys.readouterr()
        return CliResult(code, out.out, out.err)

    return run


@pytest.fixture(scope="session")
def shakespeare_text() -> str:
    from toolkit.data.corpus import bundled_corpus_text

    return bundled_corpus_text()


def built_once(
    tmp_path_factory: pytest.TempPathFactory, name: str, build: Callable[[Path], None]
) -> Path:
    """`build(path)` once per test run, in a folder all xdist workers share (a file lock
    makes the others wait for the first); the path of what it built."""
    base = tmp_path_factory.getbasetemp()
    shared = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "built-once"
    shared.mkdir(exist_ok=True)
    path, done = shared / name, shared / f".{name}.done"
    with open(shared / f".{name}.building", "w") as lock:  # not .NAME.lock: RunDirLock's
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not done.exists():
            build(path)
            done.touch()
    return path


def own_copy(tmp_path_factory: pytest.TempPathFactory, built: Path, kind: str) -> Path:
    """This worker's copy of a shared folder (tests may lock, export or change it)."""
    copy = tmp_path_factory.mktemp(kind) / built.name
    shutil.copytree(built, copy)
    return copy


@pytest.fixture(scope="session")
def small_corpus(tmp_path_factory: pytest.TempPathFactory, shakespeare_text: str) -> Path:
    """20,000 characters of Shakespeare: enough for a tiny model, seconds to train."""

    def write(folder: Path) -> None:
        folder.mkdir()
        (folder / "small.txt").write_text(shakespeare_text[:20_000], encoding="utf-8")

    return built_once(tmp_path_factory, "corpus", write) / "small.txt"


@pytest.fixture(scope="session")
def tiny_config() -> Any:
    from toolkit.config import preset

    return dataclasses.replace(preset("tiny"), epochs=2, sample_length=20)


def shared_tiny_run(tmp_path_factory: pytest.TempPathFactory, corpus: Path, config: Any) -> Path:
    from toolkit.train.loop import train

    def build(run_dir: Path) -> None:
        train(config, run_dir, data=corpus, log=lambda _: None, progress_bar=False)

    return built_once(tmp_path_factory, "tiny-run", build)


@pytest.fixture(scope="session")
def tiny_run(
    tmp_path_factory: pytest.TempPathFactory, small_corpus: Path, tiny_config: Any
) -> Path:
    shared = shared_tiny_run(tmp_path_factory, small_corpus, tiny_config)
    return own_copy(tmp_path_factory, shared, "runs")


@pytest.fixture(scope="session")
def tiny_export(
    tmp_path_factory: pytest.TempPathFactory, small_corpus: Path, tiny_config: Any
) -> Path:
    """Every format and quantization of the tiny model (tiny_run's weights), validated."""
    from toolkit.export.exporter import export_run

    def build(out: Path) -> None:
        run = shared_tiny_run(tmp_path_factory, small_corpus, tiny_config)
        formats = ["tflite", "onnx", "numpy", "c"]
        export_run(run, out, formats=formats, quantization="all", log=lambda _: None)

    return own_copy(
        tmp_path_factory, built_once(tmp_path_factory, "tiny-export", build), "exported"
    )


@pytest.fixture(scope="session", autouse=True)
def c_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One cache of compiled C for every worker (and the CLIs they start): the committed
    model's 5 MB char_lstm.c compiles once per run for each target."""
    base = tmp_path_factory.getbasetemp()
    path = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "c-cache"
    path.mkdir(exist_ok=True)
    os.environ["TOOLKIT_C_CACHE"] = str(path)
    return path


def without_c(folder: Path, dest: Path) -> Path:
    """A copy of an export folder without its C target (char_lstm.c, char_lstm.h)."""
    from toolkit.runtime.manifest import Manifest

    shutil.copytree(folder, dest, ignore=shutil.ignore_patterns("char_lstm.*"))
    manifest = Manifest.read(dest)
    kept = {name: a for name, a in manifest.artifacts.items() if a.format != "c"}
    manifest.with_artifacts(kept).write(dest)
    return dest


@pytest.fixture(scope="session")
def tiny2_c_export(
    tmp_path_factory: pytest.TempPathFactory, small_corpus: Path, tiny_config: Any
) -> Path:
    """A 2-layer tiny model exported as C only (the full-int8 model is made first)."""
    from toolkit.export.exporter import export_run
    from toolkit.train.loop import train

    def build(out: Path) -> None:
        run = out.with_name("tiny2-run")
        config = dataclasses.replace(tiny_config, layers=2)
        train(config, run, data=small_corpus, log=lambda _: None, progress_bar=False)
        export_run(run, out, formats=["c"], quantization="full-int8", log=lambda _: None)

    return own_copy(tmp_path_factory, built_once(tmp_path_factory, "tiny2-c", build), "exported")


def small_lstm_config(**changes: Any) -> Any:
    """A 2 x 24 LSTM on windows of 6 x 12, fp32: the fused step's gradient checks' size."""
    from toolkit.config import preset

    base = dataclasses.replace(
        preset("tiny"), units=24, embedding_dim=8, layers=2, seq_length=12, batch_size=6
    )
    return dataclasses.replace(base, **{"precision": "fp32", **changes})


def random_window(config: Any, vocab: int = 20, seed: int = 0) -> tuple[Any, Any, Any, Any]:
    """Random inputs, targets and state (x, y, h, c) for one training step of `config`."""
    import numpy as np

    rng = np.random.default_rng(seed)
    x = rng.integers(0, vocab, (config.batch_size, config.seq_length)).astype(np.int32)
    y = rng.integers(0, vocab, (config.batch_size, config.seq_length)).astype(np.int32)
    shape = (config.batch_size, config.layers, config.units)
    h = rng.normal(0, 0.5, shape).astype(np.float32)
    c = rng.normal(0, 0.5, shape).astype(np.float32)
    return x, y, h, c


def parse_c_array(source: str, symbol: str = "g_char_lstm_model") -> bytes:
    """The bytes of `symbol`'s initializer in a generated model_data.cc (round trips)."""
    import re

    match = re.search(rf"{symbol}\[\]\s*=\s*\{{(.*?)\}};", source, re.S)
    assert match is not None, f"no array {symbol} in the C source"
    return bytes(int(x, 16) for x in re.findall(r"0x([0-9a-fA-F]{2})", match.group(1)))
