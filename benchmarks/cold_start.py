"""Cold-start quality of models side by side: carried-state loss next to zero-state figures.

    python benchmarks/cold_start.py committed=exported/shakespeare quick=runs/cs/p0 ...

Each NAME=PATH is an exported folder (measured now, with onnxruntime) or a run directory
(its last validation, which measured the same figures during training: toolkit/train/cold_start.py).
Writes benchmarks/reports/cold_start.{json,md}. With --update, the report's other rows are kept
as measured before (their folders may be gone) and the named ones replaced or added; each row
says when it was measured, and the report lists every command that made it.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import sys
from pathlib import Path
from typing import Any

from toolkit.data.corpus import load_corpus, split_corpus
from toolkit.files import atomic_write_text
from toolkit.runtime import load
from toolkit.train.cold_start import common_line_starts, corpus_words, measure
from toolkit.vocabulary import Vocabulary

REPO = Path(__file__).resolve().parents[1]


def from_export(path: Path, text: str) -> dict[str, Any]:
    gen = load(path, runtime="onnx")
    manifest = json.loads((path / "manifest.json").read_text())
    _, val = split_corpus(Vocabulary(tuple(gen.chars)).encode(text), 0.1)
    prompts = common_line_starts(text)
    result = measure(
        gen.backend, gen.layers, gen.units, gen.chars, val, prompts, corpus_words(text)
    )
    romeo = gen.generate("ROMEO:", length=60, temperature=0).texts[0]
    return {
        "kind": "exported folder",
        "train_command": manifest["source"].get("train_command"),
        "val_loss": manifest["source"].get("best_val_loss"),
        **result.to_dict(),
        "greedy_romeo": romeo,
    }


def from_run(path: Path) -> dict[str, Any]:
    info = json.loads((path / "run.json").read_text())
    rows = [json.loads(line) for line in (path / "metrics.jsonl").read_text().splitlines()]
    last = rows[-1]
    if "cold_loss" not in last:
        raise SystemExit(f"error: {path} was trained before cold-start figures were recorded")
    return {
        "kind": "run (last validation)",
        "train_command": info.get("command"),
        "val_loss": last["val_loss"],
        **{k: last[k] for k in ("cold_loss", "cold_loss_first8", "degenerate_starts")},
        "cold_prompts": last["cold_prompts"],
        "greedy_romeo": None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", help="NAME=PATH (exported folder or run directory)")
    parser.add_argument("--note", default="", help="a paragraph for the report")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks/reports/cold_start")
    parser.add_argument(
        "--update", action="store_true", help="keep the report's other rows; replace or add these"
    )
    args = parser.parse_args()
    command = "python benchmarks/cold_start.py " + " ".join(sys.argv[1:])
    date = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    rows, runs, note = [], [], args.note
    if args.update:
        if not args.out.with_suffix(".json").exists():
            raise SystemExit(f"error: --update needs a report to update: {args.out}.json")
        previous = json.loads(args.out.with_suffix(".json").read_text())
        rows = previous["rows"]
        runs = previous.get("runs") or [
            {"command": previous["command"].split(" --note")[0], "date": previous["date"]}
        ]
        note = note or previous.get("note", "")
        for row in rows:
            row.setdefault("measured", previous["date"][:10])
    text = load_corpus(None)
    for spec in args.models:
        name, _, raw = spec.partition("=")
        path = Path(raw)
        row = from_run(path) if (path / "run.json").exists() else from_export(path, text)
        new = {"name": name, "path": str(path), **row, "measured": date[:10]}
        at = next((i for i, old in enumerate(rows) if old["name"] == name), len(rows))
        rows[at : at + 1] = [new]
        print(name, {k: v for k, v in row.items() if k != "train_command"}, flush=True)
    runs.append({"command": command.split(" --note")[0], "date": date})
    report = {"command": command, "date": date, "runs": runs, "note": note, "rows": rows}
    atomic_write_text(args.out.with_suffix(".json"), json.dumps(report, indent=2) + "\n")
    lines = [
        "# Cold start: quality from the zero state",
        "",
        *[f"`{run['command']}` on {run['date'][:10]}." for run in runs],
        "",
        "Carried-state loss is the usual validation (state carried through the held-out text). "
        "Line-start loss: mean nats over the first 64 characters of 256 validation windows that "
        "begin at a line start, each from zeros (first 8 characters in brackets). Degenerate: "
        "greedy 200 characters from zeros after each of the 40 most common speaker lines "
        "(`ROMEO:`, ...) that repeat a character 8 times, are < 60% letters and spaces, or "
        "have fewer than half their letters in corpus words. Targets: 0 of 40, and "
        "line-start loss ≤ carried + 0.12 nats.",
        "",
        "| model | carried val loss | line-start loss (first 8) | Δ | degenerate | greedy after `ROMEO:` "
        "| measured |",
        "|---|---:|---:|---:|---:|---|---|",
    ]
    for r in rows:
        delta = r["cold_loss"] - r["val_loss"] if r["val_loss"] else float("nan")
        romeo = "`" + r["greedy_romeo"][:40].replace("\n", "⏎") + "`" if r["greedy_romeo"] else "–"
        lines.append(
            f"| {r['name']} | {r['val_loss']:.4f} | {r['cold_loss']:.4f} "
            f"({r['cold_loss_first8']:.3f}) | {delta:+.3f} | "
            f"{r['degenerate_starts']}/{r['cold_prompts']} | {romeo} | {r['measured']} |"
        )
    lines += ["", "Training commands:", ""]
    lines += [f"- {r['name']}: `{r['train_command']}`" for r in rows]
    if note:
        lines += ["", note]
    atomic_write_text(args.out.with_suffix(".md"), "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
