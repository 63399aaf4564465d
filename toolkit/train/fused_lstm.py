"""The float32 training step's forward pass, without Keras's LSTM loop (faster on CPU).

It computes the function of toolkit.train.model's Keras model (Embedding -> N x LSTM -> Dense) on the
model's own variables and Dropout layers, so the weights, the checkpoints and everything that
reads the model stay as they are; only the layout and the order of the arithmetic change:

- feature-major: the recurrence works on transposed state, h^T [units, batch], so that each
  step's products are `recurrent^T @ h^T` and, backwards, `recurrent @ dz^T` (a wide matrix
  times a 128-column one). The same products in Keras's batch-major layout (`h @ recurrent`,
  `dz @ recurrent^T`) take 1.7x and 2.5x as long on an AVX2 CPU (oneDNN sgemm, one thread:
  7.8 against 4.3 ms and 10.8 against 4.1 ms for 128 x 512 x 2048;
  benchmarks/reports/train_throughput.md);
- each layer's input projection `kernel^T @ x^T + bias` for the whole window is one batched
  product outside the recurrence, which then adds one `recurrent^T @ h^T` per step;
- the recurrence is unrolled (a training window has a fixed length), with a hand-written
  backward pass: the gate derivatives with TensorFlow's SigmoidGrad / TanhGrad kernels, and the
  recurrent kernel's gradient summed over the window once.

The gradients are Keras's: the embedding's stays a gather's IndexedSlices (one row per token),
so tf.clip_by_global_norm measures it as before (per occurrence, not per vocabulary row), and
the Dropout layers are called on the same [batch, time, units] tensors in the same order, so
their masks are the Keras model's. tests/test_fused_lstm.py compares both: outputs within
1e-5, gradients within 1e-6, and training steps with the same losses.
"""

from __future__ import annotations

from typing import Any

from toolkit.logs import import_tensorflow
from toolkit.train.regularise import Masks, embedding_masks

tf = import_tensorflow()


def forward(
    model: Any,
    layers: int,
    dropout: float,
    tokens: Any,
    h: Any,
    c: Any,
    masks: Masks | None = None,
) -> Any:
    """Training-mode forward pass: (logits [batch, time, vocab], h_out, c_out [batch, layers,
    units]), as `model({"tokens", "h", "c"}, training=True)` gives; `masks`: the step's
    regularisers (train/regularise.py), as its keras_forward applies them."""
    masks = masks or Masks.none(layers)
    embeddings = model.get_layer("embedding").embeddings
    # [time, emb, batch]: each step's input as columns (the gather's gradient stays per token).
    seq_t = tf.transpose(tf.gather(embeddings, tf.transpose(tokens)), [0, 2, 1])
    seq_t = embedding_masks(tf, seq_t, tokens, masks, batch_major=False)
    between = masks.between or [None] * layers
    h_out, c_out = [], []
    for layer in range(layers):
        if dropout > 0 and layer > 0:
            seq_t = _dropout_t(model, seq_t, f"dropout_{layer}", between[layer])
        cell = model.get_layer(f"lstm_{layer}").cell
        recurrent = tf.convert_to_tensor(cell.recurrent_kernel)
        if masks.recurrent[layer] is not None:  # weight drop: this step's recurrent kernel
            recurrent = recurrent * masks.recurrent[layer]
        seq_t, c_last = recurrence(
            seq_t,
            tf.transpose(h[:, layer]),
            tf.transpose(c[:, layer]),
            tf.convert_to_tensor(cell.kernel),
            recurrent,
            tf.convert_to_tensor(cell.bias),
        )
        h_out.append(tf.transpose(seq_t[-1]))
        c_out.append(tf.transpose(c_last))
    if dropout > 0 and masks.output is not None:  # locked: [units, batch] on every step
        seq_t = seq_t * tf.transpose(masks.output)[None]
    out = tf.transpose(seq_t, [2, 0, 1])  # [batch, time, units]
    if dropout > 0 and masks.output is None:
        out = model.get_layer("dropout_out")(out, training=True)
    logits = model.get_layer("logits")(out)
    return logits, tf.stack(h_out, axis=1), tf.stack(c_out, axis=1)


def _dropout_t(model: Any, seq_t: Any, name: str, locked: Any | None) -> Any:
    """`dropout` on the feature-major window: the Keras model's layer on [batch, time, units]
    (the same masks as the Keras path), or the locked mask [batch, units] on every step."""
    if locked is not None:
        return seq_t * tf.transpose(locked)[None]
    dropped = model.get_layer(name)(tf.transpose(seq_t, [2, 0, 1]), training=True)
    return tf.transpose(dropped, [1, 2, 0])


