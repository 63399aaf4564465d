"""The benchmark report: JSON, Markdown and a PNG chart, written atomically."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from toolkit.bench.targets import RUNTIMES
from toolkit.files import atomic_write_bytes, atomic_write_text


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
        "process start to first char (s) | process total (s) | peak RSS MB |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, e in report["runtimes"].items():
        started = e.get("startup") or {}
        lines.append(
            f"| {name} | {e['file']} | {e['bytes'] / 1024:.1f} | {_fmt(e.get('val_bpc'), '.4f')} | "
            f"{_fmt(e.get('ttfc_1000_s'), '.3f')} | {_fmt(started.get('first_char_s'), '.3f')} | "
            f"{_fmt(started.get('wall_s'), '.3f')} | {_fmt(started.get('peak_rss_mb'), '.0f')} |"
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
        "- Start-up, a fresh process from its start to the first character: "
        + ", ".join(f"{k} {v:.3f} s" for k, v in t["startup_first_char_s"].items())
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
