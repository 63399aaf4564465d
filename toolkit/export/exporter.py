"""Export a trained run to single-step graphs with explicit state: describe, convert, validate.

    describe  StepSpec: input/output names, shapes, dtypes (batch dynamic)
    convert   StepModel (a tf.Module owning the folded weights as tf.Variables, gate math
              written out) -> ONNX via tf2onnx.convert.from_function, TFLite via
              TFLiteConverter.from_concrete_functions, numpy as .npz
    validate  step the exported graph over validation text carrying state, compare with the
              Keras model (fp32: max |dlogits| and argmax; quantized: bits per character)

Everything is built in a temporary folder and moved into place only when it validated.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import io
import json
import math
import os
import platform
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

from toolkit import __version__
from toolkit.batches import open_training_data
from toolkit.config import ModelConfig
from toolkit.data import atomic_write_text, load_corpus
from toolkit.errors import ExportError, UsageError, storage_error
from toolkit.export_micro import (
    CALIBRATION_CHARS,
    CELL_CLIP,
    MicroLimits,
    boundary_tensors,
    c_array_files,
    calibration_samples,
    convert_full_int8,
    tflm_arena_bytes,
)
from toolkit.export_micro import QUANTIZATION as QUANTIZATION_MICRO
from toolkit.lock import holds_run_dir_lock
from toolkit.model_card import CARD_NAME, model_card
from toolkit.quiet import native_stderr_hidden
from toolkit.run_dir import check_run_dir, load_run_config
from toolkit.runtime.backends import (
    NumpyBackend,
    OnnxBackend,
    StepBackend,
    TFLiteBackend,
    TFLMBackend,
    first_line,
    fold_weights,
)
from toolkit.runtime.manifest import (
    ARTIFACT_FILES,
    FORMAT_VERSION,
    MANIFEST_NAME,
    artifact_name,
    sha256_bytes,
)
from toolkit.vocabulary import Vocabulary

FORMATS = ("tflite", "onnx", "numpy")
COMPANION_FILES = {"model.full-int8.tflite": ("model_data.cc", "model_data.h")}
QUANTIZATIONS = ("none", "float16", "int8", "full-int8")
# Default allowed relative bits/char loss against Keras, per quantization (--bpc-tolerance
# overrides): full-integer activations cost more than int8 weights alone.
BPC_TOLERANCE = {"float16": 0.02, "int8": 0.02, "full-int8": 0.03}
ONNX_OPSET = 17
FP32_ATOL = 1e-4
VALIDATION_STEPS = 512
VALIDATION_STREAMS = 4


# --------------------------------------------------------------------------- describe


@dataclass(frozen=True)
class StepSpec:
    """Names, shapes and dtypes of the step graph; `None` is the dynamic batch dimension."""

    vocab_size: int
    layers: int
    units: int

    @property
    def inputs(self) -> dict[str, dict[str, Any]]:
        state = [self.layers, None, self.units]
        return {
            "token": {"dtype": "int32", "shape": [None]},
            "h": {"dtype": "float32", "shape": state},
            "c": {"dtype": "float32", "shape": state},
        }

    @property
    def outputs(self) -> dict[str, dict[str, Any]]:
        state = [self.layers, None, self.units]
        return {
            "logits": {"dtype": "float32", "shape": [None, self.vocab_size]},
            "h_out": {"dtype": "float32", "shape": state},
            "c_out": {"dtype": "float32", "shape": state},
        }


# --------------------------------------------------------------------------- convert


def load_keras_run(run_dir: Path) -> tuple[Any, ModelConfig, Vocabulary, dict[str, Any]]:
    import keras

    info = check_run_dir(run_dir)
    vocab = Vocabulary.load(run_dir / "vocab.json")
    config = ModelConfig(**info["model"])
    try:
        model = keras.models.load_model(run_dir / "model.keras", compile=False)
    except Exception as exc:  # keras raises many types for a damaged file
        raise ExportError(f"cannot load {run_dir / 'model.keras'}: {exc}") from None
    from toolkit.model import float32_model

    return float32_model(model, config), config, vocab, info


@dataclass
class ExportSource:
    """What an export is made from: a trained run (the Keras model is the reference), or an
    exported folder's fp32 weights (validated against Keras when that folder was exported),
    so that a model folder alone is enough to add a variant for a new target."""

    path: Path
    config: ModelConfig
    vocab: Vocabulary
    folded: dict[str, np.ndarray]
    info: dict[str, Any]  # the manifest's `source` fields: run name, preset, losses, command
    data: Path | None  # training corpus (None: the bundled one)
    val_fraction: float
    reference_name: str  # "Keras", or the fp32 file the weights came from
    keras_model: Any = None

    def reference_logits(self, tokens: np.ndarray) -> np.ndarray:
        if self.keras_model is not None:
            return keras_reference_logits(self.keras_model, self.config, tokens)
        return step_logits(NumpyBackend(self.folded, self.config.layers), self.config, tokens)


def load_source(path: Path, log: Any = print) -> ExportSource:
    """A run directory (has run.json) or an exported model folder (has manifest.json)."""
    path = Path(path)
    if not (path / "run.json").exists() and (path / MANIFEST_NAME).exists():
        return _source_from_export(path, log)
    from toolkit.model import lstm_weights

    model, config, vocab, info = load_keras_run(path)
    val_fraction = load_run_config(path).val_fraction
    source_info: dict[str, Any] = {
        "run_dir": str(path),
        "run_name": path.resolve().name,
        "preset": info.get("preset"),
        "best_val_loss": info.get("best_val_loss"),
        "best_val_bpc": info.get("best_val_bpc"),
        "steps": info.get("steps"),
        "train_command": info.get("command"),
        "data": info.get("data"),
        "val_fraction": val_fraction,
    }
    return ExportSource(
        path=path,
        config=config,
        vocab=vocab,
        folded=fold_weights(lstm_weights(model, config), config.layers),
        info=source_info,
        data=Path(info["data"]) if info.get("data") else None,
        val_fraction=val_fraction,
        reference_name="Keras",
        keras_model=model,
    )


def _source_from_export(path: Path, log: Any) -> ExportSource:
    from toolkit.runtime.manifest import find_artifact, read_manifest, read_verified

    manifest = read_manifest(path)
    m = manifest["model"]
    config = ModelConfig(
        vocab_size=int(m["vocab_size"]),
        embedding_dim=int(m["embedding_dim"]),
        units=int(m["units"]),
        layers=int(m["layers"]),
    )
    for fmt in ("numpy", "onnx"):  # the weights file first: it needs no graph reading
        if artifact_name(fmt, "none") in manifest["artifacts"]:
            entry = find_artifact(manifest, fmt, "none")
            break
    else:
        raise ExportError(
            f"{path} has no fp32 ONNX or numpy model to export from; export from the run "
            "directory instead"
        )
    data = read_verified(path, entry)
    if fmt == "numpy":
        folded = NumpyBackend.from_bytes(data, config.layers).w
    else:
        folded = folded_weights_from_onnx(data, config)
    info = dict(manifest.get("source", {}))
    info.pop("commands", None)
    log(
        f"exporting from the fp32 weights in {path / entry['file']}; validation reference: "
        "those weights (they matched Keras when exported)"
    )
    return ExportSource(
        path=path,
        config=config,
        vocab=Vocabulary(tuple(manifest["vocab"])),
        folded=folded,
        info=info,
        data=Path(info["data"]) if info.get("data") else None,
        val_fraction=float(info.get("val_fraction") or 0.1),
        reference_name=entry["file"],
    )


def folded_weights_from_onnx(data: bytes, config: ModelConfig) -> dict[str, np.ndarray]:
    """The folded weights of an ONNX step graph that this toolkit exported.

    Read by role from the graph (the Gather's table, then MatMul and Add constants in
    topological order), then checked: the numpy step on them must reproduce the graph.
    """
    import onnx
    from onnx import numpy_helper

    graph = onnx.load_from_string(data).graph
    consts = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    table, matmuls, adds = None, [], []
    for node in graph.node:
        weights = [consts[n] for n in node.input if n in consts and consts[n].ndim >= 1]
        if node.op_type == "Gather" and weights:
            table = weights[0]
        elif node.op_type == "MatMul" and weights:
            matmuls.append(weights[0])
        elif node.op_type == "Add" and weights and weights[0].ndim == 1:
            adds.append(weights[0])
    layers = config.layers
    if table is None or len(matmuls) != layers + 1 or len(adds) != layers:
        raise ExportError("cannot read the weights of this ONNX graph; export from the run instead")
    folded = {"table_0": table, "recurrent_0": matmuls[0]}
    for layer in range(1, layers):
        folded[f"stacked_{layer}"] = matmuls[layer]
        folded[f"bias_{layer}"] = adds[layer - 1]
    folded["dense_kernel"], folded["dense_bias"] = matmuls[-1], adds[-1]
    folded = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in folded.items()}
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, config.vocab_size, (2, 9)).astype(np.int32)
    got = step_logits(NumpyBackend(folded, layers), config, tokens)
    want = step_logits(OnnxBackend(data), config, tokens)
    if not np.allclose(got, want, atol=FP32_ATOL):
        raise ExportError("cannot read the weights of this ONNX graph; export from the run instead")
    return folded


def make_step_module(
    folded: dict[str, np.ndarray],
    config: ModelConfig,
    batch: int | None = None,
    cell_clip: float | None = None,
) -> Any:
    """A tf.Module whose single tf.function is the LSTM step, written as explicit gate math.

    Calling a Keras LSTM layer for one step still emits a While loop; writing the gates out
    gives a flat graph of Gather/MatMul/Sigmoid/Tanh that every runtime runs fast. Weights
    are tf.Variables owned by the module: tf2onnx turns captured constants into extra graph
    inputs, and the TFLite converter needs the owning module to freeze the variables.
    `batch` fixes the batch dimension (microcontrollers need static shapes); None keeps it free.
    `cell_clip` clips the cell state to [-clip, clip] (see export_micro.CELL_CLIP).
    """
    import tensorflow as tf

    spec = StepSpec(config.vocab_size, config.layers, config.units)
    signature = [
        tf.TensorSpec([batch], tf.int32, name="token"),
        tf.TensorSpec([config.layers, batch, config.units], tf.float32, name="h"),
        tf.TensorSpec([config.layers, batch, config.units], tf.float32, name="c"),
    ]

    class StepModel(tf.Module):
        def __init__(self) -> None:
            super().__init__(name="step_model")
            self.spec = spec
            self.weights_by_name = {
                k: tf.Variable(v, trainable=False, name=k) for k, v in sorted(folded.items())
            }

        @tf.function(input_signature=signature)
        def step(self, token: Any, h: Any, c: Any) -> dict[str, Any]:
            w = self.weights_by_name
            h_out, c_out = [], []
            x = None
            for layer in range(config.layers):
                if layer == 0:
                    z = tf.gather(w["table_0"], token) + tf.matmul(h[0], w["recurrent_0"])
                else:
                    z = tf.matmul(tf.concat([x, h[layer]], axis=1), w[f"stacked_{layer}"])
                    z = z + w[f"bias_{layer}"]
                i, f, g, o = tf.split(z, 4, axis=1)
                c_new = tf.sigmoid(f) * c[layer] + tf.sigmoid(i) * tf.tanh(g)
                if cell_clip is not None:
                    c_new = tf.clip_by_value(c_new, -cell_clip, cell_clip)
                x = tf.sigmoid(o) * tf.tanh(c_new)
                h_out.append(x)
                c_out.append(c_new)
            logits = tf.matmul(x, w["dense_kernel"]) + w["dense_bias"]
            return {
                "logits": tf.identity(logits, name="logits"),
                "h_out": tf.stack(h_out, axis=0, name="h_out"),
                "c_out": tf.stack(c_out, axis=0, name="c_out"),
            }

    return StepModel()


def convert_onnx(module: Any, quantization: str, workdir: Path) -> bytes:
    import onnx
    import tensorflow as tf
    import tf2onnx

    fn = module.step
    signature = list(fn.input_signature)
    try:
        model_proto, _ = tf2onnx.convert.from_function(
            fn, input_signature=signature, opset=ONNX_OPSET
        )
    except Exception as exc:  # tf2onnx raises anything from ValueError to KeyError
        raise ExportError(f"tf2onnx failed: {exc}") from None
    _rename_onnx_io(model_proto)
    model_proto.doc_string = (
        "char-lstm-toolkit single-step LSTM (token, h, c) -> (logits, h_out, c_out)"
    )
    del tf  # imported for tf2onnx's sake
    if quantization == "none":
        return bytes(model_proto.SerializeToString())
    if quantization != "int8":
        raise UsageError(f"ONNX supports quantization none or int8, not {quantization}")
    from onnxruntime.quantization import QuantType, quantize_dynamic

    fp32_path = workdir / "fp32.onnx"
    int8_path = workdir / "int8.onnx"
    onnx.save(model_proto, str(fp32_path))
    try:
        quantize_dynamic(str(fp32_path), str(int8_path), weight_type=QuantType.QInt8)
    except Exception as exc:
        raise ExportError(f"onnxruntime quantization failed: {exc}") from None
    return int8_path.read_bytes()


def _rename_onnx_io(model_proto: Any) -> None:
    """tf2onnx names tensors after the TF graph (e.g. 'token:0'); give them the spec's names."""
    wanted = {"token", "h", "c", "logits", "h_out", "c_out"}
    renames: dict[str, str] = {}
    for value in [*model_proto.graph.input, *model_proto.graph.output]:
        base = value.name.split(":")[0]
        if base not in wanted:
            raise ExportError(f"unexpected tensor name in ONNX graph: {value.name}")
        if value.name != base:
            renames[value.name] = base
    if not renames:
        return
    graph = model_proto.graph
    for value in [*graph.input, *graph.output]:
        value.name = renames.get(value.name, value.name)
    for node in graph.node:
        node.input[:] = [renames.get(n, n) for n in node.input]
        node.output[:] = [renames.get(n, n) for n in node.output]


