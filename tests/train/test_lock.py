"""One writer per run directory, tested with real processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from toolkit.errors import RunDirError
from toolkit.train.lock import RunDirLock


def _toolkit(*args: str) -> list[str]:
    return [sys.executable, "-m", "toolkit", *args]


def test_a_second_process_is_refused_and_a_dead_holder_is_taken_over(
    tmp_path: Path, small_corpus: Path
) -> None:
    run = tmp_path / "run"
    env = {**os.environ, "TOOLKIT_CHECKPOINT_SECONDS": "0.5"}
    first = subprocess.Popen(
        _toolkit(
            "train", "--preset", "tiny", "--data", str(small_corpus), "--out", str(run),
            "--epochs", "1000", "--no-sample", "--no-progress",
        ),
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not (run / "checkpoints" / "last.npz").exists():
            assert first.poll() is None, "the first training process ended early"
            assert time.monotonic() < deadline, "no checkpoint after 120 s"
            time.sleep(0.2)
        for args in (["train", "--resume", str(run)], ["export", str(run), "--format", "numpy"]):
            refused = subprocess.run(_toolkit(*args), capture_output=True, text=True, timeout=120)
            assert refused.returncode == 4, refused.stderr
            error = refused.stderr.strip().splitlines()[-1]
            assert error.startswith("error: ") and f"in use by process {first.pid}" in error
            assert "toolkit train" in error or "__main__.py train" in error
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
    finally:
        if first.poll() is None:
            first.kill()
    resumed = subprocess.run(
        _toolkit("train", "--resume", str(run), "--epochs", "1", "--no-sample", "--no-progress"),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr
    assert f"left locked by process {first.pid}, which is no longer running" in resumed.stdout


def test_lock_is_released_and_reentrant_after_exit(tmp_path: Path) -> None:
    notes: list[str] = []
    with RunDirLock(tmp_path / "run", "train", notes.append):
        pass
    with RunDirLock(tmp_path / "run", "export", notes.append):
        pass
    assert notes == []  # a cleanly released lock is nobody's to take over


def test_same_process_second_lock_is_refused(tmp_path: Path) -> None:
    # flock locks belong to open files: a second open in this process conflicts too.
    with (
        RunDirLock(tmp_path / "run", "train"),
        pytest.raises(RunDirError, match="in use by process"),
        RunDirLock(tmp_path / "run", "export"),
    ):
        pass
