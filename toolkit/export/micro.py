"""The microcontroller exporter: full-integer TFLite for TensorFlow Lite Micro, and a C array.

    describe  batch fixed to 1; int8 weights and activations; token int32, and h, c, logits
              int8 at the boundary (a microcontroller without an FPU never touches a float:
              greedy decoding is an argmax over int8 logits)
    convert   TFLiteConverter with a representative dataset: (token, h, c) collected by
              stepping the fp32 step over training text from the zero state
    validate  in TensorFlow Lite Micro's own interpreter (PyPI `tflite-micro`) and in LiteRT:
              bits/char on validation text against Keras; the smallest arena that runs it
    emit      model_data.cc / model_data.h: the flatbuffer as an aligned array, with the
              input/output order, quantization, vocabulary and arena size in the header

The `full-int8` target of exporter.py; imports TensorFlow only to convert.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from toolkit.config import ModelConfig
from toolkit.errors import ExportError, UsageError, first_line
from toolkit.export import tflite
from toolkit.export.step_graph import make_step_module
from toolkit.files import sha256_bytes
from toolkit.logs import import_tensorflow, native_stderr_hidden
from toolkit.runtime.backends.numpy import NumpyBackend
from toolkit.runtime.backends.tflite import TFLiteBackend
from toolkit.runtime.backends.tflm import TFLMBackend
from toolkit.runtime.manifest import artifact_name
from toolkit.runtime.step import StepBackend

QUANTIZATION = "full-int8"
CALIBRATION_CHARS = 2048
CALIBRATION_STREAMS = 8
# The cell state is clipped to [-CELL_CLIP, CELL_CLIP] in the microcontroller graph (TFLite's
# own quantized LSTM kernels take a cell_clip too). A few units of a trained model drift to
# |c| in the hundreds, where tanh(c) is 1 either way; left alone they stretch the int8 scale of
# c over that range and every other unit loses its precision (measured: README, "On a
# microcontroller").
CELL_CLIP = 8.0
C_SYMBOL = "g_char_lstm_model"
ARENA_ALIGN = 256  # the arena size recorded is rounded up to this


# --------------------------------------------------------------------------- limits


@dataclass(frozen=True)
class MicroLimits:
    max_flash: int | None = None
    max_arena: int | None = None

    def check(self, flash: int, arena: int) -> None:
        if self.max_flash is not None and flash > self.max_flash:
            raise ExportError(
                f"the model needs {flash:,} bytes of flash, over --max-flash {self.max_flash:,}"
            )
        if self.max_arena is not None and arena > self.max_arena:
            raise ExportError(
                f"the model needs a {arena:,}-byte tensor arena, over --max-arena {self.max_arena:,}"
            )


# --------------------------------------------------------------------------- calibrate


def calibration_samples(
    folded: dict[str, np.ndarray],
    config: ModelConfig,
    ids: np.ndarray,
    chars: int,
    cell_clip: float | None = None,
) -> list[dict[str, np.ndarray]]:
    """(token, h, c) at batch 1 for `chars` steps of the fp32 step over training text.

    Several streams, each from the zero state, spread over the text: generation always
    starts from zeros, so the calibrated ranges must cover early states as well as late ones.
    """
    if chars < 1:
        raise UsageError(f"calibration-chars must be >= 1, got {chars}")
    streams = min(CALIBRATION_STREAMS, max(1, chars // 64))
    per_stream = max(1, chars // streams)
    if len(ids) < per_stream + 1:
        raise ExportError(f"calibration text too short: {len(ids)} characters")
    starts = np.linspace(0, len(ids) - per_stream - 1, streams).astype(int)
    backend = NumpyBackend(folded, config.layers)
    samples = []
    for start in starts:
        h = np.zeros((config.layers, 1, config.units), np.float32)
        c = np.zeros_like(h)
        for token in ids[start : start + per_stream]:
            tok = np.array([token], np.int32)
            # By name: the converted graph orders its inputs token, c, h, not as declared.
            samples.append({"token": tok, "h": h, "c": c})
            _, h, c = backend.step(tok, h, c)
            if cell_clip is not None:  # the states the clipped graph will see
                c = np.clip(c, -cell_clip, cell_clip)
    return samples


# --------------------------------------------------------------------------- convert


def convert_full_int8(module: Any, samples: list[dict[str, np.ndarray]]) -> bytes:
    """Full-integer TFLite of `module.step` (built with batch fixed to 1)."""
    tf = import_tensorflow()

    concrete = module.step.get_concrete_function()
    converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete], module)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]

    def representative() -> Iterator[dict[str, np.ndarray]]:
        yield from samples

    converter.representative_dataset = representative
    # Int8 kernels only: a model that needs a float op fails here, not on the device.
    # (The 16x8 mode would be more precise but TFLite Micro has no int16 GATHER.)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    try:
        return bytes(converter.convert())
    except Exception as exc:
        raise ExportError(f"full-integer TFLite conversion failed: {first_line(exc)}") from None


def convert(
    folded: dict[str, np.ndarray],
    config: ModelConfig,
    vocab: list[str],
    calibration_ids: np.ndarray,
    calibration_chars: int,
    calibration_data: str,
    limits: MicroLimits,
    log: Callable[[str], None],
) -> tuple[bytes, dict[str, Any], dict[str, bytes]]:
    """The full-int8 model, its manifest section (`micro`) and its C array files."""
    samples = calibration_samples(folded, config, calibration_ids, calibration_chars, CELL_CLIP)
    with native_stderr_hidden():  # the converter prints its settings
        module = make_step_module(folded, config, batch=1, cell_clip=CELL_CLIP)
        data = convert_full_int8(module, samples)
    micro: dict[str, Any] = {
        "calibration_chars": len(samples),
        "calibration_data": calibration_data,
        "cell_clip": CELL_CLIP,
        **boundary_tensors(data),
    }
    micro["arena_bytes"], micro["arena_used_bytes"] = tflm_arena_bytes(data)
    micro["flash_bytes"] = len(data)
    micro["ops"] = sorted(tflite.op_types(data))
    limits.check(len(data), micro["arena_bytes"])
    files = c_array_files(data, micro, vocab, config, micro["ops"])
    micro["c_files"] = {f: sha256_bytes(b) for f, b in files.items()}
    log(
        f"converted {artifact_name('tflite', QUANTIZATION)}: {len(data):,} bytes of flash, TFLite Micro arena "
        f"{micro['arena_bytes']:,} bytes, ops {', '.join(micro['ops'])}"
    )
    return data, micro, files


def backends(data: bytes, micro: dict[str, Any]) -> list[StepBackend]:
    """LiteRT, then (last: the manifest's `validation`) TensorFlow Lite Micro's interpreter:
    the device's kernels are TFLM's, not LiteRT's."""
    return [TFLiteBackend(data, threads=1), TFLMBackend(data, micro)]


# --------------------------------------------------------------------------- describe


def boundary_tensors(data: bytes) -> dict[str, list[dict[str, Any]]]:
    """Inputs and outputs in subgraph order (TFLite Micro's only way to address them)."""
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_content=data)
    runner = interp.get_signature_runner(next(iter(interp.get_signature_list())))
    names = {d["index"]: n for n, d in runner.get_input_details().items()}
    names.update({d["index"]: n for n, d in runner.get_output_details().items()})
    del runner

    def describe(details: dict[str, Any]) -> dict[str, Any]:
        scale, zero = details["quantization"]
        return {
            "name": names[details["index"]],
            "dtype": np.dtype(details["dtype"]).name,
            "shape": [int(x) for x in details["shape"]],
            "scale": float(scale),
            "zero_point": int(zero),
        }

    return {
        "inputs": [describe(d) for d in interp.get_input_details()],
        "outputs": [describe(d) for d in interp.get_output_details()],
    }


