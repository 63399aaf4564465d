"""Train each preset for its step budget and report validation loss against steps.

    python benchmarks/train_presets.py [--presets quick,default,best] [--runs runs/presets]
        [--precision fp32] [--reference OLD_REPORT.json]

Runs `toolkit train --preset P` for each preset (its own step budget), then reads the run's
metrics.jsonl and run.json. Writes benchmarks/reports/train_presets.{json,md,png}: final and
best validation loss (nats and bits per character, full pass over the last 10% of tiny
Shakespeare), the steps and epochs, the machine (CPU, bf16 instructions, precision), the time
its steps, validations and the whole process took, a generated sample, and one chart of
validation loss against steps for every preset. `--report-only` rebuilds the report from
existing runs; a name may be a run directory's (`quick-bf16`: its preset comes from its
run.json). `--reference` adds the rows of an earlier report (another machine) to the time table.

The regularisers' ablation (toolkit/train/regularise.py):

    python benchmarks/train_presets.py --ablation default-wd25,... --ablation-runs runs/abl
        [--keep-results] [--step-times 20]

adds a table of the runs in --ablation-runs (each a `toolkit train --preset P --<lever> ...`
run directory: its levers come from its config.json) beside the report's run of the same preset
without them, and their curves (train_presets_ablation.png). Time per step comes two ways: each
run's own (training time over steps, as the machine's load was during that run) and, with
`--step-times N`, every run's configuration and its preset's timed N steps each in this one
process, interleaved (the median of per-round ratios to the preset: what other processes do
to the machine cancels). `--keep-results` keeps the report's preset rows from its JSON as they
are (their run directories need not be here), and the ablation rows of runs whose folders
are gone.
"""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
from pathlib import Path

from toolkit.files import atomic_write_bytes, atomic_write_text
from toolkit.machine import machine_info
from toolkit.metrics import bits_per_char
from toolkit.train.run_dir import iter_metrics

# nats/char: the marks the presets keep wherever they run
# Best validation loss each preset's budget should reach, fp32 (issue "better models in the
# same steps": quick no worse than before the regularisers, default and best below).
TARGETS = {"quick": 1.5754, "default": 1.42, "best": 1.38}


def train_preset(name: str, runs: Path, precision: str | None) -> None:
    cmd = [
        sys.executable,
        "-m",
        "toolkit",
        "train",
        "--preset",
        name,
        "--out",
        str(runs / name),
        "--force",
        "--no-progress",
        "--no-sample",
    ] + (["--precision", precision] if precision else [])
    print("$", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)


def sample(run_dir: Path) -> str:
    from toolkit.runtime.generator import load

    gen = load(run_dir, runtime="keras")
    return gen.generate("ROMEO:", length=300, temperature=0.6, seed=1).texts[0]


def summarize(name: str, run_dir: Path) -> dict:
    rows = list(iter_metrics(run_dir))
    info = json.loads((run_dir / "run.json").read_text())
    config = json.loads((run_dir / "config.json").read_text())
    preset = info.get("preset") or name
    best = min(rows, key=lambda r: r["val_loss"])
    total_chars = info["steps"] * config["batch_size"] * config["seq_length"]
    spent = info.get("time") or {}
    return {
        "name": name,
        "preset": preset,
        "model": info["model"],
        "weight_decay": config.get("weight_decay", 0.0),
        "budget_steps": info.get("max_steps") or config.get("max_steps"),
        "budget_minutes": config.get("max_minutes"),
        "train_seconds": info["elapsed_s"],
        "validation_seconds": spent.get("validation"),
        "wall_seconds": spent.get("wall"),
        "estimated_seconds": spent.get("estimated"),
        "cpu": info.get("cpu"),
        "epochs": info["epochs_done"],
        "steps": info["steps"],
        "chars_per_sec": total_chars / info["elapsed_s"],
        "final_val_loss": rows[-1]["val_loss"],
        "best_val_loss": best["val_loss"],
        "best_val_bpc": bits_per_char(best["val_loss"]),
        "best_at_seconds": best["elapsed_s"],
        "best_at_step": best["step"],
        "target_val_loss": TARGETS.get(preset),
        "met_target": best["val_loss"] <= TARGETS[preset] if preset in TARGETS else None,
        "curve": [(r["elapsed_s"], r["val_loss"]) for r in rows],
        "curve_steps": [(r["step"], r["val_loss"]) for r in rows],
        "precision": info.get("precision", "fp32"),
        # Zero-state figures at the best validation (toolkit/train/cold_start.py), when recorded.
        "cold_loss": best.get("cold_loss"),
        "cold_loss_first8": best.get("cold_loss_first8"),
        "degenerate_starts": best.get("degenerate_starts"),
        "cold_prompts": best.get("cold_prompts"),
        "run_command": info.get("command"),
        "sample": "ROMEO:" + sample(run_dir),
    }


