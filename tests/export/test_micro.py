"""The microcontroller export: full-integer TFLite validated in TensorFlow Lite Micro, C array."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import manifest_json, parse_c_array

from toolkit.errors import ExportError, ModelFileError
from toolkit.export.micro import MicroLimits
from toolkit.files import sha256_bytes
from toolkit.runtime import load

FULL_INT8 = "model.full-int8.tflite"


def test_full_int8_is_validated_in_tflite_micro(tiny_export: Path) -> None:
    entry = manifest_json(tiny_export)["artifacts"][FULL_INT8]
    assert entry["quantization"] == "full-int8"
    micro = entry["micro"]
    # TFLite Micro addresses tensors by position: the manifest keeps the subgraph order.
    assert sorted(t["name"] for t in micro["inputs"]) == ["c", "h", "token"]
    by_name = {t["name"]: t for t in [*micro["inputs"], *micro["outputs"]]}
    assert by_name["token"]["dtype"] == "int32"
    for name in ("h", "c", "logits", "h_out", "c_out"):
        assert by_name[name]["dtype"] == "int8"
        assert by_name[name]["scale"] > 0
    assert by_name["h"]["shape"] == [1, 1, 16]  # batch fixed to 1
    assert 0 < micro["arena_bytes"] < 64 * 1024
    assert micro["flash_bytes"] == entry["bytes"] == (tiny_export / FULL_INT8).stat().st_size
    assert "FULLY_CONNECTED" in micro["ops"] and "GATHER" in micro["ops"]
    validation = entry["validation"]
    assert validation["passed"] and "TensorFlow Lite Micro" in validation["criterion"]
    assert validation["exported_bpc"] <= validation["keras_bpc"] * 1.03
    assert entry["validation_litert"]["passed"]


def test_c_array_round_trips_to_the_model(tiny_export: Path) -> None:
    entry = manifest_json(tiny_export)["artifacts"][FULL_INT8]
    source = (tiny_export / "model_data.cc").read_text()
    header = (tiny_export / "model_data.h").read_text()
    data = parse_c_array(source)
    assert sha256_bytes(data) == entry["sha256"]
    assert entry["micro"]["c_files"]["model_data.cc"] == sha256_bytes(source.encode())
    assert f"g_char_lstm_model_len = {entry['bytes']};" in source
    assert "alignas(16)" in source
    assert f"kCharLstmArenaBytes = {entry['micro']['arena_bytes']};" in header
    assert "resolver.AddFullyConnected();" in header and "resolver.AddGather();" in header
    vocab = manifest_json(tiny_export)["vocab"]
    assert f"kCharLstmVocabSize = {len(vocab)};" in header
    assert source.isascii()


def test_tflm_runtime_generates_like_litert(tiny_export: Path) -> None:
    tflm = load(tiny_export, runtime="tflm")
    litert = load(tiny_export, runtime="tflite", variant="full-int8")
    assert tflm.variant == "full-int8"
    token = np.array([3, 5], np.int32)  # batch 2: a batch-1 model runs the rows in turn
    h = np.zeros((1, 2, 16), np.float32)
    c = np.zeros_like(h)
    for _ in range(20):
        a, h_a, c_a = tflm.backend.step(token, h, c)
        b, _, _ = litert.backend.step(token, h, c)
        scale = manifest_json(tiny_export)["artifacts"][FULL_INT8]["micro"]["outputs"]
        step = max(t["scale"] for t in scale)
        assert np.max(np.abs(a - b)) <= 2 * step  # same int8 arithmetic, up to rounding
        h, c = h_a, c_a
        token = a.argmax(-1).astype(np.int32)
    text = tflm.generate("First", length=40, temperature=0.8, seed=1, num_samples=2).texts
    assert [len(t) for t in text] == [40, 40]


def test_tflm_runtime_needs_the_full_int8_variant(tiny_export: Path) -> None:
    with pytest.raises(ModelFileError, match="only the full-int8"):
        load(tiny_export, runtime="tflm", variant="int8")


def test_limits_refuse_a_model_that_does_not_fit(tiny_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "micro"
    with pytest.raises(ExportError, match="--max-arena"):
        _export_micro(tiny_run, out, limits=MicroLimits(max_arena=64))
    with pytest.raises(ExportError, match="--max-flash"):
        _export_micro(tiny_run, out, limits=MicroLimits(max_flash=1000))
    assert not out.exists() or not any(out.iterdir())  # nothing half-written


def test_calibration_text_with_unknown_characters(tiny_run: Path, tmp_path: Path) -> None:
    text = tmp_path / "calib.txt"
    text.write_text("Ünïcödé ≠ Shakespeare: First Citizen, speak.\n" * 40, encoding="utf-8")
    lines: list[str] = []
    out = tmp_path / "micro"
    _export_micro(tiny_run, out, calibration_data=text, log=lines.append)
    assert any("dropped" in line and "'Ü'" in line for line in lines)
    micro = json.loads((out / "manifest.json").read_text())["artifacts"][FULL_INT8]["micro"]
    assert micro["calibration_data"] == str(text)
    assert (out / "model_data.cc").exists()

    nothing_known = tmp_path / "greek.txt"
    nothing_known.write_text("αβγ" * 100, encoding="utf-8")
    with pytest.raises(ExportError, match="no character of the model's vocabulary"):
        _export_micro(tiny_run, tmp_path / "other", calibration_data=nothing_known)


def _export_micro(run: Path, out: Path, **kwargs) -> None:  # type: ignore[no-untyped-def]
    from toolkit.export.exporter import export_run

    kwargs.setdefault("log", lambda _: None)
    export_run(run, out, formats=["tflite"], quantization="full-int8", **kwargs)
