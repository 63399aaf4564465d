"""The training step's regularisers of the recurrence (AWD-LSTM's), as masks drawn per step.

Each is off by default and gone at inference (the masks are inverted dropout: kept entries are
scaled by 1 / (1 - rate), so the expected activation is the inference one, and nothing of them
reaches the exported step):

- weight drop: DropConnect on each LSTM's recurrent kernel, one mask per optimiser step shared
  by every stream and time step (the recurrence itself is regularised, not its activations);
- locked (variational) dropout: one mask per stream per window instead of one per character,
  on the first LSTM's input (`input_dropout`) and, with `locked_dropout`, for `dropout`
  between layers and before the output layer;
- embedding dropout: whole characters, i.e. embedding rows, dropped for the step.

The masks are drawn by stateless random ops seeded with (seed, optimiser step): the same on the
fused and the Keras path, every worker, and after a resume (the step count is checkpointed).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from toolkit.config import ModelConfig, TrainConfig


@dataclass(frozen=True)
class Regularisers:
    """The rates of one run (TrainConfig's fields; `dropout` itself stays ModelConfig's)."""

    weight_drop: float = 0.0
    input_dropout: float = 0.0
    embedding_dropout: float = 0.0
    locked_dropout: bool = False

    @classmethod
    def of(cls, config: TrainConfig) -> Regularisers:
        return cls(
            config.weight_drop,
            config.input_dropout,
            config.embedding_dropout,
            config.locked_dropout,
        )


@dataclass
class Masks:
    """One step's masks (tensors, scaled; None where off). `between[l]` is the mask on layer
    l's input for l >= 1, `output` the one before the output layer, both [batch, units]."""

    recurrent: list[Any | None]
    embedding: Any | None = None  # [vocab]
    inputs: Any | None = None  # [batch, embedding_dim]
    between: list[Any | None] | None = None
    output: Any | None = None

    @classmethod
    def none(cls, layers: int) -> Masks:
        return cls(recurrent=[None] * layers, between=[None] * layers)


def _keep(tf: Any, shape: list[Any], rate: float, seed: Any, salt: int, layer: int = 0) -> Any:
    """A float32 mask of 1 / (1 - rate) (kept) and 0, reproducible from (seed, salt, layer):
    each mask of a step has its own salt (< 16), each layer its own first seed component."""
    seed = tf.stack([seed[0] + 7919 * layer, seed[1] * 16 + salt])
    draw = tf.random.stateless_uniform(shape, seed=seed)
    return tf.cast(draw >= rate, tf.float32) / (1.0 - rate)


def draw(reg: Regularisers, model: ModelConfig, batch: Any, seed: Any) -> Masks:
    """The masks of one training step; `seed` is an int64 pair (run seed, optimiser step)."""
    import tensorflow as tf

    masks = Masks.none(model.layers)
    if reg.weight_drop > 0:
        shape = [model.units, 4 * model.units]
        masks.recurrent = [
            _keep(tf, shape, reg.weight_drop, seed, 1, layer) for layer in range(model.layers)
        ]
    if reg.embedding_dropout > 0:
        masks.embedding = _keep(tf, [model.vocab_size], reg.embedding_dropout, seed, 9)
    if reg.input_dropout > 0:
        masks.inputs = _keep(tf, [batch, model.embedding_dim], reg.input_dropout, seed, 10)
    if reg.locked_dropout and model.dropout > 0:
        masks.between = [None] + [
            _keep(tf, [batch, model.units], model.dropout, seed, 11, layer)
            for layer in range(1, model.layers)
        ]
        masks.output = _keep(tf, [batch, model.units], model.dropout, seed, 15)
    return masks


def keras_forward(
    model: Any, layers: int, dropout: float, masks: Masks, x: Any, h: Any, c: Any
) -> Any:
    """Training-mode forward pass of the Keras model layer by layer (Keras's LSTM loop), with
    the masks: `model({"tokens", "h", "c"}, training=True)` where every mask is None."""
    import keras
    import tensorflow as tf

    tokens = x
    seq = model.get_layer("embedding")(tokens)
    seq = embedding_masks(tf, seq, tokens, masks, batch_major=True)
    h_out, c_out = [], []
    for layer in range(layers):
        if dropout > 0 and layer > 0:
            seq = _dropout(
                model, tf, seq, f"dropout_{layer}", masks.between[layer] if masks.between else None
            )
        lstm = model.get_layer(f"lstm_{layer}")
        state = [h[:, layer, :], c[:, layer, :]]
        mask = masks.recurrent[layer]
        if mask is None:
            seq, h_last, c_last = lstm(seq, initial_state=state, training=True)
        else:
            kernel = lstm.cell.recurrent_kernel
            dropped = tf.convert_to_tensor(kernel.value) * mask
            # The layer reads the dropped kernel in place of its variable; the gradient flows
            # through the product to the variable.
            with keras.StatelessScope(state_mapping=[(kernel, dropped)]):
                seq, h_last, c_last = lstm(seq, initial_state=state, training=True)
        h_out.append(h_last)
        c_out.append(c_last)
    if dropout > 0:
        seq = _dropout(model, tf, seq, "dropout_out", masks.output)
    logits = model.get_layer("logits")(seq)
    return {
        "logits": logits,
        "h_out": tf.stack(h_out, axis=1),
        "c_out": tf.stack(c_out, axis=1),
    }


def _dropout(model: Any, tf: Any, seq: Any, name: str, locked: Any | None) -> Any:
    """`dropout` on [batch, time, units]: the model's Dropout layer (a mask per character), or
    the locked mask [batch, units] (one per stream for the whole window)."""
    if locked is None:
        return model.get_layer(name)(seq, training=True)
    return seq * tf.cast(locked, seq.dtype)[:, None, :]


def embedding_masks(tf: Any, seq: Any, tokens: Any, masks: Masks, batch_major: bool) -> Any:
    """Embedding dropout and locked input dropout on the embedded window: batch-major
    [batch, time, emb], or the fused step's feature-major [time, emb, batch]. The character
    mask is gathered per token, so the embedding's gradient stays one row per token."""
    scale = None
    if masks.embedding is not None:
        per_token = tf.gather(masks.embedding, tokens)  # [batch, time]
        scale = per_token[:, :, None] if batch_major else tf.transpose(per_token)[:, None, :]
    if masks.inputs is not None:
        locked = masks.inputs[:, None, :] if batch_major else tf.transpose(masks.inputs)[None]
        scale = locked if scale is None else scale * locked
    return seq if scale is None else seq * tf.cast(scale, seq.dtype)
