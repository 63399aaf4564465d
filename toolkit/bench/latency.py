"""Per-step latency: interleaved, shuffled rounds after a warm-up, so that machine drift hits
every runtime alike; medians and percentiles, and the memory-bound floor of a batch-1 step."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from toolkit.bench.targets import StepFn


def percentiles(samples_s: list[float]) -> dict[str, float]:
    a = np.asarray(samples_s) * 1e6
    return {
        "p50_us": float(np.percentile(a, 50)),
        "p90_us": float(np.percentile(a, 90)),
        "p99_us": float(np.percentile(a, 99)),
        "mean_us": float(a.mean()),
        "n": len(a),
    }


def gemv_floor(nbytes: int, threads: int, repeats: int = 200) -> dict[str, float]:
    """Median time of one numpy matrix-vector product over `nbytes` of fp32 weights.

    The memory-bound floor of a batch-1 step: every weight byte must be read once. BLAS
    threads are limited to `threads` so that each runtime is compared at its own setting.
    """
    from threadpoolctl import threadpool_limits

    cols = 1024
    rows = max(1, nbytes // 4 // cols)
    matrix = np.random.default_rng(0).standard_normal((rows, cols)).astype(np.float32)
    vector = np.ones(rows, np.float32)
    times = []
    with threadpool_limits(limits=threads, user_api="blas"):
        for _ in range(10):
            vector @ matrix
        for _ in range(repeats):
            t0 = time.perf_counter()
            vector @ matrix
            times.append(time.perf_counter() - t0)
    return {
        "bytes": int(matrix.nbytes),
        "threads": threads,
        "p50_us": float(np.median(times) * 1e6),
    }


def measure_interleaved(
    steps: dict[str, StepFn],
    config: Any,
    budget_scale: dict[str, float],
    blas_threads: dict[str, int],
) -> dict[str, list[float]]:
    """Per-step times for every step function, measured in shuffled interleaved rounds.

    `blas_threads` limits numpy's BLAS pool while that runtime's block runs.
    """
    from threadpoolctl import threadpool_limits

    rng = np.random.default_rng(0)
    per_round = {
        name: max(1, int(config.steps * budget_scale.get(name, 1.0)) // config.rounds)
        for name in steps
    }
    samples: dict[str, list[float]] = {name: [] for name in steps}
    names = list(steps)
    for round_index in range(config.rounds + 1):  # round 0 is the warm-up
        for name in rng.permutation(names):
            key = str(name)
            fn = steps[key]
            count = (
                max(1, int(config.warmup * budget_scale.get(key, 1.0)))
                if round_index == 0
                else per_round[key]
            )
            with threadpool_limits(limits=blas_threads.get(key), user_api="blas"):
                times = []
                for _ in range(count):
                    t0 = time.perf_counter()
                    fn()
                    times.append(time.perf_counter() - t0)
            if round_index > 0:
                samples[key].extend(times)
    return samples
