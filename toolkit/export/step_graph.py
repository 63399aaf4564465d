"""The step as a TensorFlow graph: what every TFLite and ONNX target converts.

`StepModel` is a tf.Module owning the folded weights as tf.Variables, with one tf.function,
`step(token, h, c) -> {logits, h_out, c_out}`, tracing the gate math of toolkit/runtime/lstm.py
with TensorFlow ops. Calling a Keras LSTM layer for one step still emits a While loop; the
gates written out give a flat graph of Gather/MatMul/Sigmoid/Tanh that every runtime runs
fast. tf2onnx turns captured constants into extra graph inputs, and the TFLite converter
needs the owning module to freeze the variables: hence variables owned by a module.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from toolkit.config import ModelConfig
from toolkit.logs import import_tensorflow
from toolkit.runtime.lstm import lstm_step

# Ops a step graph must not contain: a runtime would run them as a loop, not a flat step.
CONTROL_FLOW_OPS = frozenset({"Loop", "Scan", "If", "WHILE", "IF"})


class TensorFlowOps:
    """runtime.lstm's ArrayOps on TensorFlow tensors."""

    def __init__(self) -> None:
        self.tf = import_tensorflow()

    def gather(self, table: Any, ids: Any) -> Any:
        return self.tf.gather(table, ids)

    def matmul(self, a: Any, b: Any) -> Any:
        return self.tf.matmul(a, b)

    def concat(self, a: Any, b: Any) -> Any:
        return self.tf.concat([a, b], axis=1)

    def split4(self, z: Any) -> tuple[Any, Any, Any, Any]:
        i, f, g, o = self.tf.split(z, 4, axis=1)
        return i, f, g, o

    def sigmoid(self, x: Any) -> Any:
        return self.tf.sigmoid(x)

    def tanh(self, x: Any) -> Any:
        return self.tf.tanh(x)

    def clip(self, x: Any, limit: float) -> Any:
        return self.tf.clip_by_value(x, -limit, limit)


def make_step_module(
    folded: dict[str, np.ndarray],
    config: ModelConfig,
    batch: int | None = None,
    cell_clip: float | None = None,
) -> Any:
    """The StepModel of `folded` weights. `batch` fixes the batch dimension (microcontrollers
    need static shapes); None keeps it dynamic. `cell_clip` clips the cell state to
    [-clip, clip] (see micro.CELL_CLIP)."""
    tf = import_tensorflow()
    ops = TensorFlowOps()
    signature = [
        tf.TensorSpec([batch], tf.int32, name="token"),
        tf.TensorSpec([config.layers, batch, config.units], tf.float32, name="h"),
        tf.TensorSpec([config.layers, batch, config.units], tf.float32, name="c"),
    ]

    class StepModel(tf.Module):  # type: ignore[name-defined]
        def __init__(self) -> None:
            super().__init__(name="step_model")
            self.weights_by_name = {
                k: tf.Variable(v, trainable=False, name=k) for k, v in sorted(folded.items())
            }

        @tf.function(input_signature=signature)
        def step(self, token: Any, h: Any, c: Any) -> dict[str, Any]:
            logits, h_out, c_out = lstm_step(
                ops, self.weights_by_name, token, h, c, config.layers, cell_clip
            )
            return {
                "logits": tf.identity(logits, name="logits"),
                "h_out": tf.stack(h_out, axis=0, name="h_out"),
                "c_out": tf.stack(c_out, axis=0, name="c_out"),
            }

    return StepModel()
