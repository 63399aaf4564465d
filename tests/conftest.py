"""Shared fixtures. TensorFlow is imported once per session; models are tiny."""

from __future__ import annotations

import dataclasses
import os
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# Raw corpora are prepared into the user cache on first use: keep the tests' copies out of it.
os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="toolkit-tests-cache-")

REPO = Path(__file__).resolve().parents[1]
SHARED_CORPUS = REPO.parent / "shared" / "data" / "tinyshakespeare.txt"


@pytest.fixture(scope="session")
def shakespeare_text() -> str:
    from toolkit.data import bundled_corpus_text

    return bundled_corpus_text()


@pytest.fixture(scope="session")
def small_corpus(tmp_path_factory: pytest.TempPathFactory, shakespeare_text: str) -> Path:
    """20,000 characters of Shakespeare: enough for a tiny model, seconds to train."""
    path = tmp_path_factory.mktemp("corpus") / "small.txt"
    path.write_text(shakespeare_text[:20_000], encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def tiny_config():
    from toolkit.config import preset

    return dataclasses.replace(preset("tiny"), epochs=2, sample_length=20)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory, small_corpus: Path, tiny_config) -> Path:
    from toolkit.train import train

    run_dir = tmp_path_factory.mktemp("runs") / "tiny"
    train(tiny_config, run_dir, data=small_corpus, log=lambda _: None, progress_bar=False)
    return run_dir


@pytest.fixture(scope="session")
def tiny_export(tmp_path_factory: pytest.TempPathFactory, tiny_run: Path) -> Path:
    """Every format and quantization of the tiny model, validated."""
    from toolkit.export import export_run

    out = tmp_path_factory.mktemp("exported") / "tiny"
    export_run(
        tiny_run, out, formats=["tflite", "onnx", "numpy"], quantization="all", log=lambda _: None
    )
    return out
