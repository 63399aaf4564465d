"""The Keras character model: Embedding -> N x LSTM -> Dense, with the LSTM state explicit.

Inputs are `tokens` [batch, time] plus the state `h`, `c` [batch, layers, units]; outputs
are `logits` [batch, time, vocab] and the new state. Explicit state lets training carry it
across consecutive windows (truncated BPTT, as char-rnn does) and lets the Keras runtime
step one character at a time exactly as the exported graphs do.
"""

from __future__ import annotations

from toolkit.logs import import_tensorflow

import_tensorflow()  # quietly, before Keras imports it

import keras  # noqa: E402
import numpy as np  # noqa: E402

from toolkit.config import ModelConfig  # noqa: E402


def build_model(config: ModelConfig, dtype_policy: str = "float32") -> keras.Model:
    """The model; `dtype_policy` "mixed_bfloat16" computes in bf16 with float32 weights."""
    previous = keras.mixed_precision.dtype_policy()
    keras.mixed_precision.set_dtype_policy(dtype_policy)
    try:
        return _build(config)
    finally:
        keras.mixed_precision.set_dtype_policy(previous)


def _build(config: ModelConfig) -> keras.Model:
    tokens = keras.Input(shape=(None,), dtype="int32", name="tokens")
    h_in = keras.Input(shape=(config.layers, config.units), name="h")
    c_in = keras.Input(shape=(config.layers, config.units), name="c")

    x = keras.layers.Embedding(config.vocab_size, config.embedding_dim, name="embedding")(tokens)
    h_out, c_out = [], []
    for layer in range(config.layers):
        if config.dropout > 0 and layer > 0:
            x = keras.layers.Dropout(config.dropout, name=f"dropout_{layer}")(x)
        x, h, c = keras.layers.LSTM(
            config.units, return_sequences=True, return_state=True, name=f"lstm_{layer}"
        )(x, initial_state=[h_in[:, layer, :], c_in[:, layer, :]])
        h_out.append(h)
        c_out.append(c)
    if config.dropout > 0:
        x = keras.layers.Dropout(config.dropout, name="dropout_out")(x)
    # float32 logits (and loss) even when the rest computes in bf16
    logits = keras.layers.Dense(config.vocab_size, name="logits", dtype="float32")(x)
    outputs = {
        "logits": logits,
        "h_out": keras.ops.stack(h_out, axis=1),
        "c_out": keras.ops.stack(c_out, axis=1),
    }
    return keras.Model(inputs={"tokens": tokens, "h": h_in, "c": c_in}, outputs=outputs)


def lstm_weights(model: keras.Model, config: ModelConfig) -> dict[str, np.ndarray]:
    """The trained weights by name, in the layout the step graphs use (gate order i, f, c, o)."""
    weights: dict[str, np.ndarray] = {
        "embedding": np.asarray(model.get_layer("embedding").embeddings, np.float32),
        "dense_kernel": np.asarray(model.get_layer("logits").kernel, np.float32),
        "dense_bias": np.asarray(model.get_layer("logits").bias, np.float32),
    }
    for layer in range(config.layers):
        kernel, recurrent, bias = model.get_layer(f"lstm_{layer}").get_weights()
        weights[f"lstm_{layer}_kernel"] = np.asarray(kernel, np.float32)
        weights[f"lstm_{layer}_recurrent"] = np.asarray(recurrent, np.float32)
        weights[f"lstm_{layer}_bias"] = np.asarray(bias, np.float32)
    return weights
