"""Per-step latency of the exported model in headless Chromium (onnxruntime-web, wasm, 1 thread)
next to native onnxruntime at 1 thread, measured side by side in interleaved rounds.

    python benchmarks/browser_bench.py                # the committed model
    python benchmarks/browser_bench.py exported/NAME --rounds 7 --steps 2000

Where the time goes: a "null" step graph with the same inputs and outputs but no LSTM (h and
c passed through, logits gathered from a zero table) is timed the same way; its time per step
is the per-call overhead of each runtime, and the model's time minus it is compute.
Writes benchmarks/reports/browser.{json,md}.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from toolkit.files import atomic_write_text
from toolkit.runtime.backends.onnx import OnnxBackend
from toolkit.runtime.manifest import Manifest
from toolkit.web.browser import find_chromium, open_page, wait_ready
from toolkit.web.site import SiteServer, build_site

REPO = Path(__file__).resolve().parents[1]


def null_step_model(vocab: int, layers: int, units: int) -> bytes:
    """The step's inputs and outputs with (almost) nothing in between: per-call overhead."""
    import onnx
    from onnx import TensorProto, helper

    state = [layers, "batch", units]
    graph = helper.make_graph(
        [
            helper.make_node("Gather", ["table", "token"], ["logits"], axis=0),
            helper.make_node("Identity", ["h"], ["h_out"]),
            helper.make_node("Identity", ["c"], ["c_out"]),
        ],
        "null_step",
        [
            helper.make_tensor_value_info("token", TensorProto.INT32, ["batch"]),
            helper.make_tensor_value_info("h", TensorProto.FLOAT, state),
            helper.make_tensor_value_info("c", TensorProto.FLOAT, state),
        ],
        [
            helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", vocab]),
            helper.make_tensor_value_info("h_out", TensorProto.FLOAT, state),
            helper.make_tensor_value_info("c_out", TensorProto.FLOAT, state),
        ],
        [helper.make_tensor("table", TensorProto.FLOAT, [vocab, vocab], [0.0] * vocab * vocab)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return bytes(model.SerializeToString())


def native_round(backend: OnnxBackend, layers: int, units: int, vocab: int, steps: int) -> float:
    """Mean µs per step over `steps` steps at batch 1, state carried (as the browser does)."""
    h = np.zeros((layers, 1, units), np.float32)
    c = np.zeros_like(h)
    token = np.zeros(1, np.int32)
    t0 = time.perf_counter()
    for i in range(steps):
        _, h, c = backend.step(token, h, c)
        token[0] = (i + 1) % vocab
    return (time.perf_counter() - t0) * 1e6 / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_dir", type=Path, nargs="?", default=REPO / "exported/shakespeare")
    parser.add_argument("--steps", type=int, default=1000, help="timed steps per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks/reports/browser")
    args = parser.parse_args()
    if find_chromium() is None:
        sys.exit("error: no Chromium found (apt-get install chromium)")

    m = Manifest.read(args.model_dir).model.sizes()
    vocab, layers, units = m["vocab_size"], m["layers"], m["units"]
    with tempfile.TemporaryDirectory() as tmp:
        site = build_site(args.model_dir, Path(tmp) / "site", log=lambda _: None)
        null = null_step_model(vocab, layers, units)
        (site.out_dir / "null.onnx").write_bytes(null)
        models = {v: (site.out_dir / "model" / f).read_bytes() for v, f in site.variants.items()}
        models["null"] = null
        urls = {v: f"model/{f}" for v, f in site.variants.items()}
        urls["null"] = "null.onnx"
        native = {v: OnnxBackend(data, threads=1) for v, data in models.items()}
        browser_us: dict[str, list[float]] = {v: [] for v in models}
        native_us: dict[str, list[float]] = {v: [] for v in models}
        with SiteServer(site.out_dir) as server, open_page(server.url) as page:
            info = wait_ready(page)
            for v, backend in native.items():  # warm-up both sides
                native_round(backend, layers, units, vocab, 100)
                page.evaluate(
                    "(o) => window.toolkit.timeSteps(o)",
                    {"steps": 100, "rounds": 1, "model": urls[v]},
                )
            for r in range(args.rounds):
                for v in models:
                    native_us[v].append(native_round(native[v], layers, units, vocab, args.steps))
                    out = page.evaluate(
                        "(o) => window.toolkit.timeSteps(o)",
                        {"steps": args.steps, "rounds": 1, "warmup": 10, "model": urls[v]},
                    )
                    browser_us[v].append(out["us_per_step"][0])
                print(f"round {r + 1}/{args.rounds} done", file=sys.stderr)
            user_agent = page.evaluate("() => navigator.userAgent")

    rows = []
    null_b = statistics.median(browser_us["null"])
    null_n = statistics.median(native_us["null"])
    for v in models:
        b, n = statistics.median(browser_us[v]), statistics.median(native_us[v])
        rows.append(
            {
                "variant": v,
                "browser_us": b,
                "native_us": n,
                "browser_over_native": b / n,
                "browser_overhead_us": null_b,
                "browser_compute_us": b - null_b,
                "native_overhead_us": null_n,
                "native_compute_us": n - null_n,
                "browser_rounds_us": browser_us[v],
                "native_rounds_us": native_us[v],
            }
        )
    report: dict[str, Any] = {
        "command": "python benchmarks/browser_bench.py " + " ".join(sys.argv[1:]),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "model": m,
        "model_dir": str(args.model_dir),
        "browser": {
            "user_agent": user_agent,
            "onnxruntime_web": info.get("ortVersion"),
            "backend": "wasm",
            "threads": 1,
        },
        "native": {"onnxruntime": _version("onnxruntime"), "threads": 1},
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "python": sys.version.split()[0],
        },
        "steps_per_round": args.steps,
        "rounds": args.rounds,
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out.with_suffix(".json"), json.dumps(report, indent=2) + "\n")
    atomic_write_text(args.out.with_suffix(".md"), markdown(report))
    print(markdown(report))


def _version(dist: str) -> str:
    import importlib.metadata as md

    return md.version(dist)


def markdown(report: dict[str, Any]) -> str:
    m = report["model"]
    lines = [
        f"# Browser step latency: {m['layers']} × {m['units']} model",
        "",
        f"`{report['command']}` on {report['date'][:10]}: median of {report['rounds']} "
        f"interleaved rounds of {report['steps_per_round']} steps, batch 1, state carried. "
        f"Browser: headless Chromium ({report['browser']['user_agent'].split('Chrome/')[-1].split()[0]}), "
        f"onnxruntime-web {report['browser']['onnxruntime_web']}, wasm, 1 thread. "
        f"Native: onnxruntime {report['native']['onnxruntime']} from Python, 1 thread.",
        "",
        "| variant | browser µs/step | native µs/step | browser ÷ native "
        "| browser: call overhead / compute | native: call overhead / compute |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in report["rows"]:
        lines.append(
            f"| {r['variant']} | {r['browser_us']:.0f} | {r['native_us']:.0f} "
            f"| {r['browser_over_native']:.2f} "
            f"| {r['browser_overhead_us']:.0f} / {r['browser_compute_us']:.0f} "
            f"| {r['native_overhead_us']:.0f} / {r['native_compute_us']:.0f} |"
        )
    lines += [
        "",
        "`null` is a step graph with the same inputs and outputs and no LSTM: its time is the "
        "cost of one call (binding tensors, the async `session.run`, copying h/c in and out); "
        "compute is the model's time minus it. Target: browser fp32 ≤ 3 × native fp32.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
