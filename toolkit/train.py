"""Training: stateful truncated BPTT over the corpus, checkpoints, resume, metrics.

Read top to bottom: the run directory, the batches, the step functions, then `train`.
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
import os
import platform
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from toolkit import __version__
from toolkit.cold_start import ColdStart, common_line_starts, corpus_words
from toolkit.cold_start import measure as measure_cold_start
from toolkit.config import TrainConfig
from toolkit.curves import CURVE_PNG, TENSORBOARD_DIR, TensorBoardLog, write_curve
from toolkit.data import (
    Vocabulary,
    atomic_write_bytes,
    atomic_write_text,
    load_corpus,
    split_corpus,
)
from toolkit.errors import DataError, RunDirError, storage_error

LN2 = math.log(2.0)
RUN_FILES = ("run.json", "config.json", "vocab.json", "model.keras")
# Options that change the model or the data order; a resumed run must keep them.
RESUME_LOCKED = (
    "embedding_dim",
    "units",
    "layers",
    "dropout",
    "seq_length",
    "batch_size",
    "val_fraction",
    "seed",
    "stateful",
)


def zero_state(config: Any, batch: int) -> tuple[np.ndarray, np.ndarray]:
    """Zero LSTM state in the Keras model's layout, [batch, layers, units]."""
    shape = (batch, config.layers, config.units)
    return np.zeros(shape, np.float32), np.zeros(shape, np.float32)


def bits_per_char(nats: float) -> float:
    return nats / LN2


# --------------------------------------------------------------------------- run directory


def check_run_dir(run_dir: Path) -> dict[str, Any]:
    """Everything export and generate need must be there; returns run.json."""
    if not run_dir.is_dir():
        raise RunDirError(f"run directory not found: {run_dir}")
    missing = [name for name in RUN_FILES if not (run_dir / name).exists()]
    if missing:
        raise RunDirError(f"run directory {run_dir} is incomplete: missing {', '.join(missing)}")
    try:
        info: dict[str, Any] = json.loads((run_dir / "run.json").read_text())
    except json.JSONDecodeError:
        raise RunDirError(f"run directory {run_dir} has an unreadable run.json") from None
    return info


def load_run_config(run_dir: Path) -> TrainConfig:
    return TrainConfig.from_dict(json.loads((run_dir / "config.json").read_text()))


def _prepare_fresh_run_dir(run_dir: Path, force: bool) -> None:
    if run_dir.exists() and any(run_dir.iterdir()):
        if not force:
            raise RunDirError(
                f"run directory {run_dir} already exists; use --resume to continue it "
                "or --force to start over"
            )
        if not (run_dir / "run.json").exists() and not (run_dir / "config.json").exists():
            # Refuse to wipe a folder that is not one of ours, even with --force.
            raise RunDirError(f"{run_dir} exists and is not a run directory; not overwriting")
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)


def resolve_resume_config(saved: TrainConfig, overrides: dict[str, Any]) -> TrainConfig:
    """Resuming keeps the saved config; only the budget (epochs, minutes, ...) may change."""
    clashes = [
        f"{key}={overrides[key]!r} (run has {getattr(saved, key)!r})"
        for key in RESUME_LOCKED
        if key in overrides and overrides[key] != getattr(saved, key)
    ]
    if clashes:
        raise RunDirError("cannot resume with an incompatible config: " + ", ".join(clashes))
    allowed = {k: v for k, v in overrides.items() if k not in RESUME_LOCKED and k != "preset"}
    return dataclasses.replace(saved, **allowed)


# --------------------------------------------------------------------------- batches