def convert_tflite(module: Any, quantization: str) -> bytes:
    import tensorflow as tf

    concrete = module.step.get_concrete_function()
    converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete], module)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]  # no Flex ops
    if quantization == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif quantization == "int8":
        # Dynamic-range: int8 weights, float activations; no calibration data needed.
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    elif quantization != "none":
        raise UsageError(f"unknown quantization {quantization!r}")
    try:
        return bytes(converter.convert())
    except Exception as exc:
        raise ExportError(f"TFLite conversion failed: {first_line(exc)}") from None


def convert_numpy(folded: dict[str, np.ndarray]) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **folded)  # type: ignore[arg-type]
    return buffer.getvalue()


def graph_op_types(fmt: str, data: bytes) -> set[str]:
    """Op types in an exported graph (for the no-Loop/WHILE check)."""
    if fmt == "onnx":
        import onnx

        return {node.op_type for node in onnx.load_from_string(data).graph.node}
    if fmt == "tflite":
        from tensorflow.lite.python import analyzer  # noqa: F401  (ensures tflite schema)
        from tensorflow.lite.tools import visualize

        model = visualize.CreateDictFromFlatbuffer(data)
        names = set()
        for code in model["operator_codes"]:
            builtin = max(code.get("builtin_code", 0), code.get("deprecated_builtin_code", 0))
            names.add(_builtin_name(builtin))
        return names
    return set()


