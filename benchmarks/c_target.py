"""The C target (char_lstm.c) beside TensorFlow Lite Micro and the toolkit's other runtimes:
flash and RAM on a Cortex-M, instructions per character in QEMU, latency on the host, and the
page's step and bytes in headless Chromium beside onnxruntime-web.

    python benchmarks/c_target.py                   # the committed model
    python benchmarks/c_target.py exported/NAME --steps 1000 --rounds 7

Everything comes from one run: the firmware is built and run for each board and matrix
product; the host runtimes step the same text in interleaved rounds; the three pages (C, and
onnxruntime-web fp32 and int8) are warmed up with 3,000 steps each (V8 tiers wasm up) and then
timed in interleaved rounds. Medians of the rounds. Writes benchmarks/reports/c_target.{json,md}.

    python benchmarks/c_target.py --sections decode   # one part again, the rest kept

`decode`: the C decoder (char_lstm_decode.c) on the emulated Cortex-M4, built without it
(argmax), with it and no pattern, and with realistic patterns, greedy and sampled, in one run;
and the pattern compiler's time and table size for those patterns.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from toolkit.files import atomic_write_text
from toolkit.firmware.boards import BOARDS
from toolkit.firmware.build import SIZE, build_firmware, build_matvec_test
from toolkit.firmware.qemu import run_firmware
from toolkit.runtime import load
from toolkit.runtime import pattern as pattern_module
from toolkit.runtime.backends.c import HEADER, SOURCE, CharLSTMLibrary, header_int, read_c_files
from toolkit.runtime.backends.c_decode import c_tables
from toolkit.runtime.manifest import Manifest
from toolkit.runtime.pattern import compile_choice, compile_regex
from toolkit.runtime.step import make_stepper
from toolkit.web.site import ORT_FILES, PAGE_FILES, SiteServer, build_site

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "benchmarks" / "reports" / "c_target"
PROMPT = "ROMEO:"
FIRMWARE = [  # (board, portable matrix product)
    ("mps2-an386", False),
    ("mps2-an386", True),
    ("mps2-an500", False),
    ("mps2-an385", False),  # the Cortex-M0 build: portable either way
]
HOST = [  # (label, runtime, variant)
    ("C, --runtime c (ctypes, one call per step)", "c", "full-int8"),
    ("TFLite int8 (LiteRT, dynamic-range)", "tflite", "int8"),
    ("ONNX int8 (onnxruntime, dynamic)", "onnx", "int8"),
    ("TFLite full-int8 (LiteRT)", "tflite", "full-int8"),
    ("TFLite Micro full-int8 (its host interpreter)", "tflm", "full-int8"),
]
# Published, not measured here (tensorflow.org/lite/microcontrollers, "Overview"): "The core
# runtime just fits in 16 KB on an Arm Cortex M3"; the kernels of a model's ops come on top.
TFLM_CORE_CODE_BYTES = 16 * 1024
WARMUP_STEPS = 3000
SECTIONS = ("firmware", "host", "browser", "decode")
# Realistic patterns: (label, regex or choices)
PATTERNS: list[tuple[str, str | list[str]]] = [
    ("five names, one a line", r"([A-Z][a-z]{2,9}\n){5}"),
    ("a choice of 10 speakers", ["ROMEO", "JULIET", "MERCUTIO", "TYBALT", "BENVOLIO", "NURSE",
                                 "CAPULET", "MONTAGUE", "PARIS", "FRIAR LAURENCE"]),
    ("a five-line acrostic (ROMEO)", "".join(f"{c}[^\n]{{0,40}}\n" for c in "ROMEO")),
    ("a line of at most 40 characters", r"[^\n]{0,40}\n"),
    ("[a-z]{0,200}x", "[a-z]{0,200}x"),
]  # fmt: skip
# Firmware builds compared: (label, pattern label or None, temperature, top-k, decoder)
DECODE_BUILDS: list[tuple[str, str | None, float, int, bool]] = [
    ("argmax, no decoder (the default firmware)", None, 0.0, 0, False),
    ("decoder, no pattern, T 0.8", None, 0.8, 0, True),
    ("decoder, no pattern, T 0.8, top-k 10", None, 0.8, 10, True),
    ("decoder, acrostic, greedy", "a five-line acrostic (ROMEO)", 0.0, 0, True),
    ("decoder, acrostic, T 0.8", "a five-line acrostic (ROMEO)", 0.8, 0, True),
    ("decoder, [a-z]{0,200}x, T 0.8", "[a-z]{0,200}x", 0.8, 0, True),
]


def macs_per_step(m: Any) -> int:
    """Multiply-accumulates of one step: every layer's [4U, x + U] product and the output
    layer (layer 0's input product is a table lookup)."""
    return (
        m.layers * 4 * m.units * m.units
        + (m.layers - 1) * 4 * m.units * m.units
        + (m.vocab_size * m.units)
    )


def load_now() -> float:
    return os.getloadavg()[0]


# --------------------------------------------------------------------------- firmware


def object_sections(path: Path) -> dict[str, int]:
    out = subprocess.run([SIZE, "-A", str(path)], capture_output=True, text=True, check=True)
    sizes: dict[str, int] = {}
    for line in out.stdout.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0].startswith(".") and parts[1].isdigit():
            key = parts[0].split(".")[1]  # .text.matvec_s8 -> text
            sizes[key] = sizes.get(key, 0) + int(parts[1])
    return sizes


