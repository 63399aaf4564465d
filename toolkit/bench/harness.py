"""`toolkit bench`: latency, size and quality of every runtime against the Keras model.

All runtimes are measured side by side in one process, in interleaved rounds (order shuffled
each round) after a warm-up, so that machine drift hits every runtime alike. Reports medians
and ratios, never single timings. Cold start and peak memory come from fresh subprocesses.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from toolkit.data import atomic_write_bytes, atomic_write_text
from toolkit.errors import UsageError
from toolkit.runtime.manifest import file_format, read_manifest

# name -> (kind, format, quantization). Order is the order of the report.
RUNTIMES: dict[str, tuple[str, str, str]] = {
    "keras-predict": ("keras", "predict", "none"),
    "keras-call": ("keras", "call", "none"),
    "tf-function": ("keras", "tf.function", "none"),
    "tflite-fp32": ("exported", "tflite", "none"),
    "tflite-fp16": ("exported", "tflite", "float16"),
    "tflite-int8": ("exported", "tflite", "int8"),
    # Full-integer, batch 1: LiteRT, and TensorFlow Lite Micro's interpreter on the host.
    "tflite-full-int8": ("exported", "tflite", "full-int8"),
    "tflm-full-int8": ("exported", "tflm", "full-int8"),
    "onnx-fp32": ("exported", "onnx", "none"),
    "onnx-int8": ("exported", "onnx", "int8"),
    "numpy": ("exported", "numpy", "none"),
}
GENERATE_RUNTIME = {  # runtime name -> (generate --runtime, --variant)
    "keras-call": ("keras", "fp32"),
    "tflite-fp32": ("tflite", "fp32"),
    "tflite-fp16": ("tflite", "fp16"),
    "tflite-int8": ("tflite", "int8"),
    "tflite-full-int8": ("tflite", "full-int8"),
    "tflm-full-int8": ("tflm", "full-int8"),
    "onnx-fp32": ("onnx", "fp32"),
    "onnx-int8": ("onnx", "int8"),
    "numpy": ("numpy", "fp32"),
}
THREADED = {"tflite", "onnx", "numpy"}  # numpy: the BLAS thread pool
StepFn = Callable[[], Any]


@dataclass
class BenchConfig:
    runtimes: list[str] = field(default_factory=lambda: list(RUNTIMES))
    batches: list[int] = field(default_factory=lambda: [1, 32])
    threads: list[int] = field(default_factory=lambda: [1, 2])
    steps: int = 300  # timed steps per runtime and configuration, split over the rounds
    rounds: int = 5
    warmup: int = 20
    prompt_chars: int = 1000
    cold_start_runs: int = 3
    cold_start: bool = True
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


def percentiles(samples_s: list[float]) -> dict[str, float]:
    a = np.asarray(samples_s) * 1e6
    return {
        "p50_us": float(np.percentile(a, 50)),
        "p90_us": float(np.percentile(a, 90)),
        "p99_us": float(np.percentile(a, 99)),
        "mean_us": float(a.mean()),
        "n": len(a),
    }


def machine_info() -> dict[str, Any]:
    import importlib.metadata as md

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions: dict[str, str | None] = {}
    for dist in ("tensorflow", "keras", "onnxruntime", "ai-edge-litert", "numpy", "tf2onnx"):
        try:
            versions[dist] = md.version(dist)
        except md.PackageNotFoundError:
            versions[dist] = None
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "versions": versions,
        "env": {
            k: os.environ.get(k)
            for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "OPENBLAS_CORETYPE")
            if os.environ.get(k)
        },
    }


# --------------------------------------------------------------------------- step makers


class StepFactory:
    """Builds one zero-argument step closure per (runtime, batch, threads), inputs bound."""

    def __init__(self, run_dir: Path, model_dir: Path) -> None:
        from toolkit.export import load_keras_run, make_step_module
        from toolkit.model import lstm_weights
        from toolkit.runtime.backends import fold_weights

        self.run_dir = run_dir
        self.model_dir = model_dir
        self.manifest = read_manifest(model_dir)
        self.model, self.config, self.vocab, self.info = load_keras_run(run_dir)
        self.folded = fold_weights(lstm_weights(self.model, self.config), self.config.layers)
        self.module = make_step_module(self.folded, self.config)

    def make(self, runtime: str, batch: int, threads: int) -> StepFn:
        kind, fmt, quant = RUNTIMES[runtime]
        cfg = self.config
        token = np.arange(batch, dtype=np.int32) % cfg.vocab_size
        h = np.zeros((cfg.layers, batch, cfg.units), np.float32)
        if kind == "keras":
            return self._keras_step(fmt, token, h)
        from toolkit.runtime.backends import load_backend

        backend = load_backend(
            self.model_dir, self.manifest, fmt, quant, threads if fmt in THREADED else 1
        )
        step = backend.step
        return lambda: step(token, h, h)

    def _keras_step(self, how: str, token: np.ndarray, h: np.ndarray) -> StepFn:
        import tensorflow as tf

        if how == "tf.function":
            module = self.module
            t, hh = tf.constant(token), tf.constant(h)
            return lambda: module.step(t, hh, hh)
        inputs = {
            "tokens": token.reshape(-1, 1),
            "h": np.ascontiguousarray(h.transpose(1, 0, 2)),
            "c": np.ascontiguousarray(h.transpose(1, 0, 2)),
        }
        model = self.model
        if how == "predict":
            return lambda: model.predict(inputs, verbose=0, batch_size=len(token))
        return lambda: model(inputs, training=False)

    def weight_bytes(self) -> int:
        """fp32 bytes a batch-1 step must read: every matrix but the gathered table row."""
        total = 0
        for name, w in self.folded.items():
            total += w[:1].nbytes if name == "table_0" else w.nbytes
        return total


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
    config: BenchConfig,
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


# Runs `toolkit` like `python -m toolkit` and, at exit, reports the process's own peak RSS
# (VmHWM). The parent's rusage would count the forked copy of this (TensorFlow-sized) process.
_CHILD = """
import atexit, sys
def _peak():
    try:
        for line in open('/proc/self/status'):
            if line.startswith('VmHWM:'):
                sys.stderr.write('PEAK_RSS_KB %s\\n' % line.split()[1])
    except OSError:
        pass
