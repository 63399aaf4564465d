"""Bare-metal Cortex-M firmware around an exported folder's char_lstm.c, for QEMU's MPS2 boards.

    build_firmware(model_dir, board, out_dir, prompt, length) -> FirmwareInfo

The firmware is src/: startup.c (vector table, .data/.bss start-up, semihosting, a painted
stack), main.c (reset, feed the prompt, greedy-decode, SysTick ticks per step) and a linker
script (link.ld.in) whose FLASH and RAM are a real part's sizes (boards.py), so that a model
that does not fit fails to link. Built with arm-none-eabi-gcc against no C library, only
libgcc. The prompt's token ids are encoded here and compiled in (firmware_config.h).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from toolkit.errors import FirmwareError, UsageError
from toolkit.export.c.emit import matvec_harness_source, matvec_source
from toolkit.firmware.boards import KB, Board, Part, board, choose_part
from toolkit.runtime.backends.c import (
    HEADER,
    SOURCE,
    c_cache,
    compiler_id,
    first_error,
    locked,
    read_c_files,
)
from toolkit.runtime.backends.c_decode import (
    PATTERN_NAME,
    decoder_sources,
    pattern_sources,
    temperature_milli,
)
from toolkit.runtime.manifest import Manifest
from toolkit.runtime.pattern import Pattern, compile_choice, compile_regex
from toolkit.vocabulary import Vocabulary

SRC = Path(__file__).resolve().parent / "src"
GCC = "arm-none-eabi-gcc"
SIZE = "arm-none-eabi-size"
CALIB_LOOPS = 1_000_000  # 2M instructions: 50,000 SysTick ticks at 40 instructions per tick
MIN_STACK = 1024  # bytes reserved for the stack at least
FLASH_MARGIN = 1 * KB  # beyond the objects' sizes when choosing a part: alignment, the linker's
OPT_FLAGS = ["-O2"]
COMMON_FLAGS = [
    "-mthumb",
    "-mfloat-abi=soft",  # the step has no floating point: no FPU to set up
    "-masm-syntax-unified",  # the inline assembly is in unified syntax, on Thumb-1 too
    "-std=c99",
    "-ffreestanding",
    "-ffunction-sections",
    "-fdata-sections",
    "-fstack-usage",
    "-fcallgraph-info=su",  # with -fstack-usage: the worst call path's stack, statically
    "-Wall",
    "-Wextra",
]
MARKER = "firmware.json"  # what makes a folder one `toolkit firmware` may overwrite


@dataclass
class FirmwareInfo:
    elf: str
    board: str
    cpu: str
    part: str
    part_flash: int
    part_ram: int
    flash_bytes: int  # .isr_vector + .text + .rodata + .data (arm-none-eabi-size)
    ram_bytes: int  # .data + .bss (the stack is the rest of RAM)
    stack_static_bytes: int  # the worst call path, from -fstack-usage / -fcallgraph-info
    stack_reserved_bytes: int
    model_flash_bytes: int  # char_lstm.o alone: text + data
    model_ram_bytes: int  # char_lstm.o alone: data + bss (the state itself is in main.o)
    portable_matvec: bool
    prompt: str
    prompt_tokens: list[int]
    length: int
    sections: dict[str, int] = field(default_factory=dict)
    # The C decoder (char_lstm_decode.c), built in for a pattern or a temperature > 0.
    pattern: str | None = None  # the regex, or the choice list's description
    pattern_states: int = 0
    pattern_bytes: int = 0  # the table's const data
    temperature: float = 0.0
    top_k: int = 0
    seed: int = 0

    def summary(self) -> str:
        return (
            f"{Path(self.elf).name} for {self.board} ({self.cpu}, linked for {self.part}): "
            f"flash {self.flash_bytes:,} of {self.part_flash:,} bytes, RAM {self.ram_bytes:,} "
            f"+ stack {self.stack_static_bytes} of {self.part_ram:,}"
        )


def need_tool(name: str, package: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise FirmwareError(f"{name} not found: apt-get install {package}")
    return path


def c_literal(tokens: list[int]) -> str:
    return "{" + ", ".join(str(t) for t in tokens) + "}"


def _run(cmd: list[str], cwd: Path, what: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise FirmwareError(f"{what} failed: {first_error(proc.stderr)}")
    return proc


def object_sizes(size_tool: str, obj: Path) -> tuple[int, int, int]:
    """(text, data, bss) of an object file (Berkeley format)."""
    out = subprocess.run([size_tool, str(obj)], capture_output=True, text=True, check=True)
    text, data, bss = (int(x) for x in out.stdout.splitlines()[1].split()[:3])
    return text, data, bss


def section_sizes(size_tool: str, elf: Path) -> dict[str, int]:
    out = subprocess.run([size_tool, "-A", str(elf)], capture_output=True, text=True, check=True)
    sizes = {}
    for line in out.stdout.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0].startswith(".") and parts[1].isdigit():
            sizes[parts[0]] = int(parts[1])
    return sizes


def static_stack(ci_files: list[Path], roots: tuple[str, ...]) -> int:
    """Worst-case stack bytes over the call graph of gcc's -fcallgraph-info=su files."""
    frames: dict[str, int] = {}
    edges: dict[str, set[str]] = {}
    by_name: dict[str, str] = {}
    node_re = re.compile(r'node: \{ title: "([^"]+)" label: "([^"\\]+)\\n([^"]*)"')
    edge_re = re.compile(r'edge: \{ sourcename: "([^"]+)" targetname: "([^"]+)"')
    for ci in ci_files:
        text = ci.read_text(errors="replace")
        for title, name, rest in node_re.findall(text):
            size = re.search(r"(\d+) bytes", rest)
            if size:
                frames[title] = int(size.group(1))
                by_name.setdefault(name.split(".")[0], title)
        for src, dst in edge_re.findall(text):
            edges.setdefault(src, set()).add(dst)

    def resolve(title: str) -> str:
        return title if title in frames else by_name.get(title, title)

    memo: dict[str, int] = {}

    def depth(title: str, seen: frozenset[str]) -> int:
        title = resolve(title)
        if title in memo:
            return memo[title]
        if title in seen:  # recursion: there is none in this code
            return 0
        below = [depth(t, seen | {title}) for t in edges.get(title, ())]
        memo[title] = frames.get(title, 0) + max(below, default=0)
        return memo[title]

    return max(depth(r, frozenset()) for r in roots)


