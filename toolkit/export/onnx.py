"""The ONNX target: tf2onnx on the step graph, and onnxruntime's dynamic int8 quantization.

describe  inputs token [batch] int32, h, c [layers, batch, units]; outputs logits, h_out,
          c_out, with those names (tf2onnx's 'name:0' names are renamed)
convert   tf2onnx.convert.from_function at opset ONNX_OPSET; int8: quantize_dynamic
          (int8 weights, activations quantized per call over the whole batch)
validate  onnxruntime (export/validate.py)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from toolkit.config import ModelConfig
from toolkit.errors import ExportError, ModelFileError, first_line
from toolkit.runtime.backends.numpy import NumpyBackend, weights_from_onnx
from toolkit.runtime.backends.onnx import OnnxBackend
from toolkit.runtime.step import StepBackend

ONNX_OPSET = 17
STEP_NAMES = frozenset({"token", "h", "c", "logits", "h_out", "c_out"})


def convert(module: Any, quantization: str, workdir: Path) -> bytes:
    import onnx
    import tf2onnx

    fn = module.step
    try:
        model_proto, _ = tf2onnx.convert.from_function(
            fn, input_signature=list(fn.input_signature), opset=ONNX_OPSET
        )
    except Exception as exc:  # tf2onnx raises anything from ValueError to KeyError
        raise ExportError(f"tf2onnx failed: {first_line(exc)}") from None
    _rename_io(model_proto)
    model_proto.doc_string = (
        "char-lstm-toolkit single-step LSTM (token, h, c) -> (logits, h_out, c_out)"
    )
    if quantization == "none":
        return bytes(model_proto.SerializeToString())
    from onnxruntime.quantization import QuantType, quantize_dynamic

    fp32_path, int8_path = workdir / "fp32.onnx", workdir / "int8.onnx"
    onnx.save(model_proto, str(fp32_path))
    try:
        quantize_dynamic(str(fp32_path), str(int8_path), weight_type=QuantType.QInt8)
    except Exception as exc:
        raise ExportError(f"onnxruntime quantization failed: {first_line(exc)}") from None
    return int8_path.read_bytes()


def _rename_io(model_proto: Any) -> None:
    """tf2onnx names tensors after the TF graph (e.g. 'token:0'); give them the step's names."""
    renames: dict[str, str] = {}
    for value in [*model_proto.graph.input, *model_proto.graph.output]:
        base = value.name.split(":")[0]
        if base not in STEP_NAMES:
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


def op_types(data: bytes) -> set[str]:
    import onnx

    return {node.op_type for node in onnx.load_from_string(data).graph.node}


def backends(data: bytes) -> list[StepBackend]:
    return [OnnxBackend(data, threads=1)]


def folded_weights(data: bytes, config: ModelConfig) -> dict[str, np.ndarray]:
    """The folded weights of an fp32 ONNX step graph this toolkit exported, checked: the numpy
    step on them must reproduce the graph."""
    from toolkit.export.validate import FP32_ATOL, step_logits

    unreadable = "cannot read the weights of this ONNX graph; export from the run instead"
    try:
        folded = weights_from_onnx(data, config.layers)
    except ModelFileError:
        raise ExportError(unreadable) from None
    tokens = np.random.default_rng(0).integers(0, config.vocab_size, (2, 9)).astype(np.int32)
    got = step_logits(NumpyBackend(folded, config.layers), config, tokens)
    want = step_logits(OnnxBackend(data), config, tokens)
    if not np.allclose(got, want, atol=FP32_ATOL):
        raise ExportError(unreadable)
    return folded
