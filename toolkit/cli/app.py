"""The `toolkit` command. Commands parse, call one library function, and print.

Errors are typed (toolkit.errors) and mapped to a one-line message and exit code in `main`.
Nothing here imports TensorFlow at module level: `generate` must start fast without it.
"""

from __future__ import annotations

import json
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer

from toolkit import __version__
from toolkit.errors import ToolkitError, UsageError

app = typer.Typer(
    add_completion=True,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


# Options that take one of a few values: choices that --help lists and completion offers.
# (tests/test_cli.py checks that they match the library's own lists.)
class Preset(str, Enum):
    tiny = "tiny"
    quick = "quick"
    default = "default"
    best = "best"
    seed = "seed"


class Runtime(str, Enum):
    onnx = "onnx"
    tflite = "tflite"
    tflm = "tflm"
    numpy = "numpy"
    keras = "keras"


class Variant(str, Enum):
    auto = "auto"
    fp32 = "fp32"
    fp16 = "fp16"
    int8 = "int8"
    full_int8 = "full-int8"


class Format(str, Enum):
    all = "all"
    tflite = "tflite"
    onnx = "onnx"
    numpy = "numpy"


class Quantize(str, Enum):
    none = "none"
    float16 = "float16"
    int8 = "int8"
    full_int8 = "full-int8"
    all = "all"


class Precision(str, Enum):
    auto = "auto"
    bf16 = "bf16"
    fp32 = "fp32"


class Unknown(str, Enum):
    error = "error"
    skip = "skip"


class WebVariant(str, Enum):
    all = "all"
    fp32 = "fp32"
    int8 = "int8"


def _version(show: bool) -> None:
    if show:
        typer.echo(f"char-lstm-toolkit {__version__}")
        raise typer.Exit()


@app.callback()
def _options(
    verbose: Annotated[
        bool,
        typer.Option(
            "--verbose", "-v", help="show TensorFlow, LiteRT and onnxruntime messages too"
        ),
    ] = False,
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="print the version"),
    ] = False,
) -> None:
    """Train a character-level LSTM, export it to TFLite/ONNX with explicit state, generate
    text and benchmark every runtime."""
    from toolkit.quiet import set_verbose

    set_verbose(verbose)


def _tensorflow() -> None:
    """Import TensorFlow now, quietly; one line saying what to install if it is missing."""
    from toolkit.quiet import import_tensorflow

    import_tensorflow()


def _err(message: str) -> None:
    typer.echo(message, err=True)


def _command_line() -> str:
    """The command as the user typed it (recorded in run.json and manifests)."""
    import shlex

    return "toolkit " + " ".join(shlex.quote(arg) for arg in sys.argv[1:])


# --------------------------------------------------------------------------- train