def chart(results: list[dict]) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    for r in results:
        xs = [s for s, _ in r["curve_steps"]]
        ys = [v for _, v in r["curve_steps"]]
        m = r["model"]
        label = f"{r['name']} ({m['layers']}x{m['units']}, {r['precision']})"
        ax.plot(xs, ys, marker="o", label=label)
        if r["target_val_loss"]:
            ax.axhline(
                r["target_val_loss"], linestyle=":", linewidth=1, color=ax.lines[-1].get_color()
            )
    ax.axhline(
        1.4697, color="k", linestyle="--", linewidth=1, label="nanoGPT 10.6M GPT (A100, 3 min)"
    )
    ax.set_xlabel("training steps (the same on every machine)")
    ax.set_ylabel("validation loss, nats/char")
    ax.set_ylim(1.3, 2.2)
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title("tiny Shakespeare: validation loss vs steps (dotted: preset targets)")
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    return buffer.getvalue()


# The regularisers a run's config.json may set, and how the ablation table names them.
LEVERS = {
    "weight_drop": "weight drop {}",
    "locked_dropout": "locked dropout",
    "input_dropout": "input dropout {}",
    "embedding_dropout": "embedding dropout {}",
    "ema_decay": "EMA {}",
}


def levers(config: dict, preset_config: dict) -> str:
    """The regularisers a run has on (config.json fields), e.g. "weight drop 0.25", and what
    else it changes against its preset."""
    named = [text.format(config[key]) for key, text in LEVERS.items() if config.get(key)]
    others = [
        f"{key} {config[key]}"
        for key in ("dropout", "weight_decay", "learning_rate", "seed")
        if config.get(key) != preset_config.get(key)
    ]
    return ", ".join(named + others) or "none"


def ablation_row(run_dir: Path) -> dict:
    import dataclasses

    from toolkit.config import preset

    row = summarize(run_dir.name, run_dir)
    config = json.loads((run_dir / "config.json").read_text())
    base = dataclasses.asdict(preset(row["preset"]))
    row.update(
        levers=levers(config, base),
        config={k: config[k] for k in (*LEVERS, "dropout", "weight_decay", "seed") if k in config},
        step_ms_run=row["train_seconds"] / row["steps"] * 1e3,
    )
    row.pop("sample")
    return row


