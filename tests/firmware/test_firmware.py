"""`toolkit firmware`: char_lstm.c as bare-metal firmware on QEMU's Cortex-M boards. The text
equals the host runtimes', the DSP matrix product gives the portable one's bits, a model too
big for the part fails to link, and every failure is one line."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import COMMITTED_MODEL, without_c

from toolkit.errors import FirmwareError, ModelFileError, UsageError
from toolkit.firmware import build as firmware_build
from toolkit.firmware import qemu
from toolkit.firmware.build import build_firmware, build_matvec_test
from toolkit.firmware.qemu import run_firmware
from toolkit.runtime import load
from toolkit.runtime.manifest import Manifest

PROMPT = "ROMEO:"
MACS_1X512 = 4 * 512 * 512 + 65 * 512  # the committed model's multiply-accumulates per step


def greedy(model: Path, runtime: str, length: int, prompt: str = PROMPT) -> str:
    return load(model, runtime=runtime).generate(prompt, length=length, temperature=0).texts[0]


def test_the_committed_model_on_the_m4_writes_tflms_text(tmp_path: Path) -> None:
    """The DSP build: TFLite Micro's greedy text, under 2 instructions per MAC, and RAM
    besides the weights (state, stack, start-up) under 4 KB."""
    info = build_firmware(COMMITTED_MODEL, "mps2-an386", tmp_path / "fw", PROMPT, 40)
    assert (info.part, info.cpu) == ("STM32F429ZI", "cortex-m4")
    result = run_firmware(Path(info.elf), "mps2-an386", timeout_s=120)
    assert result.exit_code == 0, result.stderr
    assert result.text == greedy(COMMITTED_MODEL, "tflm", 40)
    assert result.steps == len(PROMPT) + 40 - 1
    assert result.instructions_per_tick == 40.0  # SysTick at 25 MHz, 1 instruction = 1 ns
    assert result.instructions_per_char is not None
    assert result.instructions_per_char / MACS_1X512 <= 2.0
    assert result.stack_bytes is not None and result.stack_bytes <= info.stack_static_bytes
    assert info.ram_bytes + info.stack_static_bytes <= 4096


def test_a_model_too_big_for_the_part_fails_to_link_in_one_line(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "toolkit", "firmware", str(COMMITTED_MODEL), "--board",
         "mps2-an386", "--part", "STM32F411CE", "--out", str(tmp_path / "fw")],
        capture_output=True, text=True,
    )  # fmt: skip
    assert proc.returncode == 11
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: the model does not fit STM32F411CE (512 KB flash")
    assert "FLASH by " in lines[0] and "Traceback" not in proc.stderr
    assert not (tmp_path / "fw" / "firmware.elf").exists()


def test_dsp_and_portable_matrix_products_give_the_same_bits(
    tiny2_c_export: Path, tmp_path: Path
) -> None:
    """The same logits at every step (a hash of all of them) and the same text, two layers;
    then the template's matvec_s8 bodies on random data, on the target."""
    runs = {}
    for portable in (False, True):
        info = build_firmware(
            tiny2_c_export, "mps2-an386", tmp_path / str(portable), "JULIET:", 60,
            portable_matvec=portable,
        )  # fmt: skip
        runs[portable] = run_firmware(Path(info.elf), "mps2-an386", timeout_s=120)
        assert runs[portable].exit_code == 0
    assert runs[False].logits_fnv == runs[True].logits_fnv is not None
    assert runs[False].text == runs[True].text == greedy(tiny2_c_export, "c", 60, "JULIET:")
    assert runs[False].instructions_per_char < runs[True].instructions_per_char  # type: ignore[operator]

    elf = build_matvec_test("mps2-an386", tmp_path / "matvec")
    result = run_firmware(elf, "mps2-an386", timeout_s=120)
    assert result.exit_code == 0, result.stderr
    assert "matvec_check cases=1584 mismatches=0" in result.stderr


@pytest.mark.parametrize("board,cpu", [("mps2-an500", "cortex-m7"), ("mps2-an385", "cortex-m0")])
def test_the_cortex_m7_and_the_cortex_m0_build(
    tiny_export: Path, tmp_path: Path, board: str, cpu: str
) -> None:
    info = build_firmware(tiny_export, board, tmp_path, "", 50)
    assert info.cpu == cpu and info.part_flash >= info.flash_bytes
    result = run_firmware(Path(info.elf), board, timeout_s=120)
    assert result.exit_code == 0, result.stderr
    assert result.text == greedy(tiny_export, "c", 50, "")


