"""What the decoder costs: `generate` against the bare step, and a pattern's and
log-probabilities' cost per character against plain sampling, side by side in one run.

    python benchmarks/decode_bench.py                    # the committed model
    python benchmarks/decode_bench.py --rounds 3         # quicker, noisier

1. End to end: `Generator.generate` (temperature 0.8, a stop string, streaming on) against a
   block of bare steps made as it makes them, for onnx fp32 and tflite int8 at batch 1 and 32
   (`toolkit.bench.generation.measure_generation`: the median of paired ratios).
2. Controls: onnx fp32 `generate` with a 99-state pattern (lines of at most 98 characters,
   which never ends a text early), and with `logprobs=5`, each against the same call without
   it, at batch 1 and 64; pairs in random order, the median of the pair ratios.

Writes benchmarks/reports/decode.{json,md}.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import random
import statistics
import time
from pathlib import Path
from typing import Any

from toolkit.bench.generation import measure_generation
from toolkit.files import atomic_write_text
from toolkit.machine import cpu_name
from toolkit.runtime import load
from toolkit.runtime.decode import DecodeOptions
from toolkit.runtime.pattern import compile_regex

REPO = Path(__file__).resolve().parents[1]
PATTERN = r"([^\n]{0,98}\n)*"
STEPS = {1: 2000, 64: 300}


def measure_controls(model: Path, rounds: int, pairs: int) -> list[dict[str, Any]]:
    gen = load(model, runtime="onnx", variant="fp32", threads=1)
    rng = random.Random(0)
    rows = []
    for batch, steps in STEPS.items():
        for name, extra in (("pattern", {"regex": PATTERN}), ("logprobs 5", {"logprobs": 5})):
            ratios, plain_cps, with_cps = [], [], []
            for r in range(rounds * pairs + 1):
                timed = {}
                for mode in rng.sample(["plain", "with"], 2):
                    options = DecodeOptions(
                        steps, 0.8, seed=r, n=batch, **(extra if mode == "with" else {})
                    )
                    t0 = time.perf_counter()
                    result = gen.generate("ROMEO:", options=options)
                    timed[mode] = result.chars_generated / (time.perf_counter() - t0)
                if r:  # the first pair warms up
                    ratios.append(timed["with"] / timed["plain"])
                    plain_cps.append(timed["plain"])
                    with_cps.append(timed["with"])
            rows.append(
                {
                    "control": name,
                    "batch": batch,
                    "plain_chars_per_sec": statistics.median(plain_cps),
                    "with_chars_per_sec": statistics.median(with_cps),
                    "ratio": statistics.median(ratios),
                    "overhead_pct": 100 * (1 / statistics.median(ratios) - 1),
                }
            )
            print(rows[-1], flush=True)
    return rows


def write_report(data: dict[str, Any], out: Path) -> None:
    atomic_write_text(out / "decode.json", json.dumps(data, indent=2) + "\n")
    lines = [
        "# The decoder: generation against the bare step, and what controls cost",
        "",
        f"Command: `{data['command']}`  ",
        f"Machine: {data['machine']}; model exported/shakespeare, 1 thread; measured "
        f"{data['date']} (load average at the start: {data['load']})",
        "",
        "## End to end against the bare step",
        "",
        "`generate` (temperature 0.8, a stop string that does not occur, streaming on) against",
        "the same number of bare steps made as `generate` makes them; the median of paired",
        "ratios. Target: >= 0.85 for onnx fp32 and tflite int8 at batch 1 and 32.",
        "",
        "| runtime | batch | bare step chars/s | generate chars/s | generate / step |",
        "|---|---:|---:|---:|---:|",
    ]
    for row in data["generation"]:
        lines.append(
            f"| {row['runtime']} | {row['batch']} | {row['step_chars_per_sec']:,.0f} | "
            f"{row['generate_chars_per_sec']:,.0f} | {row['ratio']:.3f} |"
        )
    lines += [
        "",
        "## What a control costs per character (onnx fp32)",
        "",
        f"`pattern`: `{PATTERN}` ({data['pattern_states']} states), which never ends a text",
        "early; `logprobs 5`: each character's log-probability and the 5 most likely. Each",
        "against the same `generate` call without it, in random order; the median of the pair",
        "ratios. Target for the pattern: <= 10% at batch 1 and 64.",
        "",
        "| control | batch | plain chars/s | with it | overhead |",
        "|---|---:|---:|---:|---:|",
    ]
    for row in data["controls"]:
        lines.append(
            f"| {row['control']} | {row['batch']} | {row['plain_chars_per_sec']:,.0f} | "
            f"{row['with_chars_per_sec']:,.0f} | {row['overhead_pct']:+.1f}% |"
        )
    if data.get("note"):
        lines += ["", data["note"]]
    atomic_write_text(out / "decode.md", "\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model", nargs="?", type=Path, default=REPO / "exported" / "shakespeare")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--pairs", type=int, default=3, help="pairs per round (controls)")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "reports")
    parser.add_argument("--note", default="")
    parser.add_argument("--report-only", action="store_true", help="rebuild decode.md")
    args = parser.parse_args()
    if args.report_only:
        data = json.loads((args.out / "decode.json").read_text())
        data["note"] = args.note or data.get("note", "")
        write_report(data, args.out)
        return
    load_avg = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    generation = measure_generation(
        args.model, ["onnx-fp32", "tflite-int8"], [1, 32], threads=1, rounds=args.rounds
    )
    controls = measure_controls(args.model, args.rounds, args.pairs)
    chars = load(args.model).chars
    data = {
        "command": "python benchmarks/decode_bench.py"
        + (f" --rounds {args.rounds}" if args.rounds != 5 else ""),
        "machine": f"{cpu_name()}, {os.cpu_count()} cores",
        "date": _dt.date.today().isoformat(),
        "load": load_avg,
        "generation": generation,
        "pattern_states": compile_regex(PATTERN, chars).states,
        "controls": controls,
        "note": args.note,
    }
    write_report(data, args.out)


if __name__ == "__main__":
    main()
