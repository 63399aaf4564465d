"""A run's budget in steps: how many, when it validates, and how long it will take here.

No TensorFlow here (the loop in train.py and the tests use these). A run's work is its steps
(`max_steps`, else every batch of every epoch), so that a seed gives the same model on every
machine; `max_minutes` is an optional cap on the training time.
"""

from __future__ import annotations

import os
import statistics
import time
from pathlib import Path
from typing import Any

from toolkit.config import TrainConfig
from toolkit.machine import cpu_has_bf16, cpu_name

# The first step traces and compiles the step function; the ETA times the ones after it.
ETA_STEPS = 10


def total_steps(config: TrainConfig, n_batches: int) -> int:
    """The steps the run is asked for: max_steps, at most every batch of every epoch."""
    every = n_batches * config.epochs
    return min(every, config.max_steps) if config.max_steps else every


def validation_steps(config: TrainConfig, n_batches: int, after: int = 0) -> list[int]:
    """The steps after `after` at which the run validates, with no time cap: every
    `eval_steps` steps if set (else at every epoch end), and always at the last step.
    Validations by the clock (`eval_minutes`) come on top of these."""
    total = total_steps(config, n_batches)
    every = config.eval_steps or n_batches
    points = set(range(every, total + 1, every)) | {total}
    return sorted(p for p in points if p > after)


def progress(config: TrainConfig, step: int, n_batches: int, elapsed_s: float) -> float:
    """How far the run is through its budget (0..1), for the learning-rate schedule: its
    steps, or the clock where a --max-minutes cap is nearer its end."""
    by_steps = step / max(1, total_steps(config, n_batches))
    by_time = elapsed_s / (config.max_minutes * 60) if config.max_minutes else 0.0
    return max(by_steps, by_time)


def cpu_info() -> dict[str, Any]:
    """This machine's CPU for run.json: its name, cores and whether it has bf16 instructions."""
    return {"name": cpu_name(), "cores": os.cpu_count(), "bf16": cpu_has_bf16()}


def process_age_s() -> float | None:
    """Seconds since this process started (Linux), so that run.json counts start-up too."""
    try:
        fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        started_ticks = int(fields[19])  # field 22 of proc(5), after pid and comm
        boot = next(
            float(line.split()[1])
            for line in Path("/proc/stat").read_text().splitlines()
            if line.startswith("btime")
        )
        return time.time() - (boot + started_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError, StopIteration):
        return None


def duration(seconds: float) -> str:
    """Like 45s, 3m05s, 1h02m."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


class Estimate:
    """How long the rest of the run takes here: the steps at the median of the recent step
    times, plus the validations still to come at the measured (or probed) time of one."""

    def __init__(self, config: TrainConfig, n_batches: int) -> None:
        self.config, self.n_batches = config, n_batches
        self.steps_total = total_steps(config, n_batches)
        self.step_times: list[float] = []
        self.validation_s: float | None = None  # one validation, once known

    def add_step(self, seconds: float) -> None:
        self.step_times.append(seconds)
        del self.step_times[:-50]

    def step_s(self) -> float | None:
        return statistics.median(self.step_times) if self.step_times else None

    def remaining_s(self, step: int, elapsed_s: float) -> float | None:
        step_s = self.step_s()
        if step_s is None:
            return None
        train_s = (self.steps_total - step) * step_s
        if self.config.max_minutes:  # the cap ends training first where it binds
            train_s = min(train_s, max(0.0, self.config.max_minutes * 60 - elapsed_s))
        validations = len(validation_steps(self.config, self.n_batches, step))
        if self.config.eval_minutes:
            validations += int(train_s / (self.config.eval_minutes * 60))
        return train_s + validations * (self.validation_s or 0.0)
