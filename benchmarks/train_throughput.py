"""Training throughput (characters per second) of every preset on this machine.

    python benchmarks/train_throughput.py [--steps 20] [--precisions fp32,bf16] [--baseline b2a875a]

Each preset is measured in every precision side by side (the steps interleaved, so that
machine drift hits all of them), with the ratio to the first column.

`--baseline REV` adds a first column: the fp32 step of an earlier revision, measured in this
same process. Its toolkit/trainer.py is read with `git show REV:toolkit/trainer.py` and imported
as a module of its own beside today's toolkit (it builds the same model from toolkit.train.model, on
the same batches and starting weights); only the step function it compiles is that revision's.

Times the compiled training step (forward, backward, Adam update) on real batches of the
bundled corpus after a warm-up, so tracing and the first-call cost are excluded; reports the
median step time and, where other processes share the machine, the median of the per-round
time ratios (each round times every column once, in a rotating order). Writes JSON and
Markdown.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import platform
import statistics
import subprocess
import sys
import time
import types
from pathlib import Path
from typing import Any

from toolkit.config import PRESETS
from toolkit.data.batches import epoch_batches
from toolkit.data.corpus import bundled_corpus_text, split_corpus
from toolkit.files import atomic_write_text
from toolkit.machine import machine_info
from toolkit.train.trainer import Trainer, zero_state
from toolkit.vocabulary import Vocabulary

REPO = Path(__file__).resolve().parents[1]


# Where the modules an earlier revision's trainer imports live now (the package was laid out by
# stage after b2a875a): they are registered under their old names before it is imported.
MOVED_MODULES = {
    "toolkit.cold_start": "toolkit.train.cold_start",
    "toolkit.model": "toolkit.train.model",
}


def trainer_at(rev: str) -> Any:
    """The Trainer class of toolkit/trainer.py at git revision `rev`, imported under a module
    name of its own (today's toolkit provides everything it imports)."""
    for old, new in MOVED_MODULES.items():
        sys.modules.setdefault(old, importlib.import_module(new))
    source = subprocess.run(
        ["git", "show", f"{rev}:toolkit/trainer.py"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    module = types.ModuleType(f"_trainer_at_{rev}")
    module.__file__ = f"{rev}:toolkit/trainer.py"
    sys.modules[module.__name__] = module
    exec(compile(source, module.__file__, "exec"), module.__dict__)
    return module.Trainer


def measure(
    name: str, precisions: list[str], steps: int, warmup: int, baseline: str | None = None
) -> list[dict]:
    text = bundled_corpus_text()
    vocab = Vocabulary.from_text(text)
    # (label, precision, Trainer class): the baseline first, then today's precisions.
    columns = [(f"fp32 {baseline}", "fp32", trainer_at(baseline))] if baseline else []
    columns += [(p, p, Trainer) for p in precisions]
    trainers, batches, states = {}, {}, {}
    for label, precision, cls in columns:
        config = dataclasses.replace(PRESETS[name], precision=precision)
        train_ids, _ = split_corpus(vocab.encode(text), config.val_fraction)
        trainers[label] = cls(config, len(vocab))
        batches[label] = epoch_batches(train_ids, config, 0)
        states[label] = zero_state(trainers[label].model_config, config.batch_size)
    first = trainers[columns[0][0]].model.get_weights()
    for label, _, _ in columns[1:]:  # the same starting weights everywhere
        trainers[label].model.set_weights(first)
    labels = [label for label, _, _ in columns]
    times: dict[str, list[float]] = {label: [] for label in labels}
    cpu: dict[str, list[float]] = {label: [] for label in labels}
    n_batches = len(batches[labels[0]][0])
    for k in range(warmup + steps):
        shift = k % len(labels)  # rotate who goes first: no column always follows another
        for label in labels[shift:] + labels[:shift]:
            x_all, y_all = batches[label]
            h, c = states[label]
            t0, p0 = time.perf_counter(), time.process_time()
            loss, h, c = trainers[label].train_step(
                x_all[k % n_batches], y_all[k % n_batches], h, c
            )
            float(loss)  # wait for the step to finish
            states[label] = (h, c)
            if k >= warmup:
                times[label].append(time.perf_counter() - t0)
                cpu[label].append(time.process_time() - p0)
    base = times[labels[0]]
    rows = [
        _row(name, trainers[label], precision, label, times[label], base, steps)
        for label, precision, _ in columns
    ]
    for row, (label, _, _) in zip(rows, columns, strict=True):
        # CPU seconds of the whole process per step: less disturbed than wall time by other
        # processes (it still counts the thread pool's spinning).
        row["cpu_ms_median"] = statistics.median(cpu[label]) * 1e3
    return rows


def _row(
    name: str,
    trainer: Any,
    precision: str,
    label: str,
    times: list[float],
    base: list[float],
    steps: int,
) -> dict:
    config = trainer.config
    step_s = statistics.median(times)
    chars = config.batch_size * config.seq_length
    return {
        "preset": name,
        "precision": precision,
        "step": label,
        "fused_lstm": bool(getattr(trainer, "fused", False)),
        "layers": config.layers,
        "units": config.units,
        "embedding_dim": config.embedding_dim,
        "batch_size": config.batch_size,
        "seq_length": config.seq_length,
        "params": int(trainer.model.count_params()),
        "step_ms_median": step_s * 1e3,
        "chars_per_sec": chars / step_s,
        "steps_timed": steps,
        # Per round, the first column's step time over this one's: robust to other processes.
        "paired_ratio_median": statistics.median(b / t for b, t in zip(base, times, strict=True)),
    }


def markdown(report: dict) -> str:
    rows, baseline = report["rows"], report.get("baseline")
    lines = [
        "# Training throughput per preset",
        "",
        f"Command: `{report['command']}`  ",
        f"Machine: {report['machine']['cpu']}, {report['machine']['cores']} cores, "
        f"TensorFlow {report['machine']['versions'].get('tensorflow')}",
        "",
        "Median time of one compiled training step (forward, backward, Adam) after a warm-up; "
        "the columns of a preset are timed step by step in turn, in a rotating order. ratio: "
        f"chars/s against the first column ({rows[0]['step']}); paired: the median over rounds "
        "of the first column's step time over this one's (what to read when other processes "
        "share the machine); cpu ms: the process's CPU time per step. bf16 is Keras's "
        "mixed_bfloat16 (bf16 math, float32 weights); `--precision auto` (the default) picks "
        "it where the CPU has bf16 instructions. fp32 runs the fused LSTM of "
        "toolkit/train/fused_lstm.py"
        + (
            f"; `fp32 {baseline}` is revision {baseline}'s step (Keras's LSTM loop), "
            "imported from git into this process."
            if baseline
            else "."
        ),
        "",
        "| preset | model | batch × seq | params | step | step ms | cpu ms | chars/s | ratio "
        "| paired |",
        "|---|---|---|---:|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        cpu = f"{r['cpu_ms_median']:.1f}" if "cpu_ms_median" in r else "–"
        lines.append(
            f"| {r['preset']} | {r['layers']}×{r['units']} (emb {r['embedding_dim']}) | "
            f"{r['batch_size']} × {r['seq_length']} | {r['params']:,} | {r['step']} | "
            f"{r['step_ms_median']:.1f} | {cpu} | {r['chars_per_sec']:,.0f} | "
            f"{r['ratio_to_first']:.2f} | {r['paired_ratio_median']:.2f} |"
        )
    if report.get("note"):
        lines += ["", report["note"]]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", default=",".join(PRESETS))
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--precisions", default="fp32,bf16")
    parser.add_argument(
        "--baseline", default=None, help="git revision whose fp32 step is the first column"
    )
    parser.add_argument("--out", type=Path, default=Path("benchmarks/reports/train_throughput"))
    parser.add_argument("--note", default="", help="a paragraph added to the Markdown report")
    parser.add_argument(
        "--report-only", action="store_true", help="rebuild the Markdown from the JSON (--note)"
    )
    args = parser.parse_args()
    if args.report_only:
        report = json.loads(args.out.with_suffix(".json").read_text())
        report["note"] = args.note or report.get("note", "")
        atomic_write_text(args.out.with_suffix(".json"), json.dumps(report, indent=2))
        atomic_write_text(args.out.with_suffix(".md"), markdown(report))
        return
    rows = []
    precisions = args.precisions.split(",")
    for name in args.presets.split(","):
        measured = measure(name, precisions, args.steps, args.warmup, args.baseline)
        base = measured[0]["chars_per_sec"]
        for row in measured:
            row["ratio_to_first"] = row["chars_per_sec"] / base
            print(json.dumps(row), flush=True)
            rows.append(row)
    report = {
        "command": "python "
        + " ".join(
            a
            for i, a in enumerate(sys.argv)
            if not a.startswith("--note") and not (i > 0 and sys.argv[i - 1] == "--note")
        ),
        "machine": machine_info(),
        "python": platform.python_version(),
        "baseline": args.baseline,
        "note": args.note,
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out.with_suffix(".json"), json.dumps(report, indent=2))
    atomic_write_text(args.out.with_suffix(".md"), markdown(report))


if __name__ == "__main__":
    main()
