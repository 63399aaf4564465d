"""Shared fixtures. TensorFlow is imported once per session; models are tiny."""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# Raw corpora are prepared into the user cache on first use: keep the tests' copies out of it.
os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="toolkit-tests-cache-")

REPO = Path(__file__).resolve().parents[1]
SHARED_CORPUS = REPO.parent / "shared" / "data" / "tinyshakespeare.txt"
COMMITTED_MODEL = REPO / "exported" / "shakespeare"


def manifest_json(folder: Path) -> dict[str, Any]:
    """An export folder's manifest.json as it is on disk (its format is a promise)."""
    data: dict[str, Any] = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    return data


@pytest.fixture(scope="session")
def shakespeare_text() -> str:
    from toolkit.data.corpus import bundled_corpus_text

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
    from toolkit.train.loop import train

    run_dir = tmp_path_factory.mktemp("runs") / "tiny"
    train(tiny_config, run_dir, data=small_corpus, log=lambda _: None, progress_bar=False)
    return run_dir


@pytest.fixture(scope="session")
def tiny_export(tmp_path_factory: pytest.TempPathFactory, tiny_run: Path) -> Path:
    """Every format and quantization of the tiny model, validated."""
    from toolkit.export.exporter import export_run

    out = tmp_path_factory.mktemp("exported") / "tiny"
    export_run(
        tiny_run, out, formats=["tflite", "onnx", "numpy"], quantization="all", log=lambda _: None
    )
    return out


def parse_c_array(source: str, symbol: str = "g_char_lstm_model") -> bytes:
    """The bytes of `symbol`'s initializer in a generated model_data.cc (round trips)."""
    import re

    match = re.search(rf"{symbol}\[\]\s*=\s*\{{(.*?)\}};", source, re.S)
    assert match is not None, f"no array {symbol} in the C source"
    return bytes(int(x, 16) for x in re.findall(r"0x([0-9a-fA-F]{2})", match.group(1)))