@app.command()
def train(
    preset: Annotated[Preset, typer.Option(help="see the README's table")] = Preset.default,
    data: Annotated[
        Path | None, typer.Option(help="UTF-8 text file or folder of .txt (default: bundled)")
    ] = None,
    out: Annotated[Path | None, typer.Option(help="run directory (default runs/<corpus>)")] = None,
    resume: Annotated[Path | None, typer.Option(help="continue the run in this directory")] = None,
    force: Annotated[bool, typer.Option(help="overwrite an existing run directory")] = False,
    epochs: Annotated[int | None, typer.Option()] = None,
    max_minutes: Annotated[float | None, typer.Option(help="wall-clock training budget")] = None,
    batch_size: Annotated[int | None, typer.Option()] = None,
    learning_rate: Annotated[float | None, typer.Option()] = None,
    seq_length: Annotated[int | None, typer.Option()] = None,
    embedding_dim: Annotated[int | None, typer.Option()] = None,
    units: Annotated[int | None, typer.Option()] = None,
    layers: Annotated[int | None, typer.Option()] = None,
    dropout: Annotated[float | None, typer.Option()] = None,
    weight_decay: Annotated[
        float | None, typer.Option(help="decoupled weight decay (AdamW-style), 0 = off")
    ] = None,
    val_fraction: Annotated[float | None, typer.Option()] = None,
    precision: Annotated[
        Precision, typer.Option(help="training compute: auto = bf16 where the CPU has it")
    ] = Precision.auto,
    reset_prob: Annotated[
        float | None,
        typer.Option(help="chance a stream's state is zeroed at a window border (cold starts)"),
    ] = None,
    val_chars: Annotated[
        int | None, typer.Option(help="validate on at most this many characters (default: all)")
    ] = None,
    seed: Annotated[int | None, typer.Option()] = None,
    workers: Annotated[
        int, typer.Option(help="train on N local worker processes (tf.distribute)")
    ] = 1,
    sample: Annotated[bool, typer.Option(help="print a short sample after each epoch")] = True,
    progress: Annotated[bool, typer.Option(help="show a progress bar")] = True,
) -> None:
    """Train the model (bundled Shakespeare by default); resumable and atomic."""
    import dataclasses

    _tensorflow()
    from toolkit.config import preset as get_preset

    overrides: dict[str, Any] = {
        k: v
        for k, v in {
            "epochs": epochs,
            "max_minutes": max_minutes,
            "batch_size": batch_size,
            "learning_rate": learning_rate,
            "seq_length": seq_length,
            "embedding_dim": embedding_dim,
            "units": units,
            "layers": layers,
            "dropout": dropout,
            "weight_decay": weight_decay,
            "val_fraction": val_fraction,
            "reset_prob": reset_prob,
            "val_chars": val_chars,
            "precision": None if precision == Precision.auto else precision.value,
            "seed": seed,
        }.items()
        if v is not None
    }
    if not sample:
        overrides["sample_every_epoch"] = False
    base = get_preset(preset.value)
    config = dataclasses.replace(base, **overrides)
    config.validate()
    if resume is not None:
        if out is not None and out != resume:
            raise UsageError("give the run directory once: --resume RUN_DIR (without --out)")
        run_dir = resume
    else:
        run_dir = out or Path("runs") / ("shakespeare" if data is None else _stem(data))

    if workers < 1:
        raise UsageError(f"workers must be >= 1, got {workers}")
    if workers > 1:
        _launch_workers(workers, config.batch_size)
        return

    from toolkit.train import bits_per_char
    from toolkit.train import train as train_run

    result = train_run(
        config,
        run_dir,
        data=data,
        resume=resume is not None,
        force=force,
        overrides=overrides,
        command=_command_line(),
        log=typer.echo,
        progress_bar=progress and sys.stderr.isatty(),
    )
    import math

    best = (
        "no validation yet"
        if math.isnan(result.best_val_loss)
        else f"best val loss {result.best_val_loss:.4f} nats "
        f"({bits_per_char(result.best_val_loss):.3f} bits/char)"
    )
    typer.echo(
        f"{'stopped' if result.interrupted else 'done'}: {result.steps} steps, "
        f"{result.epochs_done:.2f} epochs in {result.elapsed_s:.0f}s "
        f"({result.chars_per_sec:,.0f} chars/s); {best} -> {result.run_dir}"
    )
    if result.interrupted:
        raise typer.Exit(130)


def _launch_workers(workers: int, batch_size: int) -> None:
    """`--workers N`: the same command as N local worker processes (TF_CONFIG on 127.0.0.1)."""
    from toolkit.distributed import launch_local_workers

    if batch_size % workers:
        raise UsageError(f"batch-size {batch_size} does not divide over {workers} workers")
    args, skip = [], False
    for arg in sys.argv[1:]:  # this command line without --workers
        if skip:
            skip = False
        elif arg == "--workers":
            skip = True
        elif not arg.startswith("--workers="):
            args.append(arg)
    code = launch_local_workers(workers, args, echo=typer.echo)
    if code:
        raise typer.Exit(code)


def _stem(data: Path) -> str:
    return data.stem if data.suffix else data.name


# --------------------------------------------------------------------------- prepare