def model_object(gcc: str, cflags: list[str], files: dict[str, bytes], out_dir: Path) -> Path:
    """char_lstm.o (with its .su and .ci) in out_dir, compiled once per source, flags and
    compiler and cached beside the host's builds: the committed model's C takes seconds."""
    key = hashlib.sha256()
    for name in (SOURCE, HEADER):
        key.update(hashlib.sha256(files[name]).digest())
    flags = [f for f in cflags if not f.startswith("-I")]  # the folders do not matter
    key.update(repr([gcc, compiler_id(gcc), *flags]).encode())
    cached = c_cache() / f"firmware-{key.hexdigest()[:24]}"
    outputs = ("char_lstm.o", "char_lstm.su", "char_lstm.ci")
    if not cached.exists():
        c_cache().mkdir(parents=True, exist_ok=True)
        with locked(c_cache() / f".{cached.name}.lock"):
            if not cached.exists():
                with tempfile.TemporaryDirectory(dir=c_cache(), prefix=".build-") as tmp:
                    work = Path(tmp) / "work"
                    work.mkdir()
                    for name in (SOURCE, HEADER):
                        (work / name).write_bytes(files[name])
                    cmd = [gcc, *flags, f"-I{work}", "-c", SOURCE, "-o", "char_lstm.o"]
                    _run(cmd, work, f"compiling {SOURCE}")
                    for name in (SOURCE, HEADER):
                        (work / name).unlink()
                    os.replace(work, cached)
    for name in outputs:
        shutil.copyfile(cached / name, out_dir / name)
    return out_dir / "char_lstm.o"


