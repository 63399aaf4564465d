"""`toolkit generate`: text from an exported model, streamed as it is produced."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from toolkit.cli.common import choice
from toolkit.runtime.backends import RUNTIMES
from toolkit.runtime.decode import DecodeOptions
from toolkit.runtime.generator import UNKNOWN_CHOICES, load
from toolkit.runtime.manifest import VARIANTS


def generate(
    model: Annotated[
        Path | None,
        typer.Argument(help="export folder (run directory for --runtime keras)"),
    ] = None,
    runtime: Annotated[
        str,
        typer.Option(
            help="tflm: TensorFlow Lite Micro's interpreter; c: the exported C, compiled here",
            **choice(RUNTIMES),
        ),
    ] = "onnx",
    variant: Annotated[
        str,
        typer.Option(help="auto: the most precise variant present", **choice(["auto", *VARIANTS])),
    ] = "auto",
    prompt: Annotated[str, typer.Option(help="text that warms up the state")] = "ROMEO:",
    length: Annotated[int, typer.Option(help="characters to generate")] = 500,
    temperature: Annotated[float, typer.Option(help="0 = greedy")] = 0.8,
    top_k: Annotated[int, typer.Option(help="keep the k most likely (0 = all)")] = 0,
    top_p: Annotated[float, typer.Option(help="nucleus sampling mass in (0, 1]")] = 1.0,
    seed: Annotated[int | None, typer.Option(help="random seed")] = None,
    num_samples: Annotated[int, typer.Option(help="texts generated in one batch")] = 1,
    stop: Annotated[str | None, typer.Option(help="stop when this string appears")] = None,
    unknown: Annotated[
        str,
        typer.Option(
            help="what to do with prompt characters the model does not know",
            **choice(UNKNOWN_CHOICES),
        ),
    ] = "error",
    threads: Annotated[int, typer.Option(help="runtime threads")] = 1,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON with timings")] = False,
) -> None:
    """Generate text, streaming characters as they are produced."""
    # Bad options and prompts are refused before the prompt is echoed: stdout gets text or
    # nothing.
    stops = (stop,) if stop else ()
    options = DecodeOptions(length, temperature, top_k, top_p, stops, seed, num_samples)
    generator = load(model, runtime=runtime, variant=variant, threads=threads)
    generator.encode(prompt, unknown)
    stream = num_samples == 1 and not as_json
    if stream:
        sys.stdout.write(prompt)
        sys.stdout.flush()

    def on_text(row: int, text: str) -> None:
        sys.stdout.write(text)
        sys.stdout.flush()

    result = generator.generate(
        prompt, options=options, unknown=unknown, on_text=on_text if stream else None
    )
    if as_json:
        typer.echo(json.dumps(result.to_dict(), ensure_ascii=False, indent=2))
    elif stream:
        sys.stdout.write("\n")
    else:
        for i, text in enumerate(result.texts):
            typer.echo(f"--- sample {i + 1} ---\n{prompt}{text}")