@app.command()
def prepare(
    source: Annotated[
        Path | None,
        typer.Argument(help="UTF-8 file, or folder of .txt / .txt.gz (default: bundled)"),
    ] = None,
    out: Annotated[Path | None, typer.Option(help="prepared folder (default data/<name>)")] = None,
    val_fraction: Annotated[float, typer.Option(help="held-out share, at the end")] = 0.1,
    force: Annotated[bool, typer.Option(help="replace an existing prepared folder")] = False,
    progress: Annotated[bool, typer.Option(help="show a progress bar")] = True,
) -> None:
    """Turn a corpus of any size into token ids on disk, for `train --data` (memory-mapped)."""
    from toolkit.prepare import prepare as prepare_corpus
    from toolkit.prepare import source_files

    name = "shakespeare" if source is None else _stem(source).removesuffix(".txt")
    out = out or Path("data") / name
    total = sum(p.stat().st_size for p in source_files(source)) if source else 0
    if progress and sys.stderr.isatty() and total:
        from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn

        # Two passes over the source: the bar covers both.
        with Progress(TextColumn("prepare"), BarColumn(), DownloadColumn(), transient=True) as bar:
            task = bar.add_task("prepare", total=2 * total)
            prepare_corpus(
                source,
                out,
                val_fraction,
                force,
                progress=lambda n: bar.update(task, advance=n),
                log=typer.echo,
            )
    else:
        prepare_corpus(source, out, val_fraction, force, log=typer.echo)
    typer.echo(f"train on it with: toolkit train --data {out}")


# --------------------------------------------------------------------------- download


@app.command()
def download(
    url: Annotated[str | None, typer.Option(help="source URL")] = None,
    sha256: Annotated[
        str | None, typer.Option(help="expected checksum ('none' to skip the check)")
    ] = None,
    dest: Annotated[Path | None, typer.Option(help="target file")] = None,
) -> None:
    """Fetch the public TensorFlow copy of shakespeare.txt into the user cache (verified)."""
    from toolkit.data import SHAKESPEARE_SHA256, SHAKESPEARE_URL, download_corpus

    checksum = None if sha256 == "none" else (sha256 or SHAKESPEARE_SHA256)
    path = download_corpus(url or SHAKESPEARE_URL, checksum, dest)
    typer.echo(str(path))


# --------------------------------------------------------------------------- export


@app.command()
def export(
    run_dir: Annotated[Path, typer.Argument(help="trained run directory")] = Path(
        "runs/shakespeare"
    ),
    format: Annotated[Format, typer.Option(help="which formats")] = Format.all,
    quantize: Annotated[
        Quantize, typer.Option(help="which variants (full-int8: microcontrollers)")
    ] = Quantize.none,
    out: Annotated[Path | None, typer.Option(help="export folder (default exported/<run>)")] = None,
    validate: Annotated[bool, typer.Option(help="check outputs against Keras")] = True,
    bpc_tolerance: Annotated[
        float | None,
        typer.Option(
            help="allowed relative bits/char loss of quantized variants "
            "(default 0.02; 0.03 for full-int8)"
        ),
    ] = None,
    calibration_chars: Annotated[
        int, typer.Option(help="full-int8: characters of text to calibrate activations on")
    ] = 2048,
    calibration_data: Annotated[
        Path | None, typer.Option(help="full-int8: calibration text (default: training text)")
    ] = None,
    max_flash: Annotated[
        int | None, typer.Option(help="full-int8: fail if the model needs more bytes of flash")
    ] = None,
    max_arena: Annotated[
        int | None, typer.Option(help="full-int8: fail if TFLite Micro needs a larger arena")
    ] = None,
    force: Annotated[bool, typer.Option(help="overwrite existing files")] = False,
) -> None:
    """Export a run to single-step graphs with explicit state, validated against Keras."""
    if bpc_tolerance is not None and bpc_tolerance < 0:
        raise UsageError("bpc-tolerance must be >= 0")
    if calibration_chars < 1:
        raise UsageError(f"calibration-chars must be >= 1, got {calibration_chars}")
    formats = ["tflite", "onnx", "numpy"] if format == Format.all else [format.value]
    _tensorflow()
    from toolkit.export import export_run
    from toolkit.export_micro import MicroLimits

    out_dir, artifacts = export_run(
        run_dir,
        out,
        formats=formats,
        quantization=quantize.value,
        validate=validate,
        bpc_tolerance=bpc_tolerance,
        force=force,
        log=typer.echo,
        command=_command_line(),
        calibration_chars=calibration_chars,
        calibration_data=calibration_data,
        limits=MicroLimits(max_flash, max_arena),
    )
    for art in artifacts:
        typer.echo(f"wrote {out_dir / art.file} ({art.bytes / 1024:.1f} KiB)")
        for companion in art.files:
            typer.echo(f"wrote {out_dir / companion}")


