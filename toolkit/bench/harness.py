"""`toolkit bench`: latency, size and quality of every runtime against the Keras model.

All runtimes are measured side by side in one process, in interleaved rounds (order shuffled
each round) after a warm-up, so that machine drift hits every runtime alike. Reports medians
and ratios, never single timings. Process start-up and peak memory come from fresh
subprocesses.
"""

from __future__ import annotations

import datetime as _dt
import json
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from toolkit.bench.generation import (
    GENERATION_PAIRS,
    GENERATION_SETTINGS,
    GENERATION_STEPS,
    measure_generation,
    time_to_first_char,
)
from toolkit.bench.latency import gemv_floor, measure_interleaved, percentiles
from toolkit.bench.report import write_report
from toolkit.bench.startup import startup
from toolkit.bench.targets import GENERATE_RUNTIME, RUNTIMES, THREADED, StepFactory, StepFn
from toolkit.errors import ModelFileError, UsageError
from toolkit.machine import machine_info
from toolkit.runtime.manifest import Manifest, file_format


@dataclass
class BenchConfig:
    runtimes: list[str] = field(default_factory=lambda: list(RUNTIMES))
    batches: list[int] = field(default_factory=lambda: [1, 32])
    threads: list[int] = field(default_factory=lambda: [1, 2])
    steps: int = 300  # timed steps per runtime and configuration, split over the rounds
    rounds: int = 5
    warmup: int = 20
    prompt_chars: int = 1000
    startup_runs: int = 3
    startup: bool = True  # time fresh `toolkit generate` processes
    # Characters per row of each end-to-end `generate` (None: generation.GENERATION_STEPS).
    generation_steps: int | None = None
    name: str = "bench"

    def validate(self) -> None:
        unknown = [r for r in self.runtimes if r not in RUNTIMES]
        if unknown:
            raise UsageError(
                f"unknown runtime(s) {', '.join(unknown)}; choose from {', '.join(RUNTIMES)}"
            )
        if not self.batches or min(self.batches) < 1:
            raise UsageError("batch sizes must be >= 1")
        if not self.threads or min(self.threads) < 1:
            raise UsageError("thread counts must be >= 1")
        if self.steps < self.rounds or self.rounds < 1:
            raise UsageError("steps must be >= rounds >= 1")


