"""Training throughput (characters per second) of every preset on this machine.

    python benchmarks/train_throughput.py [--steps 20] [--precisions fp32,bf16]

Each preset is measured in every precision side by side (fp32 and bf16 steps interleaved, so
that machine drift hits both), with the ratio bf16 / fp32.

Times the compiled training step (forward, backward, Adam update) on real batches of the
bundled corpus after a warm-up, so tracing and the first-call cost are excluded; reports the
median step time. Writes JSON and Markdown.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from toolkit.config import PRESETS
from toolkit.data.batches import epoch_batches
from toolkit.data.corpus import bundled_corpus_text, split_corpus
from toolkit.files import atomic_write_text
from toolkit.machine import machine_info
from toolkit.train.trainer import Trainer, zero_state
from toolkit.vocabulary import Vocabulary


def measure(name: str, precisions: list[str], steps: int, warmup: int) -> list[dict]:
    text = bundled_corpus_text()
    vocab = Vocabulary.from_text(text)
    trainers, batches, states = {}, {}, {}
    for precision in precisions:
        config = dataclasses.replace(PRESETS[name], precision=precision)
        train_ids, _ = split_corpus(vocab.encode(text), config.val_fraction)
        trainers[precision] = Trainer(config, len(vocab))
        batches[precision] = epoch_batches(train_ids, config, 0)
        states[precision] = zero_state(trainers[precision].model_config, config.batch_size)
    times: dict[str, list[float]] = {p: [] for p in precisions}
    for k in range(warmup + steps):
        for precision in precisions:  # interleaved, step by step
            x_all, y_all = batches[precision]
            h, c = states[precision]
            t0 = time.perf_counter()
            loss, h, c = trainers[precision].train_step(x_all[k], y_all[k], h, c)
            float(loss)  # wait for the step to finish
            states[precision] = (h, c)
            if k >= warmup:
                times[precision].append(time.perf_counter() - t0)
    return [_row(name, trainers[p], p, times[p], steps) for p in precisions]


def _row(name: str, trainer: Trainer, precision: str, times: list[float], steps: int) -> dict:
    config = trainer.config
    step_s = statistics.median(times)
    chars = config.batch_size * config.seq_length
    return {
        "preset": name,
        "precision": precision,
        "layers": config.layers,
        "units": config.units,
        "embedding_dim": config.embedding_dim,
        "batch_size": config.batch_size,
        "seq_length": config.seq_length,
        "params": int(trainer.model.count_params()),
        "step_ms_median": step_s * 1e3,
        "chars_per_sec": chars / step_s,
        "steps_timed": steps,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", default=",".join(PRESETS))
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--precisions", default="fp32,bf16")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/reports/train_throughput"))
    args = parser.parse_args()
    rows = []
    precisions = args.precisions.split(",")
    for name in args.presets.split(","):
        measured = measure(name, precisions, args.steps, args.warmup)
        base = measured[0]["chars_per_sec"]
        for row in measured:
            row["ratio_to_first"] = row["chars_per_sec"] / base
            print(json.dumps(row), flush=True)
            rows.append(row)
    report = {
        "command": "python " + " ".join(sys.argv),
        "machine": machine_info(),
        "python": platform.python_version(),
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out.with_suffix(".json"), json.dumps(report, indent=2))
    lines = [
        "# Training throughput per preset",
        "",
        f"Command: `{report['command']}`  ",
        f"Machine: {report['machine']['cpu']}, {report['machine']['cores']} cores, "
        f"TensorFlow {report['machine']['versions'].get('tensorflow')}",
        "",
        "Median time of one compiled training step (forward, backward, Adam) after a warm-up; "
        f"the precisions of a preset are timed step by step in turn. ratio: chars/s against "
        f"{precisions[0]}. bf16 is Keras's mixed_bfloat16 (bf16 math, float32 weights); "
        "`--precision auto` (the default) picks it where the CPU has bf16 instructions.",
        "",
        "| preset | model | batch × seq | params | precision | step ms | chars/s | ratio |",
        "|---|---|---|---:|---|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['preset']} | {r['layers']}×{r['units']} (emb {r['embedding_dim']}) | "
            f"{r['batch_size']} × {r['seq_length']} | {r['params']:,} | {r['precision']} | "
            f"{r['step_ms_median']:.1f} | {r['chars_per_sec']:,.0f} | "
            f"{r['ratio_to_first']:.2f} |"
        )
    atomic_write_text(args.out.with_suffix(".md"), "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