# --------------------------------------------------------------------------- generate


@app.command()
def generate(
    model: Annotated[
        Path | None,
        typer.Argument(help="export folder (run directory for --runtime keras)"),
    ] = None,
    runtime: Annotated[
        Runtime, typer.Option(help="tflm: TensorFlow Lite Micro's interpreter")
    ] = Runtime.onnx,
    variant: Annotated[
        Variant, typer.Option(help="auto: the most precise variant present")
    ] = Variant.auto,
    prompt: Annotated[str, typer.Option(help="text that warms up the state")] = "ROMEO:",
    length: Annotated[int, typer.Option(help="characters to generate")] = 500,
    temperature: Annotated[float, typer.Option(help="0 = greedy")] = 0.8,
    top_k: Annotated[int, typer.Option(help="keep the k most likely (0 = all)")] = 0,
    top_p: Annotated[float, typer.Option(help="nucleus sampling mass in (0, 1]")] = 1.0,
    seed: Annotated[int | None, typer.Option(help="random seed")] = None,
    num_samples: Annotated[int, typer.Option(help="texts generated in one batch")] = 1,
    stop: Annotated[str | None, typer.Option(help="stop when this string appears")] = None,
    unknown: Annotated[
        Unknown, typer.Option(help="what to do with prompt characters the model does not know")
    ] = Unknown.error,
    threads: Annotated[int, typer.Option(help="runtime threads")] = 1,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON with timings")] = False,
) -> None:
    """Generate text, streaming characters as they are produced."""
    from toolkit.runtime.generator import load
    from toolkit.runtime.sampling import check_sampling_args

    if length < 0:
        raise UsageError(f"length must be >= 0, got {length}")
    if runtime == Runtime.keras:
        _tensorflow()
    generator = load(model, runtime=runtime.value, variant=variant.value, threads=threads)
    # Refuse bad options and prompts before the prompt is echoed: stdout gets text or nothing.
    check_sampling_args(temperature, top_k, top_p)
    generator.encode(prompt, unknown.value)
    stream = num_samples == 1 and not as_json
    if stream:
        sys.stdout.write(prompt)
        sys.stdout.flush()

    def on_text(row: int, text: str) -> None:
        sys.stdout.write(text)
        sys.stdout.flush()

    result = generator.generate(
        prompt,
        length=length,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        seed=seed,
        num_samples=num_samples,
        stop=stop,
        unknown=unknown.value,
        on_text=on_text if stream else None,
    )
    if as_json:
        typer.echo(json.dumps(result.to_dict(), ensure_ascii=False, indent=2))
    elif stream:
        sys.stdout.write("\n")
    else:
        for i, text in enumerate(result.texts):
            typer.echo(f"--- sample {i + 1} ---\n{prompt}{text}")


# --------------------------------------------------------------------------- web


