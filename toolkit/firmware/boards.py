"""QEMU's Cortex-M boards the firmware runs on, and the real parts whose memory it is linked
for: the part is chosen by the firmware's size (or named), and its flash and RAM become the
linker script's regions, so a model that would not fit that chip fails to link."""

from __future__ import annotations

from dataclasses import dataclass

from toolkit.errors import FirmwareError

KB, MB = 1024, 1024 * 1024


@dataclass(frozen=True)
class Part:
    name: str
    flash: int
    ram: int
    note: str = ""


@dataclass(frozen=True)
class Board:
    name: str  # QEMU's machine
    cpu: str  # the build's -mcpu
    parts: tuple[Part, ...]  # smallest first
    description: str
    clock_hz: float  # a typical part's clock, to turn instructions into time


# Real parts of each core, smallest first. QEMU's MPS2 boards map 4 MB at 0x0 and 4 MB at
# 0x20000000, so every size below fits the emulated memory.
M4_PARTS = (
    Part("STM32G431KB", 128 * KB, 32 * KB, "SRAM1+SRAM2+CCM"),
    Part("STM32L432KC", 256 * KB, 64 * KB, "SRAM1+SRAM2"),
    Part("STM32F411CE", 512 * KB, 128 * KB),
    Part("STM32L476RG", 1 * MB, 128 * KB, "SRAM1 96 KB + SRAM2 32 KB"),
    Part("STM32F429ZI", 2 * MB, 256 * KB, "192 KB SRAM + 64 KB CCM"),
)
M7_PARTS = (
    Part("STM32F730R8", 64 * KB, 256 * KB),
    Part("STM32F722RE", 512 * KB, 256 * KB),
    Part("STM32F746NG", 1 * MB, 320 * KB),
    Part("STM32F767ZI", 2 * MB, 512 * KB),
)
M0_PARTS = (
    Part("STM32F030F4", 16 * KB, 4 * KB),
    Part("STM32F030C8", 64 * KB, 8 * KB),
    Part("STM32F072RB", 128 * KB, 16 * KB),
    Part("STM32F091RC", 256 * KB, 32 * KB),
    Part("RP2040", 2 * MB, 264 * KB, "Cortex-M0+, 2 MB QSPI flash (Raspberry Pi Pico)"),
)

BOARDS = {
    "mps2-an386": Board("mps2-an386", "cortex-m4", M4_PARTS, "Cortex-M4 (DSP)", 168e6),
    "mps2-an500": Board("mps2-an500", "cortex-m7", M7_PARTS, "Cortex-M7 (DSP)", 216e6),
    # QEMU has no Cortex-M0 machine: the M0 build (ARMv6-M code, no DSP) runs on the M3 board.
    "mps2-an385": Board("mps2-an385", "cortex-m0", M0_PARTS, "Cortex-M0 build, M3 board", 48e6),
}


def board(name: str) -> Board:
    if name not in BOARDS:
        raise FirmwareError(f"unknown board {name!r}; choose from {', '.join(BOARDS)}")
    return BOARDS[name]


def choose_part(b: Board, flash: int, ram: int, name: str | None = None) -> Part:
    """The named part, else the smallest that holds `flash` and `ram` bytes, else the largest
    (whose link then says by how much the model is over)."""
    if name is not None:
        for part in b.parts:
            if part.name.lower() == name.lower():
                return part
        names = ", ".join(p.name for p in b.parts)
        raise FirmwareError(f"unknown part {name!r} for {b.name}; choose from {names}")
    for part in b.parts:
        if flash <= part.flash and ram <= part.ram:
            return part
    return b.parts[-1]
