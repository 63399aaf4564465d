"""Training: run directory contents, determinism of the batches, resume, bad input."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from toolkit.config import TrainConfig, preset
from toolkit.data.batches import epoch_batches
from toolkit.errors import DataError, RunDirError, UsageError
from toolkit.train.run_dir import check_run_dir, resolve_resume_config
from toolkit.train.trainer import learning_rate_at


def test_tiny_run_directory_is_complete(tiny_run: Path) -> None:
    info = check_run_dir(tiny_run)
    assert info["status"] == "finished"
    assert info["model"]["units"] == 16
    for name in ("config.json", "vocab.json", "model.keras", "metrics.jsonl", "run.json"):
        assert (tiny_run / name).stat().st_size > 0
    assert (tiny_run / "checkpoints" / "best.npz").exists()
    assert (tiny_run / "checkpoints" / "last.npz").exists()
    rows = [json.loads(line) for line in (tiny_run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1.0, 2.0]  # epochs completed at each record
    for row in rows:
        assert row["val_bpc"] == pytest.approx(row["val_loss"] / np.log(2), rel=1e-3)
        # Cold-start figures beside the carried-state loss (toolkit/train/cold_start.py).
        assert row["cold_loss"] > 0 and 0 <= row["degenerate_starts"] <= row["cold_prompts"]
    assert info["cold_start"] == {k: rows[-1][k] for k in info["cold_start"]}
    # Two epochs of a tiny model still learn something: below uniform over the vocabulary.
    assert rows[-1]["val_loss"] < np.log(info["vocab_size"])
    assert info["best_val_loss"] == pytest.approx(min(r["val_loss"] for r in rows), abs=1e-4)
    assert not list(tiny_run.glob("*.tmp*")), "temporary files left behind"
    # Pictures: curve.png and TensorBoard scalars, refreshed at every validation.
    assert (tiny_run / "curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    events = list((tiny_run / "tensorboard").glob("events.out.tfevents.*"))
    assert events and events[0].stat().st_size > 0
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    scalars = EventAccumulator(str(tiny_run / "tensorboard")).Reload().Tags()["tensors"]
    assert {"loss/validation", "bits_per_char/train", "learning_rate"} <= set(scalars)


def test_stateful_batches_are_contiguous_streams() -> None:
    ids = np.arange(10_000, dtype=np.int32)
    cfg = dataclasses.replace(preset("tiny"), batch_size=4, seq_length=10)
    x, y = epoch_batches(ids, cfg, epoch=3)
    assert x.shape[1:] == (4, 10)
    np.testing.assert_array_equal(y, x + 1)  # next-character targets at every position
    # Batch k+1 continues batch k in every stream: the carried state sees contiguous text.
    np.testing.assert_array_equal(x[1][:, 0], x[0][:, -1] + 1)
    x2, _ = epoch_batches(ids, cfg, epoch=3)
    np.testing.assert_array_equal(x, x2)  # same seed and epoch: same batches
    starts = {int(epoch_batches(ids, cfg, epoch=e)[0][0, 0, 0]) for e in range(8)}
    assert len(starts) > 1  # a fresh random offset each epoch moves the window borders


def test_non_stateful_batches_shuffle_windows() -> None:
    ids = np.arange(5_000, dtype=np.int32)
    cfg = dataclasses.replace(preset("tiny"), batch_size=4, seq_length=10, stateful=False)
    x, y = epoch_batches(ids, cfg, epoch=0)
    np.testing.assert_array_equal(y, x + 1)
    assert not np.all(np.diff(x[:, 0, 0]) > 0)


def test_learning_rate_schedule() -> None:
    cfg = TrainConfig(learning_rate=1e-2, warmup_steps=10, min_lr_ratio=0.1)
    assert learning_rate_at(cfg, 0, 0.0) == pytest.approx(1e-3)
    assert learning_rate_at(cfg, 9, 0.0) == pytest.approx(1e-2)
    assert learning_rate_at(cfg, 100, 0.5) == pytest.approx(1e-2 * 0.55)
    assert learning_rate_at(cfg, 100, 1.0) == pytest.approx(1e-3)


def test_resume_rejects_incompatible_config() -> None:
    saved = preset("tiny")
    with pytest.raises(RunDirError, match="units=32"):
        resolve_resume_config(saved, {"units": 32})
    resumed = resolve_resume_config(saved, {"units": 16, "epochs": 5, "max_minutes": 2.0})
    assert resumed.epochs == 5 and resumed.max_minutes == 2.0


def test_invalid_config_values() -> None:
    with pytest.raises(UsageError, match="batch-size"):
        dataclasses.replace(preset("tiny"), batch_size=0).validate()
    with pytest.raises(UsageError, match="unknown preset"):
        preset("huge")


def test_existing_run_dir_and_short_corpus(tiny_run: Path, tmp_path: Path, tiny_config) -> None:
    from toolkit.train.loop import train

    before = {p: p.stat().st_mtime_ns for p in tiny_run.rglob("*")}
    with pytest.raises(RunDirError, match="already exists"):
        train(tiny_config, tiny_run, data=None, log=lambda _: None, progress_bar=False)
    assert before == {p: p.stat().st_mtime_ns for p in tiny_run.rglob("*")}
    short = tmp_path / "short.txt"
    short.write_text("To be or not to be.")
    with pytest.raises(DataError, match="too short"):
        train(tiny_config, tmp_path / "run", data=short, log=lambda _: None, progress_bar=False)
    assert not (tmp_path / "run").exists()


def test_seed_gives_same_result(small_corpus: Path, tmp_path: Path) -> None:
    from toolkit.train.loop import train

    cfg = dataclasses.replace(preset("tiny"), epochs=1, sample_every_epoch=False)
    a = train(cfg, tmp_path / "a", data=small_corpus, log=lambda _: None, progress_bar=False)
    b = train(cfg, tmp_path / "b", data=small_corpus, log=lambda _: None, progress_bar=False)
    assert a.best_val_loss == b.best_val_loss


@pytest.mark.slow
def test_resume_after_kill_9(tmp_path: Path, small_corpus: Path, cli) -> None:
    """kill -9 mid-epoch, then --resume continues from the last checkpoint, not from zero."""
    run_dir = tmp_path / "run"
    cmd = [
        sys.executable,
        "-m",
        "toolkit",
        "train",
        "--preset",
        "tiny",
        "--data",
        str(small_corpus),
        "--out",
        str(run_dir),
        "--epochs",
        "400",
        "--no-sample",
        "--no-progress",
    ]
    env = {**os.environ, "TOOLKIT_CHECKPOINT_SECONDS": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    last = run_dir / "checkpoints" / "last.npz"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if last.exists() and json.loads((run_dir / "run.json").read_text())["steps"] > 0:
            break
        time.sleep(0.2)
    time.sleep(1.5)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert last.exists(), proc.stdout.read().decode() if proc.stdout else ""
    with np.load(last) as blob:
        saved = json.loads(bytes(blob["progress"]).decode())
    assert saved["step"] > 0
    resumed = cli(
        "train", "--resume", str(run_dir), "--epochs", str(saved["epoch"] + 1), "--no-sample",
        "--no-progress",
    )  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr
    assert f"step {saved['step']}" in resumed.stdout  # picked up where the checkpoint was
    info = json.loads((run_dir / "run.json").read_text())
    assert info["status"] == "finished"
    assert info["steps"] > saved["step"]
    # Incompatible resume: one line, non-zero, nothing changed.
    bad = cli("train", "--resume", str(run_dir), "--units", "99")
    assert bad.returncode != 0
    assert "incompatible" in bad.stderr and "Traceback" not in bad.stderr


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_both_precisions_export_float32_graphs_that_match_keras(
    precision: str, small_corpus: Path, tmp_path: Path, tiny_config
) -> None:
    """bf16 training (mixed_bfloat16) still exports graphs equal to the Keras model in fp32."""
    import dataclasses

    from toolkit.export.exporter import export_run
    from toolkit.train.loop import train

    config = dataclasses.replace(tiny_config, epochs=1, precision=precision)
    run = tmp_path / "run"
    train(config, run, data=small_corpus, log=lambda _: None, progress_bar=False)
    assert json.loads((run / "run.json").read_text())["precision"] == precision
    _, artifacts = export_run(run, tmp_path / "exp", formats=["onnx"], log=lambda _: None)
    validation = artifacts[0].validation
    assert validation is not None and validation.passed
    assert validation.max_abs_logit_diff <= 1e-4


def test_auto_precision_follows_the_cpu() -> None:
    from toolkit.config import resolve_precision
    from toolkit.machine import cpu_has_bf16

    assert resolve_precision("auto") == ("bf16" if cpu_has_bf16() else "fp32")
    assert resolve_precision("fp32") == "fp32"


def test_weight_decay_shrinks_kernels_and_embeddings_not_biases(tiny_config) -> None:
    import dataclasses

    from toolkit.train.trainer import Trainer

    config = dataclasses.replace(tiny_config, weight_decay=0.5, learning_rate=0.1)
    trainer = Trainer(config, vocab_size=12)
    variables = trainer.model.trainable_variables
    before = [v.numpy().copy() for v in variables]
    # Zero gradients: Adam's own update is zero, so only the decay moves the weights.
    trainer.optimizer.apply_gradients([(np.zeros(v.shape, np.float32), v) for v in variables])
    for v, old in zip(variables, before, strict=True):
        expected = old if "bias" in v.path else old * (1 - 0.1 * 0.5)
        np.testing.assert_allclose(v.numpy(), expected, rtol=1e-6, atol=1e-7, err_msg=v.path)
    with pytest.raises(UsageError, match="weight-decay"):
        dataclasses.replace(tiny_config, weight_decay=-1.0).validate()


# --------------------------------------------------------------------------- step budgets


def test_presets_are_defined_by_steps_not_minutes() -> None:
    for name, steps in (("quick", 1300), ("default", 2100), ("best", 2900)):
        cfg = preset(name)
        assert cfg.max_steps == steps and cfg.max_minutes is None, name
        assert cfg.eval_minutes is None and cfg.eval_steps, name


def test_schedule_follows_the_steps_not_the_clock() -> None:
    from toolkit.train import budget

    cfg = TrainConfig(learning_rate=1e-2, warmup_steps=10, min_lr_ratio=0.1, max_steps=200)
    n_batches = 1000
    # Halfway through the steps is halfway through the schedule, however long it took.
    for elapsed in (1.0, 600.0, 86_400.0):
        assert budget.progress(cfg, 100, n_batches, elapsed) == pytest.approx(0.5)
    assert learning_rate_at(cfg, 100, budget.progress(cfg, 100, n_batches, 5.0)) == (
        pytest.approx(1e-2 * 0.55)
    )
    # Without max_steps, the epochs are the budget.
    epochs = dataclasses.replace(cfg, max_steps=None, epochs=2)
    assert budget.progress(epochs, 500, n_batches, 1.0) == pytest.approx(0.25)
    # A --max-minutes cap that binds first sets the schedule.
    capped = dataclasses.replace(cfg, max_minutes=1.0)
    assert budget.progress(capped, 10, n_batches, 45.0) == pytest.approx(0.75)
    assert budget.progress(capped, 150, n_batches, 6.0) == pytest.approx(0.75)


def test_validation_points_are_steps() -> None:
    from toolkit.train import budget

    quick = preset("quick")
    assert budget.validation_steps(quick, n_batches=490) == [325, 650, 975, 1300]
    assert budget.validation_steps(quick, n_batches=490, after=650) == [975, 1300]
    # No eval_steps: every epoch end, and the last step.
    cfg = dataclasses.replace(quick, eval_steps=None, max_steps=1000)
    assert budget.validation_steps(cfg, n_batches=300) == [300, 600, 900, 1000]
    assert budget.total_steps(dataclasses.replace(cfg, max_steps=None, epochs=3), 300) == 900
    assert budget.duration(42) == "42s" and budget.duration(185) == "3m05s"
    assert budget.duration(3720) == "1h02m"


def _slow_steps(monkeypatch: pytest.MonkeyPatch, seconds: float) -> None:
    """Every training step takes `seconds` longer: a slower machine."""
    from toolkit.train.trainer import Trainer

    init = Trainer.__init__

    def slow_init(self, *args, **kwargs):
        init(self, *args, **kwargs)
        step = self.train_step

        def slow_step(*a):
            time.sleep(seconds)
            return step(*a)

        self.train_step = slow_step

    monkeypatch.setattr(Trainer, "__init__", slow_init)


def test_step_budget_stops_at_its_count_and_gives_the_same_model_at_any_speed(
    small_corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from toolkit.train import budget
    from toolkit.train.loop import train

    cfg = dataclasses.replace(
        preset("tiny"), epochs=5, max_steps=23, eval_steps=10, sample_every_epoch=False
    )
    lines: list[str] = []
    fast = train(cfg, tmp_path / "fast", data=small_corpus, log=lines.append, progress_bar=False)
    _slow_steps(monkeypatch, 0.03)
    slow = train(cfg, tmp_path / "slow", data=small_corpus, log=lambda _: None, progress_bar=False)
    assert fast.steps == slow.steps == 23 and fast.epochs_done < 1
    info = json.loads((tmp_path / "fast" / "run.json").read_text())
    assert info["steps"] == info["max_steps"] == 23
    rows = [json.loads(x) for x in (tmp_path / "fast" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [10, 20, 23]  # every eval_steps, and the end
    n_batches = round(23 / rows[-1]["epoch"])
    assert rows[-1]["lr"] == pytest.approx(
        learning_rate_at(cfg, 22, budget.progress(cfg, 22, n_batches, 0.0)), rel=1e-5
    )
    # The clock played no part: the slower run trained the same model.
    assert slow.best_val_loss == fast.best_val_loss
    assert any(line.startswith("budget: 23 steps") for line in lines)


def test_max_minutes_still_caps_the_run(small_corpus: Path, tmp_path: Path, monkeypatch) -> None:
    from toolkit.train import budget
    from toolkit.train.loop import train

    _slow_steps(monkeypatch, 0.1)
    cfg = dataclasses.replace(
        preset("tiny"), epochs=5, max_steps=150, max_minutes=0.1, sample_every_epoch=False
    )
    result = train(cfg, tmp_path / "run", data=small_corpus, log=lambda _: None, progress_bar=False)
    # 6 s of steps of > 0.1 s each (the first also traces, which took over 3 s on a loaded
    # machine): far short of the 150 asked for.
    assert result.elapsed_s >= 6.0 and 2 <= result.steps < 61
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["step"] == result.steps  # validated where the cap stopped it
    # The clock set the schedule: further along than the steps alone would have it.
    last = result.steps - 1
    by_steps = learning_rate_at(cfg, last, budget.progress(cfg, last, 10_000, 0.0))
    assert rows[-1]["lr"] < by_steps * 0.9


def test_eta_line_and_run_json_time_and_cpu(small_corpus: Path, tmp_path: Path) -> None:
    from toolkit.machine import cpu_has_bf16
    from toolkit.train.loop import train

    cfg = dataclasses.replace(preset("tiny"), epochs=1, max_steps=30, sample_every_epoch=False)
    lines: list[str] = []
    train(cfg, tmp_path / "run", data=small_corpus, log=lines.append, progress_bar=False)
    eta = [line for line in lines if line.startswith("eta: ")]
    assert len(eta) == 1, lines
    # Printed after the 10 steps that follow the first (which traces the step function).
    assert "30 steps at" in eta[0] and "median of steps 2-11" in eta[0]
    assert "chars/s" in eta[0] and "bf16 instructions: " in eta[0]
    assert lines.index(eta[0]) < next(i for i, x in enumerate(lines) if x.startswith("epoch "))
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    assert info["cpu"]["bf16"] == cpu_has_bf16() and info["cpu"]["cores"] >= 1
    assert info["cpu"]["name"]
    spent = info["time"]
    assert spent["steps"] == pytest.approx(info["elapsed_s"], abs=0.01) and spent["steps"] > 0
    assert spent["validation"] > 0 and spent["estimated"] > 0
    # From the process's start: more than the steps and validations together.
    assert spent["wall"] > spent["steps"] + spent["validation"]