@app.command()
def web(
    model: Annotated[
        Path | None, typer.Argument(help="export folder (default: the committed model)")
    ] = None,
    out: Annotated[Path, typer.Option(help="site folder to write")] = Path("site"),
    variant: Annotated[
        WebVariant, typer.Option(help="all: every ONNX variant in the folder")
    ] = WebVariant.all,
    serve: Annotated[bool, typer.Option(help="serve the site on 127.0.0.1 until Ctrl-C")] = False,
    port: Annotated[int, typer.Option(help="port for --serve (0 = any free port)")] = 8000,
    force: Annotated[bool, typer.Option(help="replace an existing site")] = False,
) -> None:
    """Build a static site that generates text in the browser (onnxruntime-web)."""
    from toolkit.runtime.generator import default_model_dir
    from toolkit.web import SiteServer, build_site

    if not 0 <= port <= 65535:
        raise UsageError(f"port must be in 0..65535, got {port}")
    model_dir = model if model is not None else default_model_dir("onnx")
    site = build_site(model_dir, out, variant=variant.value, force=force, log=typer.echo)
    typer.echo(
        f"wrote {site.out_dir} ({site.bytes / 1e6:.1f} MB: {', '.join(site.variants.values())}, "
        f"onnxruntime-web {site.ort_version})"
    )
    if not serve:
        typer.echo(f"serve it with any static file server, or: toolkit web --serve --out {out}")
        return
    import time

    with SiteServer(site.out_dir, port) as server:
        typer.echo(f"serving {site.out_dir} at {server.url} (Ctrl-C to stop)")
        while True:
            time.sleep(3600)


# --------------------------------------------------------------------------- bench


def _int_list(text: str, what: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise UsageError(f"{what} must be comma-separated integers, got {text!r}") from None


@app.command()
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
    cold_start: Annotated[bool, typer.Option(help="time fresh generate processes")] = True,
    name: Annotated[str | None, typer.Option(help="report name (default: the run name)")] = None,
    out: Annotated[Path, typer.Option(help="report folder")] = Path("benchmarks/reports"),
) -> None:
    """Measure every runtime side by side; write JSON, Markdown and PNG reports."""
    _tensorflow()
    from toolkit.bench import RUNTIMES, BenchConfig, run_bench

    config = BenchConfig(
        runtimes=runtimes.split(",") if runtimes else list(RUNTIMES),
        batches=_int_list(batch, "batch"),
        threads=_int_list(threads, "threads"),
        steps=steps,
        rounds=rounds,
        cold_start=cold_start,
        name=name or run_dir.resolve().name,
    )
    config.validate()
    report = run_bench(run_dir, model, config, out, log=typer.echo)
    _print_bench_table(report)
    typer.echo(f"reports: {out / config.name}.json, .md, .png")


def _print_bench_table(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"per-step latency, {report['name']}")
    for col in (
        "runtime",
        "batch",
        "threads",
        "p50 µs",
        "p99 µs",
        "chars/s",
        "× predict",
        "× model(x)",
        "× floor",
    ):
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


# --------------------------------------------------------------------------- entry point


def main() -> None:
    """Console entry point: the one place errors become messages and exit codes.

    Everything the toolkit raises on purpose is a ToolkitError with its own exit code; the
    command-line parser's usage errors (bad option, value not among the choices) become one
    line and exit 2 as well, instead of a usage box.
    """
    try:
        code = app(standalone_mode=False)
    except ToolkitError as exc:
        _err(f"error: {exc}")
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        _err("interrupted")
        sys.exit(130)
    except OSError as exc:  # disk full, read-only, permissions: what the system said, in a line
        from toolkit.errors import storage_error

        error = storage_error(exc, exc.filename or "a file")
        _err(f"error: {error}")
        sys.exit(error.exit_code)
    except Exception as exc:
        if not _is_usage_error(exc):
            raise
        if type(exc).__name__ == "NoArgsIsHelpError":  # plain `toolkit`: the help
            typer.echo(exc.format_message())  # type: ignore[attr-defined]
            sys.exit(0)
        ctx = getattr(exc, "ctx", None)
        hint = f" (see: {ctx.command_path} --help)" if ctx is not None else ""
        message = " ".join(exc.format_message().split())  # type: ignore[attr-defined]
        _err(f"error: {message}{hint}")
        sys.exit(int(getattr(exc, "exit_code", 2)))
    if isinstance(code, int) and code != 0:
        sys.exit(code)


def _is_usage_error(exc: BaseException) -> bool:
    """Click's UsageError family (Typer vendors Click, so matched by shape, not by class)."""
    return hasattr(exc, "format_message") and getattr(exc, "exit_code", None) == 2


if __name__ == "__main__":
    main()
