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
TARGETS = {"quick": 1.60, "default": 1.45, "best": 1.42}


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


def _minutes(seconds: float | None) -> str:
    return "–" if seconds is None else f"{seconds / 60:.1f} min"


def markdown(
    results: list[dict],
    command: str,
    machine: dict,
    note: str = "",
    reference: dict | None = None,
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
    lines += ["", "![validation loss against steps](train_presets.png)", "", "## Samples", ""]
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
    args = parser.parse_args()
    names = args.presets.split(",")
    if not args.report_only:
        for name in names:
            train_preset(name, args.runs, args.precision)
    results = [summarize(name, args.runs / name) for name in names]
    argv = sys.argv[1:]
    shown = [  # without --note and its text
        a
        for i, a in enumerate(argv)
        if not a.startswith("--note") and not (i > 0 and argv[i - 1] == "--note")
    ]
    command = "python benchmarks/train_presets.py " + " ".join(shown)
    machine = machine_info()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    reference = json.loads(args.reference.read_text()) if args.reference else None
    report = {"command": command, "machine": machine, "results": results}
    if reference:
        report["reference"] = {k: reference[k] for k in ("command", "machine", "results")}
    atomic_write_text(args.out.with_suffix(".json"), json.dumps(report, indent=2))
    atomic_write_text(
        args.out.with_suffix(".md"), markdown(results, command, machine, args.note, reference)
    )
    atomic_write_bytes(args.out.with_suffix(".png"), chart(results))
    for r in results:
        print(f"{r['name']}: best {r['best_val_loss']:.4f} nats (target {r['target_val_loss']})")


if __name__ == "__main__":
    main()
