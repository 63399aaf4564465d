"""The recurrence's regularisers (toolkit/train/regularise.py) and the average of the weights:
the fused step's hand-written backward against TensorFlow's gradients with each of them, what
each mask is, and that none of them reaches validation or the exported weights."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from conftest import random_window, small_lstm_config

from toolkit.config import preset
from toolkit.errors import UsageError

LEVERS = {
    "weight_drop": {"weight_drop": 0.4},
    "input_dropout": {"input_dropout": 0.3},
    "embedding_dropout": {"embedding_dropout": 0.3},
    "locked_dropout": {"dropout": 0.3, "locked_dropout": True},
    "all": {
        "dropout": 0.3,
        "locked_dropout": True,
        "weight_drop": 0.4,
        "input_dropout": 0.3,
        "embedding_dropout": 0.3,
    },
}


def _loss_and_grads(tf, trainer, forward, inputs, masks):
    x, y, h, c = inputs
    with tf.GradientTape() as tape:
        out = forward(x, h, c, masks)
        loss = tf.reduce_mean(
            tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=out["logits"])
        )
    return out, loss, tape.gradient(loss, trainer.model.trainable_variables)


@pytest.mark.parametrize("lever", list(LEVERS))
def test_fused_gradients_match_tensorflow_with_each_regulariser(lever: str) -> None:
    """The same masks on both paths: Keras's LSTM loop differentiated by TensorFlow, and the
    fused step's hand-written backward, agree; and the masks change the loss (they are used)."""
    import tensorflow as tf

    from toolkit.train.regularise import Masks
    from toolkit.train.trainer import Trainer

    config = small_lstm_config(**LEVERS[lever])
    trainer = Trainer(config, vocab_size=20)
    assert trainer.fused
    inputs = tuple(tf.constant(a) for a in random_window(config))
    masks = trainer.masks(inputs[0])
    keras_out, _, keras_grads = _loss_and_grads(tf, trainer, trainer._keras_forward, inputs, masks)
    fused_out, fused_loss, fused_grads = _loss_and_grads(
        tf, trainer, trainer._fused_forward, inputs, masks
    )
    for key in ("logits", "h_out", "c_out"):
        np.testing.assert_allclose(fused_out[key], keras_out[key], atol=1e-5, err_msg=key)
    for var, a, b in zip(trainer.model.trainable_variables, keras_grads, fused_grads, strict=True):
        assert isinstance(b, tf.IndexedSlices) == isinstance(a, tf.IndexedSlices), var.path
        np.testing.assert_allclose(
            tf.convert_to_tensor(b), tf.convert_to_tensor(a), atol=1e-6, err_msg=var.path
        )
    # Without the masks the loss is another (a freshly initialised model's loss moves little:
    # float32 rounding is ~1e-7 here).
    _, plain_loss, _ = _loss_and_grads(
        tf, trainer, trainer._fused_forward, inputs, Masks.none(config.layers)
    )
    assert abs(float(plain_loss) - float(fused_loss)) > 5e-6


def test_weight_drop_is_dropconnect_on_the_recurrent_kernel() -> None:
    """The fused step with weight drop computes the model whose recurrent kernels are the
    masked ones; the mask is one per optimiser step, scaled by 1 / (1 - rate)."""
    import tensorflow as tf

    from toolkit.train.regularise import Masks
    from toolkit.train.trainer import Trainer

    config = small_lstm_config(weight_drop=0.4)
    trainer = Trainer(config, vocab_size=20)
    x, _, h, c = (tf.constant(a) for a in random_window(config))
    masks = trainer.masks(x)
    mask = masks.recurrent[0].numpy()
    assert mask.shape == (24, 96)
    np.testing.assert_allclose(np.unique(mask), [0.0, 1 / 0.6], rtol=1e-6)
    assert 0.25 < (mask == 0).mean() < 0.55
    np.testing.assert_array_equal(trainer.masks(x).recurrent[0], mask)  # same step, same mask
    assert not np.array_equal(masks.recurrent[0], masks.recurrent[1])  # each layer its own
    dropped = trainer._fused_forward(x, h, c, masks)["logits"]
    for layer in range(config.layers):
        kernel = trainer.model.get_layer(f"lstm_{layer}").cell.recurrent_kernel
        kernel.assign(kernel.numpy() * masks.recurrent[layer].numpy())
    by_hand = trainer._fused_forward(x, h, c, Masks.none(config.layers))["logits"]
    np.testing.assert_allclose(dropped, by_hand, atol=1e-5)
    trainer.optimizer.iterations.assign(1)  # the next optimiser step draws a new mask
    assert not np.array_equal(trainer.masks(x).recurrent[0], mask)


def test_locked_masks_are_one_per_stream_and_embedding_dropout_drops_characters() -> None:
    import tensorflow as tf

    from toolkit.train.trainer import Trainer

    config = small_lstm_config(**LEVERS["all"])
    trainer = Trainer(config, vocab_size=20)
    x = tf.constant(random_window(config)[0])
    masks = trainer.masks(x)
    assert masks.inputs.shape == (6, 8) and masks.output.shape == (6, 24)
    assert masks.between[0] is None and masks.between[1].shape == (6, 24)
    assert masks.embedding.shape == (20,)
    # A dropped character is zero wherever it occurs in the window (input dropout aside).
    seq = trainer.model.get_layer("embedding")(x)
    from toolkit.train.regularise import Masks, embedding_masks

    only_chars = Masks(recurrent=[None, None], embedding=masks.embedding)
    out = embedding_masks(tf, seq, x, only_chars, batch_major=True).numpy()
    dropped = masks.embedding.numpy()[x.numpy()] == 0
    assert dropped.any() and (~dropped).any()
    assert np.all(out[dropped] == 0) and np.all(np.abs(out[~dropped]).sum(-1) > 0)