def _builtin_name(code: int) -> str:
    from tensorflow.lite.python import schema_py_generated as schema

    for name, value in vars(schema.BuiltinOperator).items():
        if value == code and not name.startswith("_"):
            return str(name)
    return str(code)


# --------------------------------------------------------------------------- validate


@dataclass
class Validation:
    steps: int
    streams: int
    max_abs_logit_diff: float
    argmax_agreement: float
    keras_bpc: float
    exported_bpc: float
    passed: bool
    criterion: str
    reference: str = "Keras"
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "steps": self.steps,
            "streams": self.streams,
            "max_abs_logit_diff": self.max_abs_logit_diff,
            "argmax_agreement": self.argmax_agreement,
            "keras_bpc": self.keras_bpc,
            "exported_bpc": self.exported_bpc,
            "bpc_ratio": self.exported_bpc / self.keras_bpc if self.keras_bpc else math.nan,
            "passed": self.passed,
            "criterion": self.criterion,
            "reference": self.reference,
        }


def validation_tokens(ids: np.ndarray, steps: int, streams: int) -> np.ndarray:
    """[streams, steps + 1] contiguous slices spread over the text (the +1 is the target)."""
    need = steps + 1
    if len(ids) < need:
        raise ExportError(f"validation text too short: {len(ids)} < {need} characters")
    starts = np.linspace(0, len(ids) - need, streams).astype(int)
    return np.stack([ids[s : s + need] for s in starts]).astype(np.int32)


