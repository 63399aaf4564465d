"""Training: stateful truncated BPTT over the corpus, with validation, checkpoints and resume.

Read top to bottom: `train` takes the run directory's lock; `TrainingRun` opens the data and
the run directory (checking the input before TensorFlow is imported), then `run()` is the
loop over epochs and batches. The pieces live beside it:

    run_dir.py      the run directory's files, checkpoints, what a resume may change
    trainer.py      the model, the optimizer and the compiled step functions
    distributed.py  several workers: TF_CONFIG, the strategy, agreeing on when to stop
    cold_start.py   quality from the zero state, where every generation starts
    data/batches.py the corpus as token ids (memory-mapped) and each step's windows

With several workers (TF_CONFIG) every worker runs this same loop on its own streams of the
batch; the chief (worker 0) alone writes the run directory.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from toolkit.config import TrainConfig
from toolkit.data.batches import EpochWindows, open_training_data
from toolkit.errors import DataError, RunDirError, storage_error
from toolkit.files import atomic_write_text
from toolkit.logs import import_tensorflow
from toolkit.metrics import bits_per_char
from toolkit.train import budget
from toolkit.train.cold_start import common_line_starts, corpus_words
from toolkit.train.curves import CURVE_PNG, TENSORBOARD_DIR, TensorBoardLog, write_curve
from toolkit.train.distributed import Cluster, is_collective_failure
from toolkit.train.lock import RunDirLock
from toolkit.train.run_dir import (
    iter_metrics,
    load_checkpoint,
    load_run_config,
    prepare_fresh_run_dir,
    resolve_resume_config,
    save_checkpoint,
)
from toolkit.train.trainer import Trainer, environment, learning_rate_at, zero_state
from toolkit.vocabulary import Vocabulary


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
    cluster = Cluster.from_environment()
    lock = RunDirLock(Path(run_dir), "resume" if resume else "train", log)
    with lock if cluster.is_chief else contextlib.nullcontext():  # the chief alone writes
        # The input is checked (and the data opened) before the slow TensorFlow import.
        run = TrainingRun(
            config, Path(run_dir), data, resume, force, overrides or {}, log, command, cluster
        )
        import_tensorflow()
        # The cluster must exist before TensorFlow runs anything (it configures the runtime).
        strategy = cluster.strategy() if cluster.size > 1 else None
        try:
            return run.run(strategy, progress_bar and cluster.is_chief)
        except Exception as exc:
            if strategy is not None and is_collective_failure(exc):
                if hasattr(run, "trainer"):  # no collective in it: safe to write now
                    run.write_run_json("lost-worker")
                raise cluster.lost_worker_error(exc) from None
            raise


@dataclass
class Progress:
    """Where a run is: what checkpoints keep (as a dict, `to_dict`) and resume from."""

    epoch: int = 0
    batch: int = 0  # batches done in this epoch
    step: int = 0
    elapsed_s: float = 0.0  # training time, on the shared clock
    chars_seen: int = 0
    validation_s: float = 0.0  # validations, cold-start figures and their files
    wall_s: float = 0.0  # earlier sessions of a resumed run, start-up included
    best_val_loss: float | None = None
    last_val_loss: float | None = None
    h: Any = None  # the carried state of every stream, [layers, batch, units] per array
    c: Any = None
    cold_start: dict[str, Any] | None = None  # the last validation's cold-start figures

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def update(self, saved: dict[str, Any]) -> None:
        """Take a checkpoint's values (keys this version does not know are ignored)."""
        for f in dataclasses.fields(self):
            if f.name in saved:
                setattr(self, f.name, saved[f.name])


