"""Several workers (tf.distribute.MultiWorkerMirroredStrategy) on 127.0.0.1.

Two local workers and one process, same seed and global batch, give the same weights and
validation loss; killing a worker stops the other with one line, and --resume continues.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from toolkit.train.distributed import Cluster, free_ports

TINY = ["--preset", "tiny", "--precision", "fp32", "--no-progress", "--no-sample"]


def toolkit(args: list[str], env: dict[str, str] | None = None, timeout: float = 300):
    return subprocess.run(
        [sys.executable, "-m", "toolkit", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=timeout,
    )


def weights(run_dir: Path) -> dict[str, np.ndarray]:
    with np.load(run_dir / "checkpoints" / "last.npz") as blob:
        return {k: blob[k] for k in blob.files if k[0] in "wo" or k.startswith("state_")}


def wait_for_checkpoint(run: Path, process: subprocess.Popen) -> None:
    """Until the run's first checkpoint is written; fails if `process` exits first."""
    deadline = time.monotonic() + 120
    while not (run / "checkpoints" / "last.npz").exists():
        assert time.monotonic() < deadline, "no checkpoint after 120 s"
        assert process.poll() is None, process.communicate()
        time.sleep(0.5)


def test_two_workers_give_the_one_process_result(small_corpus: Path, tmp_path: Path, cli) -> None:
    one, two = tmp_path / "one", tmp_path / "two"
    # Resets: each worker must take its own rows of the batch's reset draw.
    common = ["train", "--data", str(small_corpus), *TINY, "--epochs", "2", "--reset-prob", "0.3"]
    reference = cli(*common, "--out", str(one))  # one process: this one
    assert reference.returncode == 0, reference.stderr
    proc = toolkit([*common, "--out", str(two), "--workers", "2"])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "[worker 0]" in proc.stdout and "2 workers" in proc.stdout
    info_one = json.loads((one / "run.json").read_text())
    info_two = json.loads((two / "run.json").read_text())
    assert info_two["workers"] == 2 and info_two["status"] == "finished"
    assert info_one["steps"] == info_two["steps"] > 50
    assert info_two["best_val_loss"] == pytest.approx(info_one["best_val_loss"], abs=1e-4)
    a, b = weights(one), weights(two)
    assert a.keys() == b.keys() and any(k.startswith("o") for k in a)
    for key in a:  # weights, Adam's moments, and the carried state of all 16 streams
        assert np.max(np.abs(a[key] - b[key])) <= 1e-4, key
    # Only the chief wrote: one metrics row per validation, no second writer's leftovers.
    rows = (two / "metrics.jsonl").read_text().splitlines()
    assert len(rows) == len((one / "metrics.jsonl").read_text().splitlines()) == 2


def test_batch_must_divide_over_workers(small_corpus: Path, tmp_path: Path) -> None:
    proc = toolkit(["train", "--data", str(small_corpus), *TINY, "--batch-size", "15",
                    "--workers", "2", "--out", str(tmp_path / "r")])  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr.strip() == "error: batch-size 15 does not divide over 2 workers"


def test_bad_tf_config_is_one_line(tmp_path: Path) -> None:
    proc = toolkit(["train", *TINY, "--out", str(tmp_path / "r")], env={"TF_CONFIG": "{oops"})
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("error: TF_CONFIG is not valid")


def test_cluster_from_tf_config(monkeypatch: pytest.MonkeyPatch) -> None:
    config = {"cluster": {"worker": ["a:1", "b:2", "c:3"]}, "task": {"type": "worker", "index": 2}}
    monkeypatch.setenv("TF_CONFIG", json.dumps(config))
    cluster = Cluster.from_environment()
    assert (cluster.size, cluster.index, cluster.is_chief) == (3, 2, False)
    monkeypatch.delenv("TF_CONFIG")
    assert Cluster.from_environment().size == 1


def test_killed_worker_stops_the_other_and_resume_continues(
    tmp_path: Path, small_corpus: Path
) -> None:
    run = tmp_path / "run"
    workers = [f"127.0.0.1:{p}" for p in free_ports(2)]
    # Far more epochs than it will run: the kill comes first, and the resume ends one epoch on.
    args = ["train", *TINY, "--data", str(small_corpus), "--epochs", "1000", "--out", str(run)]
    env = {**os.environ, "TOOLKIT_CHECKPOINT_SECONDS": "1", "TOOLKIT_HEALTH_CHECK_S": "5"}
    procs = []
    for index in range(2):
        tf_config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "toolkit", *args],
                env={**env, "TF_CONFIG": json.dumps(tf_config)},
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    try:
        wait_for_checkpoint(run, procs[0])
        time.sleep(2)
        procs[1].send_signal(signal.SIGKILL)
        killed_at = time.monotonic()
        _, err = procs[0].communicate(timeout=90)
        stopped_after = time.monotonic() - killed_at
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert procs[0].returncode == 10, err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "lost worker 1" in lines[0] and "--resume" in lines[0], err
    assert "Traceback" not in err
    assert stopped_after < 60
    info = json.loads((run / "run.json").read_text())
    assert info["status"] == "lost-worker"
    assert not list(run.rglob("*.tmp*")), "half-written files left behind"
    steps_before, epoch = info["steps"], int(info["epochs_done"])

    proc = toolkit(["train", "--resume", str(run), "--workers", "2", "--no-progress",
                    "--epochs", str(epoch + 1)],
                   env={"TOOLKIT_CHECKPOINT_SECONDS": "1", "TOOLKIT_HEALTH_CHECK_S": "5"})  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "resuming" in proc.stdout
    info = json.loads((run / "run.json").read_text())
    assert info["status"] == "finished" and info["steps"] > steps_before
    assert info["epochs_done"] == pytest.approx(epoch + 1)


def test_ctrl_c_stops_every_local_worker(tmp_path: Path) -> None:
    run = tmp_path / "run"
    # More epochs than it can finish: on a loaded machine one epoch may end before Ctrl-C.
    args = ["train", *TINY, "--epochs", "1000", "--workers", "2", "--out", str(run)]
    launcher = subprocess.Popen(
        [sys.executable, "-m", "toolkit", *args],
        env={**os.environ, "TOOLKIT_CHECKPOINT_SECONDS": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for_checkpoint(run, launcher)
        children = Path(f"/proc/{launcher.pid}/task/{launcher.pid}/children").read_text().split()
        assert len(children) == 2  # the two workers
        launcher.send_signal(signal.SIGINT)
        out, _ = launcher.communicate(timeout=90)
    finally:
        if launcher.poll() is None:
            launcher.kill()
    assert launcher.returncode == 130, out
    for pid in children:
        assert (
            not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()
        ), f"worker {pid} still running"
    assert json.loads((run / "run.json").read_text())["status"] == "interrupted"


def test_workers_share_one_clock_under_a_time_budget(tmp_path: Path) -> None:
    # A wall-clock budget drives the learning-rate schedule: with each worker's own clock the
    # workers would apply different learning rates and their weights would drift apart.
    proc = toolkit(["train", *TINY, "--max-minutes", "0.08", "--workers", "2",
                    "--out", str(tmp_path / "r")])  # fmt: skip
    assert proc.returncode == 0, proc.stdout
    done = {line.split("]")[0]: line.split("best val loss")[1] for line in proc.stdout.splitlines()
            if "done:" in line}  # fmt: skip
    assert len(done) == 2 and len(set(done.values())) == 1, done