def step_times(rows: list[dict], steps: int, warmup: int = 3) -> dict[str, dict]:
    """Each ablation run's configuration and its preset's, N training steps each on real
    batches in this process, interleaved in a rotating order: median step ms and the median of
    per-round ratios to the preset's step ({label: {...}}, labels "P" and run names)."""
    import dataclasses
    import statistics
    import time

    from toolkit.config import preset
    from toolkit.data.batches import epoch_batches
    from toolkit.data.corpus import bundled_corpus_text, split_corpus
    from toolkit.train.trainer import Trainer, zero_state
    from toolkit.vocabulary import Vocabulary

    text = bundled_corpus_text()
    vocab = Vocabulary.from_text(text)
    configs = {}
    off = {"weight_drop": 0.0, "locked_dropout": False, "input_dropout": 0.0}
    off |= {"embedding_dropout": 0.0, "ema_decay": 0.0}
    for r in rows:  # against the preset without any regulariser, as the table's Δ
        base = dataclasses.replace(preset(r["preset"]), precision="fp32", **off)
        configs.setdefault(r["preset"], (r["preset"], base))
        configs[r["name"]] = (r["preset"], dataclasses.replace(base, **r["config"]))
    trainers, batches, states = {}, {}, {}
    for label, (_, config) in configs.items():
        train_ids, _ = split_corpus(vocab.encode(text), config.val_fraction)
        trainers[label] = Trainer(config, len(vocab))
        batches[label] = epoch_batches(train_ids, config, 0)
        states[label] = zero_state(trainers[label].model_config, config.batch_size)
    labels = list(configs)
    times: dict[str, list[float]] = {label: [] for label in labels}
    for k in range(warmup + steps):
        shift = k % len(labels)
        for label in labels[shift:] + labels[:shift]:
            (x_all, y_all), (h, c) = batches[label], states[label]
            t0 = time.perf_counter()
            loss, h, c = trainers[label].train_step(
                x_all[k % len(x_all)], y_all[k % len(y_all)], h, c
            )
            float(loss)  # wait for the step to finish
            states[label] = (h, c)
            if k >= warmup:
                times[label].append(time.perf_counter() - t0)
    return {
        label: {
            "preset": configs[label][0],
            "step_ms_median": statistics.median(times[label]) * 1e3,
            "ratio_to_preset": statistics.median(
                t / b for t, b in zip(times[label], times[configs[label][0]], strict=True)
            ),
            "steps_timed": steps,
        }
        for label in labels
    }


def ablation_chart(rows: list[dict], baselines: dict[str, dict]) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    presets = sorted({r["preset"] for r in rows}, key=list(TARGETS).index)
    fig, axes = plt.subplots(1, len(presets), figsize=(6 * len(presets), 5), squeeze=False)
    for ax, name in zip(axes[0], presets, strict=True):
        base = baselines.get(name)
        if base:
            xs, ys = zip(*base["curve_steps"], strict=True)
            ax.plot(
                xs, ys, color="k", marker="o", label=f"{name}: none ({base['best_val_loss']:.4f})"
            )
        for k, r in enumerate(r for r in rows if r["preset"] == name):
            xs, ys = zip(*r["curve_steps"], strict=True)
            # Another seed's runs dashed; colours repeat after ten, so markers change with them.
            dashed = "seed" in r["levers"]
            ax.plot(
                xs,
                ys,
                marker="." if k < 10 else "x",
                linestyle="--" if dashed else "-",
                label=f"{r['levers']} ({r['best_val_loss']:.4f})",
            )
        if TARGETS.get(name):
            ax.axhline(TARGETS[name], color="grey", linestyle=":", linewidth=1)
        ax.set_xlabel("training steps")
        ax.set_ylabel("validation loss, nats/char")
        low = min(
            [r["best_val_loss"] for r in rows if r["preset"] == name]
            + ([base["best_val_loss"]] if base else [])
        )
        ax.set_ylim(low - 0.03, low + 0.35)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        ax.set_title(f"{name}: regularisers of the recurrence")
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    return buffer.getvalue()


