"""`toolkit firmware`: the exported C step as bare-metal firmware for an emulated Cortex-M."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from toolkit.cli.common import choice
from toolkit.errors import UsageError
from toolkit.firmware.boards import BOARDS


def firmware(
    model: Annotated[
        Path | None,
        typer.Argument(help="export folder with char_lstm.c (default: the committed model)"),
    ] = None,
    board: Annotated[
        str, typer.Option(help="QEMU board (mps2-an385: the Cortex-M0 build)", **choice(BOARDS))
    ] = "mps2-an386",
    out: Annotated[Path, typer.Option(help="folder for the firmware and its build")] = Path(
        "firmware"
    ),
    part: Annotated[
        str | None, typer.Option(help="link for this part of the board's list (default: by size)")
    ] = None,
    portable: Annotated[
        bool, typer.Option(help="the portable C matrix product (no DSP instructions)")
    ] = False,
    run: Annotated[bool, typer.Option(help="run it in qemu-system-arm")] = False,
    prompt: Annotated[str, typer.Option(help="text that warms up the state")] = "ROMEO:",
    length: Annotated[
        int, typer.Option(help="characters to generate (at most, with a pattern)")
    ] = 200,
    timeout: Annotated[float, typer.Option(help="seconds qemu may run")] = 300.0,
    regex: Annotated[
        str | None, typer.Option(help="build in this pattern: the text matches it in full")
    ] = None,
    choice_: Annotated[
        list[str] | None,
        typer.Option("--choice", help="build in a choice: the text is one of these strings"),
    ] = None,
    temperature: Annotated[
        float, typer.Option(help="0 = greedy; > 0: the C decoder's integer sampler")
    ] = 0.0,
    top_k: Annotated[int, typer.Option(help="keep the k most likely (0 = all)")] = 0,
    seed: Annotated[int, typer.Option(help="the sampler's PCG32 seed")] = 0,
) -> None:
    """Build bare-metal Cortex-M firmware around char_lstm.c; --run runs it in QEMU."""
    from toolkit.firmware.build import build_firmware
    from toolkit.firmware.qemu import check_exit, run_firmware
    from toolkit.runtime.generator import default_model_dir

    if length < 1:
        raise UsageError(f"length must be >= 1, got {length}")
    if timeout <= 0:
        raise UsageError(f"timeout must be > 0, got {timeout:g}")
    model_dir = model if model is not None else default_model_dir("c")
    info = build_firmware(
        model_dir, board, out, prompt, length, part=part, portable_matvec=portable,
        regex=regex, choices=choice_ or None, temperature=temperature, top_k=top_k, seed=seed,
    )  # fmt: skip
    typer.echo(info.summary(), err=True)
    if not run:
        typer.echo("run it: the same command with --run", err=True)
        return
    elf = Path(info.elf)
    result = run_firmware(elf, board, timeout)
    check_exit(result, elf)
    sys.stdout.write(prompt + result.text + "\n")
    sys.stdout.flush()
    if result.instructions_per_char is not None:
        clock = BOARDS[board].clock_hz
        typer.echo(
            f"{result.instructions_per_char:,.0f} instructions per character ({result.steps} "
            f"steps counted by qemu -icount): {result.instructions_per_char / clock * 1e3:.1f} ms "
            f"per character at {clock / 1e6:.0f} MHz and one instruction per cycle"
            + (
                f" ({result.choose_instructions_per_char:,.0f} of them choosing the character)"
                if result.choose_instructions_per_char is not None
                else ""
            ),
            err=True,
        )
