"""Sizes and validation figures of every exported format and quantization of one model.

    toolkit export runs/shakespeare --format all --quantize all --out exported/shakespeare-full
    python benchmarks/export_report.py exported/shakespeare-full

Reads the export folder's manifest (the figures come from the validation every export runs)
and writes benchmarks/reports/export_sizes.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from toolkit.files import atomic_write_text
from toolkit.runtime.manifest import read_manifest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_dir", type=Path)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/reports/export_sizes"))
    args = parser.parse_args()
    manifest = read_manifest(args.model_dir)
    rows = []
    for name, entry in manifest["artifacts"].items():
        v = entry.get("validation") or {}
        rows.append(
            {
                "file": name,
                "format": entry["format"],
                "quantization": entry["quantization"],
                "bytes": entry["bytes"],
                "max_abs_logit_diff": v.get("max_abs_logit_diff"),
                "argmax_agreement": v.get("argmax_agreement"),
                "keras_bpc": v.get("keras_bpc"),
                "exported_bpc": v.get("exported_bpc"),
                "bpc_ratio": v.get("bpc_ratio"),
                "passed": v.get("passed"),
                "steps": f"{v.get('streams')}x{v.get('steps')}",
            }
        )
    rows.sort(key=lambda r: (r["format"], r["bytes"]))
    command = "python benchmarks/export_report.py " + " ".join(sys.argv[1:])
    report = {
        "command": command,
        "model": manifest["model"],
        "source": manifest["source"],
        "versions": manifest["versions"],
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out.with_suffix(".json"), json.dumps(report, indent=2))
    m = manifest["model"]
    src = manifest["source"]
    lines = [
        "# Export sizes and validation, per format and quantization",
        "",
        f"Model: {m['layers']}×{m['units']} LSTM, embedding {m['embedding_dim']}, vocab "
        f"{m['vocab_size']}; run `{src['run_name']}` (best validation loss "
        f"{src['best_val_loss']:.4f} nats/char).  ",
        f"Commands: `{'`, `'.join(src.get('commands') or [])}`; then `{command}`.  ",
        "Validation: 4 streams × 512 steps of validation text through the exported step graph "
        "and through Keras, state carried; fp32 must agree within 1e-4 with identical argmax, "
        "quantized variants must keep bits/char within 2% of Keras.",
        "",
        "| file | format | quantization | size KiB | max abs Δlogit | argmax agreement | "
        "bits/char (Keras) | bits/char (exported) | ratio | passed |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['file']} | {r['format']} | {r['quantization']} | {r['bytes'] / 1024:,.0f} | "
            f"{r['max_abs_logit_diff']:.2e} | {r['argmax_agreement']:.2%} | "
            f"{r['keras_bpc']:.4f} | {r['exported_bpc']:.4f} | {r['bpc_ratio']:.4f} | "
            f"{'yes' if r['passed'] else 'no'} |"
        )
    atomic_write_text(args.out.with_suffix(".md"), "\n".join(lines) + "\n")
    print(args.out.with_suffix(".md").read_text())


if __name__ == "__main__":
    main()
