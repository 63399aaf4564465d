"""The LSTM step, written once: the numpy backend runs it on arrays, the exporter traces it
into a TensorFlow graph (export/step_graph.py). Both pass the few array operations it needs.

Weights are in the step layout (`fold_weights`); gate order is Keras's: i, f, c (candidate), o.

    layer 0   z = table_0[token] + h[0] @ recurrent_0            (embedding, input kernel and
                                                                  bias folded into one table)
    layer l   z = [x, h[l]] @ stacked_l + bias_l                 (input and recurrent kernels
                                                                  stacked into one matrix)
    gates     i, f, g, o = split(z, 4)
              c' = sigmoid(f) * c[l] + sigmoid(i) * tanh(g)      (clipped to +-cell_clip)
              x = h'[l] = sigmoid(o) * tanh(c')
    output    logits = x @ dense_kernel + dense_bias
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np


class ArrayOps(Protocol):
    """The operations of the step, for one array library."""

    def gather(self, table: Any, ids: Any) -> Any: ...

    def matmul(self, a: Any, b: Any) -> Any: ...

    def concat(self, a: Any, b: Any) -> Any:  # along the feature axis
        ...

    def split4(self, z: Any) -> tuple[Any, Any, Any, Any]: ...

    def sigmoid(self, x: Any) -> Any: ...

    def tanh(self, x: Any) -> Any: ...

    def clip(self, x: Any, limit: float) -> Any: ...


def lstm_step(
    ops: ArrayOps,
    weights: dict[str, Any],
    token: Any,
    h: Any,
    c: Any,
    layers: int,
    cell_clip: float | None = None,
) -> tuple[Any, list[Any], list[Any]]:
    """(logits [batch, vocab], h' per layer, c' per layer) for `token` [batch] and the state
    `h`, `c` [layers, batch, units]."""
    w = weights
    h_out, c_out = [], []
    x = None
    for layer in range(layers):
        if layer == 0:
            z = ops.gather(w["table_0"], token) + ops.matmul(h[0], w["recurrent_0"])
        else:
            z = ops.matmul(ops.concat(x, h[layer]), w[f"stacked_{layer}"]) + w[f"bias_{layer}"]
        i, f, g, o = ops.split4(z)
        c_new = ops.sigmoid(f) * c[layer] + ops.sigmoid(i) * ops.tanh(g)
        if cell_clip is not None:
            c_new = ops.clip(c_new, cell_clip)
        x = ops.sigmoid(o) * ops.tanh(c_new)
        h_out.append(x)
        c_out.append(c_new)
    logits = ops.matmul(x, w["dense_kernel"]) + w["dense_bias"]
    return logits, h_out, c_out


class NumpyOps:
    """ArrayOps on numpy arrays."""

    @staticmethod
    def gather(table: np.ndarray, ids: np.ndarray) -> np.ndarray:
        return table[ids]

    @staticmethod
    def matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return a @ b

    @staticmethod
    def concat(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.concatenate([a, b], axis=1)

    @staticmethod
    def split4(z: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        i, f, g, o = np.split(z, 4, axis=1)
        return i, f, g, o

    @staticmethod
    def sigmoid(x: np.ndarray) -> np.ndarray:
        # tanh form: no overflow warnings for large |x|, same value as 1 / (1 + exp(-x)).
        return 0.5 * (np.tanh(0.5 * x) + 1.0)

    @staticmethod
    def tanh(x: np.ndarray) -> np.ndarray:
        return np.tanh(x)

    @staticmethod
    def clip(x: np.ndarray, limit: float) -> np.ndarray:
        return np.clip(x, -limit, limit)


NUMPY_OPS = NumpyOps()


def fold_weights(raw: dict[str, np.ndarray], layers: int) -> dict[str, np.ndarray]:
    """Keras's weights (embedding, lstm_L_{kernel,recurrent,bias}, dense_{kernel,bias}) in the
    step layout above: layer 0's embedding lookup followed by its input projection is one
    lookup in a [vocab, 4*units] table (bias included), so the step needs a Gather, not a
    MatMul; each later layer's two kernels become one [2*units, 4*units] matrix."""
    folded = {
        "table_0": raw["embedding"] @ raw["lstm_0_kernel"] + raw["lstm_0_bias"],
        "recurrent_0": raw["lstm_0_recurrent"],
        "dense_kernel": raw["dense_kernel"],
        "dense_bias": raw["dense_bias"],
    }
    for layer in range(1, layers):
        folded[f"stacked_{layer}"] = np.concatenate(
            [raw[f"lstm_{layer}_kernel"], raw[f"lstm_{layer}_recurrent"]], axis=0
        )
        folded[f"bias_{layer}"] = raw[f"lstm_{layer}_bias"]
    return {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in folded.items()}
