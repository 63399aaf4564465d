"""The numpy backend: the step (toolkit/runtime/lstm.py) on the folded fp32 weights, from
weights.npz (numpy alone) or read out of model.onnx (with the `onnx` package). The reference
the other backends are compared with."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from toolkit.config import ModelConfig
from toolkit.errors import ModelFileError, first_line
from toolkit.runtime.lstm import NUMPY_OPS, lstm_step
from toolkit.runtime.manifest import Artifact
from toolkit.runtime.step import StepOutput


class NumpyBackend:
    name = "numpy"

    def __init__(self, weights: dict[str, np.ndarray], layers: int) -> None:
        self.w = weights
        self.layers = layers

    @classmethod
    def from_bytes(cls, data: bytes, layers: int) -> NumpyBackend:
        try:
            with np.load(io.BytesIO(data)) as blob:
                weights = {k: blob[k] for k in blob.files}
        except Exception as exc:  # zipfile/pickle errors vary; all mean a bad file
            raise ModelFileError(f"weights file is corrupted: {exc}") from None
        return cls(weights, layers)

    def step(self, token: np.ndarray, h: np.ndarray, c: np.ndarray) -> StepOutput:
        logits, h_out, c_out = lstm_step(NUMPY_OPS, self.w, token, h, c, self.layers)
        return logits.astype(np.float32, copy=False), np.stack(h_out), np.stack(c_out)


def weights_from_onnx(data: bytes, layers: int) -> dict[str, np.ndarray]:
    """The folded weights of an fp32 ONNX step graph this toolkit exported, read by role: the
    Gather's table, then the MatMul and Add constants in topological order. The caller checks
    that the numpy step on them reproduces the graph."""
    try:
        import onnx
        from onnx import numpy_helper
    except ImportError:
        raise ModelFileError(
            "the numpy runtime reads weights.npz, or model.onnx with the onnx package: "
            "pip install onnx"
        ) from None
    try:
        graph = onnx.load_from_string(data).graph
    except Exception as exc:  # protobuf's DecodeError and friends
        raise ModelFileError(f"cannot read the ONNX model: {first_line(exc)}") from None
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
    if table is None or len(matmuls) != layers + 1 or len(adds) != layers:
        raise ModelFileError("cannot read the weights of this ONNX graph (not a step graph?)")
    folded = {"table_0": table, "recurrent_0": matmuls[0]}
    for layer in range(1, layers):
        folded[f"stacked_{layer}"] = matmuls[layer]
        folded[f"bias_{layer}"] = adds[layer - 1]
    folded["dense_kernel"], folded["dense_bias"] = matmuls[-1], adds[-1]
    return {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in folded.items()}


def open_file(
    model_dir: Path, artifact: Artifact, data: bytes, model: ModelConfig, threads: int
) -> NumpyBackend:
    """weights.npz, or model.onnx's weights (a folder without weights.npz), then checked
    against onnxruntime on a few steps where it is installed."""
    if artifact.format == "numpy":
        return NumpyBackend.from_bytes(data, model.layers)
    backend = NumpyBackend(weights_from_onnx(data, model.layers), model.layers)
    try:
        from toolkit.runtime.backends.onnx import OnnxBackend

        reference = OnnxBackend(data)
    except ModelFileError:  # no onnxruntime: the weights are used as read
        return backend
    token = np.arange(3, dtype=np.int32) % model.vocab_size
    h = np.zeros(model.state_shape(3), np.float32)
    state = (h, h)
    for _ in range(4):
        ours = backend.step(token, *state)
        theirs = reference.step(token, *state)
        if not all(np.allclose(a, b, atol=1e-4) for a, b in zip(ours, theirs, strict=True)):
            raise ModelFileError("the weights read from model.onnx do not reproduce it")
        state = theirs[1], theirs[2]
    return backend
