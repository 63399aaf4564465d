"""Every export target in one place: the files a model folder can hold, the runtimes that
run them, and what the manifest, the model card, the benchmark and the server call them.

Everything else reads these three tables: the manifest's file names, `toolkit export
--format/--quantize`, `toolkit generate --runtime/--variant`, `toolkit serve --runtime`, the
rows of `toolkit bench`, the model card's "for" column and the exporter's validation labels.
A new target is a FILES row, a RUNTIMES row, its backend module in toolkit/runtime/backends
(with `open_file`), and its converter in toolkit/export with a row in the exporter's TARGETS.
No imports: the manifest reads this, and the backends read the manifest.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Variant:
    """A quantization: the user's word (`--variant`, `--quantize`) and the manifest's."""

    name: str
    quantization: str
    # Integer-only (int8 weights, activations and state) for microcontrollers: batch 1, so
    # never picked by `--variant auto`, and benchmarked at batch 1 only.
    integer_only: bool = False


VARIANTS = (
    Variant("fp32", "none"),
    Variant("fp16", "float16"),
    Variant("int8", "int8"),
    Variant("full-int8", "full-int8", integer_only=True),
)


@dataclass(frozen=True)
class File:
    """One file of a model folder: a format at one quantization, side by side with the rest."""

    format: str
    quantization: str
    name: str
    use: str  # the model card's "for" column
    made_from: str | None = None  # a file of the folder this one is converted from


FILES = (
    File("onnx", "none", "model.onnx", "onnxruntime, onnxruntime-web (`toolkit web`)"),
    File(
        "onnx",
        "int8",
        "model.int8.onnx",
        "onnxruntime (native: faster than fp32; slower in the browser's wasm)",
    ),
    File("tflite", "none", "model.tflite", "LiteRT"),
    File("tflite", "float16", "model.fp16.tflite", "LiteRT (GPU delegates)"),
    File("tflite", "int8", "model.int8.tflite", "LiteRT: the fastest CPU variant"),
    File(
        "tflite",
        "full-int8",
        "model.full-int8.tflite",
        "TensorFlow Lite Micro on microcontrollers; LiteRT",
    ),
    File("numpy", "none", "weights.npz", "numpy alone"),
    # The full-int8 step as dependency-free C (+ char_lstm.h), bit-exact to TFLite Micro.
    File(
        "c",
        "full-int8",
        "char_lstm.c",
        "any C99 compiler: microcontrollers, wasm, the host (+ `char_lstm.h`)",
        made_from="model.full-int8.tflite",
    ),
)


@dataclass(frozen=True)
class Runtime:
    """What `toolkit generate --runtime` names: a backend module that steps one format."""

    name: str  # also its module in toolkit/runtime/backends and its backend's `name`
    format: str | None  # the files it runs; None: a run directory (Keras)
    label: str  # the manifest's name for a validation in it (`validation_<label>`)
    only: str | None = None  # the one variant it runs
    # Another file it runs when its own is missing, as (format, quantization).
    fallback: tuple[str, str] | None = None
    threaded: bool = False  # `--threads` applies
    batches: bool = False  # its step takes any batch: `toolkit serve` runs it
    pads_batches: bool = False  # the server pads batches to a power of two
    bench: Mapping[str, str] = field(default_factory=dict)  # variant -> `toolkit bench` row


RUNTIMES = (
    Runtime(
        "onnx",
        format="onnx",
        label="onnxruntime",
        threaded=True,
        batches=True,
        bench={"fp32": "onnx-fp32", "int8": "onnx-int8"},
    ),
    Runtime(
        "tflite",
        format="tflite",
        label="litert",
        threaded=True,
        batches=True,
        # LiteRT reallocates its tensors on every new batch size.
        pads_batches=True,
        bench={
            "fp32": "tflite-fp32",
            "fp16": "tflite-fp16",
            "int8": "tflite-int8",
            "full-int8": "tflite-full-int8",
        },
    ),
    # TensorFlow Lite Micro's interpreter on the host: the device's kernels.
    Runtime(
        "tflm",
        format="tflite",
        label="tflm",
        only="full-int8",
        bench={"full-int8": "tflm-full-int8"},
    ),
    # char_lstm.c compiled on this machine.
    Runtime("c", format="c", label="c", only="full-int8", bench={"full-int8": "c-full-int8"}),
    Runtime(
        "numpy",
        format="numpy",
        label="numpy",
        fallback=("onnx", "none"),  # model.onnx's weights, read into numpy
        threaded=True,  # the BLAS thread pool
        batches=True,
        bench={"fp32": "numpy"},
    ),
    Runtime("keras", format=None, label="keras"),  # the run's Keras model: the reference
)

# ----------------------------------------------------------------- derived lookups

FORMATS = tuple(dict.fromkeys(f.format for f in FILES))
RUNTIME_NAMES = tuple(r.name for r in RUNTIMES)
SERVE_RUNTIMES = tuple(r.name for r in RUNTIMES if r.batches)


def variant_named(name: str) -> Variant:
    return {v.name: v for v in VARIANTS}[name]


def variant_of(quantization: str) -> str:
    """The user's word for a manifest quantization."""
    return {v.quantization: v.name for v in VARIANTS}[quantization]


def runtime_named(name: str) -> Runtime:
    return {r.name: r for r in RUNTIMES}[name]


def file_format(runtime: str) -> str:
    """The format of the files a runtime runs (TFLite Micro: .tflite)."""
    return runtime_named(runtime).format or runtime


def file_named(name: str) -> File:
    return {f.name: f for f in FILES}[name]


def file_for(fmt: str, quantization: str) -> File:
    return {(f.format, f.quantization): f for f in FILES}[(fmt, quantization)]


def runtime_of(file: File) -> Runtime:
    """The runtime `toolkit generate` is pointed at for a file: the one that runs only its
    variant (TFLite Micro for the full-int8 model), else the one of its format."""
    variant = variant_of(file.quantization)
    runs = [r for r in RUNTIMES if r.format == file.format and r.only in (None, variant)]
    return next((r for r in runs if r.only == variant), runs[0])


def generate_flags(file: File) -> str:
    """The `toolkit generate` options that pick this file."""
    runtime = runtime_of(file)
    if runtime.only:
        return f"--runtime {runtime.name}"
    return f"--runtime {runtime.name} --variant {variant_of(file.quantization)}"
