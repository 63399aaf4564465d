"""One description of the export targets (toolkit/runtime/targets.py): every table the
toolkit keeps about them is read from it, and what users see of them stays as promised."""

from __future__ import annotations

import importlib
import inspect
from typing import Any

import pytest
import typer.main

from toolkit.bench.targets import GENERATE_RUNTIME, THREADED
from toolkit.bench.targets import RUNTIMES as BENCH_ROWS
from toolkit.cli.entry import app
from toolkit.errors import ModelFileError
from toolkit.runtime import backends
from toolkit.runtime.manifest import ARTIFACT_FILES, VARIANTS, Artifact, Manifest
from toolkit.runtime.targets import (
    FILES,
    FORMATS,
    RUNTIMES,
    SERVE_RUNTIMES,
    generate_flags,
    runtime_of,
    variant_named,
)


def option_metavar(command: str, option: str) -> str:
    group: Any = typer.main.get_command(app)  # a click group (typer's own click)
    params = group.commands[command].params
    return next(str(p.metavar) for p in params if p.name == option)


def test_the_commands_offer_the_described_runtimes() -> None:
    names = tuple(r.name for r in RUNTIMES)
    assert names == backends.RUNTIMES == ("onnx", "tflite", "tflm", "c", "numpy", "keras")
    assert option_metavar("generate", "runtime") == f"<{'|'.join(names)}>"
    # The server runs the runtimes whose step takes any batch.
    assert SERVE_RUNTIMES == ("onnx", "tflite", "numpy")
    assert option_metavar("serve", "runtime") == f"<{'|'.join(SERVE_RUNTIMES)}>"
    assert option_metavar("export", "format") == f"<{'|'.join(['all', *FORMATS])}>"


def test_the_manifest_names_the_described_files() -> None:
    # The manifest's file names are a promise to every reader of an export folder.
    assert ARTIFACT_FILES == {
        ("onnx", "none"): "model.onnx",
        ("onnx", "int8"): "model.int8.onnx",
        ("tflite", "none"): "model.tflite",
        ("tflite", "float16"): "model.fp16.tflite",
        ("tflite", "int8"): "model.int8.tflite",
        ("tflite", "full-int8"): "model.full-int8.tflite",
        ("numpy", "none"): "weights.npz",
        ("c", "full-int8"): "char_lstm.c",
    }
    assert VARIANTS == {"fp32": "none", "fp16": "float16", "int8": "int8", "full-int8": "full-int8"}


def test_every_file_is_run_and_every_runtime_is_opened() -> None:
    for file in FILES:
        runtime = runtime_of(file)
        assert runtime.format == file.format and file.use, file
    assert {f.name: generate_flags(f) for f in FILES if f.quantization != "none"} == {
        "model.int8.onnx": "--runtime onnx --variant int8",
        "model.fp16.tflite": "--runtime tflite --variant fp16",
        "model.int8.tflite": "--runtime tflite --variant int8",
        "model.full-int8.tflite": "--runtime tflm",
        "char_lstm.c": "--runtime c",
    }
    for runtime in RUNTIMES:
        if runtime.format is None:
            continue  # keras: `load` reads the run directory
        module = importlib.import_module(f"toolkit.runtime.backends.{runtime.name}")
        params = list(inspect.signature(module.open_file).parameters)
        assert params == ["model_dir", "artifact", "data", "model", "threads"], runtime.name
    labels = [r.label for r in RUNTIMES]
    assert len(set(labels)) == len(labels)


def test_the_bench_rows_are_the_described_variants() -> None:
    described = {row for r in RUNTIMES for row in r.bench.values()}
    exported = {name for name, (kind, _, _) in BENCH_ROWS.items() if kind == "exported"}
    assert exported == described and "c-full-int8" in exported
    assert GENERATE_RUNTIME["c-full-int8"] == ("c", "full-int8")
    for runtime in RUNTIMES:
        for variant, row in runtime.bench.items():
            quantization = variant_named(variant).quantization
            assert BENCH_ROWS[row] == ("exported", runtime.name, quantization)
            assert (runtime.format, quantization) in ARTIFACT_FILES, row
    assert {"onnx", "tflite", "numpy"} == THREADED


def manifest_with(*files: str) -> Manifest:
    by_name = {name: key for key, name in ARTIFACT_FILES.items()}
    artifacts = {f: Artifact(f, *by_name[f], 1, "0" * 64) for f in files}
    return Manifest.from_dict(
        {
            "format_version": 1,
            "vocab": ["a", "b"],
            "model": {"vocab_size": 2, "embedding_dim": 2, "units": 2, "layers": 1},
            "artifacts": {name: a.to_dict() for name, a in artifacts.items()},
        }
    )


def test_variants_and_files_follow_the_description() -> None:
    only_onnx = manifest_with("model.onnx", "model.int8.onnx")
    # numpy falls back on model.onnx's weights; never on a quantized file.
    assert only_onnx.resolve_variant("numpy", "auto") == "fp32"
    assert only_onnx.runtime_artifact("numpy", "none").file == "model.onnx"
    with pytest.raises(ModelFileError, match="numpy has no int8 variant"):
        only_onnx.runtime_artifact("numpy", "int8")
    full = manifest_with("model.tflite", "model.full-int8.tflite", "char_lstm.c")
    assert full.resolve_variant("tflite", "auto") == "fp32"  # full-int8 only when asked for
    assert full.resolve_variant("tflm", "auto") == full.resolve_variant("c", "auto") == "full-int8"
    with pytest.raises(ModelFileError, match="the c runtime runs only the full-int8 variant"):
        full.resolve_variant("c", "int8")
    assert full.runtime_artifact("tflm", "full-int8").file == "model.full-int8.tflite"
    assert full.runtime_artifact("c", "full-int8").file == "char_lstm.c"