def firmware(model: Path, tmp: Path, length: int, expected: str) -> dict[str, Any]:
    manifest = Manifest.read(model)
    macs = macs_per_step(manifest.model)
    rows = []
    for board, portable in FIRMWARE:
        out = tmp / f"{board}-{'portable' if portable else 'fast'}"
        info = build_firmware(model, board, out, PROMPT, length, portable_matvec=portable)
        result = run_firmware(Path(info.elf), board, timeout_s=600)
        assert result.exit_code == 0 and result.instructions_per_char, result.stderr[-500:]
        assert result.text == expected, (board, portable)
        stack = {}
        for line in (out / "char_lstm.su").read_text().splitlines():
            where, frame, _kind = line.split("\t")
            stack[where.rsplit(":", 1)[-1]] = int(frame)
        clock = BOARDS[board].clock_hz
        rows.append(
            {
                "board": board,
                "cpu": info.cpu,
                "matvec": "portable" if portable or info.cpu == "cortex-m0" else "DSP",
                "part": info.part,
                "part_flash": info.part_flash,
                "part_ram": info.part_ram,
                "firmware_flash_bytes": info.flash_bytes,
                "firmware_ram_bytes": info.ram_bytes,  # .data + .bss: the state and start-up
                "stack_static_bytes": info.stack_static_bytes,
                "stack_measured_bytes": result.stack_bytes,
                "char_lstm_o": object_sections(out / "char_lstm.o"),
                "char_lstm_frames": stack,
                "instructions_per_char": result.instructions_per_char,
                "instructions_per_mac": result.instructions_per_char / macs,
                "clock_mhz": clock / 1e6,
                "ms_per_char_at_clock": result.instructions_per_char / clock * 1e3,
                "text_equals_host": True,
            }
        )
        print(
            f"firmware {board} {rows[-1]['matvec']}: {result.instructions_per_char:,.0f} "
            "instructions/char",
            file=sys.stderr,
        )
    matvec = {}
    for board in ("mps2-an386", "mps2-an500"):
        elf = build_matvec_test(board, tmp / f"matvec-{board}")
        result = run_firmware(elf, board, timeout_s=600)
        check = re.search(r"matvec_check cases=(\d+) mismatches=(\d+)", result.stderr)
        assert check is not None and check.group(2) == "0", result.stderr[-500:]
        shapes = []
        for line in re.findall(r"matvec_stats (.*)", result.stderr):
            kv = {k: int(v) for k, v in (x.split("=") for x in line.split())}
            per_tick = kv["calib_instructions"] / kv["calib_ticks"]
            n = kv["rows"] * kv["cols"]
            shapes.append(
                {
                    "rows": kv["rows"],
                    "cols": kv["cols"],
                    "rows_per_call": kv["block"],
                    "portable_instructions_per_mac": kv["portable_ticks"] * per_tick / n,
                    "dsp_instructions_per_mac": kv["fast_ticks"] * per_tick / n,
                }
            )
        matvec[board] = {"cases": int(check.group(1)), "mismatches": 0, "shapes": shapes}
    return {
        "macs_per_step": macs,
        "prompt": PROMPT,
        "length": length,
        "rows": rows,
        "matvec": matvec,
    }


