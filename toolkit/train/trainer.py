"""The model, its optimizer and the compiled step functions of one run, on one or many workers.

One process: `train_step` is a tf.function of the forward pass, the loss, clipped gradients and
an Adam update. Several workers (tf.distribute.MultiWorkerMirroredStrategy, see
train/distributed.py): the same step runs inside `strategy.run` on each worker's share of
the batch, and the gradients are summed across workers before they are clipped, so that the
update equals the one-process update on the whole batch (tested: tests/test_distributed.py).
"""

from __future__ import annotations

import contextlib
import math
import platform
import time
from typing import Any

import numpy as np

from toolkit import __version__
from toolkit.config import ModelConfig, TrainConfig
from toolkit.machine import library_versions
from toolkit.train import regularise
from toolkit.train.cold_start import ColdStart
from toolkit.train.cold_start import measure as measure_cold_start
from toolkit.train.regularise import Masks, Regularisers
from toolkit.vocabulary import Vocabulary

FUSED_CHUNK = 64  # steps of the fused validation pass's unrolled windows


def zero_state(config: ModelConfig, batch: int) -> tuple[np.ndarray, np.ndarray]:
    """Zero LSTM state in the Keras model's layout, [batch, layers, units]."""
    shape = (batch, config.layers, config.units)
    return np.zeros(shape, np.float32), np.zeros(shape, np.float32)


def learning_rate_at(config: TrainConfig, step: int, progress: float) -> float:
    """Linear warm-up, then cosine decay to min_lr_ratio over the budget (steps or time)."""
    warm = min(1.0, (step + 1) / max(1, config.warmup_steps))
    p = min(1.0, max(0.0, progress))
    cosine = config.min_lr_ratio + (1 - config.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * p))
    return config.learning_rate * warm * cosine