def epoch_batches(
    ids: np.ndarray, config: TrainConfig, epoch: int
) -> tuple[np.ndarray, np.ndarray]:
    """All (x, y) windows of one epoch, shaped [n_batches, batch, seq_length].

    Stateful (default): the text is cut into `batch` contiguous streams and batch k holds the
    k-th window of every stream, so the LSTM state carries from batch k to k+1. A fresh random
    offset each epoch moves the window borders. Non-stateful: windows are shuffled.
    """
    rng = np.random.default_rng([config.seed, epoch])
    t, b = config.seq_length, config.batch_size
    offset = int(rng.integers(0, t))
    usable = ids[offset:]
    if config.stateful:
        stream_len = (len(usable) - 1) // b
        n_batches = stream_len // t
        if n_batches < 1:
            raise DataError(
                f"training text too short: {len(ids)} characters give no batch of "
                f"{b} x {t}; use a smaller --batch-size or --seq-length"
            )
        span = n_batches * t
        starts = np.arange(b) * stream_len
        x = np.stack([usable[s : s + span] for s in starts])  # [b, span]
        y = np.stack([usable[s + 1 : s + span + 1] for s in starts])
        x = x.reshape(b, n_batches, t).transpose(1, 0, 2)
        y = y.reshape(b, n_batches, t).transpose(1, 0, 2)
        return np.ascontiguousarray(x), np.ascontiguousarray(y)
    n_windows = (len(usable) - 1) // t
    n_batches = n_windows // b
    if n_batches < 1:
        raise DataError(
            f"training text too short: {len(ids)} characters give no batch of {b} x {t}"
        )
    x = usable[: n_windows * t].reshape(n_windows, t)
    y = usable[1 : n_windows * t + 1].reshape(n_windows, t)
    order = rng.permutation(n_windows)[: n_batches * b]
    return x[order].reshape(n_batches, b, t), y[order].reshape(n_batches, b, t)


def learning_rate_at(config: TrainConfig, step: int, progress: float) -> float:
    """Linear warm-up, then cosine decay to min_lr_ratio over the budget (steps or time)."""
    warm = min(1.0, (step + 1) / max(1, config.warmup_steps))
    p = min(1.0, max(0.0, progress))
    cosine = config.min_lr_ratio + (1 - config.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * p))
    return config.learning_rate * warm * cosine


# --------------------------------------------------------------------------- checkpoints


def _save_checkpoint(path: Path, model: Any, optimizer: Any, progress: dict[str, Any]) -> None:
    arrays: dict[str, np.ndarray] = {}
    for i, w in enumerate(model.get_weights()):
        arrays[f"w{i}"] = w
    for i, v in enumerate(optimizer.variables):
        arrays[f"o{i}"] = np.asarray(v)
    for key in ("h", "c"):
        if progress.get(key) is not None:
            arrays[f"state_{key}"] = progress[key]
    meta = {k: v for k, v in progress.items() if k not in ("h", "c")}
    arrays["progress"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)  # type: ignore[arg-type]
    atomic_write_bytes(path, buffer.getvalue())


def _load_checkpoint(path: Path, model: Any, optimizer: Any) -> dict[str, Any]:
    try:
        with np.load(path) as blob:
            n_w = sum(1 for k in blob.files if k.startswith("w"))
            n_o = sum(1 for k in blob.files if k.startswith("o"))
            model.set_weights([blob[f"w{i}"] for i in range(n_w)])
            optimizer.build(model.trainable_variables)
            if n_o != len(optimizer.variables):
                raise RunDirError(f"checkpoint {path} does not match the optimizer")
            for i, var in enumerate(optimizer.variables):
                var.assign(blob[f"o{i}"])
            progress: dict[str, Any] = json.loads(bytes(blob["progress"]).decode())
            progress["h"] = blob["state_h"] if "state_h" in blob.files else None
            progress["c"] = blob["state_c"] if "state_c" in blob.files else None
    except (OSError, ValueError, KeyError) as exc:
        raise RunDirError(f"checkpoint {path} is unreadable: {exc}") from None
    return progress


# --------------------------------------------------------------------------- training


@dataclass
class TrainResult:
    run_dir: Path
    epochs_done: float
    steps: int
    best_val_loss: float
    last_val_loss: float
    elapsed_s: float
    chars_per_sec: float
    interrupted: bool = False