def ablation_markdown(ablation: dict) -> list[str]:
    from toolkit.config import preset

    rows, baselines = ablation["rows"], ablation["baselines"]
    timed = ablation.get("step_times") or {}
    lines = [
        "## Regularisers of the recurrence (ablation)",
        "",
        f"Command: `{ablation['command']}`",
        "",
        "Each lever alone and in combination, on top of its preset at the preset's step budget "
        "(fp32, seed fixed; toolkit/train/regularise.py): weight drop is DropConnect on the "
        "recurrent kernel (one mask per optimiser step), locked dropout the preset's `dropout` "
        "with one mask per stream per window instead of per character, input dropout a locked "
        "mask on the LSTM's input, embedding dropout whole characters, EMA validation (and "
        "export) on an average of the weights. Δ: against the preset's row above (no lever). "
        "Line-start Δ: zero-state line-start loss over the carried loss at the best point "
        "(mark: ≤ +0.08, 0/40 degenerate). Step ms (run): the run's training time over its "
        "steps, "
        + ablation.get("load_note", "")
        + " Step ratio: the same configurations timed side by side in one process "
        "(`--step-times`, interleaved; median of per-round ratios to the preset; mark ≤ 1.10).",
        "",
        "| run | preset | levers | steps | best val loss | Δ | line-start Δ | degenerate "
        "| step ms (run) | step ratio |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]

    def line(r: dict, name: str, lever: str, base: dict | None) -> str:
        delta = f"{r['best_val_loss'] - base['best_val_loss']:+.4f}" if base else "–"
        cold = (
            f"{r['cold_loss'] - r['best_val_loss']:+.3f}" if r.get("cold_loss") is not None else "–"
        )
        degenerate = (
            f"{r['degenerate_starts']}/{r['cold_prompts']}" if r.get("cold_prompts") else "–"
        )
        ratio = timed.get(name, {}).get("ratio_to_preset")
        return (
            f"| {name} | {r['preset']} | {lever} | {r['steps']:,} | **{r['best_val_loss']:.4f}** "
            f"| {delta} | {cold} | {degenerate} | "
            f"{r['train_seconds'] / r['steps'] * 1e3:,.0f} | "
            + (f"{ratio:.2f}" if ratio is not None else "–")
            + " |"
        )

    for name in sorted(baselines, key=list(TARGETS).index):
        base = baselines[name]
        lines.append(line(base, f"{name} (above)", "none", None))
        for r in rows:
            if r["preset"] == name:
                # Another seed's run is compared with that seed's run without levers.
                seed = r["config"].get("seed", preset(name).seed)
                same_seed = [
                    o for o in rows if o["preset"] == name and o["levers"] == f"seed {seed}"
                ]
                own = same_seed[0] if seed != preset(name).seed and same_seed else base
                lines.append(line(r, r["name"], r["levers"], None if own is r else own))
    if timed:
        lines += [
            "",
            "Step times side by side ("
            + ", ".join(f"{k} {v['step_ms_median']:.0f} ms" for k, v in timed.items())
            + f"; {next(iter(timed.values()))['steps_timed']} steps each).",
        ]
    lines += ["", "Each run's command:", ""]
    lines += [f"- {r['name']}: `{r['run_command']}`" for r in rows]
    if ablation.get("note"):
        lines += ["", ablation["note"]]
    lines += ["", "![validation loss against steps, per lever](train_presets_ablation.png)", ""]
    return lines


def _minutes(seconds: float | None) -> str:
    return "–" if seconds is None else f"{seconds / 60:.1f} min"


def markdown(
    results: list[dict],
    command: str,
    machine: dict,
    note: str = "",
    reference: dict | None = None,
    ablation: dict | None = None,
) -> str:
    lines = [
        "# Presets: validation loss within a step budget",
        "",
        f"Command: `{command}`  ",
        f"Machine: {machine['cpu']}, {machine['cores']} cores; TensorFlow "
        f"{machine['versions'].get('tensorflow')}",
        "",
        "Validation: full pass over the last 10% of tiny Shakespeare (nanoGPT's split), state "
        "carried through 16 contiguous streams. A preset's budget is its steps, so the model "
        "and its loss do not depend on the machine's speed (within run-to-run noise); only "
        "the time does.",
        "",
        "| run | model | steps | epochs | precision | best val loss (nats) | bits/char | "
        "final val loss | target | met |",
        "|---|---|---:|---:|---|---:|---:|---:|---:|---|",
    ]
    for r in results:
        m = r["model"]
        lines.append(
            f"| {r['name']} | {m['layers']}×{m['units']}, emb {m['embedding_dim']}, "
            f"dropout {m['dropout']}"
            + (f", weight decay {r['weight_decay']}" if r.get("weight_decay") else "")
            + f" | {r['steps']:,} | {r['epochs']:.2f} | {r['precision']} | "
            f"**{r['best_val_loss']:.4f}** | {r['best_val_bpc']:.3f} | "
            f"{r['final_val_loss']:.4f} | ≤ {r['target_val_loss']} | "
            f"{'yes' if r['met_target'] else 'no'} |"
        )
    lines += [
        "",
        "## Time",
        "",
        "Training: the steps' time; validation: the validations with their cold-start figures "
        "and files; wall: from the process's start (start-up included); estimated: what the "
        "run's `eta:` line predicted for the wall time after its first steps.",
        "",
        "| run | CPU | bf16 instructions | precision | steps | chars/s | training | validation "
        "| wall | estimated |",
        "|---|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        cpu = r.get("cpu") or {}
        lines.append(
            f"| {r['name']} | {cpu.get('name', machine['cpu'])}, {cpu.get('cores', '?')} cores | "
            f"{'yes' if cpu.get('bf16') else 'no'} | {r['precision']} | {r['steps']:,} | "
            f"{r['chars_per_sec']:,.0f} | {_minutes(r['train_seconds'])} | "
            f"{_minutes(r.get('validation_seconds'))} | {_minutes(r.get('wall_seconds'))} | "
            f"{_minutes(r.get('estimated_seconds'))} |"
        )
    for r in (reference or {}).get("results", []):
        cpu = reference["machine"]["cpu"] if reference else "?"
        lines.append(
            f"| {r['preset']} (reference) | {cpu}, {reference['machine']['cores']} cores | "
            f"yes | {r['precision']} | {r['steps']:,} | {r['chars_per_sec']:,.0f} | "
            f"{_minutes(r['train_seconds'])} | – | – | – |"
        )
    lines += [
        "",
        "## From the zero state",
        "",
        "Every generation starts from zeros; carried-state validation never does. Line-start "
        "loss: the first 64 characters of 256 validation windows that begin a line, from zeros "
        "(first 8 in brackets). Degenerate: greedy starts after the 40 most common speaker lines "
        "that fail toolkit/train/cold_start.py's tests. At each preset's best validation. Targets: "
        "line-start loss ≤ carried + 0.12 nats, 0 of 40 degenerate.",
        "",
        "| run | precision | carried val loss | line-start loss (first 8) | Δ | degenerate | met |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    for r in results:
        if r.get("cold_loss") is None:
            lines.append(
                f"| {r['name']} | {r['precision']} | {r['best_val_loss']:.4f} | – | – | – | – |"
            )
            continue
        delta = r["cold_loss"] - r["best_val_loss"]
        met = delta <= 0.12 and r["degenerate_starts"] == 0
        lines.append(
            f"| {r['name']} | {r['precision']} | {r['best_val_loss']:.4f} | "
            f"{r['cold_loss']:.4f} ({r['cold_loss_first8']:.3f}) | {delta:+.3f} | "
            f"{r['degenerate_starts']}/{r['cold_prompts']} | {'yes' if met else 'no'} |"
        )
    lines += ["", "Each run's own command (from its run.json):", ""]
    lines += [f"- {r['name']}: `{r['run_command']}`" for r in results]
    if note:
        lines += ["", note]
    lines += ["", "![validation loss against steps](train_presets.png)", ""]
    if ablation:
        lines += ablation_markdown(ablation)
    lines += ["## Samples", ""]
    for r in results:
        lines += [f"### {r['name']} (temperature 0.6, seed 1)", "", "```", r["sample"], "```", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", default="quick,default,best")
    parser.add_argument("--runs", type=Path, default=Path("runs/presets"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/reports/train_presets"))
    parser.add_argument("--report-only", action="store_true")
    parser.add_argument("--note", default="", help="a paragraph added to the Markdown report")
    parser.add_argument("--precision", default=None, help="fp32 or bf16 (default: auto)")
    parser.add_argument(
        "--reference", type=Path, default=None, help="an earlier report: its rows beside these"
    )
    parser.add_argument("--ablation", default="", help="run directory names in --ablation-runs")
    parser.add_argument("--ablation-runs", type=Path, default=Path("runs/abl"))
    parser.add_argument("--ablation-note", default="", help="a paragraph under the ablation")
    parser.add_argument(
        "--load-note", default="", help="how loaded the machine was during the ablation runs"
    )
    parser.add_argument("--step-times", type=int, default=0, help="steps each, side by side")
    parser.add_argument(
        "--keep-results", action="store_true", help="the preset rows of the report's JSON"
    )
    args = parser.parse_args()
    names = args.presets.split(",")
    argv = sys.argv[1:]
    free_text = ("--note", "--ablation-note", "--load-note")
    shown = [  # without the notes' texts
        a
        for i, a in enumerate(argv)
        if not a.startswith(free_text) and not (i > 0 and argv[i - 1] in free_text)
    ]
    command = "python benchmarks/train_presets.py " + " ".join(shown)
    previous = json.loads(args.out.with_suffix(".json").read_text()) if args.keep_results else None
    if previous:
        # Rows of runs found in --runs are read again (and new names added); the others kept.
        kept = {r["name"]: r for r in previous["results"]}
        results = [
            summarize(n, args.runs / n) if (args.runs / n).exists() else kept[n] for n in names
        ]
        results += [r for n, r in kept.items() if n not in names]
        machine = previous["machine"]
        for r in results:  # the marks as they are now
            r["target_val_loss"] = TARGETS.get(r["preset"])
            target = r["target_val_loss"]
            r["met_target"] = r["best_val_loss"] <= target if target else None
    else:
        if not args.report_only:
            for name in names:
                train_preset(name, args.runs, args.precision)
        results = [summarize(name, args.runs / name) for name in names]
        machine = machine_info()
    ablation = None
    if args.ablation:
        # With --keep-results, a run whose folder is gone keeps its row from the report.
        kept = {r["name"]: r for r in ((previous or {}).get("ablation") or {}).get("rows", [])}
        rows = [
            kept[n]
            if n in kept and not (args.ablation_runs / n).exists()
            else ablation_row(args.ablation_runs / n)
            for n in args.ablation.split(",")
        ]
        baselines = {r["name"]: r for r in results if r["name"] in {x["preset"] for x in rows}}
        ablation = {
            "command": "python benchmarks/train_presets.py " + " ".join(shown),
            "machine": machine_info(),
            "rows": rows,
            "baselines": baselines,
            # Without --step-times, the side-by-side times measured before are kept.
            "step_times": step_times(rows, args.step_times)
            if args.step_times
            else ((previous or {}).get("ablation") or {}).get("step_times"),
            "load_note": args.load_note,
            "note": args.ablation_note,
        }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    reference = json.loads(args.reference.read_text()) if args.reference else None
    if previous and previous.get("reference") and not reference:
        reference = previous["reference"]
    report = {"command": command, "machine": machine, "results": results}
    if reference:
        report["reference"] = {k: reference[k] for k in ("command", "machine", "results")}
    if ablation:
        report["ablation"] = {k: v for k, v in ablation.items() if k != "baselines"}
    note = args.note or (previous or {}).get("note", "")
    if note:
        report["note"] = note
    atomic_write_text(args.out.with_suffix(".json"), json.dumps(report, indent=2))
    atomic_write_text(
        args.out.with_suffix(".md"),
        markdown(results, command, machine, note, reference, ablation),
    )
    if not previous:
        atomic_write_bytes(args.out.with_suffix(".png"), chart(results))
    if ablation:
        atomic_write_bytes(
            args.out.parent / (args.out.name + "_ablation.png"),
            ablation_chart(ablation["rows"], ablation["baselines"]),
        )
        for r in ablation["rows"]:
            print(f"{r['name']} ({r['levers']}): best {r['best_val_loss']:.4f} nats")
    for r in results:
        print(f"{r['name']}: best {r['best_val_loss']:.4f} nats (target {r['target_val_loss']})")


if __name__ == "__main__":
    main()