class TrainingRun:
    """One run: its config, data, run directory and progress (`state`, saved in checkpoints)."""

    def __init__(
        self,
        config: TrainConfig,
        run_dir: Path,
        data: Path | None,
        resume: bool,
        force: bool,
        overrides: dict[str, Any],
        log: Callable[[str], None],
        command: str | None,
        cluster: Cluster,
    ) -> None:
        # Start-up counts in run.json's wall time: from the process's start where known.
        self.started = time.monotonic() - (budget.process_age_s() or 0.0)
        self.run_dir, self.resume, self.cluster = run_dir, resume, cluster
        self.chief = cluster.is_chief
        self.log = log if self.chief else (lambda _: None)
        self.command = command
        if resume:
            if not (run_dir / "config.json").exists() or not (run_dir / "checkpoints").is_dir():
                raise RunDirError(f"nothing to resume in {run_dir}: no config or checkpoints")
            config = resolve_resume_config(load_run_config(run_dir), overrides)
            info = json.loads((run_dir / "run.json").read_text())
            data = Path(info["data"]) if info.get("data") else None
            self.command = info.get("command") or command
            if force:
                raise RunDirError("--resume and --force do not go together")
        config.validate()
        if config.batch_size % cluster.size:
            raise DataError(
                f"batch-size {config.batch_size} does not divide over {cluster.size} workers"
            )
        self.data_path = data
        self.data = open_training_data(data, config.val_fraction, config.val_chars, self.log)
        self.config = dataclasses.replace(config, val_fraction=self.data.val_fraction)
        self.vocab = self.data.vocab
        if resume and Vocabulary.load(run_dir / "vocab.json") != self.vocab:
            raise RunDirError(f"the corpus changed since {run_dir} was created; cannot resume")
        span = config.seq_length + 1
        if len(self.data.val) < span or len(self.data.train) < config.batch_size * span:
            raise DataError(
                f"corpus too short: {self.data.chars} characters; need at least "
                f"{int(config.batch_size * span / (1 - config.val_fraction)) + span} "
                f"for batch-size {config.batch_size} and seq-length {config.seq_length}"
            )
        if not resume and self.chief:
            prepare_fresh_run_dir(run_dir, force)
            atomic_write_text(run_dir / "config.json", json.dumps(self.config.to_dict(), indent=2))
            self.vocab.save(run_dir / "vocab.json")
        self.ckpt_dir = run_dir / "checkpoints"
        # This worker's streams of every batch: a contiguous block of rows.
        self.share = config.batch_size // cluster.size
        self.rows = slice(cluster.index * self.share, (cluster.index + 1) * self.share)
        self.state = Progress()
        self.n_batches = len(EpochWindows(self.data.train, self.config, 0))
        self.total_steps = budget.total_steps(self.config, self.n_batches)
        self.eta_s: float | None = None  # the whole run's, as the first steps predicted it
        self.wall_before = 0.0
        # The loop's own progress (train_epoch): steps this session, the last checkpoint's
        # time, the carried state.
        self.session_steps = 0
        self.last_ckpt = time.monotonic()
        self.h: Any = None
        self.c: Any = None

    # ----------------------------------------------------------------- run directory files

    def write_run_json(self, status: str) -> None:
        if not self.chief:
            return
        state, best = self.state, self.state.best_val_loss
        info = {
            "name": self.run_dir.name,
            "status": status,
            "data": str(Path(self.data_path).resolve()) if self.data_path else None,
            "prepared": str(self.data.prepared.resolve()) if self.data.prepared else None,
            "corpus_chars": self.data.chars,
            "vocab_size": len(self.vocab),
            "model": dataclasses.asdict(self.trainer.model_config),
            "preset": self.config.preset,
            "command": self.command,
            "workers": self.cluster.size,
            "epochs_done": state.epoch + state.batch / max(1, self.n_batches),
            "steps": state.step,
            "max_steps": self.total_steps,
            "elapsed_s": round(state.elapsed_s, 2),
            # Where the time went (seconds): the training steps, the validations with their
            # cold-start figures, checkpoints and pictures, and everything from the process's
            # start (start-up included); `estimated` is the ETA line's prediction of `wall`.
            "time": {
                "steps": round(state.elapsed_s, 2),
                "validation": round(state.validation_s, 2),
                "wall": round(self.wall_s(), 2),
                "estimated": round(self.eta_s, 2) if self.eta_s is not None else None,
            },
            "cpu": budget.cpu_info(),
            "best_val_loss": best,
            "best_val_bpc": bits_per_char(best) if best is not None else None,
            "last_val_loss": state.last_val_loss,
            "cold_start": state.cold_start,
            "files": {
                "config": "config.json",
                "vocab": "vocab.json",
                "model": "model.keras",
                "metrics": "metrics.jsonl",
                "curve": CURVE_PNG,
                "tensorboard": TENSORBOARD_DIR,
                "checkpoints": ["checkpoints/best.npz", "checkpoints/last.npz"],
            },
            "precision": self.trainer.precision,
            "environment": environment(),
        }
        atomic_write_text(self.run_dir / "run.json", json.dumps(info, indent=2))

    def wall_s(self) -> float:
        return self.wall_before + time.monotonic() - self.started

    def save_model(self) -> None:
        if not self.chief:
            return
        tmp = self.run_dir / ".model.keras.tmp.keras"
        try:
            self.trainer.eval_model_synced().save(tmp)
            tmp.replace(self.run_dir / "model.keras")
        except OSError as exc:  # a full disk: model.keras stays the previous one
            tmp.unlink(missing_ok=True)
            raise storage_error(exc, self.run_dir / "model.keras") from None

    def checkpoint(self, name: str, h: Any, c: Any) -> None:
        """Checkpoints hold the whole batch's state: each worker's rows, gathered."""
        h, c = self.trainer.gather_rows(h), self.trainer.gather_rows(c)
        if self.chief:
            state = {**self.state.to_dict(), "h": h, "c": c, "wall_s": self.wall_s()}
            save_checkpoint(self.ckpt_dir / name, self.trainer.model, self.trainer.optimizer, state)

    # ----------------------------------------------------------------- validation

    def record_point(self, window: dict[str, Any], partial: bool, h: Any, c: Any) -> Any:
        """Validate, log a metrics row, write best/last checkpoints and run.json.

        Returns the state the next batch starts from (zeros after a complete epoch)."""
        state, trainer = self.state, self.trainer
        started = time.monotonic()
        val_loss = trainer.evaluate(self.data.val)
        cold = trainer.cold_start(self.vocab, self.data.val, self.cold_prompts, self.known_words)
        train_loss = float(np.mean(window["losses"])) if window["losses"] else float("nan")
        seconds = state.elapsed_s - window["elapsed_s"]
        chars = state.chars_seen - window["chars"]
        window.update(losses=[], elapsed_s=state.elapsed_s, chars=state.chars_seen)
        state.last_val_loss = val_loss
        improved = state.best_val_loss is None or val_loss < state.best_val_loss
        if improved:
            state.best_val_loss = val_loss
        row = {
            "epoch": round(state.epoch + state.batch / self.n_batches, 4),
            "step": state.step,
            "elapsed_s": round(state.elapsed_s, 2),
            "train_loss": round(train_loss, 5),
            "train_bpc": round(bits_per_char(train_loss), 5),
            "val_loss": round(val_loss, 5),
            "val_bpc": round(bits_per_char(val_loss), 5),
            "lr": float(trainer.optimizer.learning_rate.numpy()),
            "chars_per_sec": round(chars / max(seconds, 1e-9), 1),
            **cold.to_dict(),
        }
        state.cold_start = cold.to_dict()
        if self.tensorboard is not None:  # the chief
            with (self.run_dir / "metrics.jsonl").open("a", encoding="utf-8") as handle:
                handle.write(json.dumps(row) + "\n")
            self.tensorboard.write(row)
            write_curve(iter_metrics(self.run_dir), self.run_dir / CURVE_PNG, self.run_dir.name)
        self.log(
            f"epoch {row['epoch']:.2f}: train {train_loss:.4f} nats ({row['train_bpc']:.3f} bpc),"
            f" val {val_loss:.4f} nats ({row['val_bpc']:.3f} bpc), "
            f"{row['chars_per_sec']:,.0f} chars/s; from zeros at line starts "
            f"{cold.line_start_loss:.4f} nats (+{cold.line_start_loss - val_loss:.3f}), "
            f"{cold.degenerate}/{cold.prompts} degenerate starts{'  *best' if improved else ''}"
        )
        if not partial:  # epoch complete: the next one starts from zero state
            state.epoch += 1
            state.batch = 0
            h = c = None
        if improved:
            self.checkpoint("best.npz", h, c)
            self.save_model()
        self.checkpoint("last.npz", h, c)
        state.validation_s += time.monotonic() - started
        self.estimate.validation_s = time.monotonic() - started
        self.write_run_json("training")
        return h, c

    def end_epoch(self) -> None:
        """An epoch ends without a validation (the run validates every `eval_steps`)."""
        self.state.epoch += 1
        self.state.batch = 0
        self.checkpoint("last.npz", None, None)
        self.write_run_json("training")

    def eta_line(self) -> str:
        """How long the budget takes on this machine, from the first steps' speed."""
        est, state, config = self.estimate, self.state, self.config
        step_s = est.step_s() or float("nan")
        steps_left = self.total_steps - state.step
        remaining = est.remaining_s(state.step, state.elapsed_s) or 0.0
        self.eta_s = self.wall_s() + remaining
        validations = len(budget.validation_steps(config, self.n_batches, state.step))
        training = budget.duration(state.elapsed_s + steps_left * step_s)
        if config.max_minutes and config.max_minutes * 60 < state.elapsed_s + steps_left * step_s:
            training += f", capped at {config.max_minutes:g} min (the clock then sets the schedule)"
        cpu = budget.cpu_info()
        return (
            f"eta: {self.total_steps:,} steps at "
            f"{config.batch_size * config.seq_length / step_s:,.0f} chars/s "
            f"({step_s * 1e3:,.0f} ms a step, median of steps "
            f"{state.step - len(est.step_times) + 1}-{state.step}): {training} of training "
            f"here, plus {validations} validation{'s' if validations != 1 else ''} of "
            f"~{budget.duration(est.validation_s or 0)}: done in about "
            f"{budget.duration(remaining)} ({budget.duration(self.eta_s)} from the start; "
            f"{cpu['name']}, {cpu['cores']} cores, bf16 instructions: "
            f"{'yes' if cpu['bf16'] else 'no'}, {self.trainer.precision})"
        )

    def train_epoch(
        self,
        progress: Any,
        task: Any,
        budget_s: float | None,
        eval_s: float | None,
        checkpoint_s: float,
    ) -> bool:
        """The rest of the current epoch (or of the budget); True when a budget ran out."""
        config, state, trainer, rows = self.config, self.state, self.trainer, self.rows
        model_config, window, estimate = trainer.model_config, self.window, self.estimate
        chars_per_step = config.batch_size * config.seq_length
        batches = EpochWindows(self.data.train, config, state.epoch, rows)
        if state.h is not None and state.batch > 0 and config.stateful:
            self.h, self.c = state.h[rows], state.c[rows]
        else:
            self.h, self.c = zero_state(model_config, self.share)
        stop = False
        while state.batch < self.n_batches:
            t0 = time.monotonic()
            x, y = batches.batch(state.batch)
            fraction = budget.progress(config, state.step, self.n_batches, state.elapsed_s)
            trainer.set_learning_rate(learning_rate_at(config, state.step, fraction))
            h, c = self.h, self.c
            if not config.stateful:
                h, c = zero_state(model_config, len(x))
            loss, h, c = trainer.train_step(x, y, h, c)
            if config.reset_prob > 0:  # some streams start the next window from zeros
                draw = np.random.default_rng([config.seed, state.step])
                keep = draw.random(config.batch_size)[rows] >= config.reset_prob
                mask = keep[:, None, None].astype(np.float32)
                h, c = h * mask, c * mask
            self.h, self.c = h, c
            window["losses"].append(float(loss))
            state.batch += 1
            state.step += 1
            state.chars_seen += chars_per_step
            seconds = time.monotonic() - t0
            state.elapsed_s = trainer.shared_clock(state.elapsed_s + seconds)
            self.session_steps += 1
            if self.session_steps > 1:  # the first one traced and compiled the step
                estimate.add_step(seconds)
            if self.session_steps == budget.ETA_STEPS + 1:
                self.log(self.eta_line())
            remaining = estimate.remaining_s(state.step, state.elapsed_s)
            progress.update(
                task,
                completed=state.step,
                description=f"epoch {state.epoch + 1}, loss {float(loss):.3f}",
                eta=budget.duration(remaining) if remaining is not None else "?",
            )
            # Every worker must take the same branch: they agree (the chief's clock is not
            # the others'). The step budget is the same number everywhere.
            out_of_time, validate, save = trainer.agree(
                budget_s is not None and state.elapsed_s >= budget_s,
                state.batch < self.n_batches
                and (
                    (eval_s is not None and state.elapsed_s - window["elapsed_s"] >= eval_s)
                    or (config.eval_steps is not None and state.step % config.eval_steps == 0)
                ),
                time.monotonic() - self.last_ckpt > checkpoint_s,
            )
            stop = out_of_time or state.step >= self.total_steps
            if stop:
                break
            if validate:
                self.h, self.c = self.record_point(window, True, self.h, self.c)
                self.last_ckpt = time.monotonic()
            elif save:
                self.checkpoint("last.npz", self.h, self.c)
                self.last_ckpt = time.monotonic()
        epoch_done = state.batch >= self.n_batches
        last = stop or (epoch_done and state.epoch + 1 >= config.epochs)
        if last or not config.eval_steps or state.step % config.eval_steps == 0:
            self.h, self.c = self.record_point(window, not epoch_done, self.h, self.c)
            if config.sample_every_epoch and config.sample_length > 0 and self.chief:
                sample = trainer.sample(
                    self.vocab, _sample_prompt(self.vocab), config.sample_length, state.step
                )
                self.log("sample: " + sample.replace("\n", "\n        "))
        else:  # validating every eval_steps steps: this epoch's end is not one of them
            self.end_epoch()
            self.h = self.c = None
        self.last_ckpt = time.monotonic()
        return out_of_time

    # ----------------------------------------------------------------- the loop

    def run(self, strategy: Any, progress_bar: bool) -> TrainResult:
        config, state = self.config, self.state
        self.trainer = trainer = Trainer(config, len(self.vocab), strategy)
        model_config = trainer.model_config
        self.cold_prompts = common_line_starts(self.data.sample_text)  # "ROMEO:", ...
        self.known_words = corpus_words(self.data.sample_text)
        self.tensorboard: TensorBoardLog | None = (
            TensorBoardLog(self.run_dir) if self.chief else None
        )
        if self.resume:
            last = self.ckpt_dir / "last.npz"
            if not last.exists():
                raise RunDirError(f"nothing to resume in {self.run_dir}: no checkpoints/last.npz")
            state.update(load_checkpoint(last, trainer.model, trainer.optimizer))
            self.log(
                f"resuming {self.run_dir} at epoch {state.epoch + 1}, batch {state.batch}, "
                f"step {state.step}"
            )
        elif self.chief:
            self.ckpt_dir.mkdir(parents=True, exist_ok=True)
            self.write_run_json("training")
            self.save_model()  # so the directory is complete from the first second

        budget_s = config.max_minutes * 60 if config.max_minutes else None
        eval_s = config.eval_minutes * 60 if config.eval_minutes else None
        # Tests shorten the mid-epoch checkpoint interval to exercise kill -9 recovery quickly.
        checkpoint_s = float(
            os.environ.get("TOOLKIT_CHECKPOINT_SECONDS", config.checkpoint_minutes * 60)
        )
        total_steps = self.total_steps
        self.wall_before = state.wall_s
        self.log(
            f"corpus: {self.data.chars:,} chars, vocab {len(self.vocab)}, train "
            f"{len(self.data.train):,} / val {len(self.data.val):,}; model "
            f"{model_config.layers}x{model_config.units} (emb {model_config.embedding_dim}), "
            f"{trainer.model.count_params():,} params; {self.n_batches} batches/epoch; "
            f"{trainer.precision} compute"
            + (f"; {self.cluster.size} workers" if self.cluster.size > 1 else "")
        )
        self.log(
            f"budget: {total_steps:,} steps ({total_steps / self.n_batches:.2f} epochs, "
            f"{total_steps * config.batch_size * config.seq_length:,} chars)"
            + (f", at most {config.max_minutes:g} min of training" if budget_s else "")
            + (
                f"; validation every {config.eval_steps} steps and at the end"
                if config.eval_steps
                else "; validation at every epoch end"
            )
        )
        self.estimate = estimate = budget.Estimate(config, self.n_batches)
        # The validation's cost, probed now (a chunk of the carried pass, a few cold-start
        # steps) so that the ETA line counts it; the first real one replaces the probe.
        estimate.validation_s = trainer.probe_validation_s(self.data.val, self.cold_prompts)

        self.window: dict[str, Any] = {
            "losses": [],
            "elapsed_s": state.elapsed_s,
            "chars": state.chars_seen,
        }
        self.last_ckpt = time.monotonic()
        self.session_steps = 0
        self.h = self.c = None
        interrupted = out_of_time = False
        progress = _progress(progress_bar)
        try:
            with progress:
                task = progress.add_task("train", total=total_steps, completed=state.step, eta="?")
                while state.epoch < config.epochs and state.step < total_steps and not out_of_time:
                    out_of_time = self.train_epoch(progress, task, budget_s, eval_s, checkpoint_s)
        except KeyboardInterrupt:
            interrupted = True
            if self.h is not None and self.cluster.size == 1:
                self.checkpoint("last.npz", self.h, self.c)
            self.write_run_json("interrupted")
            self.log(
                f"interrupted; checkpoint saved. Continue with: toolkit train --resume {self.run_dir}"
            )

        if self.tensorboard is not None:
            self.tensorboard.close()
        if not interrupted:
            self.write_run_json("finished")
        best = state.best_val_loss if state.best_val_loss is not None else float("nan")
        last_val = state.last_val_loss if state.last_val_loss is not None else float("nan")
        return TrainResult(
            run_dir=self.run_dir,
            epochs_done=state.epoch + state.batch / max(1, self.n_batches),
            steps=state.step,
            best_val_loss=best,
            last_val_loss=last_val,
            elapsed_s=state.elapsed_s,
            chars_per_sec=state.chars_seen / max(state.elapsed_s, 1e-9),
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


def _progress(enabled: bool) -> Any:
    """One bar for the whole budget: steps done of all, the epoch and loss, the time so far and
    the time left (the run's own estimate: steps at the measured speed plus the validations)."""
    if not enabled:
        return _NoProgress()
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[eta]} left"),
        transient=True,
    )