def keras_reference_logits(model: Any, config: ModelConfig, tokens: np.ndarray) -> np.ndarray:
    """Keras logits [streams, steps, vocab] for the whole window in one call, state from zero."""
    streams = tokens.shape[0]
    zeros = np.zeros((streams, config.layers, config.units), np.float32)
    out = model({"tokens": tokens[:, :-1], "h": zeros, "c": zeros}, training=False)
    return np.asarray(out["logits"], np.float32)


def step_logits(backend: StepBackend, config: ModelConfig, tokens: np.ndarray) -> np.ndarray:
    streams, n = tokens.shape[0], tokens.shape[1] - 1
    h = np.zeros((config.layers, streams, config.units), np.float32)
    c = np.zeros_like(h)
    logits = np.empty((streams, n, config.vocab_size), np.float32)
    for t in range(n):
        out, h, c = backend.step(np.ascontiguousarray(tokens[:, t]), h, c)
        logits[:, t] = out
    return logits


def mean_bits_per_char(logits: np.ndarray, targets: np.ndarray) -> float:
    z = logits.astype(np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    log_probs = z - np.log(np.exp(z).sum(axis=-1, keepdims=True))
    picked = np.take_along_axis(log_probs, targets[..., None], axis=-1)
    return float(-picked.mean() / math.log(2.0))


def validate_backend(
    backend: StepBackend,
    reference: np.ndarray,
    config: ModelConfig,
    tokens: np.ndarray,
    quantization: str,
    bpc_tolerance: float,
    reference_name: str = "Keras",
) -> Validation:
    logits = step_logits(backend, config, tokens)
    targets = tokens[:, 1:]
    diff = float(np.max(np.abs(logits - reference)))
    agree = float(np.mean(logits.argmax(-1) == reference.argmax(-1)))
    keras_bpc = mean_bits_per_char(reference, targets)
    exported_bpc = mean_bits_per_char(logits, targets)
    if quantization == "none":
        passed = diff <= FP32_ATOL and agree == 1.0
        criterion = f"max |dlogits| <= {FP32_ATOL:g} and identical argmax"
    else:
        passed = exported_bpc <= keras_bpc * (1 + bpc_tolerance)
        criterion = f"bits/char within {bpc_tolerance:.1%} of {reference_name}"
        if backend.name == "tflm":
            criterion += ", in TensorFlow Lite Micro's interpreter"
    return Validation(
        steps=tokens.shape[1] - 1,
        streams=tokens.shape[0],
        max_abs_logit_diff=diff,
        argmax_agreement=agree,
        keras_bpc=keras_bpc,
        exported_bpc=exported_bpc,
        passed=passed,
        criterion=criterion,
        reference=reference_name,
    )


def backend_for(fmt: str, data: bytes, config: ModelConfig) -> StepBackend:
    if fmt == "onnx":
        return OnnxBackend(data, threads=1)
    if fmt == "tflite":
        return TFLiteBackend(data, threads=1)
    return NumpyBackend.from_bytes(data, config.layers)


def validation_backends(
    fmt: str, quant: str, data: bytes, config: ModelConfig, extra: dict[str, Any]
) -> list[StepBackend]:
    """Where an artifact is validated; the last one's result is the manifest's `validation`.

    The full-int8 model runs in LiteRT and, last, in TensorFlow Lite Micro's interpreter:
    the device's kernels are TFLM's, not LiteRT's.
    """
    backends = [backend_for(fmt, data, config)]
    if quant == QUANTIZATION_MICRO:
        backends.append(TFLMBackend(data, extra["micro"]))
    return backends


def _log_validation(log: Any, name: str, where: str, result: Validation) -> None:
    log(
        f"validated {name} in {where}: max|dlogits| {result.max_abs_logit_diff:.2e}, "
        f"argmax agreement {result.argmax_agreement:.2%}, bits/char "
        f"{result.exported_bpc:.4f} vs {result.reference} {result.keras_bpc:.4f} over "
        f"{result.streams}x{result.steps} steps: {'ok' if result.passed else 'FAILED'}"
    )
    if not result.passed:
        raise ExportError(
            f"validation failed for {name} in {where}: {result.criterion} not met "
            f"(max |dlogits| {result.max_abs_logit_diff:.2e}, bits/char "
            f"{result.exported_bpc:.4f} vs {result.keras_bpc:.4f})"
        )


def _calibration_ids(path: Path, vocab: Vocabulary, log: Any) -> np.ndarray:
    """Token ids of a calibration text; characters the model does not know are dropped."""
    text = load_corpus(path)
    unknown = vocab.unknown(text)
    if unknown:
        known = set(vocab.chars)
        dropped = sum(1 for ch in text if ch not in known)
        text = "".join(ch for ch in text if ch in known)
        shown = ", ".join(repr(ch) for ch in unknown[:10])
        log(f"calibration text: dropped {dropped:,} characters not in the vocabulary ({shown})")
    if not text:
        raise ExportError(f"calibration text {path} has no character of the model's vocabulary")
    return vocab.encode(text)


# --------------------------------------------------------------------------- export


Blob = bytes  # ExportedArtifact has a field named `bytes`


@dataclass
class ExportedArtifact:
    file: str
    format: str
    quantization: str
    bytes: int
    validation: Validation | None
    extra: dict[str, Any] = field(default_factory=dict)  # manifest fields beyond the common ones
    files: dict[str, Blob] = field(default_factory=dict)  # companion files (the C array)


def plan_artifacts(formats: list[str], quantization: str) -> list[tuple[str, str]]:
    """Which (format, quantization) pairs to build; 'all' quantization means every variant."""
    for fmt in formats:
        if fmt not in FORMATS:
            raise UsageError(f"unknown format {fmt!r}; choose from {', '.join(FORMATS)}, all")
    if quantization not in (*QUANTIZATIONS, "all"):
        raise UsageError(
            f"unknown quantization {quantization!r}; choose from {', '.join(QUANTIZATIONS)}, all"
        )
    if quantization == "all":
        return [(f, q) for f in formats for q in QUANTIZATIONS if (f, q) in ARTIFACT_FILES]
    plan = []
    for fmt in formats:
        if (fmt, quantization) not in ARTIFACT_FILES:
            if len(formats) > 1:
                continue  # `--format all --quantize float16`: only those that have it
            supported = [q for f, q in ARTIFACT_FILES if f == fmt]
            raise UsageError(
                f"{fmt} has no {quantization} variant; {fmt} supports: {', '.join(supported)}"
            )
        plan.append((fmt, quantization))
    if not plan:
        raise UsageError(f"no format supports quantization {quantization!r}")
    return plan


def _library_versions() -> dict[str, str]:
    import importlib.metadata as md

    versions = {"toolkit": __version__, "python": platform.python_version()}
    for dist in (
        "tensorflow",
        "keras",
        "tf2onnx",
        "onnx",
        "onnxruntime",
        "ai-edge-litert",
        "numpy",
    ):
        with contextlib.suppress(md.PackageNotFoundError):
            versions[dist] = md.version(dist)
    return versions


@holds_run_dir_lock("export")  # no training writes the run while it is exported
def export_run(
    run_dir: Path,
    out_dir: Path | None = None,
    formats: list[str] | None = None,
    quantization: str = "none",
    validate: bool = True,
    bpc_tolerance: float | None = None,
    force: bool = False,
    log: Any = print,
    command: str | None = None,
    calibration_chars: int = CALIBRATION_CHARS,
    calibration_data: Path | None = None,
    limits: MicroLimits | None = None,
) -> tuple[Path, list[ExportedArtifact]]:
    """Export `run_dir` into `out_dir` (default exported/<run name>), adding to a manifest.

    `bpc_tolerance` None uses BPC_TOLERANCE per quantization. The full-int8 variant is
    calibrated on `calibration_chars` of the run's training text (or of `calibration_data`).
    """
    formats = formats or list(FORMATS)
    plan = plan_artifacts(formats, quantization)
    source = load_source(Path(run_dir), log)
    config, vocab, folded = source.config, source.vocab, source.folded
    run_name = source.info.get("run_name") or source.path.resolve().name
    if out_dir is None:  # a run goes to exported/<run>; an exported folder gains variants
        out_dir = source.path if source.keras_model is None else Path("exported") / run_name
    out_dir = Path(out_dir)

    manifest = _existing_manifest(out_dir)
    # A folder exported from other weights (another run, or this run trained again) must not
    # end up mixing them with these: --force replaces the whole export, not just its clashes.
    other_weights = bool(manifest) and not _same_training(manifest, source.info)
    if other_weights and not force:
        old = manifest.get("source", {})
        raise ExportError(
            f"{out_dir} holds an export of other weights (run {old.get('run_name')}, "
            f"{old.get('steps')} steps); use --force to replace it or --out for another folder"
        )
    stale: list[str] = []
    if other_weights:
        stale = [
            name
            for artifact in manifest.get("artifacts", {})
            for name in (artifact, *COMPANION_FILES.get(artifact, ()))
        ]
        manifest = {}
    clashes = [
        artifact_name(f, q) for f, q in plan if artifact_name(f, q) in manifest.get("artifacts", {})
    ]
    if clashes and not force:
        raise ExportError(f"{out_dir} already has {', '.join(clashes)}; use --force to overwrite")

    module = make_step_module(folded, config)
    # The run's corpus as token ids: a prepared corpus stays memory-mapped.
    corpus = open_training_data(source.data, source.val_fraction, log=log)
    unknown = [ch for ch in corpus.vocab.chars if ch not in vocab.index]
    if unknown or corpus.vocab != vocab:
        raise ExportError(
            "the training text's characters are not the model's vocabulary"
            + (f" ({unknown[0]!r} is unknown)" if unknown else "")
            + "; is this the corpus the model was trained on?"
        )
    train_ids, val_ids = corpus.train, corpus.val
    tokens = reference = None
    if validate:
        steps = min(VALIDATION_STEPS, len(val_ids) - 1)
        tokens = validation_tokens(val_ids, steps, VALIDATION_STREAMS)
        reference = source.reference_logits(tokens)

    staging = Path(tempfile.mkdtemp(prefix=".export-", dir=_ensure_parent(out_dir)))
    try:
        artifacts: list[ExportedArtifact] = []
        for fmt, quant in plan:
            name = artifact_name(fmt, quant)
            tolerance = bpc_tolerance if bpc_tolerance is not None else BPC_TOLERANCE.get(quant, 0)
            extra: dict[str, Any] = {}
            files: dict[str, bytes] = {}
            if quant == QUANTIZATION_MICRO:
                ids = train_ids
                if calibration_data is not None:
                    ids = _calibration_ids(calibration_data, vocab, log)
                samples = calibration_samples(folded, config, ids, calibration_chars, CELL_CLIP)
                with native_stderr_hidden():  # the converter prints its settings
                    module_b1 = make_step_module(folded, config, batch=1, cell_clip=CELL_CLIP)
                    data = convert_full_int8(module_b1, samples)
                micro: dict[str, Any] = {
                    "calibration_chars": len(samples),
                    "calibration_data": str(calibration_data or "training text"),
                    "cell_clip": CELL_CLIP,
                    **boundary_tensors(data),
                }
                micro["arena_bytes"], micro["arena_used_bytes"] = tflm_arena_bytes(data)
                micro["flash_bytes"] = len(data)
                micro["ops"] = sorted(graph_op_types(fmt, data))
                (limits or MicroLimits()).check(len(data), micro["arena_bytes"])
                files = c_array_files(data, micro, list(vocab.chars), config, micro["ops"])
                micro["c_files"] = {f: sha256_bytes(b) for f, b in files.items()}
                extra["micro"] = micro
                log(
                    f"converted {name}: {len(data):,} bytes of flash, TFLite Micro arena "
                    f"{micro['arena_bytes']:,} bytes, ops {', '.join(micro['ops'])}"
                )
            elif fmt == "onnx":
                with native_stderr_hidden():
                    data = convert_onnx(module, quant, staging)
            elif fmt == "tflite":
                with native_stderr_hidden():
                    data = convert_tflite(module, quant)
            else:
                data = convert_numpy(folded)
            ops = graph_op_types(fmt, data)
            loops = ops & {"Loop", "Scan", "WHILE", "If", "IF"}
            if loops:
                raise ExportError(f"{name} contains control-flow ops {sorted(loops)}")
            result = None
            if validate and tokens is not None and reference is not None:
                for backend in validation_backends(fmt, quant, data, config, extra):
                    result = validate_backend(
                        backend, reference, config, tokens, quant, tolerance, source.reference_name
                    )
                    _log_validation(log, name, backend.name, result)
                    if backend.name != "tflm" and quant == QUANTIZATION_MICRO:
                        extra["validation_litert"] = result.to_dict()
            try:
                (staging / name).write_bytes(data)
                for companion, content in files.items():
                    (staging / companion).write_bytes(content)
            except OSError as exc:  # a full disk: the export folder is not touched yet
                raise storage_error(exc, out_dir / name) from None
            artifacts.append(ExportedArtifact(name, fmt, quant, len(data), result, extra, files))

        manifest = _build_manifest(manifest, config, vocab, source.info, artifacts, staging)
        if command:
            manifest["source"]["commands"].append(command)
        (staging / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2, ensure_ascii=False))
        (staging / CARD_NAME).write_text(model_card(manifest, str(out_dir)), encoding="utf-8")
        _commit(staging, out_dir, [a.file for a in artifacts])
        written = {name for a in artifacts for name in (a.file, *a.files)}
        for name in stale:  # the earlier weights' files, once the new manifest is in place
            if name not in written:
                (out_dir / name).unlink(missing_ok=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out_dir, artifacts


def _ensure_parent(out_dir: Path) -> Path:
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    return out_dir.parent


def _same_training(manifest: dict[str, Any], info: dict[str, Any]) -> bool:
    """Whether an existing export was made from the same weights as `info` describes."""
    previous = manifest.get("source", {})
    return all(previous.get(k) == info.get(k) for k in ("run_name", "steps", "best_val_loss"))


def _existing_manifest(out_dir: Path) -> dict[str, Any]:
    path = out_dir / MANIFEST_NAME
    if not path.exists():
        if out_dir.exists() and any(out_dir.iterdir()):
            raise ExportError(f"{out_dir} exists and is not an export folder (no {MANIFEST_NAME})")
        return {}
    try:
        manifest: dict[str, Any] = json.loads(path.read_text())
    except json.JSONDecodeError:
        raise ExportError(f"{path} is not valid JSON; remove it or use another --out") from None
    if manifest.get("format_version") != FORMAT_VERSION:
        return {}
    return manifest


def _build_manifest(
    previous: dict[str, Any],
    config: ModelConfig,
    vocab: Vocabulary,
    info: dict[str, Any],
    artifacts: list[ExportedArtifact],
    staging: Path,
) -> dict[str, Any]:
    spec = StepSpec(config.vocab_size, config.layers, config.units)
    entries = dict(previous.get("artifacts", {}))
    for art in artifacts:
        entries[art.file] = {
            "format": art.format,
            "quantization": art.quantization,
            "bytes": art.bytes,
            "sha256": sha256_bytes((staging / art.file).read_bytes()),
            "validation": art.validation.to_dict() if art.validation else None,
            **art.extra,
            "exported_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        }
    return {
        "format_version": FORMAT_VERSION,
        "name": previous.get("name") or info["run_name"],
        "description": "Single-step character LSTM with explicit state. Feed token ids one at "
        "a time; carry h_out/c_out back into h/c. Gate order i, f, c, o (Keras).",
        "vocab": list(vocab.chars),
        "model": {
            "vocab_size": config.vocab_size,
            "embedding_dim": config.embedding_dim,
            "units": config.units,
            "layers": config.layers,
        },
        "inputs": spec.inputs,
        "outputs": spec.outputs,
        "state_layout": "[layers, batch, units]; zeros is the initial state",
        "artifacts": dict(sorted(entries.items())),
        "source": {
            **info,
            # The commands that made the files still here: once every earlier artifact is
            # replaced (a forced re-export of everything), none of the earlier ones did.
            "commands": (
                list(previous.get("source", {}).get("commands", []))
                if set(previous.get("artifacts", {})) - {art.file for art in artifacts}
                else []
            ),
        },
        "versions": _library_versions(),
    }


def _commit(staging: Path, out_dir: Path, files: list[str]) -> None:
    """Move validated files into place: each file by atomic rename, the manifest last."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in files:
        os.replace(staging / name, out_dir / name)
        # Companion files of an artifact (model_data.cc/.h of the full-int8 model).
        for companion in COMPANION_FILES.get(name, ()):
            if (staging / companion).exists():
                os.replace(staging / companion, out_dir / companion)
    manifest_text = (staging / MANIFEST_NAME).read_text()
    atomic_write_text(out_dir / MANIFEST_NAME, manifest_text)
    os.replace(staging / CARD_NAME, out_dir / CARD_NAME)  # the model card, from that manifest