def linker_script(part: Part, stack: int) -> str:
    script = (SRC / "link.ld.in").read_text()
    values = {
        "PART": part.name,
        "FLASH": str(part.flash),
        "RAM": str(part.ram),
        "STACK": str(stack),
    }
    for key, value in values.items():
        script = script.replace(f"@{key}@", value)
    return script


def prepare_out_dir(out_dir: Path) -> None:
    """out_dir, created; a non-empty folder that is not an earlier firmware is refused."""
    if out_dir.exists() and any(out_dir.iterdir()) and not (out_dir / MARKER).exists():
        raise FirmwareError(
            f"{out_dir} exists and is not a firmware folder (no {MARKER}); use another --out"
        )
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / MARKER).unlink(missing_ok=True)  # written again once the link succeeds
    except OSError as exc:
        raise FirmwareError(f"cannot write {out_dir}: {exc.strerror or exc}") from None


def build_firmware(
    model_dir: Path,
    board_name: str,
    out_dir: Path,
    prompt: str = "ROMEO:",
    length: int = 200,
    *,
    part: str | None = None,
    portable_matvec: bool = False,
    cpu: str | None = None,
    regex: str | None = None,
    choices: list[str] | None = None,
    temperature: float = 0.0,
    top_k: int = 0,
    seed: int = 0,
) -> FirmwareInfo:
    """Compile and link the firmware for `board_name` into out_dir/firmware.elf, with
    firmware.json beside it (part, flash, RAM, stack). With a regex or choices, or a
    temperature > 0, the C decoder chooses the characters (char_lstm_decode.c: the pattern
    rule, the integer sampler, PCG32 seeded with `seed`): the text of
    CBackend.decode_native for the same options."""
    b = board(board_name)
    _check_options(length, regex, choices, top_k, seed)
    milli = temperature_milli(temperature)
    manifest = Manifest.read(Path(model_dir))
    files = read_c_files(Path(model_dir), manifest)
    vocab = manifest.vocabulary
    pattern = _pattern(regex, choices, vocab.chars, length)
    decode = pattern is not None or milli > 0
    tokens = _prompt_tokens(prompt or vocab.start_text, vocab)
    gcc = need_tool(GCC, "gcc-arm-none-eabi libnewlib-arm-none-eabi")
    size_tool = need_tool(SIZE, "binutils-arm-none-eabi")
    out_dir = Path(out_dir).resolve()  # gcc runs in out_dir: relative paths would nest
    prepare_out_dir(out_dir)
    extra: dict[str, bytes] = {}  # the decoder's sources, compiled beside main.c
    if decode:
        extra.update(decoder_sources())
    if pattern is not None:
        extra.update(pattern_sources(pattern, len(vocab.chars)))
    for name, data in {**files, **extra}.items():
        (out_dir / name).write_bytes(data)
    sampler = (milli, top_k, seed) if decode else None
    (out_dir / "firmware_config.h").write_text(firmware_config(tokens, length, sampler, pattern))
    cflags = [
        f"-mcpu={cpu or b.cpu}",
        *COMMON_FLAGS,
        *OPT_FLAGS,
        f"-I{out_dir}",
        f"-I{SRC}",
        *(["-DCHAR_LSTM_PORTABLE_MATVEC"] if portable_matvec else []),
    ]
    extra_c = [out_dir / n for n in extra if n.endswith(".c")]
    objs = _compile(gcc, cflags, files, out_dir, [SRC / "startup.c", SRC / "main.c", *extra_c])
    model_text, model_data, model_bss = object_sizes(size_tool, objs["char_lstm"])
    flash, ram = _footprint(size_tool, list(objs.values()))
    stack = static_stack(sorted(out_dir.glob("*.ci")), ("Reset_Handler", "HardFault_Handler"))
    stack_reserve = max(MIN_STACK, -(-(stack + 256) // 256) * 256)
    chosen = choose_part(b, flash + FLASH_MARGIN, ram + stack_reserve, part)
    model_flash = model_text + model_data
    elf = _link(gcc, cflags, list(objs.values()), out_dir, chosen, stack_reserve, model_flash)
    sections = section_sizes(size_tool, elf)
    flash_sections = (".isr_vector", ".text", ".rodata", ".ARM.exidx", ".data")
    info = FirmwareInfo(
        elf=str(elf),
        board=b.name,
        cpu=cpu or b.cpu,
        part=chosen.name,
        part_flash=chosen.flash,
        part_ram=chosen.ram,
        flash_bytes=sum(sections.get(s, 0) for s in flash_sections),
        ram_bytes=sections.get(".data", 0) + sections.get(".bss", 0),
        stack_static_bytes=stack,
        stack_reserved_bytes=stack_reserve,
        model_flash_bytes=model_flash,
        model_ram_bytes=model_data + model_bss,
        portable_matvec=portable_matvec,
        prompt=prompt,
        prompt_tokens=tokens,
        length=length,
        sections=sections,
        pattern=pattern.source if pattern is not None else None,
        pattern_states=pattern.states if pattern is not None else 0,
        pattern_bytes=pattern.states * (2 * len(vocab.chars) + 3) if pattern is not None else 0,
        temperature=temperature,
        top_k=top_k,
        seed=seed,
    )
    (out_dir / MARKER).write_text(json.dumps(asdict(info), indent=2) + "\n")
    return info


def _check_options(
    length: int, regex: str | None, choices: list[str] | None, top_k: int, seed: int
) -> None:
    if length < 1:
        raise UsageError(f"length must be >= 1, got {length}")
    if regex is not None and choices:
        raise UsageError("give a regex or choices, not both")
    if top_k < 0:
        raise UsageError(f"top-k must be >= 0 (0 means no limit), got {top_k}")
    if not 0 <= seed < 2**64:
        raise UsageError(f"seed must be in 0..2^64-1, got {seed}")


def _pattern(
    regex: str | None, choices: list[str] | None, chars: Sequence[str], length: int
) -> Pattern | None:
    """The compiled regex or choice list, refused here if no text of `length` can match."""
    pattern: Pattern | None = None
    if regex is not None:
        pattern = compile_regex(regex, chars)
    elif choices:
        pattern = compile_choice(choices, chars)
    if pattern is not None:
        pattern.check_length(length)
    return pattern


def _prompt_tokens(text: str, vocab: Vocabulary) -> list[int]:
    unknown = vocab.unknown(text)
    if unknown:
        shown = ", ".join(repr(ch) for ch in unknown[:20])
        raise UsageError(f"prompt has characters not in the model's vocabulary: {shown}")
    return [int(t) for t in vocab.encode(text)]


def firmware_config(
    tokens: list[int],
    length: int,
    sampler: tuple[int, int, int] | None,
    pattern: Pattern | None,
) -> str:
    """firmware_config.h: the prompt and length, and with `sampler` (temperature in
    thousandths, top-k, seed) the C decoder's settings and the pattern table, if any."""
    config = (
        "/* Written by `toolkit firmware`: the prompt and length of this build. */\n"
        f"#define FW_PROMPT_TOKENS {c_literal(tokens)}\n"
        f"#define FW_PROMPT_STEPS {len(tokens)}u\n"
        f"#define FW_LENGTH {int(length)}u\n"
        f"#define FW_CALIB_LOOPS {CALIB_LOOPS}u\n"
    )
    if sampler is None:
        return config
    milli, top_k, seed = sampler
    config += (
        "#define FW_DECODE 1\n"
        f"#define FW_TEMPERATURE_MILLI {milli}\n"
        f"#define FW_TOP_K {int(top_k)}\n"
        f"#define FW_SEED {int(seed)}ull\n"
    )
    if pattern is not None:
        config += f'#include "{PATTERN_NAME}.h"\n#define FW_PATTERN (&{PATTERN_NAME}_table)\n'
    else:
        config += "#define FW_PATTERN ((const char_lstm_pattern *)0)\n"
    return config


def _compile(
    gcc: str, cflags: list[str], files: dict[str, bytes], out_dir: Path, sources: list[Path]
) -> dict[str, Path]:
    """Object files by stem: char_lstm.o (cached) and one per source, in out_dir."""
    objs = {"char_lstm": model_object(gcc, cflags, files, out_dir)}
    for src in sources:
        obj = out_dir / f"{src.stem}.o"
        _run([gcc, *cflags, "-c", str(src), "-o", str(obj)], out_dir, f"compiling {src.name}")
        objs[src.stem] = obj
    return objs


def _footprint(size_tool: str, objs: list[Path]) -> tuple[int, int]:
    """(flash, RAM) the objects need before linking: text + data, data + bss."""
    flash = ram = 0
    for obj in objs:
        text_bytes, data_bytes, bss_bytes = object_sizes(size_tool, obj)
        flash += text_bytes + data_bytes
        ram += data_bytes + bss_bytes
    return flash, ram


def _link(
    gcc: str,
    cflags: list[str],
    objs: list[Path],
    out_dir: Path,
    chosen: Part,
    stack: int,
    model_flash: int,
) -> Path:
    """out_dir/firmware.elf, linked for `chosen` with `stack` bytes reserved; a model that
    does not fit the part's flash or RAM fails in one line."""
    (out_dir / "link.ld").write_text(linker_script(chosen, stack))
    elf = out_dir / "firmware.elf"
    elf.unlink(missing_ok=True)
    link = [
        gcc, *cflags, "-nostdlib", "-T", str(out_dir / "link.ld"), "-Wl,--gc-sections",
        f"-Wl,-Map={out_dir / 'firmware.map'}", *(str(o) for o in objs), "-lgcc",
        "-o", str(elf),
    ]  # fmt: skip
    proc = subprocess.run(link, cwd=out_dir, capture_output=True, text=True)
    if proc.returncode != 0:
        over = re.findall(r"region `(\w+)' overflowed by (\d+) bytes", proc.stderr)
        if over:
            what = ", ".join(f"{region} by {int(n):,} bytes" for region, n in over)
            raise FirmwareError(
                f"the model does not fit {chosen.name} ({chosen.flash // KB} KB flash, "
                f"{chosen.ram // KB} KB RAM): {what} (char_lstm.o needs "
                f"{model_flash:,} bytes of flash)"
            )
        raise FirmwareError(f"linking the firmware failed: {first_error(proc.stderr)}")
    return elf


def build_matvec_test(board_name: str, out_dir: Path) -> Path:
    """src/matvec_test.c for the board: the template's matvec_s8 bodies (DSP on a Cortex-M4/M7)
    against the portable one on random data, then instructions per MAC of each; linked for
    the board's largest part. Its stderr has matvec_check / matvec_stats lines."""
    b: Board = board(board_name)
    gcc = need_tool(GCC, "gcc-arm-none-eabi libnewlib-arm-none-eabi")
    out_dir = Path(out_dir).resolve()  # gcc runs in out_dir: relative paths would nest
    prepare_out_dir(out_dir)
    (out_dir / "matvec_s8.c").write_text(matvec_source())
    (out_dir / "matvec_harness.h").write_text(matvec_harness_source())
    (out_dir / "link.ld").write_text(linker_script(b.parts[-1], MIN_STACK))
    elf = out_dir / "matvec_test.elf"
    cmd = [
        gcc, f"-mcpu={b.cpu}", *COMMON_FLAGS, *OPT_FLAGS, f"-I{out_dir}", f"-I{SRC}",
        "-nostdlib", "-T", str(out_dir / "link.ld"), "-Wl,--gc-sections",
        str(SRC / "startup.c"), str(SRC / "matvec_test.c"), "-lgcc", "-o", str(elf),
    ]  # fmt: skip
    _run(cmd, out_dir, "building matvec_test")
    (out_dir / MARKER).write_text(json.dumps({"elf": str(elf), "board": b.name}) + "\n")
    return elf
