"""`toolkit export`: a run (or an exported folder) to every target, validated."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from toolkit.cli.common import choice, command_line
from toolkit.logs import require_tensorflow
from toolkit.runtime.manifest import FORMATS, VARIANTS

# `--quantize` takes the variant names of `generate --variant`; the manifest's older words
# (none, float16) are still accepted.
QUANTIZE_ALIASES = {q: v for v, q in VARIANTS.items() if q != v}


def export(
    run_dir: Annotated[
        Path, typer.Argument(help="trained run directory, or an exported folder to add to")
    ] = Path("runs/shakespeare"),
    format: Annotated[
        str,
        typer.Option(
            help="which formats (c: the full-int8 model as dependency-free C; all includes it "
            "when full-int8 is among the variants)",
            **choice(["all", *FORMATS]),
        ),
    ] = "all",
    quantize: Annotated[
        str | None,
        typer.Option(
            help="which variants (full-int8: microcontrollers); default fp32, full-int8 for "
            "--format c",
            **choice([*VARIANTS, "all"], QUANTIZE_ALIASES),
        ),
    ] = None,
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
    chat_format: Annotated[
        Path | None,
        typer.Option(help="JSON turn format for chat (toolkit serve); kept in the manifest"),
    ] = None,
) -> None:
    """Export a run to single-step graphs with explicit state, validated against Keras."""
    from toolkit.export.plan import plan_artifacts

    formats = list(FORMATS) if format == "all" else [format]
    quantize = quantize or ("full-int8" if format == "c" else "fp32")  # C is full-int8 only
    quantization = "all" if quantize == "all" else VARIANTS[quantize]
    plan_artifacts(formats, quantization)  # an impossible combination: one line, at once
    turns = None
    if chat_format is not None:  # a bad file: one line before any work
        from toolkit.chat_format import ChatFormat

        turns = ChatFormat.load(chat_format).to_dict()
    # The C is made from the folder's full-int8 model: TensorFlow only to make that first.
    if formats != ["c"] or (run_dir / "run.json").exists():
        require_tensorflow()
    from toolkit.export.exporter import export_run
    from toolkit.export.micro import MicroLimits

    out_dir, artifacts = export_run(
        run_dir,
        out,
        formats=formats,
        quantization=quantization,
        validate=validate,
        bpc_tolerance=bpc_tolerance,
        force=force,
        log=typer.echo,
        command=command_line(),
        calibration_chars=calibration_chars,
        calibration_data=calibration_data,
        limits=MicroLimits(max_flash, max_arena),
        chat_format=turns,
    )
    for art in artifacts:
        typer.echo(f"wrote {out_dir / art.file} ({art.bytes / 1024:.1f} KiB)")
        for companion in art.files:
            typer.echo(f"wrote {out_dir / companion}")
