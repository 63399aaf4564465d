"""The ready-to-use model committed under exported/shakespeare/."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import manifest_json, parse_c_array

from toolkit.files import sha256_bytes
from toolkit.runtime import load

MODEL = Path(__file__).resolve().parents[2] / "exported" / "shakespeare"


def test_manifest_and_checksums() -> None:
    manifest = manifest_json(MODEL)
    files = manifest["artifacts"]
    assert {"model.onnx", "model.int8.tflite"} <= set(files)
    total = 0
    for name, entry in files.items():
        data = (MODEL / name).read_bytes()
        assert sha256_bytes(data) == entry["sha256"], name
        assert entry["validation"]["passed"] is True
        if entry["format"] != "c":  # char_lstm.c: the full-int8 model again, as C source
            total += len(data)
    assert total <= 12 * 1024 * 1024
    assert manifest["model"]["units"] == 512
    assert manifest["source"]["best_val_loss"] < 1.6
    assert manifest["source"]["train_command"].startswith("toolkit train")
    assert all(c.startswith("toolkit export") for c in manifest["source"]["commands"])
    assert json.loads((MODEL / "manifest.json").read_text())["vocab"][0] == "\n"


def test_greedy_text_agrees_between_onnx_and_tflite() -> None:
    onnx = load(MODEL, runtime="onnx").generate("ROMEO:", length=300, temperature=0).texts[0]
    tflite = load(MODEL, runtime="tflite").generate("ROMEO:", length=300, temperature=0).texts[0]
    assert onnx == tflite
    # numpy reads model.onnx's weights (the folder has no weights.npz), as the README shows.
    numpy = load(MODEL, runtime="numpy").generate("ROMEO:", length=300, temperature=0).texts[0]
    assert numpy == onnx
    assert len(set(onnx)) > 10  # a trained model writes varied text, not one repeated char


@pytest.mark.parametrize("variant", ["int8"])
def test_quantized_tflite_generates(variant: str) -> None:
    gen = load(MODEL, runtime="tflite", variant=variant)
    text = gen.generate("JULIET:", length=200, temperature=0.8, seed=1).texts[0]
    assert len(text) == 200


def test_default_model_is_the_committed_one(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from toolkit.runtime.generator import default_model_dir

    monkeypatch.chdir(tmp_path)  # not the repository: falls back to the package's checkout
    assert default_model_dir("onnx") == MODEL


def test_committed_model_runs_on_a_microcontroller() -> None:
    """model.full-int8.tflite validated in TFLite Micro; its C array is the same bytes."""
    entry = manifest_json(MODEL)["artifacts"]["model.full-int8.tflite"]
    validation = entry["validation"]
    assert "TensorFlow Lite Micro" in validation["criterion"] and validation["passed"]
    # The cell clip keeps full-integer quality close to fp32 (+2% without it).
    assert validation["exported_bpc"] <= 1.01 * validation["keras_bpc"]
    assert 0 < entry["micro"]["arena_bytes"] <= 64 * 1024
    data = parse_c_array((MODEL / "model_data.cc").read_text())
    assert sha256_bytes(data) == entry["sha256"]
    tflm = load(MODEL, runtime="tflm").generate("ROMEO:", length=100, temperature=0).texts[0]
    assert len(set(tflm)) > 10
