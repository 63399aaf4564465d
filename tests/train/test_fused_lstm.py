"""The fused float32 training step (toolkit/train/fused_lstm.py) computes what the Keras model
does."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from conftest import random_window, small_lstm_config


def test_forward_and_gradients_match_keras() -> None:
    import tensorflow as tf

    from toolkit.train.trainer import Trainer

    config = small_lstm_config(dropout=0.0)
    trainer = Trainer(config, vocab_size=20)
    assert trainer.fused
    x, y, h, c = (tf.constant(a) for a in random_window(config))
    variables = trainer.model.trainable_variables
    results = []
    for forward in (trainer._keras_forward, trainer._fused_forward):
        with tf.GradientTape() as tape:
            out = forward(x, h, c)
            loss = tf.reduce_mean(
                tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=out["logits"])
            )
        grads = tape.gradient(loss, variables)
        results.append((out, grads))
    (keras_out, keras_grads), (fused_out, fused_grads) = results
    for key in ("logits", "h_out", "c_out"):
        np.testing.assert_allclose(fused_out[key], keras_out[key], atol=1e-5, err_msg=key)
    for var, a, b in zip(variables, keras_grads, fused_grads, strict=True):
        # The embedding's gradient stays one row per token: the global norm that clipping
        # uses is Keras's (a dense gradient would sum the rows first, a different norm).
        assert isinstance(b, tf.IndexedSlices) == isinstance(a, tf.IndexedSlices), var.path
        np.testing.assert_allclose(
            tf.convert_to_tensor(b), tf.convert_to_tensor(a), atol=1e-6, err_msg=var.path
        )
        assert float(tf.linalg.global_norm([b])) == pytest.approx(
            float(tf.linalg.global_norm([a])), rel=1e-5
        )


@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_training_steps_match_the_keras_step(dropout: float) -> None:
    """Same seed, same batches: the fused and the Keras step give the same losses, dropout
    masks included (the model's own Dropout layers, called in the same order)."""
    from toolkit.train.trainer import Trainer

    config = small_lstm_config(dropout=dropout, weight_decay=0.1, learning_rate=1e-2)
    fused = Trainer(config, vocab_size=20)
    keras = Trainer(dataclasses.replace(config, fused_lstm=False), vocab_size=20)
    assert fused.fused and not keras.fused
    keras.model.set_weights(fused.model.get_weights())
    states = [random_window(config)[2:], random_window(config)[2:]]
    for step in range(4):
        x, y, _, _ = random_window(config, seed=step + 1)
        losses = []
        for k, trainer in enumerate((fused, keras)):
            loss, h, c = trainer.train_step(x, y, *states[k])
            states[k] = (h.numpy(), c.numpy())
            losses.append(float(loss))
        assert losses[0] == pytest.approx(losses[1], abs=1e-4), step
    np.testing.assert_allclose(states[0][0], states[1][0], atol=1e-4)
    for a, b in zip(fused.model.get_weights(), keras.model.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-4)


def test_bf16_keeps_the_keras_loop() -> None:
    from toolkit.train.trainer import Trainer

    assert not Trainer(small_lstm_config(precision="bf16"), vocab_size=20).fused
    assert not Trainer(small_lstm_config(fused_lstm=False), vocab_size=20).fused


def test_fused_validation_pass_matches_keras() -> None:
    """The carried validation pass: 64-step fused windows (a shorter last one through Keras's
    eval step) give the loss of Keras's 256-step windows."""
    from toolkit.train.trainer import FUSED_CHUNK, Trainer

    config = small_lstm_config(dropout=0.2)
    trainer = Trainer(config, vocab_size=20)
    ids = np.random.default_rng(3).integers(0, 20, 16 * 150 + 1).astype(np.int32)
    assert trainer.eval_chunk() == FUSED_CHUNK
    fused = trainer.evaluate(ids)
    trainer.fused_eval_step = None  # Keras's own LSTM loop
    assert trainer.eval_chunk() == 256
    assert fused == pytest.approx(trainer.evaluate(ids), abs=1e-5)
