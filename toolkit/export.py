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
from toolkit.config import ModelConfig
from toolkit.data import Vocabulary, atomic_write_text, load_corpus, split_corpus
from toolkit.errors import ExportError, UsageError
from toolkit.runtime.backends import (
    NumpyBackend,
    OnnxBackend,
    StepBackend,
    TFLiteBackend,
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
from toolkit.train import check_run_dir, load_run_config

FORMATS = ("tflite", "onnx", "numpy")
QUANTIZATIONS = ("none", "float16", "int8")
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
    return model, config, vocab, info


def make_step_module(folded: dict[str, np.ndarray], config: ModelConfig) -> Any:
    """A tf.Module whose single tf.function is the LSTM step, written as explicit gate math.

    Calling a Keras LSTM layer for one step still emits a While loop; writing the gates out
    gives a flat graph of Gather/MatMul/Sigmoid/Tanh that every runtime runs fast. Weights
    are tf.Variables owned by the module: tf2onnx turns captured constants into extra graph
    inputs, and the TFLite converter needs the owning module to freeze the variables.
    """
    import tensorflow as tf

    spec = StepSpec(config.vocab_size, config.layers, config.units)
    signature = [
        tf.TensorSpec([None], tf.int32, name="token"),
        tf.TensorSpec([config.layers, None, config.units], tf.float32, name="h"),
        tf.TensorSpec([config.layers, None, config.units], tf.float32, name="c"),
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
        criterion = f"bits/char within {bpc_tolerance:.1%} of Keras"
    return Validation(
        steps=tokens.shape[1] - 1,
        streams=tokens.shape[0],
        max_abs_logit_diff=diff,
        argmax_agreement=agree,
        keras_bpc=keras_bpc,
        exported_bpc=exported_bpc,
        passed=passed,
        criterion=criterion,
    )


def backend_for(fmt: str, data: bytes, config: ModelConfig) -> StepBackend:
    if fmt == "onnx":
        return OnnxBackend(data, threads=1)
    if fmt == "tflite":
        return TFLiteBackend(data, threads=1)
    return NumpyBackend.from_bytes(data, config.layers)


# --------------------------------------------------------------------------- export


@dataclass
class ExportedArtifact:
    file: str
    format: str
    quantization: str
    bytes: int
    validation: Validation | None


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


def export_run(
    run_dir: Path,
    out_dir: Path | None = None,
    formats: list[str] | None = None,
    quantization: str = "none",
    validate: bool = True,
    bpc_tolerance: float = 0.02,
    force: bool = False,
    log: Any = print,
    command: str | None = None,
) -> tuple[Path, list[ExportedArtifact]]:
    """Export `run_dir` into `out_dir` (default exported/<run name>), adding to a manifest."""
    formats = formats or list(FORMATS)
    plan = plan_artifacts(formats, quantization)
    run_dir = Path(run_dir)
    model, config, vocab, info = load_keras_run(run_dir)
    out_dir = Path(out_dir) if out_dir else Path("exported") / run_dir.resolve().name

    manifest = _existing_manifest(out_dir)
    clashes = [
        artifact_name(f, q) for f, q in plan if artifact_name(f, q) in manifest.get("artifacts", {})
    ]
    if (
        manifest
        and manifest.get("source", {}).get("run_name") not in (None, run_dir.resolve().name)
        and not force
    ):
        raise ExportError(
            f"{out_dir} holds an export of another run ({manifest['source']['run_name']}); "
            "use --force to replace it or --out for another folder"
        )
    if clashes and not force:
        raise ExportError(f"{out_dir} already has {', '.join(clashes)}; use --force to overwrite")
    if force and manifest.get("source", {}).get("run_name") != run_dir.resolve().name:
        manifest = {}

    from toolkit.model import lstm_weights

    folded = fold_weights(lstm_weights(model, config), config.layers)
    module = make_step_module(folded, config)

    tokens = reference = None
    if validate:
        text = load_corpus(Path(info["data"]) if info.get("data") else None)
        ids = vocab.encode(text)
        _, val_ids = split_corpus(ids, load_run_config(run_dir).val_fraction)
        steps = min(VALIDATION_STEPS, len(val_ids) - 1)
        tokens = validation_tokens(val_ids, steps, VALIDATION_STREAMS)
        reference = keras_reference_logits(model, config, tokens)

    staging = Path(tempfile.mkdtemp(prefix=".export-", dir=_ensure_parent(out_dir)))
    try:
        artifacts: list[ExportedArtifact] = []
        for fmt, quant in plan:
            name = artifact_name(fmt, quant)
            if fmt == "onnx":
                data = convert_onnx(module, quant, staging)
            elif fmt == "tflite":
                data = convert_tflite(module, quant)
            else:
                data = convert_numpy(folded)
            ops = graph_op_types(fmt, data)
            loops = ops & {"Loop", "Scan", "WHILE", "If", "IF"}
            if loops:
                raise ExportError(f"{name} contains control-flow ops {sorted(loops)}")
            result = None
            if validate and tokens is not None and reference is not None:
                backend = backend_for(fmt, data, config)
                result = validate_backend(backend, reference, config, tokens, quant, bpc_tolerance)
                log(
                    f"validated {name}: max|dlogits| {result.max_abs_logit_diff:.2e}, "
                    f"argmax agreement {result.argmax_agreement:.2%}, bits/char "
                    f"{result.exported_bpc:.4f} vs Keras {result.keras_bpc:.4f} over "
                    f"{result.streams}x{result.steps} steps: "
                    f"{'ok' if result.passed else 'FAILED'}"
                )
                if not result.passed:
                    raise ExportError(
                        f"validation failed for {name}: {result.criterion} not met "
                        f"(max |dlogits| {result.max_abs_logit_diff:.2e}, bits/char "
                        f"{result.exported_bpc:.4f} vs {result.keras_bpc:.4f})"
                    )
            (staging / name).write_bytes(data)
            artifacts.append(ExportedArtifact(name, fmt, quant, len(data), result))

        manifest = _build_manifest(manifest, config, vocab, info, run_dir, artifacts, staging)
        if command:
            manifest["source"]["commands"].append(command)
        (staging / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2, ensure_ascii=False))
        _commit(staging, out_dir, [a.file for a in artifacts])
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out_dir, artifacts


def _ensure_parent(out_dir: Path) -> Path:
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    return out_dir.parent


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
    run_dir: Path,
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
            "exported_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        }
    return {
        "format_version": FORMAT_VERSION,
        "name": previous.get("name") or run_dir.resolve().name,
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
            "run_dir": str(run_dir),
            "run_name": run_dir.resolve().name,
            "preset": info.get("preset"),
            "best_val_loss": info.get("best_val_loss"),
            "best_val_bpc": info.get("best_val_bpc"),
            "steps": info.get("steps"),
            "train_command": info.get("command"),
            "commands": list(previous.get("source", {}).get("commands", [])),
        },
        "versions": _library_versions(),
    }


def _commit(staging: Path, out_dir: Path, files: list[str]) -> None:
    """Move validated files into place: each file by atomic rename, the manifest last."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in files:
        os.replace(staging / name, out_dir / name)
    manifest_text = (staging / MANIFEST_NAME).read_text()
    atomic_write_text(out_dir / MANIFEST_NAME, manifest_text)