# --------------------------------------------------------------------------- host


def stepping(advance: Callable[[int], Any], ids: list[int]) -> Callable[[], None]:
    """Step every token through a stepper, as generation does (one call per character)."""

    def run() -> None:
        for token in ids:
            advance(token)

    return run


def host(model: Path, steps: int, rounds: int) -> dict[str, Any]:
    manifest = Manifest.read(model)
    vocab = manifest.vocabulary
    from toolkit.data.corpus import bundled_corpus_text

    known = "".join(ch for ch in bundled_corpus_text()[-20_000:] if ch in vocab.index)
    ids = vocab.encode(known)[:steps].tolist()
    runners: dict[str, Callable[[], None]] = {}
    for label, runtime, variant in HOST:
        gen = load(model, runtime=runtime, variant=variant)
        h = np.zeros(manifest.model.state_shape(1), np.float32)
        logits, h, c = gen.backend.step(np.zeros(1, np.int32), h, h)
        stepper = make_stepper(gen.backend, logits, h, c)
        runners[label] = stepping(stepper.advance_one, ids)
    files = read_c_files(model, manifest)
    lib = CharLSTMLibrary(files[SOURCE], files[HEADER])
    state = lib.new_states()
    tokens = np.asarray(ids, np.int32)
    runners["C, the loop in C (no Python between steps)"] = lambda: lib.lib.shim_loop(
        state.ctypes.data, tokens, len(tokens)
    )
    for warm in runners.values():
        warm()
    wall: dict[str, list[float]] = {k: [] for k in runners}
    load_before = load_now()
    for _ in range(rounds):
        for name, run in runners.items():
            t0 = time.perf_counter()
            run()
            wall[name].append((time.perf_counter() - t0) / len(ids) * 1e6)
    return {
        "steps_per_round": len(ids),
        "rounds": rounds,
        "load_average": [load_before, load_now()],
        "us_per_step_median": {k: statistics.median(v) for k, v in wall.items()},
        "us_per_step_min": {k: min(v) for k, v in wall.items()},
        "median_ratio_to_tflite_int8_in_round": {
            k: statistics.median(a / b for a, b in zip(v, wall[HOST[1][0]], strict=True))
            for k, v in wall.items()
        },
        "compiler": subprocess.run(
            ["cc", "--version"], capture_output=True, text=True
        ).stdout.splitlines()[0],
    }


# --------------------------------------------------------------------------- browser


