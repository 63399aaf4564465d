"""`toolkit bench`: every runtime side by side, into JSON, Markdown and PNG reports."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from toolkit.cli.common import int_list
from toolkit.logs import require_tensorflow


def bench(
    run_dir: Annotated[Path, typer.Argument(help="trained run directory")] = Path(
        "runs/shakespeare"
    ),
    model: Annotated[
        Path | None, typer.Option(help="export folder (default exported/<run>)")
    ] = None,
    runtimes: Annotated[
        str | None, typer.Option(help="comma-separated subset, e.g. onnx-fp32,tflite-int8")
    ] = None,
    batch: Annotated[str, typer.Option(help="batch sizes, e.g. 1,32")] = "1,32",
    threads: Annotated[str, typer.Option(help="thread counts, e.g. 1,2")] = "1,2",
    steps: Annotated[int, typer.Option(help="timed steps per runtime and configuration")] = 300,
    rounds: Annotated[int, typer.Option(help="interleaved rounds")] = 5,
    startup: Annotated[
        bool, typer.Option(help="time fresh `toolkit generate` processes (start-up, memory)")
    ] = True,
    name: Annotated[str | None, typer.Option(help="report name (default: the run name)")] = None,
    out: Annotated[Path, typer.Option(help="report folder")] = Path("benchmarks/reports"),
) -> None:
    """Measure every runtime side by side; write JSON, Markdown and PNG reports."""
    from toolkit.bench.harness import BenchConfig, run_bench
    from toolkit.bench.targets import RUNTIMES

    config = BenchConfig(
        runtimes=runtimes.split(",") if runtimes else list(RUNTIMES),
        batches=int_list(batch, "batch"),
        threads=int_list(threads, "threads"),
        steps=steps,
        rounds=rounds,
        startup=startup,
        name=name or run_dir.resolve().name,
    )
    config.validate()  # before the slow imports of run_bench
    require_tensorflow()
    report = run_bench(run_dir, model, config, out, log=typer.echo)
    _print_table(report)
    typer.echo(f"reports: {out / config.name}.json, .md, .png")


def _print_table(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"per-step latency, {report['name']}")
    columns = ("runtime", "batch", "threads", "p50 µs", "p99 µs", "chars/s", "× predict",
               "× model(x)", "× floor")  # fmt: skip
    for col in columns:
        table.add_column(col, justify="left" if col == "runtime" else "right")
    for r in report["latency"]:
        table.add_row(
            r["runtime"],
            str(r["batch"]),
            str(r["threads"] or "–"),
            f"{r['p50_us']:.1f}",
            f"{r['p99_us']:.1f}",
            f"{r['chars_per_sec']:,.0f}",
            f"{r.get('speedup_vs_predict', 0):.1f}",
            f"{r.get('speedup_vs_call', 0):.2f}",
            f"{r['floor_ratio']:.2f}" if "floor_ratio" in r else "–",
        )
    Console().print(table)
