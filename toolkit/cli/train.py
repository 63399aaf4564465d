"""`toolkit train`: the training command, and `--workers N` as N local processes."""

from __future__ import annotations

import dataclasses
import math
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from toolkit.cli.common import choice, command_line, corpus_name
from toolkit.config import PRECISIONS, PRESETS, preset
from toolkit.errors import UsageError
from toolkit.logs import require_tensorflow
from toolkit.metrics import bits_per_char

# The recurrence's regularisers (train/regularise.py), declared once here.
WeightDrop = Annotated[
    float | None,
    typer.Option(help="DropConnect on the recurrent kernels, one mask per step (0 = off)"),
]
InputDropout = Annotated[
    float | None,
    typer.Option(help="locked dropout on the LSTM's input, a mask per stream per window"),
]
EmbeddingDropout = Annotated[
    float | None, typer.Option(help="drop whole characters from the embedding (0 = off)")
]
LockedDropout = Annotated[
    bool | None,
    typer.Option(
        "--locked-dropout/--no-locked-dropout",
        help="--dropout with one mask per stream per window, not per character",
    ),
]
EmaDecay = Annotated[
    float | None,
    typer.Option(help="validate and export an average of the weights (0 = off; e.g. 0.995)"),
]


# Options whose declarations take several lines, declared once here.
PresetNameOption = Annotated[
    str, typer.Option("--preset", help="see the README's table", **choice(PRESETS))
]
DataOption = Annotated[
    Path | None, typer.Option(help="UTF-8 text file or folder of .txt (default: bundled)")
]
MaxStepsOption = Annotated[
    int | None,
    typer.Option(help="the run's work in optimizer steps (0: none, epochs or minutes decide)"),
]
MaxMinutesOption = Annotated[
    float | None,
    typer.Option(help="cap on the training time; where it binds, the schedule follows it"),
]
WeightDecayOption = Annotated[
    float | None, typer.Option(help="decoupled weight decay (AdamW-style), 0 = off")
]
PrecisionOption = Annotated[
    str,
    typer.Option(help="training compute: auto = bf16 where the CPU has it", **choice(PRECISIONS)),
]
ResetProbOption = Annotated[
    float | None,
    typer.Option(help="chance a stream's state is zeroed at a window border (cold starts)"),
]
ValCharsOption = Annotated[
    int | None, typer.Option(help="validate on at most this many characters (default: all)")
]
WorkersOption = Annotated[
    int, typer.Option(help="train on N local worker processes (tf.distribute)")
]


# Options that set the TrainConfig field of the same name when given.
OVERRIDES = (
    "epochs", "max_steps", "max_minutes", "batch_size", "learning_rate", "seq_length",
    "embedding_dim", "units", "layers", "dropout", "weight_decay", "weight_drop",
    "input_dropout", "embedding_dropout", "locked_dropout", "ema_decay", "val_fraction",
    "reset_prob", "val_chars", "seed",
)  # fmt: skip


def train(
    preset_name: PresetNameOption = "default",
    data: DataOption = None,
    out: Annotated[Path | None, typer.Option(help="run directory (default runs/<corpus>)")] = None,
    resume: Annotated[Path | None, typer.Option(help="continue the run in this directory")] = None,
    force: Annotated[bool, typer.Option(help="overwrite an existing run directory")] = False,
    epochs: Annotated[int | None, typer.Option()] = None,
    max_steps: MaxStepsOption = None,
    max_minutes: MaxMinutesOption = None,
    batch_size: Annotated[int | None, typer.Option()] = None,
    learning_rate: Annotated[float | None, typer.Option()] = None,
    seq_length: Annotated[int | None, typer.Option()] = None,
    embedding_dim: Annotated[int | None, typer.Option()] = None,
    units: Annotated[int | None, typer.Option()] = None,
    layers: Annotated[int | None, typer.Option()] = None,
    dropout: Annotated[float | None, typer.Option()] = None,
    weight_decay: WeightDecayOption = None,
    weight_drop: WeightDrop = None,
    input_dropout: InputDropout = None,
    embedding_dropout: EmbeddingDropout = None,
    locked_dropout: LockedDropout = None,
    ema_decay: EmaDecay = None,
    val_fraction: Annotated[float | None, typer.Option()] = None,
    precision: PrecisionOption = "auto",
    reset_prob: ResetProbOption = None,
    val_chars: ValCharsOption = None,
    seed: Annotated[int | None, typer.Option()] = None,
    workers: WorkersOption = 1,
    sample: Annotated[bool, typer.Option(help="print a short sample after each epoch")] = True,
    progress: Annotated[bool, typer.Option(help="show a progress bar")] = True,
) -> None:
    """Train the model (bundled Shakespeare by default); resumable and atomic."""
    given = locals()  # the options, by name: those below override the preset's same field
    overrides: dict[str, Any] = {k: given[k] for k in OVERRIDES if given[k] is not None}
    if precision != "auto":
        overrides["precision"] = precision
    if not sample:
        overrides["sample_every_epoch"] = False
    if overrides.get("max_steps") == 0:  # --max-steps 0: no step budget (epochs, minutes)
        overrides["max_steps"] = None
    config = dataclasses.replace(preset(preset_name), **overrides)  # checked by the run
    if resume is not None:
        if out is not None and out != resume:
            raise UsageError("give the run directory once: --resume RUN_DIR (without --out)")
        run_dir = resume
    else:
        run_dir = out or Path("runs") / ("shakespeare" if data is None else corpus_name(data))
    if workers < 1:
        raise UsageError(f"workers must be >= 1, got {workers}")
    require_tensorflow()  # a one-line error now, not after the corpus was read
    if workers > 1:
        _launch_workers(workers, config.batch_size)
        return

    from toolkit.train.loop import train as train_run  # TensorFlow is imported in there

    result = train_run(
        config,
        run_dir,
        data=data,
        resume=resume is not None,
        force=force,
        overrides=overrides,
        command=command_line(),
        log=typer.echo,
        progress_bar=progress and sys.stderr.isatty(),
    )
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
    from toolkit.train.distributed import launch_local_workers

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