def browser(model: Path, tmp: Path, steps: int, rounds: int) -> dict[str, Any]:
    from toolkit.web.browser import launch_browser, open_page, wait_ready
    from toolkit.web.wasm import wasm_sections

    ort_site = build_site(model, tmp / "ort", log=lambda _: None)
    c_site = build_site(model, tmp / "c", engine="c", log=lambda _: None)
    us: dict[str, list[float]] = {"c": [], "c-raw": [], "ort-fp32": [], "ort-int8": []}
    with (
        SiteServer(ort_site.out_dir) as ort_server,
        SiteServer(c_site.out_dir) as c_server,
        launch_browser() as chromium,
        open_page(f"{ort_server.url}?variant=fp32", chromium) as fp32,
        open_page(f"{ort_server.url}?variant=int8", chromium) as int8,
        open_page(c_server.url, chromium) as c_page,
    ):
        ort_info = wait_ready(fp32)
        wait_ready(int8)
        wait_ready(c_page)
        pages = {
            "c": (c_page, False),
            "c-raw": (c_page, True),
            "ort-fp32": (fp32, False),
            "ort-int8": (int8, False),
        }

        def time_round(name: str, n: int) -> float:
            page, raw = pages[name]
            out = page.evaluate(
                "(o) => window.toolkit.timeSteps(o)",
                {"steps": n, "rounds": 1, "warmup": 10, "raw": raw},
            )
            return float(out["us_per_step"][0])

        for name in pages:
            time_round(name, WARMUP_STEPS)
        load_before = load_now()
        for r in range(rounds):
            for name in pages:
                us[name].append(time_round(name, steps))
            print(
                f"browser round {r + 1}: " + ", ".join(f"{k} {v[-1]:.0f}" for k, v in us.items()),
                file=sys.stderr,
            )
        agent = c_page.evaluate("() => navigator.userAgent")
    wasm = (c_site.out_dir / "model" / "char_lstm.wasm").read_bytes()
    sections = wasm_sections(wasm)
    c_page_files = {
        name: (c_site.out_dir / name).stat().st_size for name in (*PAGE_FILES, "char_lstm_wasm.js")
    }
    ort_runtime = sum((ort_site.out_dir / "ort" / f).stat().st_size for f in ORT_FILES)
    onnx_page_files = sum((ort_site.out_dir / f).stat().st_size for f in PAGE_FILES)
    c_engine = len(wasm) - sections.get("data", 0) + sum(c_page_files.values())
    ratios = {
        k: statistics.median(a / b for a, b in zip(us[k], us["ort-fp32"], strict=True))
        for k in ("c", "c-raw", "ort-int8")
    }
    return {
        "chromium": agent.split("Chrome/")[-1].split()[0],
        "onnxruntime_web": ort_info.get("ortVersion"),
        "steps_per_round": steps,
        "rounds": rounds,
        "warmup_steps": WARMUP_STEPS,
        "load_average": [load_before, load_now()],
        "us_per_step_median": {k: statistics.median(v) for k, v in us.items()},
        "us_per_step_rounds": us,
        "median_ratio_to_ort_fp32_in_round": ratios,
        "bytes": {
            "wasm": len(wasm),
            "wasm_sections": sections,
            "c_page_files": c_page_files,
            "c_engine": c_engine,
            "ort_files": ort_runtime,
            "onnx_page_files": onnx_page_files,
            "onnx_model_fp32": (model / "model.onnx").stat().st_size,
            "c_engine_over_ort": c_engine / (ort_runtime + onnx_page_files),
            "c_site": c_site.bytes,
            "ort_site": ort_site.bytes,
        },
    }


# --------------------------------------------------------------------------- decoding


def compile_pattern(spec: str | list[str], chars: tuple[str, ...]) -> Any:
    if isinstance(spec, str):
        return compile_regex(spec, chars)
    return compile_choice(spec, chars)


def decode(model: Path, tmp: Path, length: int, rounds: int) -> dict[str, Any]:
    manifest = Manifest.read(model)
    chars = manifest.vocabulary.chars
    gen = load(model, runtime="c")
    ids = gen.encode(PROMPT)
    patterns = []
    for label, spec in PATTERNS:
        times = []
        for _ in range(rounds):
            pattern_module._cache.clear()  # time the compile, not the cache
            t0 = time.perf_counter()
            p = compile_pattern(spec, chars)
            times.append(time.perf_counter() - t0)
        nxt, accepting, distance = c_tables(p, len(chars))
        patterns.append(
            {
                "label": label,
                "pattern": spec if isinstance(spec, str) else None,
                "choices": spec if isinstance(spec, list) else None,
                "states": p.states,
                "shortest": int(p.distance[0]),
                "compile_ms_median": statistics.median(times) * 1e3,
                "c_table_bytes": nxt.nbytes + accepting.nbytes + distance.nbytes,
                "python_table_bytes": p.table.nbytes + p.accepting.nbytes + p.distance.nbytes,
            }
        )
        print(f"pattern {label}: {p.states} states, {patterns[-1]['compile_ms_median']:.1f} ms",
              file=sys.stderr)  # fmt: skip
    specs = dict(PATTERNS)
    builds = []
    for label, which, temperature, top_k, decoder in DECODE_BUILDS:
        regex = specs[which] if which else None
        assert regex is None or isinstance(regex, str)
        out = tmp / f"decode-{len(builds)}"
        info = build_firmware(
            model, "mps2-an386", out, PROMPT, length, regex=regex, temperature=temperature,
            top_k=top_k, seed=1,
        )  # fmt: skip
        result = run_firmware(Path(info.elf), "mps2-an386", timeout_s=600)
        assert result.exit_code == 0 and result.instructions_per_char, result.stderr[-500:]
        if decoder:
            p = compile_regex(regex, chars) if regex else None
            host = gen.decode(gen.backend.decode_native(ids, length, temperature, top_k, 1, p))
            assert result.text == host, label
            assert p is None or re.fullmatch(regex or "", result.text), label
        builds.append(
            {
                "label": label,
                "pattern": which,
                "temperature": temperature,
                "top_k": top_k,
                "characters": result.generated,
                "instructions_per_char": result.instructions_per_char,
                "choose_instructions_per_char": result.choose_instructions_per_char,
                "firmware_flash_bytes": info.flash_bytes,
                "firmware_ram_bytes": info.ram_bytes,
                "pattern_states": info.pattern_states,
                "text_equals_host_decode": decoder,
            }
        )
        print(f"decode {label}: {result.instructions_per_char:,.0f} instructions/char",
              file=sys.stderr)  # fmt: skip
    return {
        "command": "python benchmarks/c_target.py " + " ".join(sys.argv[1:]),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "board": "mps2-an386",
        "prompt": PROMPT,
        "length": length,
        "seed": 1,
        "compile_rounds": rounds,
        "patterns": patterns,
        "builds": builds,
    }