def run_bench(
    run_dir: Path,
    model_dir: Path | None,
    config: BenchConfig,
    out_dir: Path = Path("benchmarks/reports"),
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Measure every runtime of `config` side by side, write the report (markdown, JSON,
    chart) to out_dir and return it. Without a complete export at model_dir, every variant
    is exported to a temporary folder first."""
    config.validate()
    run_dir = Path(run_dir)
    model_dir = _exported(run_dir, model_dir, config, log)
    factory = StepFactory(run_dir, model_dir)
    floors = {t: gemv_floor(factory.weight_bytes(), t) for t in config.threads}
    for t, f in floors.items():
        log(
            f"matrix-vector floor over {f['bytes'] / 1e6:.2f} MB, {t} thread(s): {f['p50_us']:.1f} us"
        )
    latency = _latency(factory, config, log)
    _add_ratios(latency, floors, config)
    generation = measure_generation(
        model_dir,
        config.runtimes,
        config.batches,
        config.threads[0],
        config.rounds,
        log,
        steps=config.generation_steps,
    )
    per_runtime = _per_runtime(factory, run_dir, model_dir, config, log)
    report = {
        "name": config.name,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(["toolkit", *sys.argv[1:]]) if sys.argv[1:2] == ["bench"] else None,
        "machine": machine_info(),
        "model": {**factory.manifest.model.sizes(), "source": dict(factory.manifest.source)},
        "settings": {
            "steps": config.steps,
            "rounds": config.rounds,
            "warmup": config.warmup,
            "batches": config.batches,
            "threads": config.threads,
            "tensorflow_threads": "default (inter/intra-op chosen by TensorFlow)",
            "numpy_threads": "BLAS pool limited to the row's thread count (threadpoolctl)",
        },
        "floor": floors[max(config.threads)],
        "floors": {str(t): f for t, f in floors.items()},
        "latency": latency,
        "generation": generation,
        "generation_settings": {
            **GENERATION_SETTINGS,
            "streaming": True,
            "steps_per_round": {str(k): v for k, v in GENERATION_STEPS.items()},
            "pairs_per_round": GENERATION_PAIRS,
        },
        "runtimes": per_runtime,
        "targets": _targets(latency, per_runtime, generation),
    }
    write_report(report, out_dir)
    return report


def _exported(
    run_dir: Path, model_dir: Path | None, config: BenchConfig, log: Callable[[str], None]
) -> Path:
    """The export folder to measure: model_dir (default exported/RUN) if it has every
    variant the runtimes need, else a fresh export of them all in a temporary folder."""
    model_dir = Path(model_dir) if model_dir else Path("exported") / run_dir.resolve().name
    if _has_all(model_dir, _files_of(config.runtimes)):
        return model_dir
    from toolkit.export.exporter import export_run

    tmp_export = Path(tempfile.mkdtemp(prefix="bench-export-")) / run_dir.resolve().name
    log(f"exporting every variant to {tmp_export} (no complete export at {model_dir})")
    export_run(run_dir, tmp_export, quantization="all", log=log)
    # The export leaves out what this machine cannot make (char_lstm.c without a compiler).
    missing = [r for r in config.runtimes if not _has_all(tmp_export, _files_of([r]))]
    if missing:
        log(f"left out {', '.join(missing)}: the export could not make their files")
        config.runtimes = [r for r in config.runtimes if r not in missing]
    return tmp_export


def _latency(
    factory: StepFactory, config: BenchConfig, log: Callable[[str], None]
) -> list[dict[str, Any]]:
    """One row per runtime, batch and thread count: latency percentiles and characters per
    second, the runtimes of each (batch, threads) measured in interleaved rounds."""
    # Keras predict and model(x) are far slower than the rest: fewer steps, same rounds.
    scale = {"keras-predict": 0.1, "keras-call": 0.3}
    latency: list[dict[str, Any]] = []
    for batch in config.batches:
        for threads in config.threads:
            steps: dict[str, StepFn] = {}
            for runtime in config.runtimes:
                fmt = RUNTIMES[runtime][1]
                if threads != config.threads[0] and fmt not in THREADED:
                    continue  # thread count does not apply: measured once
                if batch != 1 and RUNTIMES[runtime][2] == "full-int8":
                    continue  # a microcontroller model has batch 1
                steps[runtime] = factory.make(runtime, batch, threads)
            log(f"measuring batch {batch}, threads {threads}: {', '.join(steps)}")
            blas = {name: threads for name in steps if RUNTIMES[name][1] == "numpy"}
            samples = measure_interleaved(steps, config, scale, blas)
            for runtime, times in samples.items():
                fmt = RUNTIMES[runtime][1]
                stats = percentiles(times)
                latency.append(
                    {
                        "runtime": runtime,
                        "batch": batch,
                        "threads": threads if fmt in THREADED else None,
                        **stats,
                        "chars_per_sec": batch / (stats["p50_us"] / 1e6),
                    }
                )
    return latency


def _add_ratios(
    latency: list[dict[str, Any]], floors: dict[int, dict[str, Any]], config: BenchConfig
) -> None:
    """Speed-ups against Keras on the same batch, and at batch 1 the ratio to the
    matrix-vector floor, added to each latency row."""
    for row in latency:
        same = [r for r in latency if r["batch"] == row["batch"]]
        for ref in ("keras-predict", "keras-call"):
            base = [r for r in same if r["runtime"] == ref]
            if base:
                row[f"speedup_vs_{ref.split('-')[1]}"] = base[0]["p50_us"] / row["p50_us"]
        if row["batch"] == 1:
            # Against the floor at the runtime's own thread count (TF: the largest).
            floor_threads = row["threads"] or max(config.threads)
            row["floor_ratio"] = row["p50_us"] / floors[floor_threads]["p50_us"]


def _per_runtime(
    factory: StepFactory,
    run_dir: Path,
    model_dir: Path,
    config: BenchConfig,
    log: Callable[[str], None],
) -> dict[str, dict[str, Any]]:
    """Per runtime: its file, size and validation bits/char, the time to the first character
    after a prompt of `config.prompt_chars` characters and, in fresh processes, start-up."""
    manifest = factory.manifest
    prompt = _prompt_text(factory, config.prompt_chars)
    per_runtime: dict[str, dict[str, Any]] = {}
    for runtime in config.runtimes:
        kind, fmt, quant = RUNTIMES[runtime]
        entry: dict[str, Any] = {}
        if kind == "exported":
            artifact = manifest.artifact(file_format(fmt), quant)
            entry["file"] = artifact.file
            entry["bytes"] = artifact.bytes
            entry["val_bpc"] = (artifact.validation or {}).get("exported_bpc")
        else:
            entry["file"] = "model.keras"
            entry["bytes"] = (run_dir / "model.keras").stat().st_size
            validated = [a.validation for a in manifest.artifacts.values() if a.validation]
            entry["val_bpc"] = validated[0].get("keras_bpc") if validated else None
        entry["ttfc_1000_s"] = time_to_first_char(factory, runtime, prompt)
        if config.startup and runtime in GENERATE_RUNTIME:
            rt, variant = GENERATE_RUNTIME[runtime]
            target = run_dir if rt == "keras" else model_dir
            entry["startup"] = startup(target, rt, variant, config.startup_runs)
        per_runtime[runtime] = entry
        log(f"{runtime}: {json.dumps(entry)}")
    return per_runtime


def _files_of(runtimes: list[str]) -> set[tuple[str, str]]:
    """The (format, quantization) of the files the exported rows step."""
    return {
        (file_format(RUNTIMES[r][1]), RUNTIMES[r][2])
        for r in runtimes
        if RUNTIMES[r][0] == "exported"
    }


def _has_all(model_dir: Path, needs: set[tuple[str, str]]) -> bool:
    try:
        manifest = Manifest.read(model_dir)
    except ModelFileError:
        return False
    return all(manifest.has(f, q) for f, q in needs)


def _prompt_text(factory: StepFactory, n: int) -> str:
    from toolkit.data.batches import open_training_data
    from toolkit.train.run_dir import load_run_config

    data = Path(factory.info["data"]) if factory.info.get("data") else None
    val_fraction = load_run_config(factory.run_dir).val_fraction
    corpus = open_training_data(data, val_fraction, log=lambda _: None)
    tail = np.asarray(corpus.val[-max(n, 1) :])  # validation text: the tail of the corpus
    return corpus.vocab.decode(tail)[:n]


def _targets(
    latency: list[dict[str, Any]],
    per_runtime: dict[str, Any],
    generation: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    exported = [r for r in latency if RUNTIMES[r["runtime"]][0] == "exported" and r["batch"] == 1]
    best = min(exported, key=lambda r: r["p50_us"]) if exported else None
    fp32 = [r for r in exported if r["runtime"] in ("onnx-fp32", "tflite-fp32", "numpy")]
    best_fp32 = min(fp32, key=lambda r: r["p50_us"]) if fp32 else None
    # Per fp32 runtime, its best ratio to the floor over the thread counts measured.
    floor_ratios: dict[str, float] = {}
    for r in fp32:
        ratio = r.get("floor_ratio")
        if ratio is not None:
            floor_ratios[r["runtime"]] = min(ratio, floor_ratios.get(r["runtime"], ratio))
    startups = {
        k: v["startup"]["first_char_s"]
        for k, v in per_runtime.items()
        if "startup" in v and "first_char_s" in v["startup"]
    }
    return {
        "best_exported_batch1": best["runtime"] if best else None,
        "speedup_vs_predict": best.get("speedup_vs_predict") if best else None,
        "speedup_vs_call": best.get("speedup_vs_call") if best else None,
        "best_fp32_batch1": best_fp32["runtime"] if best_fp32 else None,
        "best_fp32_floor_ratio": best_fp32.get("floor_ratio") if best_fp32 else None,
        "fp32_best_floor_ratio_by_runtime": floor_ratios,
        "startup_first_char_s": startups,
        "generate_over_step_min": (
            min(generation, key=lambda r: r["ratio"]) if generation else None
        ),
    }