class Trainer:
    """Owns the model, optimizer and compiled step functions for one run.

    `strategy` is None for one process, or a MultiWorkerMirroredStrategy; `rows` is this
    worker's share of the batch (all of it for one process).
    """

    def __init__(self, config: TrainConfig, vocab_size: int, strategy: Any = None) -> None:
        import keras
        import tensorflow as tf

        from toolkit.config import resolve_precision
        from toolkit.train.model import build_model

        keras.utils.set_random_seed(config.seed)
        self.config = config
        self.strategy = strategy
        self.model_config = config.model_config(vocab_size)
        self.precision = resolve_precision(config.precision)
        policy = "mixed_bfloat16" if self.precision == "bf16" else "float32"
        with strategy.scope() if strategy is not None else contextlib.nullcontext():
            self.model = build_model(self.model_config, policy)
            self.optimizer = keras.optimizers.Adam(
                learning_rate=config.learning_rate,
                weight_decay=config.weight_decay or None,
                use_ema=config.ema_decay > 0,
                ema_momentum=config.ema_decay or 0.99,
            )
            if config.weight_decay:
                self.optimizer.exclude_from_weight_decay(var_names=["bias"])
            self.optimizer.build(self.model.trainable_variables)
        # Validation, samples and cold-start figures use a plain float32 model, like every
        # exported graph (and, on a worker, outside the strategy: no collectives in them).
        # With an average of the weights, that model holds the average.
        if policy == "float32" and strategy is None and not config.ema_decay:
            self.eval_model = self.model
        else:
            self.eval_model = build_model(self.model_config)
        model, optimizer, clip = self.model, self.optimizer, config.clip_norm
        variables = model.trainable_variables
        # float32: the hand-written LSTM of train/fused_lstm.py, the same function and
        # gradients as the Keras model's loop, faster on an AVX2 CPU
        # (benchmarks/reports/train_throughput.md). bf16 keeps the Keras loop.
        self.fused = config.fused_lstm and policy == "float32"
        self.forward = self._fused_forward if self.fused else self._keras_forward
        self.regularisers = Regularisers.of(config)

        if strategy is None:
            forward = self.forward

            @tf.function(jit_compile=config.jit_compile, autograph=False)
            def train_step(x: Any, y: Any, h: Any, c: Any) -> Any:
                with tf.GradientTape() as tape:
                    out = forward(x, h, c)
                    loss = tf.reduce_mean(
                        tf.nn.sparse_softmax_cross_entropy_with_logits(
                            labels=y, logits=out["logits"]
                        )
                    )
                grads = tape.gradient(loss, variables)
                grads, _ = tf.clip_by_global_norm(grads, clip)
                optimizer.apply_gradients(zip(grads, variables, strict=True))
                # The carried state stays float32 between windows, whatever the precision.
                return loss, tf.cast(out["h_out"], tf.float32), tf.cast(out["c_out"], tf.float32)

            self.train_step = train_step
        else:
            self.train_step = self._distributed_step(tf, strategy)
            self._collectives(tf, strategy)

        eval_model = self.eval_model

        @tf.function(reduce_retracing=True, autograph=False)
        def eval_step(x: Any, y: Any, h: Any, c: Any) -> Any:
            out = eval_model({"tokens": x, "h": h, "c": c}, training=False)
            total = tf.reduce_sum(
                tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=out["logits"])
            )
            return total, out["h_out"], out["c_out"]

        self.eval_step = eval_step
        # The carried validation pass with the fused LSTM too (float32, no dropout): 2x the
        # characters per second of Keras's loop at 16 streams. Its windows are FUSED_CHUNK
        # steps (unrolled); a shorter last one runs through eval_step.
        self.fused_eval_step: Any = None
        if config.fused_lstm:
            from toolkit.train import fused_lstm

            layers = self.model_config.layers

            @tf.function(autograph=False)
            def fused_eval_step(x: Any, y: Any, h: Any, c: Any) -> Any:
                logits, h_out, c_out = fused_lstm.forward(eval_model, layers, 0.0, x, h, c)
                total = tf.reduce_sum(
                    tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits)
                )
                return total, h_out, c_out

            self.fused_eval_step = fused_eval_step

    def _distributed_step(self, tf: Any, strategy: Any) -> Any:
        model, optimizer, clip = self.model, self.optimizer, self.config.clip_norm
        variables = model.trainable_variables
        global_tokens = float(self.config.batch_size * self.config.seq_length)
        # The gradients are summed below, before clipping (as one process clips the whole
        # batch's gradient); Keras would sum them again inside apply_gradients.
        optimizer._all_reduce_sum_gradients = lambda grads_and_vars: grads_and_vars
        sum_op = tf.distribute.ReduceOp.SUM

        forward = self.forward

        def replica_step(x: Any, y: Any, h: Any, c: Any) -> Any:
            with tf.GradientTape() as tape:
                out = forward(x, h, c)
                # This worker's share of the whole batch's mean: the shares sum to the mean.
                loss = (
                    tf.reduce_sum(
                        tf.nn.sparse_softmax_cross_entropy_with_logits(
                            labels=y, logits=out["logits"]
                        )
                    )
                    / global_tokens
                )
            grads = tape.gradient(loss, variables)
            context = tf.distribute.get_replica_context()
            grads = context.all_reduce(sum_op, grads)
            loss = context.all_reduce(sum_op, loss)
            grads, _ = tf.clip_by_global_norm(grads, clip)
            optimizer.apply_gradients(zip(grads, variables, strict=True))
            return loss, tf.cast(out["h_out"], tf.float32), tf.cast(out["c_out"], tf.float32)

        @tf.function(autograph=False)
        def train_step(x: Any, y: Any, h: Any, c: Any) -> Any:
            results = strategy.run(replica_step, args=(x, y, h, c))
            # One replica per worker: its own results are the local ones.
            return tuple(strategy.experimental_local_results(r)[0] for r in results)

        return train_step

    def masks(self, x: Any) -> Masks:
        """This optimiser step's regularisation masks (train/regularise.py)."""
        import tensorflow as tf

        seed = tf.stack(
            [tf.constant(self.config.seed, tf.int64), tf.cast(self.optimizer.iterations, tf.int64)]
        )
        return regularise.draw(self.regularisers, self.model_config, tf.shape(x)[0], seed)

    def _keras_forward(self, x: Any, h: Any, c: Any, masks: Masks | None = None) -> Any:
        cfg = self.model_config
        masks = masks or self.masks(x)
        return regularise.keras_forward(self.model, cfg.layers, cfg.dropout, masks, x, h, c)

    def _fused_forward(self, x: Any, h: Any, c: Any, masks: Masks | None = None) -> Any:
        from toolkit.train import fused_lstm

        cfg = self.model_config
        masks = masks or self.masks(x)
        logits, h_out, c_out = fused_lstm.forward(
            self.model, cfg.layers, cfg.dropout, x, h, c, masks
        )
        return {"logits": logits, "h_out": h_out, "c_out": c_out}

    # ----------------------------------------------------------------- across workers

    def agree(self, *flags: bool) -> tuple[bool, ...]:
        """True where any worker says True (a sum > 0): every worker takes the same branch."""
        if self.strategy is None:
            return flags
        import tensorflow as tf

        values = self._agree(tf.constant([1.0 if f else 0.0 for f in flags]))
        return tuple(bool(v > 0) for v in values.numpy())

    def shared_clock(self, seconds: float) -> float:
        """The workers' mean training time: one clock for the learning-rate schedule and the
        budget on every worker (with each worker's own, their learning rates would differ and
        their weights drift apart)."""
        if self.strategy is None:
            return seconds
        import tensorflow as tf

        total = self._agree(tf.constant([seconds], dtype=tf.float64))
        return float(total.numpy()[0]) / self.strategy.num_replicas_in_sync

    def gather_rows(self, x: Any) -> np.ndarray | None:
        """The whole batch's rows of a per-worker tensor (for checkpoints), in worker order."""
        if x is None:
            return None
        if self.strategy is None:
            return np.asarray(x)
        return np.asarray(self._gather(x))

    def _collectives(self, tf: Any, strategy: Any) -> None:
        def per_worker(value: Any) -> Any:  # this worker's value as the strategy's input
            return strategy.experimental_distribute_values_from_function(lambda _: value)

        # Compiled: eagerly, every call would start a thread pool of its own.
        @tf.function(autograph=False)
        def agree(flags: Any) -> Any:
            return strategy.reduce(tf.distribute.ReduceOp.SUM, per_worker(flags), axis=None)

        @tf.function(autograph=False, reduce_retracing=True)
        def gather(x: Any) -> Any:
            return strategy.gather(per_worker(x), axis=0)

        self._agree, self._gather = agree, gather

    def eval_model_synced(self) -> Any:
        """The float32 model with the current weights (what model.keras holds)."""
        self.sync_eval_model()
        return self.eval_model

    def sync_eval_model(self) -> None:
        if self.eval_model is self.model:
            return
        self.eval_model.set_weights(self.model.get_weights())
        if self.config.ema_decay:  # the average in place of the trained weights
            averages = self.optimizer._model_variables_moving_average
            for target, average in zip(self.eval_model.trainable_variables, averages, strict=True):
                target.assign(average)

    def set_learning_rate(self, value: float) -> None:
        self.optimizer.learning_rate.assign(value)

    def eval_chunk(self) -> int:
        return FUSED_CHUNK if self.fused_eval_step is not None else 256

    def evaluate(self, ids: np.ndarray, streams: int = 16) -> float:
        """Mean loss in nats over the whole text, carrying state through contiguous streams."""
        self.sync_eval_model()
        streams = max(1, min(streams, (len(ids) - 1) // 2))
        stream_len = (len(ids) - 1) // streams
        starts = np.arange(streams)[:, None] * stream_len
        h, c = zero_state(self.model_config, streams)
        total, count = 0.0, 0
        chunk = self.eval_chunk()
        for start in range(0, stream_len, chunk):
            # Sliced per chunk: a memory-mapped validation split is never read whole.
            cols = np.arange(start, min(start + chunk, stream_len) + 1)
            window = np.asarray(ids[starts + cols], dtype=np.int32)
            x, y = window[:, :-1], window[:, 1:]
            full = self.fused_eval_step is not None and x.shape[1] == FUSED_CHUNK
            loss_sum, h, c = (self.fused_eval_step if full else self.eval_step)(x, y, h, c)
            total += float(loss_sum)
            count += y.size
        return total / max(1, count)

    def cold_start(
        self, vocab: Vocabulary, val_ids: np.ndarray, prompts: list[str], words: set[str]
    ) -> ColdStart:
        """Zero-state quality of the current weights (numpy step: no dropout, no TF calls)."""
        cfg = self.model_config
        return measure_cold_start(
            self._numpy_backend(), cfg.layers, cfg.units, list(vocab.chars), val_ids, prompts, words
        )

    def _numpy_backend(self) -> Any:
        from toolkit.runtime.backends.numpy import NumpyBackend
        from toolkit.runtime.lstm import fold_weights
        from toolkit.train.model import lstm_weights

        cfg = self.model_config
        self.sync_eval_model()
        weights = fold_weights(lstm_weights(self.eval_model, cfg), cfg.layers)
        return NumpyBackend(weights, cfg.layers)

    def probe_validation_s(
        self, val_ids: np.ndarray, prompts: list[str], streams: int = 16
    ) -> float:
        """About how long one validation takes here, before the first one: a chunk of the
        carried pass timed (after one that traces it) and scaled to the whole split, plus a few
        cold-start steps timed and scaled (train/cold_start.estimate_seconds)."""
        from toolkit.train.cold_start import estimate_seconds

        streams = max(1, min(streams, (len(val_ids) - 1) // 2))
        chunk = self.eval_chunk()
        probe = val_ids[: streams * chunk + 1]
        self.evaluate(probe, streams)  # traces the eval step, as the first validation would
        started = time.perf_counter()
        self.evaluate(probe, streams)
        one_chunk = time.perf_counter() - started
        chunks = math.ceil(((len(val_ids) - 1) // streams) / chunk)
        cfg = self.model_config
        cold = estimate_seconds(self._numpy_backend(), cfg.layers, cfg.units, len(prompts))
        return one_chunk * chunks + cold

    def sample(self, vocab: Vocabulary, prompt: str, length: int, seed: int) -> str:
        """A short sample for the per-epoch log: the runtime's sampler on the Keras model."""
        from toolkit.runtime.backends.keras import KerasBackend
        from toolkit.runtime.generator import Generator

        self.sync_eval_model()
        backend = KerasBackend(self.eval_model)
        generator = Generator(backend, vocab, self.model_config, "keras", "fp32")
        return prompt + generator.generate(prompt, length, temperature=0.8, seed=seed).texts[0]


def environment() -> dict[str, Any]:
    return {
        "toolkit": __version__,
        **library_versions(("tensorflow", "keras", "numpy")),
        "python": platform.python_version(),
        "machine": platform.machine(),
    }