# --------------------------------------------------------------------------- report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model", type=Path, nargs="?", default=REPO / "exported" / "shakespeare")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--length", type=int, default=100, help="characters on each board")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument(
        "--sections", default=",".join(SECTIONS), help="which parts to run; the rest are kept"
    )
    args = parser.parse_args()
    sections = [x for x in args.sections.split(",") if x]
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown sections {sorted(unknown)}; choose from {SECTIONS}")
    model = args.model
    manifest = Manifest.read(model)
    section = dict(manifest.artifacts[SOURCE].extra["c"])
    micro = dict(manifest.artifacts["model.full-int8.tflite"].extra["micro"])
    header = (model / HEADER).read_bytes()
    if set(sections) != set(SECTIONS):  # the other parts come from the last full run
        report = json.loads(args.out.with_suffix(".json").read_text())
        with tempfile.TemporaryDirectory() as tmp:
            for name in sections:
                if name == "decode":
                    report["decode"] = decode(model, Path(tmp), args.length, args.rounds)
                elif name == "host":
                    report["host"] = host(model, args.steps, args.rounds)
                elif name == "browser":
                    report["browser"] = browser(model, Path(tmp), args.steps, args.rounds)
                else:
                    expected = load(model, runtime="c").generate(
                        PROMPT, length=args.length, temperature=0
                    )
                    report["firmware"] = firmware(model, Path(tmp), args.length, expected.texts[0])
        atomic_write_text(args.out.with_suffix(".json"), json.dumps(report, indent=2) + "\n")
        atomic_write_text(args.out.with_suffix(".md"), markdown(report))
        print(markdown(report))
        return
    expected = load(model, runtime="c").generate(PROMPT, length=args.length, temperature=0)
    assert (
        expected.texts[0]
        == load(model, runtime="tflm").generate(PROMPT, length=args.length, temperature=0).texts[0]
    )
    with tempfile.TemporaryDirectory() as tmp:
        report = {
            "command": "python benchmarks/c_target.py " + " ".join(sys.argv[1:]),
            "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
            "niceness": os.nice(0),
            "model": str(model.relative_to(REPO) if model.is_relative_to(REPO) else model),
            "shape": manifest.model.sizes(),
            "c": {
                "flash_bytes": header_int(header, "CHAR_LSTM_FLASH_BYTES"),
                "ram_bytes": header_int(header, "CHAR_LSTM_RAM_BYTES"),
                "source_bytes": (model / SOURCE).stat().st_size,
                "validation_tflm": section["validation_tflm"],
            },
            "tflm": {
                "model_flatbuffer_bytes": micro["flash_bytes"],
                "arena_bytes": micro["arena_bytes"],
                "arena_used_bytes": micro.get("arena_used_bytes"),
                "ops": micro["ops"],
                "core_code_bytes_published": TFLM_CORE_CODE_BYTES,
            },
            "firmware": firmware(model, Path(tmp), args.length, expected.texts[0]),
            "host": host(model, args.steps, args.rounds),
            "browser": browser(model, Path(tmp), args.steps, args.rounds),
            "decode": decode(model, Path(tmp), args.length, args.rounds),
        }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out.with_suffix(".json"), json.dumps(report, indent=2) + "\n")
    atomic_write_text(args.out.with_suffix(".md"), markdown(report))
    print(markdown(report))