# Run in a child process: TFLite Micro's interpreter can crash the process (not raise) when
# its arena is too small, and its allocation report goes to the C stderr.
_ARENA_PROBE = """
import sys, numpy as np
from tflite_micro.python.tflite_micro import runtime as tflm
data = open(sys.argv[1], "rb").read()
interp = tflm.Interpreter.from_bytes(data, arena_size=int(sys.argv[2]))
for _ in range(2):  # a second step: the state buffers must survive a step
    for index in range(int(sys.argv[3])):
        d = interp.get_input_details(index)
        interp.set_input(np.zeros(d["shape"], d["dtype"]), index)
    interp.invoke()
if sys.argv[4] == "report":
    interp.print_allocations()
"""


def tflm_arena_bytes(data: bytes, inputs: int = 3) -> tuple[int, int]:
    """(smallest arena TFLite Micro's interpreter runs the model in, rounded up to
    ARENA_ALIGN; bytes its recording allocator reports as used)."""
    import subprocess
    import sys
    import tempfile

    with tempfile.NamedTemporaryFile(suffix=".tflite") as model:
        model.write(data)
        model.flush()

        def run(size: int, report: bool = False) -> subprocess.CompletedProcess[str]:
            args = [model.name, str(size), str(inputs), "report" if report else "-"]
            return subprocess.run(
                [sys.executable, "-c", _ARENA_PROBE, *args], capture_output=True, text=True
            )

        big = 16 << 20
        probe = run(big, report=True)
        match = re.search(r"Arena allocation total (\d+) bytes", probe.stderr + probe.stdout)
        if probe.returncode != 0 or match is None:
            raise ExportError(
                "TensorFlow Lite Micro cannot run the model: "
                f"{(probe.stderr.strip().splitlines() or ['no output'])[-1]}"
            )
        used = int(match.group(1))
        # The interpreter needs a little more than the allocations it records (alignment,
        # its own bookkeeping): search upwards from `used` in ARENA_ALIGN steps.
        low = used // ARENA_ALIGN  # assumed too small unless it fits exactly
        high = -(-big // ARENA_ALIGN)
        step = 1
        while low + step < high:  # gallop, then bisect
            if run((low + step) * ARENA_ALIGN).returncode == 0:
                high = low + step
                break
            low += step
            step *= 2
        while high - low > 1:
            mid = (low + high) // 2
            if run(mid * ARENA_ALIGN).returncode == 0:
                high = mid
            else:
                low = mid
    return high * ARENA_ALIGN, used


# --------------------------------------------------------------------------- emit


def c_array_files(
    data: bytes,
    micro: dict[str, Any],
    vocab: list[str],
    config: ModelConfig,
    ops: list[str],
) -> dict[str, bytes]:
    """model_data.h and model_data.cc: what an embedded developer adds to a TFLM project."""
    lines = ["Inputs, in subgraph order (TFLite Micro addresses them by index):"]
    for kind in ("inputs", "outputs"):
        if kind == "outputs":
            lines.append("Outputs, in subgraph order:")
        for i, t in enumerate(micro[kind]):
            quant = f", scale {t['scale']!r}, zero point {t['zero_point']}" if t["scale"] else ""
            lines.append(f"  {i}: {t['name']:<7} {t['dtype']} {t['shape']}{quant}")
    resolver = "\n".join(f"//     resolver.Add{_resolver_method(op)}();" for op in ops)
    header = f"""// Generated by char-lstm-toolkit: a {config.layers} x {config.units} character LSTM step.
// One call = one character: token (id) and the state (h, c) in; logits and the new state out.
//
{_comment(lines)}
//
// Quantization: real = scale * (q - zero_point). Carry the state yourself: after each step
// requantize h_out to h (and c_out to c), because their scales differ slightly:
//   q_h = clamp(round((q_h_out - zp_h_out) * scale_h_out / scale_h) + zp_h, -128, 127)
// The initial state is zeros in real terms, i.e. q = zero_point. Greedy decoding is the
// argmax of the int8 logits (one scale for the whole row). The model clips the cell state
// to +-{micro.get("cell_clip")} (where tanh has saturated) so that int8 keeps its precision.
//
// Vocabulary: {config.vocab_size} characters, token id = index in g_char_lstm_vocab.
// Tensor arena: at least {micro["arena_bytes"]} bytes (measured in TFLite Micro's interpreter).
// Flash: {len(data)} bytes for the model.
// Ops (tflite::MicroMutableOpResolver<{len(ops)}> resolver;):
{resolver}

#ifndef CHAR_LSTM_MODEL_DATA_H_
#define CHAR_LSTM_MODEL_DATA_H_

constexpr int kCharLstmVocabSize = {config.vocab_size};
constexpr int kCharLstmLayers = {config.layers};
constexpr int kCharLstmUnits = {config.units};
constexpr int kCharLstmArenaBytes = {micro["arena_bytes"]};

extern const unsigned char {C_SYMBOL}[];
extern const unsigned int {C_SYMBOL}_len;
// UTF-8 text of each token id.
extern const char* const g_char_lstm_vocab[kCharLstmVocabSize];

#endif  // CHAR_LSTM_MODEL_DATA_H_
"""
    rows = []
    for start in range(0, len(data), 12):
        chunk = data[start : start + 12]
        rows.append("    " + ", ".join(f"0x{b:02x}" for b in chunk) + ",")
    vocab_c = ",\n".join(f"    {_c_string(ch)}" for ch in vocab)
    source = f"""// Generated by char-lstm-toolkit; see model_data.h. Do not edit.
#include "model_data.h"

// Aligned so that TFLite Micro can read the flatbuffer in place from flash.
alignas(16) const unsigned char {C_SYMBOL}[] = {{
{chr(10).join(rows)}
}};
const unsigned int {C_SYMBOL}_len = {len(data)};

const char* const g_char_lstm_vocab[kCharLstmVocabSize] = {{
{vocab_c}
}};
"""
    return {"model_data.h": header.encode(), "model_data.cc": source.encode()}


def _comment(lines: list[str]) -> str:
    return "\n".join(f"// {line}" for line in lines)


def _c_string(ch: str) -> str:
    escaped = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\t": "\\t", "\r": "\\r"}
    if ch.isascii() and (ch.isprintable() or ch in escaped):
        return '"' + "".join(escaped.get(c, c) for c in ch) + '"'
    return '"' + "".join(f"\\x{b:02x}" for b in ch.encode()) + '"'  # UTF-8; the file stays ASCII


def _resolver_method(op: str) -> str:
    """TFLite's builtin op name (FULLY_CONNECTED) to the resolver's (AddFullyConnected)."""
    special = {"TANH": "Tanh", "LOGISTIC": "Logistic", "SPLIT_V": "SplitV"}
    return special.get(op, "".join(part.capitalize() for part in op.split("_")))