def test_regularisers_are_off_by_default_and_checked() -> None:
    base = preset("tiny")
    assert (base.weight_drop, base.input_dropout, base.embedding_dropout) == (0, 0, 0)
    assert not base.locked_dropout and base.ema_decay == 0
    for field, message in [
        ("weight_drop", "weight-drop"),
        ("input_dropout", "input-dropout"),
        ("embedding_dropout", "embedding-dropout"),
        ("ema_decay", "ema-decay"),
    ]:
        with pytest.raises(UsageError, match=message):
            dataclasses.replace(base, **{field: 1.0}).validate()


def test_validation_does_not_see_the_regularisers() -> None:
    """Dropouts vanish at inference: the same weights validate to the same loss with and
    without every regulariser (fused and Keras validation passes alike)."""
    from toolkit.train.trainer import Trainer

    ids = np.random.default_rng(3).integers(0, 20, 16 * 80 + 1).astype(np.int32)
    plain = Trainer(small_lstm_config(dropout=0.3), vocab_size=20)
    regular = Trainer(small_lstm_config(**LEVERS["all"]), vocab_size=20)
    regular.model.set_weights(plain.model.get_weights())
    assert regular.evaluate(ids) == pytest.approx(plain.evaluate(ids), abs=1e-6)


def test_bf16_keras_path_trains_with_every_regulariser() -> None:
    """bf16 keeps Keras's loop: the same masks there give the float32 loss within bf16's
    rounding, and a step updates the weights."""
    import tensorflow as tf

    from toolkit.train.trainer import Trainer

    config = small_lstm_config(**LEVERS["all"])
    fp32 = Trainer(config, vocab_size=20)
    bf16 = Trainer(dataclasses.replace(config, precision="bf16"), vocab_size=20)
    assert not bf16.fused
    bf16.model.set_weights(fp32.model.get_weights())
    inputs = tuple(tf.constant(a) for a in random_window(config))
    masks = fp32.masks(inputs[0])
    _, loss32, _ = _loss_and_grads(tf, fp32, fp32._fused_forward, inputs, masks)
    _, loss16, grads = _loss_and_grads(tf, bf16, bf16._keras_forward, inputs, masks)
    assert float(loss16) == pytest.approx(float(loss32), abs=2e-2)
    assert all(g is not None for g in grads)
    before = bf16.model.get_weights()
    bf16.train_step(*inputs)
    assert any(
        not np.array_equal(a, b) for a, b in zip(before, bf16.model.get_weights(), strict=True)
    )


def test_ema_is_what_validation_and_model_keras_use_and_survives_a_resume(
    tmp_path: Path,
) -> None:
    from toolkit.train.run_dir import load_checkpoint, save_checkpoint
    from toolkit.train.trainer import Trainer

    decay = 0.9
    config = small_lstm_config(ema_decay=decay, weight_drop=0.3, learning_rate=1e-2)
    trainer = Trainer(config, vocab_size=20)
    x, y, h, c = random_window(config)
    average = None
    for _ in range(3):
        trainer.train_step(x, y, h, c)
        weights = [np.asarray(v) for v in trainer.model.trainable_variables]
        # Keras's average: the first step copies the weights, then decays.
        average = (
            weights
            if average is None
            else [decay * a + (1 - decay) * w for a, w in zip(average, weights, strict=True)]
        )
    eval_weights = [np.asarray(v) for v in trainer.eval_model_synced().trainable_variables]
    for got, want in zip(eval_weights, average, strict=True):
        np.testing.assert_allclose(got, want, atol=1e-6)
    assert any(not np.allclose(a, w) for a, w in zip(eval_weights, weights, strict=True))
    ids = np.random.default_rng(3).integers(0, 20, 16 * 80 + 1).astype(np.int32)
    val = trainer.evaluate(ids)
    # A checkpoint keeps the trained weights and the average: a resumed run validates the same.
    save_checkpoint(tmp_path / "last.npz", trainer.model, trainer.optimizer, {"step": 3})
    resumed = Trainer(config, vocab_size=20)
    load_checkpoint(tmp_path / "last.npz", resumed.model, resumed.optimizer)
    assert resumed.evaluate(ids) == pytest.approx(val, abs=1e-6)
    for a, b in zip(resumed.model.get_weights(), trainer.model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_cli_options_reach_the_config_and_bad_values_are_one_line(tmp_path: Path, cli) -> None:
    out = cli("train", "--preset", "tiny", "--weight-drop", "1.5", "--out", str(tmp_path / "run"))
    assert out.returncode != 0
    assert "weight-drop must be in [0, 1)" in out.stderr + out.stdout
    assert "Traceback" not in out.stderr


def test_every_mask_of_a_step_is_drawn_on_its_own() -> None:
    """Deep models too: no two masks of a step share their random numbers."""
    import tensorflow as tf

    from toolkit.config import ModelConfig
    from toolkit.train.regularise import Regularisers, draw

    model = ModelConfig(vocab_size=64, embedding_dim=64, units=16, layers=6, dropout=0.5)
    reg = Regularisers(
        weight_drop=0.5, input_dropout=0.5, embedding_dropout=0.5, locked_dropout=True
    )
    masks = draw(reg, model, 64, tf.constant([1337, 7], tf.int64))
    flat = [m.numpy().ravel()[:64] for m in masks.recurrent]
    flat += [m.numpy().ravel()[:64] for m in masks.between[1:]]
    flat += [masks.output.numpy().ravel()[:64], masks.inputs.numpy().ravel()[:64]]
    flat += [masks.embedding.numpy()]
    for i, a in enumerate(flat):
        for b in flat[i + 1 :]:
            assert not np.array_equal(a, b)