def markdown(r: dict[str, Any]) -> str:
    fw, hs, br = r["firmware"], r["host"], r["browser"]
    m4 = next(x for x in fw["rows"] if x["board"] == "mps2-an386" and x["matvec"] == "DSP")
    m4p = next(x for x in fw["rows"] if x["board"] == "mps2-an386" and x["matvec"] == "portable")
    obj = m4["char_lstm_o"]
    code = obj.get("text", 0)
    tflm = r["tflm"]
    c_ram = r["c"]["ram_bytes"] + m4["stack_static_bytes"]
    shape = r["shape"]
    b = br["bytes"]
    med = br["us_per_step_median"]
    lines = [
        f"# The C target: {shape['layers']} × {shape['units']} on a Cortex-M, on the host and in "
        "the browser",
        "",
        f"`{r['command']}` on {r['date'][:10]} ({r['machine']}, niceness {r['niceness']}; a "
        "shared machine, load average "
        f"{hs['load_average'][0]:.1f}–{br['load_average'][1]:.1f} during the timed parts: absolute "
        "times move with the load, the side-by-side medians and ratios much less). Model: "
        f"`{r['model']}`, {fw['macs_per_step']:,} multiply-accumulates per step. `char_lstm.c` "
        f"is bit-exact with TensorFlow Lite Micro ({r['c']['validation_tflm']['steps']:,} "
        "validation characters at export), and every firmware below wrote the host's greedy text.",
        "",
        "## Flash and RAM on a Cortex-M4 (arm-none-eabi-gcc -O2, DSP path)",
        "",
        "| | C (`char_lstm.c`) | TensorFlow Lite Micro |",
        "|---|---:|---:|",
        f"| model constants (flash) | {obj.get('rodata', 0):,} B (weights, requantization "
        f"constants, tables, vocabulary) | {tflm['model_flatbuffer_bytes']:,} B (the .tflite "
        "flatbuffer) |",
        f"| code (flash) | {code:,} B (`.text` of char_lstm.o, measured) | "
        f"~{tflm['core_code_bytes_published'] // 1024} KB core runtime on a Cortex-M3 "
        "(**published figure**, tensorflow.org/lite/microcontrollers; not measured here), plus "
        f"the kernels of its {len(tflm['ops'])} ops |",
        f"| RAM | {r['c']['ram_bytes']:,} B state struct + {m4['stack_static_bytes']} B stack "
        f"(worst path, -fstack-usage; {m4['stack_measured_bytes']} B painted) = **{c_ram:,} B** | "
        f"{tflm['arena_bytes']:,} B tensor arena (the smallest its interpreter ran in, measured) "
        "+ the interpreter object |",
        f"| whole firmware (vector table, start-up, main, semihosting) | flash "
        f"{m4['firmware_flash_bytes']:,} B, RAM {m4['firmware_ram_bytes']:,} B + stack | – |",
        "",
        "Stack frames of char_lstm.o (bytes, static): "
        + ", ".join(f"{k} {v}" for k, v in m4["char_lstm_frames"].items())
        + ".",
        "",
        "## Instructions per character in QEMU",
        "",
        f"`qemu-system-arm -icount shift=0`, {fw['length']} greedy characters after "
        f"`{fw['prompt']}`, instructions counted by SysTick (40 per tick, calibrated in every "
        "run); one character = one step + argmax. The time per character assumes one "
        "instruction per cycle at the clock shown: an **extrapolation** (on silicon, flash wait "
        "states and multi-cycle loads add cycles).",
        "",
        "| board | build | matrix product | linked for | instructions / char | / MAC | ms / char at clock |",
        "|---|---|---|---|---:|---:|---:|",
    ]
    for x in fw["rows"]:
        lines.append(
            f"| {x['board']} | {x['cpu']} | {x['matvec']} | {x['part']} "
            f"({x['part_flash'] // 1024} KB / {x['part_ram'] // 1024} KB) | "
            f"{x['instructions_per_char']:,.0f} | {x['instructions_per_mac']:.2f} | "
            f"{x['ms_per_char_at_clock']:.1f} at {x['clock_mhz']:.0f} MHz |"
        )
    lines += [
        "",
        f"The DSP path is {m4p['instructions_per_char'] / m4['instructions_per_char']:.2f}× "
        "fewer instructions than the portable C on the same M4, with the same logits (the test "
        "suite compares a hash of every step's logits).",
        "",
        "The matrix product alone (`matvec_s8`, random data; 0 mismatches against the portable "
        "body): instructions per MAC, portable / DSP:",
        "",
        "| board | "
        + " | ".join(
            f"{s['rows']}×{s['cols']} ({s['rows_per_call']} rows per call)"
            for s in fw["matvec"]["mps2-an386"]["shapes"]
        )
        + " | cases |",
        "|---|" + "---:|" * (len(fw["matvec"]["mps2-an386"]["shapes"]) + 1),
    ]
    for board, mv in fw["matvec"].items():
        cells = [
            f"{s['portable_instructions_per_mac']:.2f} / {s['dsp_instructions_per_mac']:.2f}"
            for s in mv["shapes"]
        ]
        lines.append(f"| {board} | " + " | ".join(cells) + f" | {mv['cases']:,} |")
    lines += [
        "",
        "## On the host, batch 1, one thread",
        "",
        f"Median of {hs['rounds']} interleaved rounds of {hs['steps_per_round']:,} steps of "
        f"validation text, state carried, through each runtime's stepper; C compiled with "
        f"`{hs['compiler']}` at -O2 (the runtime's flags; portable C, no x86 SIMD path).",
        "",
        "| runtime | µs / step (median) | min | ÷ TFLite int8, same round (median) |",
        "|---|---:|---:|---:|",
    ]
    for name, value in hs["us_per_step_median"].items():
        ratio = hs["median_ratio_to_tflite_int8_in_round"][name]
        lines.append(
            f"| {name} | {value:,.0f} | {hs['us_per_step_min'][name]:,.0f} | {ratio:.2f} |"
        )
    lines += [
        "",
        "## In the browser (headless Chromium, one thread)",
        "",
        f"Chromium {br['chromium']}, onnxruntime-web {br['onnxruntime_web']} (wasm). Each page "
        f"warmed up with {br['warmup_steps']:,} steps, then {br['rounds']} interleaved rounds of "
        f"{br['steps_per_round']:,} steps through `window.toolkit.timeSteps` (the generator's "
        "backend: an async step and the logits as floats).",
        "",
        "| engine | µs / step (median) | ÷ onnxruntime-web fp32, same round (median) |",
        "|---|---:|---:|",
        f"| C int8 wasm SIMD (`--engine c`) | {med['c']:,.0f} | "
        f"{br['median_ratio_to_ort_fp32_in_round']['c']:.2f} |",
        f"| … the wasm step call alone | {med['c-raw']:,.0f} | "
        f"{br['median_ratio_to_ort_fp32_in_round']['c-raw']:.2f} |",
        f"| onnxruntime-web fp32 (`model.onnx`) | {med['ort-fp32']:,.0f} | 1 |",
        f"| onnxruntime-web int8 (`model.int8.onnx`) | {med['ort-int8']:,.0f} | "
        f"{br['median_ratio_to_ort_fp32_in_round']['ort-int8']:.2f} |",
        "",
        "| bytes the page loads | C engine | onnxruntime-web engine |",
        "|---|---:|---:|",
        f"| engine (wasm code and glue; JS, HTML, CSS) | **{b['c_engine']:,}** (wasm "
        f"{b['wasm'] - b['wasm_sections'].get('data', 0):,} without its data, page files "
        f"{sum(b['c_page_files'].values()):,}) | {b['ort_files'] + b['onnx_page_files']:,} "
        f"(onnxruntime-web {b['ort_files']:,}, page files {b['onnx_page_files']:,}) |",
        f"| model | {b['wasm_sections'].get('data', 0):,} (the wasm's data section) | "
        f"{b['onnx_model_fp32']:,} (`model.onnx`) |",
        f"| whole site | {b['c_site']:,} | {b['ort_site']:,} (fp32 and int8) |",
        "",
        f"The C engine is {100 * b['c_engine_over_ort']:.2f}% of onnxruntime-web's bytes; the "
        f"whole C module, weights included ({b['wasm']:,} B), is "
        f"{100 * b['wasm'] / b['ort_files']:.1f}% of onnxruntime-web's files alone.",
        "",
        *decode_markdown(r.get("decode")),
        "## Targets",
        "",
        f"- RAM besides the weights ≤ 4 KB for 1 × 512: {c_ram:,} B (state + worst-case stack)"
        f" — {'met' if c_ram <= 4096 else 'NOT met'}.",
        f"- DSP path ≤ 2 instructions per MAC: {m4['instructions_per_mac']:.2f} per MAC for the "
        f"whole character on the M4 — {'met' if m4['instructions_per_mac'] <= 2 else 'NOT met'}.",
        f"- wasm int8 step no slower than onnxruntime-web's fp32 step: "
        f"{br['median_ratio_to_ort_fp32_in_round']['c']:.2f}× its time — "
        f"{'met' if br['median_ratio_to_ort_fp32_in_round']['c'] <= 1 else 'NOT met'}.",
        f"- the page's runtime (wasm + JS) ≤ 5% of onnxruntime-web's bytes: "
        f"{100 * b['c_engine_over_ort']:.2f}% — {'met' if b['c_engine_over_ort'] <= 0.05 else 'NOT met'}.",
    ]
    return "\n".join(lines) + "\n"