atexit.register(_peak)
sys.argv = ['toolkit'] + sys.argv[1:]
from toolkit.cli import main
main()
"""


def cold_start(model_arg: Path, runtime: str, variant: str, runs: int) -> dict[str, Any]:
    """Wall time and peak RSS of fresh `toolkit generate` processes (import, load, generate).

    Process start to first character = wall time minus the generation after the first one.
    """
    args = ["generate", str(model_arg), "--runtime", runtime, "--variant", variant,
            "--length", "100", "--temperature", "0", "--json"]  # fmt: skip
    walls, rss, first = [], [], []
    for _ in range(runs):
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-c", _CHILD, *args], capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            return {"error": f"exit {proc.returncode}: {proc.stderr.strip()[-200:]}"}
        result = json.loads(proc.stdout)
        walls.append(wall)
        first.append(wall - (result["elapsed_s"] - result["time_to_first_char_s"]))
        peaks = [int(x.split()[1]) for x in proc.stderr.splitlines() if x.startswith("PEAK_RSS_KB")]
        if peaks:
            rss.append(peaks[-1] / 1024)
    return {
        "wall_s": statistics.median(walls),
        "first_char_s": statistics.median(first),
        "peak_rss_mb": statistics.median(rss) if rss else None,
        "runs": runs,
    }


class TFFunctionBackend:
    """The compiled tf.function step (StepModel) behind the step interface, for comparison."""

    name = "tf-function"

    def __init__(self, module: Any) -> None:
        self.module = module

    def step(self, token: np.ndarray, h: np.ndarray, c: np.ndarray) -> Any:
        out = self.module.step(token, h, c)
        return out["logits"].numpy(), out["h_out"].numpy(), out["c_out"].numpy()


def time_to_first_char(factory: StepFactory, runtime: str, prompt: str) -> float | None:
    """Seconds from a 1,000-character prompt to the first sampled character (state warm-up).

    Skipped for Keras `model.predict`: a thousand predict calls take about a minute.
    """
    from toolkit.keras_runtime import KerasBackend
    from toolkit.runtime.generator import Generator, load

    m = factory.manifest["model"]
    backend: Any
    if runtime == "keras-predict":
        return None
    if runtime in ("keras-call", "tf-function"):
        if runtime == "keras-call":
            backend = KerasBackend(factory.model)
        else:
            backend = TFFunctionBackend(factory.module)
        gen = Generator(
            backend, factory.manifest["vocab"], m["layers"], m["units"], runtime, "fp32"
        )
    else:
        rt, variant = GENERATE_RUNTIME[runtime]
        gen = load(factory.model_dir, runtime=rt, variant=variant)
    gen.generate(prompt[:20], length=1, unknown="skip")  # warm-up
    return gen.generate(prompt, length=1, temperature=0, unknown="skip").time_to_first_char_s


# End-to-end generation is measured as `toolkit generate` runs: sampling at temperature 0.8,
# a stop string set (one that does not occur, so every row runs to the end) and streaming on.
GENERATION_SETTINGS: dict[str, Any] = {"temperature": 0.8, "stop": "THE END", "prompt": "ROMEO:"}
# Characters per row per round, by batch: enough that the prompt's six steps do not count
# against the loop (0.3% and 0.6% of the steps at these lengths; 600 at batch 32 made it 1%).
GENERATION_STEPS = {1: 2000, 32: 1000}
# Pairs of a step block and a generate block (in random order, back to back) per
# configuration per round, each giving one ratio. Three: the median of 30 ratios over 10
# rounds (with one pair, repeated runs of the bench moved by +-0.03).
GENERATION_PAIRS = 3


def measure_generation(
    model_dir: Path,
    runtimes: list[str],
    batches: list[int],
    threads: int,
    rounds: int,
    log: Callable[[str], None] = print,
) -> list[dict[str, Any]]:
    """End-to-end `generate` chars/s beside the step-only chars/s of the same backend.

    Both are timed in the same interleaved rounds (order shuffled each round): a block of bare
    steps made as `generate` makes them (`make_stepper`), and a `Generator.generate` of the
    same number of steps with the settings above, GENERATION_PAIRS times, after a tenth as
    many untimed steps. The ratio generate/step says what sampling and bookkeeping cost; it is
    the median of each pair's own ratio (the two blocks run back to back), which this
    machine's drifting speed disturbs less than a ratio of two medians.
    """
    from threadpoolctl import threadpool_limits

    from toolkit.runtime.generator import load

    rng = np.random.default_rng(1)
    jobs: dict[tuple[str, int], dict[str, Any]] = {}
    for runtime in runtimes:
        if runtime not in GENERATE_RUNTIME or RUNTIMES[runtime][0] != "exported":
            continue
        rt, variant = GENERATE_RUNTIME[runtime]
        for batch in batches:
            if batch != 1 and RUNTIMES[runtime][2] == "full-int8":
                continue  # a microcontroller model has batch 1
            gen = load(model_dir, runtime=rt, variant=variant, threads=threads)
            # TFLite Micro's Python interpreter is ~100x slower per step: fewer steps.
            steps = max(10, GENERATION_STEPS.get(batch, 200) // (20 if rt == "tflm" else 1))
            jobs[(runtime, batch)] = {"gen": gen, "steps": steps, "step": [], "generate": []}
    log(f"measuring end-to-end generation: {len(jobs)} configurations, {rounds} rounds")
    sink: list[str] = []
    # numpy's BLAS pool at the measured thread count, as for the latencies: left at its
    # default, the numpy backend's threads kept the other core busy for the next runtime.
    with threadpool_limits(limits=threads, user_api="blas"):
        for round_index in range(rounds + 1):  # round 0 is the warm-up
            for key in [list(jobs)[i] for i in rng.permutation(len(jobs))]:
                job, (runtime, batch) = jobs[key], key
                gen, steps = job["gen"], job["steps"]
                # A tenth of the steps, untimed: whichever of the pair runs first would
                # otherwise pay for the caches the previous runtime left.
                _bare_steps(gen, batch, max(1, steps // 10))
                for _ in range(GENERATION_PAIRS):
                    timed = {}
                    for mode in rng.permutation(["step", "generate"]):
                        if mode == "step":
                            seconds, chars = _bare_steps(gen, batch, steps), steps * batch
                        else:
                            sink.clear()
                            result = gen.generate(
                                GENERATION_SETTINGS["prompt"],
                                length=steps,
                                temperature=GENERATION_SETTINGS["temperature"],
                                stop=GENERATION_SETTINGS["stop"],
                                seed=round_index,
                                num_samples=batch,
                                on_text=lambda _row, text: sink.append(text),
                            )
                            seconds, chars = result.elapsed_s, result.chars_generated
                        timed[str(mode)] = chars / seconds
                    if round_index > 0:
                        for mode, chars_per_sec in timed.items():
                            job[mode].append(chars_per_sec)
    rows = []
    for (runtime, batch), job in jobs.items():
        step_cps = statistics.median(job["step"])
        generate_cps = statistics.median(job["generate"])
        paired = [g / s for g, s in zip(job["generate"], job["step"], strict=True)]
        rows.append(
            {
                "runtime": runtime,
                "batch": batch,
                "threads": threads,
                "steps_per_round": job["steps"],
                "step_chars_per_sec": step_cps,
                "generate_chars_per_sec": generate_cps,
                "ratio": statistics.median(paired),
                "pair_ratios": [round(r, 4) for r in paired],
            }
        )
    return rows


def _bare_steps(gen: Any, batch: int, steps: int) -> float:
    """Seconds for `steps` bare steps made as `generate` makes them (the backend's own
    stepper: ONNX keeps the state in bound buffers). Each step's state feeds the next: a zero
    state every time would flatter int8 models, whose step cost depends on the values."""
    from toolkit.runtime.backends import make_stepper

    token = np.arange(batch, dtype=np.int32) % len(gen.chars)
    h = np.zeros((gen.layers, batch, gen.units), np.float32)
    logits, h, c = gen.backend.step(token, h, h)
    stepper = make_stepper(gen.backend, logits, h, c)
    if batch == 1:  # as Session._sample_one: the token as a Python int
        advance_one, first = stepper.advance_one, int(token[0])
        t0 = time.perf_counter()
        for _ in range(steps):
            advance_one(first)
        return time.perf_counter() - t0
    advance = stepper.advance
    t0 = time.perf_counter()
    for _ in range(steps):
        advance(token)
    return time.perf_counter() - t0


def run_bench(
    run_dir: Path,
    model_dir: Path | None,
    config: BenchConfig,
    out_dir: Path = Path("benchmarks/reports"),
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    config.validate()
    run_dir = Path(run_dir)
    model_dir = Path(model_dir) if model_dir else Path("exported") / run_dir.resolve().name
    needs = {
        (file_format(RUNTIMES[r][1]), RUNTIMES[r][2])
        for r in config.runtimes
        if RUNTIMES[r][0] == "exported"
    }
    tmp_export = None
    if not _has_all(model_dir, needs):
        from toolkit.export import export_run

        tmp_export = Path(tempfile.mkdtemp(prefix="bench-export-")) / run_dir.resolve().name
        log(f"exporting every variant to {tmp_export} (no complete export at {model_dir})")
        export_run(run_dir, tmp_export, quantization="all", log=log)
        model_dir = tmp_export

    factory = StepFactory(run_dir, model_dir)
    manifest = factory.manifest
    floors = {t: gemv_floor(factory.weight_bytes(), t) for t in config.threads}
    for t, f in floors.items():
        log(
            f"matrix-vector floor over {f['bytes'] / 1e6:.2f} MB, {t} thread(s): {f['p50_us']:.1f} us"
        )

    # Keras predict is ~1000x slower than the rest: give it fewer steps, same rounds.
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

    # Speed-ups and floor ratios, per (batch, threads) row, against Keras on the same batch.
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

    generation = measure_generation(
        model_dir, config.runtimes, config.batches, config.threads[0], config.rounds, log
    )

    prompt = _prompt_text(factory, config.prompt_chars)
    per_runtime: dict[str, dict[str, Any]] = {}
    for runtime in config.runtimes:
        kind, fmt, quant = RUNTIMES[runtime]
        entry: dict[str, Any] = {}
        if kind == "exported":
            art = _artifact(manifest, file_format(fmt), quant)
            entry["file"] = art[0]
            entry["bytes"] = art[1]["bytes"]
            validation = art[1].get("validation") or {}
            entry["val_bpc"] = validation.get("exported_bpc")
        else:
            entry["file"] = "model.keras"
            entry["bytes"] = (run_dir / "model.keras").stat().st_size
            validation = (
                next(
                    (
                        a.get("validation")
                        for a in manifest["artifacts"].values()
                        if a.get("validation")
                    ),
                    None,
                )
                or {}
            )
            entry["val_bpc"] = validation.get("keras_bpc")
        entry["ttfc_1000_s"] = time_to_first_char(factory, runtime, prompt)
        if config.cold_start and runtime in GENERATE_RUNTIME:
            rt, variant = GENERATE_RUNTIME[runtime]
            target = run_dir if rt == "keras" else model_dir
            entry["cold_start"] = cold_start(target, rt, variant, config.cold_start_runs)
        per_runtime[runtime] = entry
        log(f"{runtime}: {json.dumps(entry)}")

    report = {
        "name": config.name,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(["toolkit", *sys.argv[1:]]) if sys.argv[1:2] == ["bench"] else None,
        "machine": machine_info(),
        "model": {**manifest["model"], "source": manifest.get("source", {})},
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


def _has_all(model_dir: Path, needs: set[tuple[str, str]]) -> bool:
    try:
        manifest = read_manifest(model_dir)
    except Exception:
        return False
    from toolkit.runtime.manifest import artifact_name

    return all(artifact_name(f, q) in manifest["artifacts"] for f, q in needs)


def _artifact(manifest: dict[str, Any], fmt: str, quant: str) -> tuple[str, dict[str, Any]]:
    from toolkit.runtime.manifest import artifact_name

    name = artifact_name(fmt, quant)
    return name, manifest["artifacts"][name]


def _prompt_text(factory: StepFactory, n: int) -> str:
    from toolkit.batches import open_training_data
    from toolkit.run_dir import load_run_config

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
    colds = {
        k: v["cold_start"]["first_char_s"]
        for k, v in per_runtime.items()
        if "cold_start" in v and "first_char_s" in v["cold_start"]
    }
    return {
        "best_exported_batch1": best["runtime"] if best else None,
        "speedup_vs_predict": best.get("speedup_vs_predict") if best else None,
        "speedup_vs_call": best.get("speedup_vs_call") if best else None,
        "best_fp32_batch1": best_fp32["runtime"] if best_fp32 else None,
        "best_fp32_floor_ratio": best_fp32.get("floor_ratio") if best_fp32 else None,
        "fp32_best_floor_ratio_by_runtime": floor_ratios,
        "cold_start_first_char_s": colds,
        "generate_over_step_min": (
            min(generation, key=lambda r: r["ratio"]) if generation else None
        ),
    }


# --------------------------------------------------------------------------- report


def write_report(report: dict[str, Any], out_dir: Path) -> tuple[Path, Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    name = report["name"]
    json_path = out_dir / f"{name}.json"
    md_path = out_dir / f"{name}.md"
    png_path = out_dir / f"{name}.png"
    atomic_write_text(json_path, json.dumps(report, indent=2))
    atomic_write_text(md_path, markdown_report(report))
    atomic_write_bytes(png_path, chart_png(report))
    return json_path, md_path, png_path


def _fmt(value: Any, spec: str = ".1f") -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return format(value, spec)
    return str(value)


def markdown_report(report: dict[str, Any]) -> str:
    m = report["machine"]
    model = report["model"]
    lines = [
        f"# Benchmark `{report['name']}`",
        "",
        f"- Model: {model['layers']}x{model['units']} LSTM, embedding {model['embedding_dim']}, "
        f"vocab {model['vocab_size']} (run `{model.get('source', {}).get('run_name')}`)",
        f"- Machine: {m['cpu']}, {m['cores']} cores, Python {m['python']}; "
        + ", ".join(f"{k} {v}" for k, v in m["versions"].items() if v),
        f"- Settings: {report['settings']['steps']} timed steps per runtime and configuration in "
        f"{report['settings']['rounds']} interleaved rounds after {report['settings']['warmup']} "
        "warm-up steps; medians. Keras predict and model(x) get fewer steps (they are slow).",
        f"- Command: `{report.get('command') or 'toolkit bench'}`; created {report['created']}",
        f"- Matrix-vector floor (numpy, {report['floor']['bytes'] / 1e6:.2f} MB fp32 weights): "
        + ", ".join(f"{f['p50_us']:.1f} µs at {t} thread(s)" for t, f in report["floors"].items())
        + "; `× floor` compares each batch-1 row with the floor at its own thread count "
        "(TensorFlow rows: the largest).",
        "",
        "## Per-step latency",
        "",
        "| runtime | batch | threads | p50 µs | p90 µs | p99 µs | chars/s | × predict | × model(x) | × floor |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in report["latency"]:
        lines.append(
            f"| {r['runtime']} | {r['batch']} | {_fmt(r['threads'])} | {r['p50_us']:.1f} | "
            f"{r['p90_us']:.1f} | {r['p99_us']:.1f} | {r['chars_per_sec']:,.0f} | "
            f"{_fmt(r.get('speedup_vs_predict'))} | {_fmt(r.get('speedup_vs_call'), '.2f')} | "
            f"{_fmt(r.get('floor_ratio'), '.2f')} |"
        )
    gs = report.get("generation_settings") or {}
    if report.get("generation"):
        lines += [
            "",
            "## End-to-end generation against the step alone",
            "",
            f"`Generator.generate` (prompt {gs.get('prompt')!r}, temperature "
            f"{gs.get('temperature')}, stop string {gs.get('stop')!r} set, streaming on) beside "
            "the same backend's bare steps, made as `generate` makes them (ONNX: state kept in "
            "bound buffers, so faster than the per-call latencies above), timed in the same "
            f"interleaved rounds, {gs.get('pairs_per_round', 1)} pairs of blocks per round; "
            "medians. The ratio (the median of each pair's generate/step, the two timed back to "
            "back) is what sampling and bookkeeping leave of the step's speed.",
            "",
            "| runtime | batch | threads | step alone chars/s | generate chars/s | ratio |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for r in report["generation"]:
            lines.append(
                f"| {r['runtime']} | {r['batch']} | {r['threads']} | "
                f"{r['step_chars_per_sec']:,.0f} | {r['generate_chars_per_sec']:,.0f} | "
                f"{r['ratio']:.2f} |"
            )
    lines += [
        "",
        "## Size, quality, start-up",
        "",
        "| runtime | file | size KiB | val bits/char | first char after 1,000-char prompt (s) | "
        "cold start to first char (s) | cold start total (s) | peak RSS MB |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, e in report["runtimes"].items():
        cold = e.get("cold_start") or {}
        lines.append(
            f"| {name} | {e['file']} | {e['bytes'] / 1024:.1f} | {_fmt(e.get('val_bpc'), '.4f')} | "
            f"{_fmt(e.get('ttfc_1000_s'), '.3f')} | {_fmt(cold.get('first_char_s'), '.3f')} | "
            f"{_fmt(cold.get('wall_s'), '.3f')} | {_fmt(cold.get('peak_rss_mb'), '.0f')} |"
        )
    t = report["targets"]
    lines += [
        "",
        "## Targets",
        "",
        f"- Best exported runtime at batch 1: **{t['best_exported_batch1']}**, "
        f"{_fmt(t['speedup_vs_predict'])}× faster than `model.predict` (target ≥ 100×), "
        f"{_fmt(t['speedup_vs_call'])}× faster than `model(x)` (target ≥ 10×).",
        f"- Fastest fp32 runtime at batch 1: **{t['best_fp32_batch1']}**, "
        f"{_fmt(t['best_fp32_floor_ratio'], '.2f')}× the matrix-vector floor at its thread count. "
        "Best ratio to the floor per fp32 runtime (over thread counts): "
        + ", ".join(f"{k} {v:.2f}×" for k, v in t["fp32_best_floor_ratio_by_runtime"].items())
        + " (targets: ≤ 1.5× for the best at the default size, ≤ 1.3× for ONNX and TFLite "
        "at the seed size).",
        "- Cold start, process start to first character: "
        + ", ".join(f"{k} {v:.3f} s" for k, v in t["cold_start_first_char_s"].items())
        + " (target ≤ 0.5 s for onnx and tflite).",
    ]
    worst = t.get("generate_over_step_min")
    if worst:
        lines.append(
            f"- End-to-end generation over the step alone: lowest ratio {worst['ratio']:.2f} "
            f"({worst['runtime']}, batch {worst['batch']}) (target ≥ 0.85 at batch 1 and 32)."
        )
    lines.append("")
    return "\n".join(lines)


def chart_png(report: dict[str, Any]) -> bytes:
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [
        r for r in report["latency"] if r["threads"] in (None, report["settings"]["threads"][0])
    ]
    batches = sorted({r["batch"] for r in rows})
    runtimes = [r for r in RUNTIMES if any(x["runtime"] == r for x in rows)]
    generation = report.get("generation") or []
    panels = 3 if generation else 2
    fig, axes = plt.subplots(1, panels, figsize=(6.5 * panels, 5))
    ax1, ax2 = axes[0], axes[1]
    width = 0.8 / max(1, len(batches))
    x = np.arange(len(runtimes))
    for i, batch in enumerate(batches):
        vals = [
            next((r["p50_us"] for r in rows if r["runtime"] == rt and r["batch"] == batch), np.nan)
            for rt in runtimes
        ]
        ax1.bar(x + i * width, vals, width, label=f"batch {batch}")
        ups = [
            next(
                (
                    r.get("speedup_vs_predict", np.nan)
                    for r in rows
                    if r["runtime"] == rt and r["batch"] == batch
                ),
                np.nan,
            )
            for rt in runtimes
        ]
        ax2.bar(x + i * width, ups, width, label=f"batch {batch}")
    ax1.axhline(
        report["floors"][str(report["settings"]["threads"][0])]["p50_us"],
        color="k",
        linestyle="--",
        linewidth=1,
        label="GEMV floor (batch 1)",
    )
    for ax, title, ylabel in (
        (ax1, "Per-step latency (p50, log scale)", "µs per step"),
        (ax2, "Speed-up over Keras model.predict", "× faster"),
    ):
        ax.set_yscale("log")
        ax.set_xticks(x + width * (len(batches) - 1) / 2)
        ax.set_xticklabels(runtimes, rotation=35, ha="right")
        ax.set_title(title)
        ax.set_ylabel(ylabel)
        ax.legend()
        ax.grid(axis="y", which="both", alpha=0.3)
    if generation:
        ax3 = axes[2]
        names = list(dict.fromkeys(r["runtime"] for r in generation))
        gen_batches = sorted({r["batch"] for r in generation})
        gx = np.arange(len(names))
        gwidth = 0.8 / max(1, len(gen_batches))
        for i, batch in enumerate(gen_batches):
            ratios = [
                next((r["ratio"] for r in generation if r["runtime"] == n and r["batch"] == batch),
                     np.nan)
                for n in names
            ]  # fmt: skip
            ax3.bar(gx + i * gwidth, ratios, gwidth, label=f"batch {batch}")
        ax3.axhline(0.85, color="k", linestyle="--", linewidth=1, label="target 0.85")
        ax3.set_xticks(gx + gwidth * (len(gen_batches) - 1) / 2)
        ax3.set_xticklabels(names, rotation=35, ha="right")
        ax3.set_ylim(0, 1.1)
        ax3.set_title("End-to-end generate / step alone (chars/s)")
        ax3.legend()
        ax3.grid(axis="y", alpha=0.3)
    m = report["model"]
    fig.suptitle(
        f"{report['name']}: {m['layers']}x{m['units']} char-LSTM, threads {report['settings']['threads'][0]}"
    )
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    return buffer.getvalue()
