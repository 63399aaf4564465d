"""Export: names and shapes read back from the runtimes, no loops, validation, safety."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import manifest_json

from toolkit.errors import ExportError, RunDirError, UsageError
from toolkit.files import sha256_bytes
from toolkit.runtime.manifest import ARTIFACT_FILES

ALL_FILES = sorted(ARTIFACT_FILES.values())


def test_every_variant_exported_and_validated(tiny_export: Path, tiny_run: Path) -> None:
    manifest = manifest_json(tiny_export)
    assert manifest["vocab"] == json.loads((tiny_run / "vocab.json").read_text())
    assert sorted(manifest["artifacts"]) == ALL_FILES
    for name, entry in manifest["artifacts"].items():
        data = (tiny_export / name).read_bytes()
        assert entry["sha256"] == sha256_bytes(data)
        assert entry["bytes"] == len(data)
        validation = entry["validation"]
        assert validation["passed"] is True
        assert validation["steps"] >= 500
        if entry["quantization"] == "none":
            assert validation["max_abs_logit_diff"] <= 1e-4
            assert validation["argmax_agreement"] == 1.0
        else:
            assert validation["bpc_ratio"] <= (1.03 if "full-int8" in name else 1.02)
    assert manifest["inputs"]["h"]["shape"] == [1, None, 16]
    assert manifest["source"]["best_val_loss"] is not None
    assert "tf2onnx" in manifest["versions"]
    assert not list(tiny_export.parent.glob(".export-*")), "staging folder left behind"
    card = (tiny_export / "README.md").read_text()  # the model card, from the manifest
    for name, entry in manifest["artifacts"].items():
        assert f"| `{name}` |" in card
        assert f"{entry['validation']['exported_bpc']:.4f}" in card
    assert f"Command: `{manifest['source']['train_command'] or 'unknown'}`" in card


def test_quantized_files_are_smaller(tiny_export: Path) -> None:
    size = {p.name: p.stat().st_size for p in tiny_export.iterdir()}
    assert size["model.int8.tflite"] < size["model.tflite"]
    assert size["model.fp16.tflite"] < size["model.tflite"]
    assert size["model.int8.onnx"] < size["model.onnx"]


def test_onnx_signature_from_onnxruntime(tiny_export: Path) -> None:
    import onnx
    import onnxruntime as ort

    for name in ("model.onnx", "model.int8.onnx"):
        session = ort.InferenceSession(str(tiny_export / name), providers=["CPUExecutionProvider"])
        inputs = {i.name: (i.type, i.shape) for i in session.get_inputs()}
        outputs = {o.name: (o.type, o.shape) for o in session.get_outputs()}
        assert inputs["token"][0] == "tensor(int32)" and len(inputs["token"][1]) == 1
        assert isinstance(inputs["token"][1][0], str)  # dynamic batch
        assert inputs["h"][1][0] == 1 and inputs["h"][1][2] == 16
        assert outputs["logits"][0] == "tensor(float)"
        assert outputs["logits"][1][1] == manifest_json(tiny_export)["model"]["vocab_size"]
        assert set(outputs) == {"logits", "h_out", "c_out"}
        ops = {node.op_type for node in onnx.load(str(tiny_export / name)).graph.node}
        assert not ops & {"Loop", "Scan", "If"}, ops


def test_tflite_signature_and_builtin_ops(tiny_export: Path) -> None:
    from ai_edge_litert.interpreter import Interpreter

    from toolkit.export.tflite import op_types

    for name in ("model.tflite", "model.fp16.tflite", "model.int8.tflite"):
        interpreter = Interpreter(model_path=str(tiny_export / name))
        assert list(interpreter.get_signature_list()) == ["serving_default"]
        runner = interpreter.get_signature_runner("serving_default")
        inputs = runner.get_input_details()
        outputs = runner.get_output_details()
        assert set(inputs) == {"token", "h", "c"}
        assert set(outputs) == {"logits", "h_out", "c_out"}
        assert list(inputs["h"]["shape_signature"]) == [1, -1, 16]  # resizable batch
        assert inputs["token"]["dtype"] == np.int32
        # Runs at batch 3 through the stock signature runner.
        h = np.zeros((1, 3, 16), np.float32)
        out = runner(token=np.array([0, 1, 2], np.int32), h=h, c=h)
        assert out["logits"].shape == (3, manifest_json(tiny_export)["model"]["vocab_size"])
        ops = op_types((tiny_export / name).read_bytes())
        assert "WHILE" not in ops and "FLEX_DELEGATE" not in ops and "CUSTOM" not in ops, ops


def test_independent_check_on_unseen_text(tiny_export: Path, tiny_run: Path) -> None:
    """Step ONNX and TFLite over text validation never used; compare with Keras directly."""
    from toolkit.runtime.backends.keras import load_keras_model
    from toolkit.runtime.backends.onnx import OnnxBackend
    from toolkit.runtime.backends.tflite import TFLiteBackend
    from toolkit.vocabulary import Vocabulary

    vocab = Vocabulary.load(tiny_run / "vocab.json")
    text = (
        "KING RICHARD III:\nNow is the winter of our discontent\nMade glorious summer by this sun of York;\n"
        * 6
    )
    ids = vocab.encode("".join(ch for ch in text if ch in vocab.index))[:520].reshape(1, -1)
    model = load_keras_model(tiny_run)  # float32, even when trained in bf16
    zeros = np.zeros((1, 1, 16), np.float32)
    reference = np.asarray(model({"tokens": ids, "h": zeros, "c": zeros})["logits"])[0]
    for backend in (
        OnnxBackend((tiny_export / "model.onnx").read_bytes()),
        TFLiteBackend((tiny_export / "model.tflite").read_bytes()),
    ):
        h = np.zeros((1, 1, 16), np.float32)
        c = np.zeros_like(h)
        for t in range(ids.shape[1]):
            logits, h, c = backend.step(ids[:, t].astype(np.int32), h, c)
            np.testing.assert_allclose(logits[0], reference[t], atol=1e-4)
            assert logits[0].argmax() == reference[t].argmax()


def test_existing_target_needs_force_and_adding_formats(tiny_run: Path, tmp_path: Path) -> None:
    from toolkit.export.exporter import export_run

    out = tmp_path / "exp"
    export_run(tiny_run, out, formats=["numpy"], log=lambda _: None, command="toolkit export a")
    export_run(tiny_run, out, formats=["onnx"], log=lambda _: None, command="toolkit export b")
    manifest = manifest_json(out)  # the second export added to the first
    assert sorted(manifest["artifacts"]) == ["model.onnx", "weights.npz"]
    assert manifest["source"]["commands"] == ["toolkit export a", "toolkit export b"]
    before = (out / "model.onnx").read_bytes()
    with pytest.raises(ExportError, match="--force"):
        export_run(tiny_run, out, formats=["onnx"], log=lambda _: None)
    assert (out / "model.onnx").read_bytes() == before
    export_run(tiny_run, out, formats=["onnx"], force=True, validate=False, log=lambda _: None)
    assert sorted(manifest_json(out)["artifacts"]) == ["model.onnx", "weights.npz"]
    assert manifest_json(out)["source"]["commands"] == ["toolkit export a", "toolkit export b"]
    # Replacing every file leaves only the command that made them.
    export_run(
        tiny_run,
        out,
        formats=["numpy", "onnx"],
        force=True,
        validate=False,
        log=lambda _: None,
        command="toolkit export c",
    )
    assert manifest_json(out)["source"]["commands"] == ["toolkit export c"]


def test_export_of_retrained_weights_replaces_the_whole_folder(
    tiny_run: Path, tmp_path: Path
) -> None:
    """--force into a folder exported from other weights keeps nothing of them."""
    import shutil

    from toolkit.export.exporter import export_run

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    out = tmp_path / "exp"
    export_run(run, out, formats=["numpy", "onnx"], log=lambda _: None, command="toolkit export a")
    info = json.loads((run / "run.json").read_text())
    info["steps"] += 1  # the same run directory, trained again
    (run / "run.json").write_text(json.dumps(info))
    before = (out / "weights.npz").read_bytes()
    with pytest.raises(ExportError, match="other weights"):
        export_run(run, out, formats=["onnx"], log=lambda _: None)
    assert (out / "weights.npz").read_bytes() == before
    export_run(
        run, out, formats=["onnx"], force=True, log=lambda _: None, command="toolkit export b"
    )
    manifest = manifest_json(out)
    assert sorted(manifest["artifacts"]) == ["model.onnx"]
    assert manifest["source"]["steps"] == info["steps"]
    assert manifest["source"]["commands"] == ["toolkit export b"]
    assert not (out / "weights.npz").exists()


def test_failed_validation_leaves_nothing(tiny_run: Path, tmp_path: Path, monkeypatch) -> None:
    import toolkit.export.validate as validate
    from toolkit.export.exporter import export_run

    monkeypatch.setattr(validate, "FP32_ATOL", -1.0)  # impossible tolerance: validation fails
    out = tmp_path / "exp"
    with pytest.raises(ExportError, match="validation failed"):
        export_run(tiny_run, out, formats=["onnx"], log=lambda _: None)
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("formats", "quantization", "message"),
    [
        (["onnx"], "float16", "onnx has no fp16"),
        (["numpy"], "int8", "numpy has no int8"),
        (["coreml"], "none", "unknown format"),
        (["tflite"], "int4", "unknown quantization"),
    ],
)
def test_impossible_combinations(formats, quantization, message) -> None:
    from toolkit.export.plan import plan_artifacts

    with pytest.raises(UsageError, match=message):
        plan_artifacts(formats, quantization)


def test_all_formats_with_one_quantization_picks_those_that_have_it() -> None:
    from toolkit.export.plan import plan_artifacts

    assert plan_artifacts(["tflite", "onnx", "numpy"], "float16") == [("tflite", "float16")]
    assert ("onnx", "int8") in plan_artifacts(["tflite", "onnx", "numpy"], "int8")


def test_missing_or_incomplete_run_dir(tmp_path: Path) -> None:
    from toolkit.export.exporter import export_run

    with pytest.raises(RunDirError, match="not found"):
        export_run(tmp_path / "nope", tmp_path / "out")
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "run.json").write_text("{}")
    with pytest.raises(RunDirError, match="incomplete"):
        export_run(tmp_path / "half", tmp_path / "out")