def decode_markdown(d: dict[str, Any] | None) -> list[str]:
    if not d:
        return []
    base = d["builds"][0]["instructions_per_char"]
    lines = [
        "## Constrained decoding in the C (`char_lstm_decode.c`)",
        "",
        f"`{d['command']}` on {d['date'][:10]}. {d['board']} (Cortex-M4, DSP path) in "
        f"`qemu-system-arm -icount shift=0`, up to {d['length']} characters after "
        f"`{d['prompt']}`, seed {d['seed']}; one character = choosing it + one step. Every "
        "build with the decoder wrote exactly the text of the host's `decode_native` for the "
        "same options and seed, and every pattern's text matched it in full.",
        "",
        "| firmware | characters | instructions / char | of which choosing | ÷ argmax build "
        "| flash | RAM (.data + .bss) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for b in d["builds"]:
        choose = b["choose_instructions_per_char"]
        lines.append(
            f"| {b['label']} | {b['characters']} | {b['instructions_per_char']:,.0f} | "
            f"{'–' if choose is None else f'{choose:,.0f}'} | "
            f"{b['instructions_per_char'] / base:.4f} | {b['firmware_flash_bytes']:,} | "
            f"{b['firmware_ram_bytes']:,} |"
        )
    lines += [
        "",
        "The pattern compiler (`toolkit.runtime.pattern`: interegular's automaton mapped onto "
        "the model's characters, pruned, minimised), median of "
        f"{d['compile_rounds']} compiles with the cache cleared; the C table is int16 next "
        "states [states][vocab] + int16 distances + uint8 accepting flags, in flash.",
        "",
        "| pattern | states | shortest match | compile ms | C table bytes |",
        "|---|---:|---:|---:|---:|",
    ]
    for p in d["patterns"]:
        shown = p["pattern"] if p["pattern"] is not None else " | ".join(p["choices"][:3]) + " …"
        shown = shown.replace("|", "\\|").replace("\n", "\\n")
        lines.append(
            f"| {p['label']}: `{shown}` | {p['states']:,} | {p['shortest']} | "
            f"{p['compile_ms_median']:,.1f} | {p['c_table_bytes']:,} |"
        )
    lines.append("")
    return lines


if __name__ == "__main__":
    main()
