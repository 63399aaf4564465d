"""Run a firmware in qemu-system-arm: its text from semihosting's stdout, its statistics line
from stderr, and its exit status.

Instructions are counted with `-icount shift=0` (one instruction = one ns of virtual time),
so the 25 MHz SysTick ticks every 40 instructions; main.c calibrates the tick against a loop
of known length in every run, and reports the ticks spent in steps.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from toolkit.errors import FirmwareError
from toolkit.firmware.boards import board
from toolkit.firmware.build import need_tool

QEMU = "qemu-system-arm"
TIMEOUT_S = 300.0


@dataclass
class RunResult:
    text: str
    exit_code: int
    steps: int
    instructions_per_char: float | None  # one step + argmax
    instructions_per_tick: float | None
    stack_bytes: int | None  # the painted stack's high-water mark
    logits_fnv: int | None  # FNV-1a of every step's logits
    stderr: str
    generated: int = 0  # characters written
    choose_instructions_per_char: float | None = None  # the C decoder's share (FW_DECODE)


def qemu_command(elf: Path, board_name: str, qemu: str = QEMU) -> list[str]:
    return [
        qemu, "-M", board_name, "-kernel", str(elf),
        "-display", "none", "-monitor", "none", "-serial", "none", "-nodefaults",
        "-semihosting-config", "enable=on,target=native",
        "-icount", "shift=0",
    ]  # fmt: skip


def run_firmware(elf: Path, board_name: str, timeout_s: float = TIMEOUT_S) -> RunResult:
    """Run `elf` on `board_name` until it exits (semihosting) or `timeout_s` passes."""
    board(board_name)
    qemu = need_tool(QEMU, "qemu-system-arm")
    elf = Path(elf)
    if not elf.is_file():
        raise FirmwareError(f"no firmware at {elf}")
    try:
        proc = subprocess.run(
            qemu_command(elf, board_name, qemu), capture_output=True, timeout=timeout_s
        )
    except subprocess.TimeoutExpired:
        raise FirmwareError(
            f"qemu timed out after {timeout_s:g} s running {elf.name} on {board_name} "
            "(a longer --length needs a longer --timeout)"
        ) from None
    stderr = proc.stderr.decode("utf-8", "replace")
    stats: dict[str, str] = {}
    match = re.search(r"char_lstm_stats(.*)", stderr)
    if match:
        stats = dict(kv.split("=", 1) for kv in match.group(1).split() if "=" in kv)
    steps = int(stats.get("steps", 0))
    per_char = per_tick = None
    if steps and int(stats.get("calib_ticks", 0)):
        per_tick = int(stats["calib_instructions"]) / int(stats["calib_ticks"])
        per_char = int(stats["step_ticks"]) * per_tick / steps
    generated = int(stats.get("generated", 0))
    choose = None
    if per_tick is not None and generated and "choose_ticks" in stats:
        choose = int(stats["choose_ticks"]) * per_tick / generated
    return RunResult(
        text=proc.stdout.decode("utf-8", "replace"),
        exit_code=proc.returncode,
        steps=steps,
        instructions_per_char=per_char,
        instructions_per_tick=per_tick,
        stack_bytes=int(stats["stack_bytes"]) if "stack_bytes" in stats else None,
        logits_fnv=int(stats["logits_fnv"]) if "logits_fnv" in stats else None,
        stderr=stderr,
        generated=generated,
        choose_instructions_per_char=choose,
    )


def check_exit(result: RunResult, elf: Path) -> None:
    """A FirmwareError with the firmware's own last words when it did not exit with 0."""
    if result.exit_code != 0:
        said = [line for line in result.stderr.splitlines() if line.strip()]
        raise FirmwareError(
            f"{elf.name} exited with status {result.exit_code}"
            + (f": {said[-1].strip()}" if said else "")
        )