def sigmoid_grad(y: Any, dy: Any) -> Any:
    return tf.raw_ops.SigmoidGrad(y=y, dy=dy)  # dy * y * (1 - y)


def tanh_grad(y: Any, dy: Any) -> Any:
    return tf.raw_ops.TanhGrad(y=y, dy=dy)  # dy * (1 - y^2)


def gates_major(weights: Any) -> Any:
    """[inputs, 4·units] -> its transpose [4·units, inputs], by a 3-D transpose: Grappler folds
    a plain 2-D transpose into the next MatMul as `transpose_a`, the slow orientation here."""
    rows, cols = weights.shape
    gates = tf.transpose(tf.reshape(weights, [rows, 4, cols // 4]), [1, 2, 0])
    return tf.reshape(gates, [cols, rows])


def recurrence(
    inputs: Any, h0: Any, c0: Any, kernel: Any, recurrent: Any, bias: Any
) -> tuple[Any, Any]:
    """One LSTM layer over a window, feature-major: `inputs` [time, input, batch], `h0`, `c0`
    [units, batch]; Keras's `kernel` [input, 4·units], `recurrent` [units, 4·units] and `bias`,
    gates in its order (i, f, c, o). Each step is one product `[kernel; recurrent]^T @ [x; h]`.
    Returns every step's h^T [time, units, batch] and the last c^T."""
    steps, width = inputs.shape[0], inputs.shape[1]
    if steps is None or width is None:
        raise ValueError("the fused LSTM needs a window of known length and width")

    @tf.custom_gradient
    def run(inputs: Any, h0: Any, c0: Any, kernel: Any, recurrent: Any, bias: Any) -> Any:
        weights = tf.concat([kernel, recurrent], axis=0)  # [input + units, 4 units]
        weights_t = gates_major(weights)
        bias_col = bias[:, None]
        xs = tf.unstack(inputs)
        h, c = h0, c0
        xhs, hs, cs, tanh_cs, gates = [], [], [c0], [], []
        for t in range(steps):
            xh = tf.concat([xs[t], h], axis=0)
            z = tf.matmul(weights_t, xh) + bias_col
            z_i, z_f, z_c, z_o = tf.split(z, 4, axis=0)
            i, f, g, o = tf.sigmoid(z_i), tf.sigmoid(z_f), tf.tanh(z_c), tf.sigmoid(z_o)
            c = f * c + i * g
            tanh_c = tf.tanh(c)
            h = o * tanh_c
            xhs.append(xh)
            hs.append(h)
            cs.append(c)
            tanh_cs.append(tanh_c)
            gates.append((i, f, g, o))
        h_all = tf.stack(hs)

        def grad(d_h_all: Any, d_c_last: Any) -> Any:
            d_hs = tf.unstack(d_h_all)
            d_h_next = None
            d_c = d_c_last if d_c_last is not None else tf.zeros_like(c0)
            d_xs: list[Any] = [None] * steps
            d_weights_t, d_bias = [], []
            for t in reversed(range(steps)):
                i, f, g, o = gates[t]
                tanh_c = tanh_cs[t]
                d_h = d_hs[t] if d_h_next is None else d_hs[t] + d_h_next
                d_c = d_c + tanh_grad(tanh_c, d_h * o)
                d_z = tf.concat(
                    [
                        sigmoid_grad(i, d_c * g),
                        sigmoid_grad(f, d_c * cs[t]),
                        tanh_grad(g, d_c * i),
                        sigmoid_grad(o, d_h * tanh_c),
                    ],
                    axis=0,
                )
                d_c = d_c * f
                d_xh = tf.matmul(weights, d_z)  # [input + units, batch]
                d_xs[t], d_h_next = d_xh[:width], d_xh[width:]
                d_weights_t.append(tf.matmul(d_z, xhs[t], transpose_b=True))
                d_bias.append(tf.reduce_sum(d_z, axis=1))
            d_weights = tf.transpose(tf.add_n(d_weights_t))  # [input + units, 4 units]
            return (
                tf.stack(d_xs),
                d_h_next,
                d_c,
                d_weights[:width],
                d_weights[width:],
                tf.add_n(d_bias),
            )

        return (h_all, c), grad

    result: tuple[Any, Any] = run(inputs, h0, c0, kernel, recurrent, bias)
    return result