class Trainer:
    """Owns the model, optimizer and compiled step functions for one run."""

    def __init__(self, config: TrainConfig, vocab_size: int) -> None:
        import keras
        import tensorflow as tf

        from toolkit.config import resolve_precision
        from toolkit.model import build_model

        keras.utils.set_random_seed(config.seed)
        self.config = config
        self.model_config = config.model_config(vocab_size)
        self.precision = resolve_precision(config.precision)
        policy = "mixed_bfloat16" if self.precision == "bf16" else "float32"
        self.model = build_model(self.model_config, policy)
        # Validation, samples and cold-start figures use float32, like every exported graph.
        self.eval_model = self.model if policy == "float32" else build_model(self.model_config)
        self.optimizer = keras.optimizers.Adam(learning_rate=config.learning_rate)
        self.optimizer.build(self.model.trainable_variables)
        model, optimizer, clip = self.model, self.optimizer, config.clip_norm

        def loss_fn(y: Any, logits: Any) -> Any:
            return tf.reduce_mean(
                tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits)
            )

        @tf.function(jit_compile=config.jit_compile, autograph=False)
        def train_step(x: Any, y: Any, h: Any, c: Any) -> Any:
            with tf.GradientTape() as tape:
                out = model({"tokens": x, "h": h, "c": c}, training=True)
                loss = loss_fn(y, out["logits"])
            grads = tape.gradient(loss, model.trainable_variables)
            grads, _ = tf.clip_by_global_norm(grads, clip)
            optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))
            # The carried state stays float32 between windows, whatever the compute precision.
            return loss, tf.cast(out["h_out"], tf.float32), tf.cast(out["c_out"], tf.float32)

        eval_model = self.eval_model

        @tf.function(reduce_retracing=True, autograph=False)
        def eval_step(x: Any, y: Any, h: Any, c: Any) -> Any:
            out = eval_model({"tokens": x, "h": h, "c": c}, training=False)
            total = tf.reduce_sum(
                tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=out["logits"])
            )
            return total, out["h_out"], out["c_out"]

        self.train_step = train_step
        self.eval_step = eval_step

    def sync_eval_model(self) -> None:
        if self.eval_model is not self.model:
            self.eval_model.set_weights(self.model.get_weights())

    def set_learning_rate(self, value: float) -> None:
        self.optimizer.learning_rate.assign(value)

    def evaluate(self, ids: np.ndarray, streams: int = 16, chunk: int = 256) -> float:
        """Mean loss in nats over the whole text, carrying state through contiguous streams."""
        self.sync_eval_model()
        streams = max(1, min(streams, (len(ids) - 1) // 2))
        stream_len = (len(ids) - 1) // streams
        x_all = np.stack([ids[i * stream_len : (i + 1) * stream_len] for i in range(streams)])
        y_all = np.stack(
            [ids[i * stream_len + 1 : (i + 1) * stream_len + 1] for i in range(streams)]
        )
        h, c = zero_state(self.model_config, streams)
        total, count = 0.0, 0
        for start in range(0, stream_len, chunk):
            x = x_all[:, start : start + chunk]
            y = y_all[:, start : start + chunk]
            loss_sum, h, c = self.eval_step(x, y, h, c)
            total += float(loss_sum)
            count += y.size
        return total / max(1, count)

    def cold_start(
        self, vocab: Vocabulary, val_ids: np.ndarray, prompts: list[str], words: set[str]
    ) -> ColdStart:
        """Zero-state quality of the current weights (numpy step: no dropout, no TF calls)."""
        from toolkit.model import lstm_weights
        from toolkit.runtime.backends import NumpyBackend, fold_weights

        cfg = self.model_config
        backend = NumpyBackend(fold_weights(lstm_weights(self.model, cfg), cfg.layers), cfg.layers)
        return measure_cold_start(
            backend, cfg.layers, cfg.units, list(vocab.chars), val_ids, prompts, words
        )

    def sample(self, vocab: Vocabulary, prompt: str, length: int, seed: int) -> str:
        """A short sample for the per-epoch log: the runtime's sampler on the Keras model."""
        from toolkit.keras_runtime import KerasBackend
        from toolkit.runtime.generator import Generator

        cfg = self.model_config
        self.sync_eval_model()
        generator = Generator(
            KerasBackend(self.eval_model), list(vocab.chars), cfg.layers, cfg.units, "keras", "fp32"
        )
        return prompt + generator.generate(prompt, length, temperature=0.8, seed=seed).texts[0]


def _environment() -> dict[str, Any]:
    import keras
    import tensorflow as tf

    return {
        "toolkit": __version__,
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
    }


def train(
    config: TrainConfig,
    run_dir: Path,
    data: Path | None = None,
    resume: bool = False,
    force: bool = False,
    overrides: dict[str, Any] | None = None,
    log: Callable[[str], None] = print,
    progress_bar: bool = True,
    command: str | None = None,
) -> TrainResult:
    """Train (or resume) a run. Every file in the run directory is written atomically, and
    no other process may train or export the same directory meanwhile (RunDirLock)."""
    from toolkit.lock import RunDirLock

    with RunDirLock(Path(run_dir), "resume" if resume else "train", log):
        return _train(
            config, Path(run_dir), data, resume, force, overrides, log, progress_bar, command
        )


def _train(
    config: TrainConfig,
    run_dir: Path,
    data: Path | None,
    resume: bool,
    force: bool,
    overrides: dict[str, Any] | None,
    log: Callable[[str], None],
    progress_bar: bool,
    command: str | None,
) -> TrainResult:
    overrides = overrides or {}
    if resume:
        if not (run_dir / "config.json").exists() or not (run_dir / "checkpoints").is_dir():
            raise RunDirError(f"nothing to resume in {run_dir}: no config or checkpoints")
        config = resolve_resume_config(load_run_config(run_dir), overrides)
        info = json.loads((run_dir / "run.json").read_text())
        data = Path(info["data"]) if info.get("data") else None
        if force:
            raise RunDirError("--resume and --force do not go together")
    config.validate()

    text = load_corpus(data)
    vocab = Vocabulary.from_text(text)
    if resume:
        saved_vocab = Vocabulary.load(run_dir / "vocab.json")
        if saved_vocab != vocab:
            raise RunDirError(f"the corpus changed since {run_dir} was created; cannot resume")
    ids = vocab.encode(text)
    train_ids, val_ids = split_corpus(ids, config.val_fraction)
    span = config.seq_length + 1
    if len(val_ids) < span or len(train_ids) < config.batch_size * span:
        raise DataError(
            f"corpus too short: {len(text)} characters; need at least "
            f"{int(config.batch_size * span / (1 - config.val_fraction)) + span} "
            f"for batch-size {config.batch_size} and seq-length {config.seq_length}"
        )

    if not resume:
        _prepare_fresh_run_dir(run_dir, force)
        atomic_write_text(run_dir / "config.json", json.dumps(config.to_dict(), indent=2))
        vocab.save(run_dir / "vocab.json")
    ckpt_dir = run_dir / "checkpoints"
    ckpt_dir.mkdir(exist_ok=True)

    trainer = Trainer(config, len(vocab))
    model_config = trainer.model_config
    cold_prompts = common_line_starts(text)  # "ROMEO:", "KING RICHARD III:", ...
    known_words = corpus_words(text)
    tensorboard = TensorBoardLog(run_dir)
    state: dict[str, Any] = {
        "epoch": 0,
        "batch": 0,
        "step": 0,
        "elapsed_s": 0.0,
        "chars_seen": 0,
        "best_val_loss": None,
        "last_val_loss": None,
        "h": None,
        "c": None,
    }
    previous_command = None
    if resume:
        previous_command = json.loads((run_dir / "run.json").read_text()).get("command")
        last = ckpt_dir / "last.npz"
        if not last.exists():
            raise RunDirError(f"nothing to resume in {run_dir}: no checkpoints/last.npz")
        state.update(_load_checkpoint(last, trainer.model, trainer.optimizer))
        log(
            f"resuming {run_dir} at epoch {state['epoch'] + 1}, batch {state['batch']}, "
            f"step {state['step']}"
        )

    def write_run_json(status: str) -> None:
        info = {
            "name": run_dir.name,
            "status": status,
            "data": str(Path(data).resolve()) if data else None,
            "corpus_chars": len(text),
            "vocab_size": len(vocab),
            "model": dataclasses.asdict(model_config),
            "preset": config.preset,
            "command": command if not resume else previous_command or command,
            "epochs_done": state["epoch"] + state["batch"] / max(1, n_batches),
            "steps": state["step"],
            "elapsed_s": round(state["elapsed_s"], 2),
            "best_val_loss": state["best_val_loss"],
            "best_val_bpc": bits_per_char(state["best_val_loss"])
            if state["best_val_loss"] is not None
            else None,
            "last_val_loss": state["last_val_loss"],
            "cold_start": state.get("cold_start"),
            "files": {
                "config": "config.json",
                "vocab": "vocab.json",
                "model": "model.keras",
                "metrics": "metrics.jsonl",
                "curve": CURVE_PNG,
                "tensorboard": TENSORBOARD_DIR,
                "checkpoints": ["checkpoints/best.npz", "checkpoints/last.npz"],
            },
            "precision": trainer.precision,
            "environment": _environment(),
        }
        atomic_write_text(run_dir / "run.json", json.dumps(info, indent=2))

    def append_metrics(row: dict[str, Any]) -> None:
        with (run_dir / "metrics.jsonl").open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(row) + "\n")

    def save_model_atomically() -> None:
        tmp = run_dir / ".model.keras.tmp.keras"
        try:
            trainer.model.save(tmp)
            tmp.replace(run_dir / "model.keras")
        except OSError as exc:  # a full disk: model.keras stays the previous one
            tmp.unlink(missing_ok=True)
            raise storage_error(exc, run_dir / "model.keras") from None

    budget_s = config.max_minutes * 60 if config.max_minutes else None
    # Tests shorten the mid-epoch checkpoint interval to exercise kill -9 recovery quickly.
    checkpoint_s = float(
        os.environ.get("TOOLKIT_CHECKPOINT_SECONDS", config.checkpoint_minutes * 60)
    )
    n_batches = len(epoch_batches(train_ids, config, 0)[0])
    total_steps = n_batches * config.epochs
    chars_per_step = config.batch_size * config.seq_length
    if not resume:
        write_run_json("training")
        save_model_atomically()  # so the directory is complete from the first second
    log(
        f"corpus: {len(text):,} chars, vocab {len(vocab)}, train {len(train_ids):,} / "
        f"val {len(val_ids):,}; model {model_config.layers}x{model_config.units} "
        f"(emb {model_config.embedding_dim}), {trainer.model.count_params():,} params; "
        f"{n_batches} batches/epoch; {trainer.precision} compute"
    )

    def progress_fraction() -> float:
        by_steps = state["step"] / max(1, total_steps)
        by_time = state["elapsed_s"] / budget_s if budget_s else 0.0
        return max(by_steps, by_time)

    def checkpoint(path: Path, h: Any, c: Any) -> None:
        _save_checkpoint(path, trainer.model, trainer.optimizer, {**state, "h": h, "c": c})

    window: dict[str, Any] = {
        "losses": [],
        "elapsed_s": state["elapsed_s"],
        "chars": state["chars_seen"],
    }

    def record_point(partial: bool, h: Any, c: Any) -> None:
        """Validate, log a metrics row, write best/last checkpoints and run.json."""
        val_loss = trainer.evaluate(val_ids)
        cold = trainer.cold_start(vocab, val_ids, cold_prompts, known_words)
        train_loss = float(np.mean(window["losses"])) if window["losses"] else float("nan")
        seconds = state["elapsed_s"] - window["elapsed_s"]
        chars = state["chars_seen"] - window["chars"]
        window.update(losses=[], elapsed_s=state["elapsed_s"], chars=state["chars_seen"])
        state["last_val_loss"] = val_loss
        improved = state["best_val_loss"] is None or val_loss < state["best_val_loss"]
        if improved:
            state["best_val_loss"] = val_loss
        row = {
            "epoch": round(state["epoch"] + state["batch"] / n_batches, 4),
            "step": state["step"],
            "elapsed_s": round(state["elapsed_s"], 2),
            "train_loss": round(train_loss, 5),
            "train_bpc": round(bits_per_char(train_loss), 5),
            "val_loss": round(val_loss, 5),
            "val_bpc": round(bits_per_char(val_loss), 5),
            "lr": float(trainer.optimizer.learning_rate.numpy()),
            "chars_per_sec": round(chars / max(seconds, 1e-9), 1),
            **cold.to_dict(),
        }
        state["cold_start"] = cold.to_dict()
        append_metrics(row)
        tensorboard.write(row)
        write_curve(iter_metrics(run_dir), run_dir / CURVE_PNG, title=run_dir.name)
        log(
            f"epoch {row['epoch']:.2f}: train {train_loss:.4f} nats ({row['train_bpc']:.3f} bpc),"
            f" val {val_loss:.4f} nats ({row['val_bpc']:.3f} bpc), "
            f"{row['chars_per_sec']:,.0f} chars/s; from zeros at line starts "
            f"{cold.line_start_loss:.4f} nats (+{cold.line_start_loss - val_loss:.3f}), "
            f"{cold.degenerate}/{cold.prompts} degenerate starts{'  *best' if improved else ''}"
        )
        if not partial:  # epoch complete: the next one starts from zero state
            state["epoch"] += 1
            state["batch"] = 0
            h = c = None
        else:
            h, c = np.asarray(h), np.asarray(c)
        if improved:
            checkpoint(ckpt_dir / "best.npz", h, c)
            save_model_atomically()
        checkpoint(ckpt_dir / "last.npz", h, c)
        write_run_json("training")

    import tensorflow as tf

    eval_s = config.eval_minutes * 60 if config.eval_minutes else None
    interrupted = False
    out_of_time = False
    last_ckpt = time.monotonic()
    h = c = None
    try:
        while state["epoch"] < config.epochs and not out_of_time:
            x_all, y_all = epoch_batches(train_ids, config, state["epoch"])
            if state["h"] is not None and state["batch"] > 0 and config.stateful:
                h, c = state["h"], state["c"]
            else:
                h, c = zero_state(model_config, config.batch_size)
            # tf.data feeds the epoch's windows (prefetched while the step runs); a resumed
            # epoch skips the batches its checkpoint already covered.
            batches = iter(
                tf.data.Dataset.from_tensor_slices((x_all, y_all)).skip(state["batch"]).prefetch(2)
            )
            progress = _progress(progress_bar, n_batches, state["epoch"] + 1)
            with progress:
                task = progress.add_task("train", total=n_batches, completed=state["batch"])
                while state["batch"] < n_batches:
                    t0 = time.monotonic()
                    x, y = next(batches)
                    trainer.set_learning_rate(
                        learning_rate_at(config, state["step"], progress_fraction())
                    )
                    if not config.stateful:
                        h, c = zero_state(model_config, config.batch_size)
                    loss, h, c = trainer.train_step(x, y, h, c)
                    if config.reset_prob > 0:  # some streams start the next window from zeros
                        draw = np.random.default_rng([config.seed, state["step"]])
                        keep = draw.random(config.batch_size) >= config.reset_prob
                        mask = tf.constant(keep[:, None, None], dtype=h.dtype)
                        h, c = h * mask, c * mask
                    window["losses"].append(float(loss))
                    state["batch"] += 1
                    state["step"] += 1
                    state["chars_seen"] += chars_per_step
                    state["elapsed_s"] += time.monotonic() - t0
                    progress.update(task, advance=1, description=f"loss {float(loss):.3f}")
                    if budget_s is not None and state["elapsed_s"] >= budget_s:
                        out_of_time = True
                        break
                    if (
                        state["batch"] < n_batches
                        and eval_s is not None
                        and (state["elapsed_s"] - window["elapsed_s"] >= eval_s)
                    ):
                        record_point(True, h, c)
                        last_ckpt = time.monotonic()
                    elif time.monotonic() - last_ckpt > checkpoint_s:
                        checkpoint(ckpt_dir / "last.npz", np.asarray(h), np.asarray(c))
                        last_ckpt = time.monotonic()
            record_point(state["batch"] < n_batches, h, c)
            last_ckpt = time.monotonic()
            if config.sample_every_epoch and config.sample_length > 0:
                sample = trainer.sample(
                    vocab, _sample_prompt(vocab), config.sample_length, state["step"]
                )
                log("sample: " + sample.replace("\n", "\n        "))
    except KeyboardInterrupt:
        interrupted = True
        if h is not None:
            checkpoint(ckpt_dir / "last.npz", np.asarray(h), np.asarray(c))
        write_run_json("interrupted")
        log(f"interrupted; checkpoint saved. Continue with: toolkit train --resume {run_dir}")

    tensorboard.close()
    if not interrupted:
        write_run_json("finished")
    best = state["best_val_loss"] if state["best_val_loss"] is not None else float("nan")
    last_val = state["last_val_loss"] if state["last_val_loss"] is not None else float("nan")
    return TrainResult(
        run_dir=run_dir,
        epochs_done=state["epoch"] + state["batch"] / max(1, n_batches),
        steps=state["step"],
        best_val_loss=best,
        last_val_loss=last_val,
        elapsed_s=state["elapsed_s"],
        chars_per_sec=state["chars_seen"] / max(state["elapsed_s"], 1e-9),
        interrupted=interrupted,
    )


def _sample_prompt(vocab: Vocabulary) -> str:
    return "ROMEO:" if all(ch in vocab.index for ch in "ROMEO:") else vocab.chars[0]


class _NoProgress:
    def __enter__(self) -> _NoProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def add_task(self, *args: Any, **kwargs: Any) -> int:
        return 0

    def update(self, *args: Any, **kwargs: Any) -> None:
        return None


def _progress(enabled: bool, total: int, epoch: int) -> Any:
    if not enabled:
        return _NoProgress()
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn(f"epoch {epoch}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        transient=True,
    )


def iter_metrics(run_dir: Path) -> Iterator[dict[str, Any]]:
    path = run_dir / "metrics.jsonl"
    if path.exists():
        for line in path.read_text().splitlines():
            if line.strip():
                yield json.loads(line)
