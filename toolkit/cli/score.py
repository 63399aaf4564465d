"""`toolkit score`: how surprising a text is to the model, in nats and bits per character."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from toolkit.cli.common import choice
from toolkit.errors import DataError, UsageError
from toolkit.runtime.backends import RUNTIMES
from toolkit.runtime.generator import UNKNOWN_CHOICES, load
from toolkit.runtime.manifest import VARIANTS
from toolkit.runtime.score import MAX_TOP, Score

# Texts at least this long get a progress bar (on a terminal): about a second in exact mode.
PROGRESS_FROM_CHARS = 20_000


def score(
    model: Annotated[
        str | None,
        typer.Argument(
            help="export folder (run directory for --runtime keras); '-' alone: read the text "
            "from stdin with the committed model"
        ),
    ] = None,
    text: Annotated[str | None, typer.Option(help="the text to score")] = None,
    file: Annotated[
        str | None, typer.Option(help="a UTF-8 file to score ('-': standard input)")
    ] = None,
    runtime: Annotated[str, typer.Option(**choice(RUNTIMES))] = "onnx",
    variant: Annotated[
        str,
        typer.Option(help="auto: the most precise variant present", **choice(["auto", *VARIANTS])),
    ] = "auto",
    threads: Annotated[int, typer.Option(help="runtime threads")] = 1,
    streams: Annotated[
        int, typer.Option(help="score B contiguous segments side by side (1: exact)")
    ] = 1,
    overlap: Annotated[
        int, typer.Option(help="with --streams: characters each segment warms up on, not counted")
    ] = 256,
    top: Annotated[
        int,
        typer.Option(help=f"with --json: the N most likely characters per position (<= {MAX_TOP})"),
    ] = 0,
    unknown: Annotated[
        str,
        typer.Option(
            help="what to do with characters the model does not know", **choice(UNKNOWN_CHOICES)
        ),
    ] = "error",
    as_json: Annotated[
        bool, typer.Option("--json", help="print JSON with every character's log-probability")
    ] = False,
    progress: Annotated[bool, typer.Option(help="show a progress bar for long texts")] = True,
) -> None:
    """Bits and nats per character of a text: each character predicted from the ones before it,
    from the zero state (the first character is not predicted)."""
    if model == "-" and file is None and text is None:
        model, file = None, "-"
    if (text is None) == (file is None):
        raise UsageError("give the text to score: --text TEXT, --file FILE or --file -")
    if top and not as_json:
        raise UsageError("--top lists alternatives in the JSON output: add --json")
    if not 0 <= top <= MAX_TOP:
        raise UsageError(f"--top must be in 0..{MAX_TOP}, got {top}")
    if streams < 1 or overlap < 0:
        raise UsageError("--streams must be >= 1 and --overlap >= 0")
    generator = load(model, runtime=runtime, variant=variant, threads=threads)
    body = text if text is not None else read_text(file or "-")
    if progress and sys.stderr.isatty() and len(body) >= PROGRESS_FROM_CHARS:
        from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

        columns = (TextColumn("score"), BarColumn(), TimeRemainingColumn())
        with Progress(*columns, transient=True) as bar:
            task = bar.add_task("score", total=None)
            result = generator.score(
                body,
                top,
                streams,
                overlap,
                unknown,
                progress=lambda done, total: bar.update(task, completed=done, total=total),
            )
    else:
        result = generator.score(body, top, streams, overlap, unknown)
    if as_json:
        typer.echo(json.dumps(result.to_dict(generator.chars), ensure_ascii=False))
    else:
        typer.echo(summary(result))


def summary(result: Score) -> str:
    if not result.scored:
        return f"{result.chars} character: nothing to predict (the first character is given)"
    batched = f", {result.streams} streams" if result.streams > 1 else ""
    return (
        f"{result.bits_per_char:.4f} bits/char, {result.nats_per_char:.4f} nats/char over "
        f"{result.scored:,} predicted characters (total {result.total_nats:,.2f} nats; "
        f"{result.runtime} {result.variant}{batched}, {result.chars_per_sec:,.0f} chars/s)"
    )


def read_text(file: str) -> str:
    """The text of a UTF-8 file, or of standard input for '-'."""
    try:
        raw = sys.stdin.buffer.read() if file == "-" else Path(file).read_bytes()
    except FileNotFoundError:
        raise DataError(f"no such file: {file}") from None
    except IsADirectoryError:
        raise DataError(f"{file} is a folder; give a text file") from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        where = "standard input" if file == "-" else file
        raise DataError(f"{where} is not valid UTF-8 (byte offset {exc.start})") from None