def test_a_relative_out_folder(
    tiny_export: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The README's `--out firmware`: gcc runs inside the folder, so a relative path must not
    # be taken relative to it again.
    monkeypatch.chdir(tmp_path)
    info = build_firmware(tiny_export, "mps2-an386", Path("fw"), "", 20)
    assert Path(info.elf) == tmp_path / "fw" / "firmware.elf" and Path(info.elf).is_file()


def test_one_line_errors(
    tiny_export: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(FirmwareError, match="unknown board 'mps2-an505'; choose from"):
        build_firmware(tiny_export, "mps2-an505", tmp_path / "a")
    with pytest.raises(FirmwareError, match="unknown part 'STM32H743' for mps2-an385"):
        build_firmware(tiny_export, "mps2-an385", tmp_path / "b", part="STM32H743")
    with pytest.raises(ModelFileError, match=r"has no char_lstm\.c .*--format c"):
        build_firmware(without_c(tiny_export, tmp_path / "no-c"), "mps2-an386", tmp_path / "c")
    with pytest.raises(UsageError, match="not in the model's vocabulary: 'Ω'"):
        build_firmware(tiny_export, "mps2-an386", tmp_path / "d", "Ω")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    with pytest.raises(FirmwareError, match="is not a firmware folder"):
        build_firmware(tiny_export, "mps2-an386", mine)
    assert (mine / "notes.txt").read_text() == "keep me"

    info = build_firmware(tiny_export, "mps2-an386", tmp_path / "long", PROMPT, 1_000_000)
    with pytest.raises(FirmwareError, match=r"qemu timed out after 0\.5 s"):
        run_firmware(Path(info.elf), "mps2-an386", timeout_s=0.5)
    monkeypatch.setattr(qemu, "QEMU", "qemu-system-arm-missing")
    with pytest.raises(FirmwareError, match="apt-get install qemu-system-arm"):
        run_firmware(Path(info.elf), "mps2-an386")
    monkeypatch.setattr(firmware_build, "GCC", "arm-none-eabi-gcc-missing")
    with pytest.raises(FirmwareError, match="not found: apt-get install gcc-arm-none-eabi"):
        build_firmware(tiny_export, "mps2-an386", tmp_path / "e")


def test_cli_runs_it_and_prints_text_and_instructions(tiny_export: Path, tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "toolkit", "firmware", str(tiny_export), "--board", "mps2-an386",
         "--out", str(tmp_path / "fw"), "--run", "--prompt", PROMPT, "--length", "30"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == PROMPT + greedy(tiny_export, "c", 30) + "\n"
    assert "instructions per character" in proc.stderr and "MHz" in proc.stderr
    assert Manifest.read(tiny_export).has("c", "full-int8")
    shutil.rmtree(tmp_path / "fw")


def test_a_pattern_built_in_writes_the_hosts_native_c_text(tmp_path: Path) -> None:
    """--regex with the integer sampler: the firmware's text fully matches and is the host's
    char_lstm_decode text for the same options and seed; the decoder's share of a character
    is small beside the step."""
    import re

    from toolkit.runtime.pattern import compile_regex

    regex = r"\n(ROMEO|JULIET|[A-Z][a-z]{2,8}):\n[A-Z][a-z ,']{5,30}[.!?]"
    info = build_firmware(
        COMMITTED_MODEL, "mps2-an386", tmp_path / "fw", PROMPT, 48,
        regex=regex, temperature=0.8, top_k=10, seed=3,
    )  # fmt: skip
    assert info.pattern == regex and 0 < info.pattern_states <= info.pattern_bytes // 100
    result = run_firmware(Path(info.elf), "mps2-an386", timeout_s=120)
    assert result.exit_code == 0, result.stderr
    assert re.fullmatch(regex, result.text), result.text
    gen = load(COMMITTED_MODEL, runtime="c")
    p = compile_regex(regex, gen.chars)
    host = gen.backend.decode_native(gen.encode(PROMPT), 48, 0.8, 10, 3, p)  # type: ignore[attr-defined]
    assert result.text == gen.decode(host) and result.generated == len(host)
    assert result.choose_instructions_per_char is not None
    assert result.choose_instructions_per_char < 0.01 * result.instructions_per_char  # type: ignore[operator]


def test_impossible_patterns_are_refused_before_building(tmp_path: Path) -> None:
    for args, message in [
        (["--regex", "[a-z]{300}", "--length", "200"],
         "error: pattern '[a-z]{300}' needs at least 300 characters, more than the length 200"),
        (["--regex", "a(?=b)"],
         "error: unsupported syntax in pattern 'a(?=b)': lookahead/lookbehind"),
        (["--choice", "Ω"], "error: no choice can be written with the model's characters "
         "(missing: 'Ω')"),
    ]:  # fmt: skip
        proc = subprocess.run(
            [sys.executable, "-m", "toolkit", "firmware", str(COMMITTED_MODEL), "--out",
             str(tmp_path / "fw"), *args],
            capture_output=True, text=True,
        )  # fmt: skip
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.strip().splitlines() == [message]
        assert not (tmp_path / "fw").exists()
