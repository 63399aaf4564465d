"""End-to-end generation beside the bare step, and the time to the first character after a
long prompt."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from toolkit.bench.targets import GENERATE_RUNTIME, RUNTIMES, StepFactory, TFFunctionBackend
from toolkit.runtime.backends.keras import KerasBackend
from toolkit.runtime.generator import Generator, load
from toolkit.runtime.step import make_stepper


def time_to_first_char(factory: StepFactory, runtime: str, prompt: str) -> float | None:
    """Seconds from a 1,000-character prompt to the first sampled character (state warm-up).

    Skipped for Keras `model.predict`: a thousand predict calls take about a minute.
    """
    backend: Any
    if runtime == "keras-predict":
        return None
    if runtime in ("keras-call", "tf-function"):
        if runtime == "keras-call":
            backend = KerasBackend(factory.model)
        else:
            backend = TFFunctionBackend(factory.module)
        gen = Generator(backend, factory.vocab, factory.config, runtime, "fp32")
    else:
        rt, variant = GENERATE_RUNTIME[runtime]
        gen = load(factory.model_dir, runtime=rt, variant=variant)
    gen.generate(prompt[:20], length=1, unknown="skip")  # warm-up
    return gen.generate(prompt, length=1, temperature=0, unknown="skip").time_to_first_char_s


# End-to-end generation is measured as `toolkit generate` runs: sampling at temperature 0.8,
# a stop string set (one that does not occur, so every row runs to the end) and streaming on.
GENERATION_SETTINGS: dict[str, Any] = {"temperature": 0.8, "stop": "THE END", "prompt": "ROMEO:"}
# Characters per row per round, by batch: enough that the prompt's six steps do not count
# against the loop.
GENERATION_STEPS = {1: 2000, 32: 1000}
# Pairs of a step block and a generate block (in random order, back to back) per
# configuration per round, each giving one ratio: more pairs, a steadier median on a machine
# whose speed drifts.
GENERATION_PAIRS = 3


def measure_generation(
    model_dir: Path,
    runtimes: list[str],
    batches: list[int],
    threads: int,
    rounds: int,
    log: Callable[[str], None] = print,
    steps: int | None = None,
) -> list[dict[str, Any]]:
    """End-to-end `generate` chars/s beside the step-only chars/s of the same backend.

    Both are timed in the same interleaved rounds (order shuffled each round): a block of bare
    steps made as `generate` makes them (`make_stepper`), and a `Generator.generate` of the
    same number of steps (`steps` per row, default GENERATION_STEPS) with the settings above,
    GENERATION_PAIRS times, after a tenth as many untimed steps. The ratio generate/step says
    what sampling and bookkeeping cost; it is the median of each pair's own ratio (the two
    blocks run back to back), which this machine's drifting speed disturbs less than a ratio
    of two medians.
    """
    from threadpoolctl import threadpool_limits

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
            # TFLite Micro's Python interpreter is far slower per step: fewer steps.
            chars = steps or GENERATION_STEPS.get(batch, 200)
            chars = max(10, chars // (20 if rt == "tflm" else 1))
            jobs[(runtime, batch)] = {"gen": gen, "steps": chars, "step": [], "generate": []}
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
