"""An exported folder's char_lstm.c as WebAssembly: clang --target=wasm32 and wasm-ld, no
emscripten, no C library, SIMD (-msimd128: the template's wasm matrix product).

    build_wasm(files) -> Path            # char_lstm.c + c/glue.c, cached by content
    build_matvec_check() -> Path         # the SIMD matvec_s8 against the portable one
    wasm_sections(data) -> {section: bytes}

The module exports state_new/state_free/state_copy/reset/step/greedy, the C decoder (decode,
with pattern_alloc/pattern_next/pattern_distance/pattern_accepting for a pattern's table), the
vocabulary and the logits' quantization (c/glue.c); web/src/char_lstm_wasm.js wraps them.

    python -m toolkit.web.wasm [MODEL_DIR] --out DIR

writes what the page's node tests (web/test/char_lstm_wasm.test.mjs) check the wasm with:
char_lstm.wasm, matvec_check.wasm and reference.json, the same C's greedy texts and int8
logits computed natively (compiled with the host's compiler, called through ctypes).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from collections.abc import Mapping
from pathlib import Path

from toolkit.errors import ModelFileError, ToolkitError, WebError
from toolkit.export.c.emit import matvec_harness_source, matvec_source
from toolkit.runtime.backends.c import HEADER, SOURCE, CharLSTMLibrary, build, read_c_files
from toolkit.runtime.backends.c_decode import decoder_sources
from toolkit.runtime.manifest import Manifest

GLUE_DIR = Path(__file__).resolve().parent / "c"
WASM_CFLAGS = [
    "--target=wasm32",
    "-O3",
    "-std=c99",
    "-ffreestanding",
    "-nostdlib",
    "-fvisibility=hidden",  # only the EXPORT()ed functions leave the module
    "-mbulk-memory",  # struct copies and zeroing as memory.copy / memory.fill: no libc needed
    "-msimd128",
    "-Wall",
    "-Wextra",
]
WASM_LDFLAGS = [
    "-Wl,--no-entry",
    "-Wl,--strip-all",  # no name section: smaller; the exports keep their names
    "-Wl,-z,stack-size=65536",
    "-Wl,--export=__heap_base",  # where glue.c's states start
]
SECTION_NAMES = {
    0: "custom", 1: "type", 2: "import", 3: "function", 4: "table", 5: "memory", 6: "global",
    7: "export", 8: "start", 9: "element", 10: "code", 11: "data", 12: "datacount",
}  # fmt: skip
# The node tests' reference: greedy text after each prompt, and logits along one text.
TEST_PROMPTS = ("ROMEO:", "JULIET:\nO", "")
TEST_LENGTH = 300


def clang() -> str:
    """clang, checked together with the wasm-ld it links with."""
    compiler = shutil.which("clang")
    if compiler is None or shutil.which("wasm-ld") is None:
        raise WebError(
            "the C engine compiles to wasm with clang and wasm-ld: apt-get install clang lld"
        )
    return compiler


def _build(
    sources: Mapping[str, bytes], flags: list[str], what: str, only: list[str] | None = None
) -> Path:
    try:
        return build(
            sources, [*flags, *WASM_LDFLAGS], cc=clang(), suffix=".wasm", compile_only=only,
            what=what,
        )  # fmt: skip
    except ModelFileError as exc:
        raise WebError(str(exc)) from None


def build_wasm(files: Mapping[str, bytes], portable_matvec: bool = False) -> Path:
    """char_lstm.c (+ char_lstm.h) and the glue as a wasm module, cached by content."""
    sources = {
        SOURCE: files[SOURCE],
        HEADER: files[HEADER],
        "glue.c": (GLUE_DIR / "glue.c").read_bytes(),
        **decoder_sources(),
    }
    flags = [*WASM_CFLAGS, *(["-DCHAR_LSTM_PORTABLE_MATVEC"] if portable_matvec else [])]
    return _build(sources, flags, f"{SOURCE} to wasm")


def build_matvec_check() -> Path:
    """c/matvec_check.c: the SIMD matvec_s8 against the portable one, for node."""
    sources = {
        "matvec_check.c": (GLUE_DIR / "matvec_check.c").read_bytes(),
        "matvec_s8.c": matvec_source().encode(),
        "matvec_harness.h": matvec_harness_source().encode(),
    }
    return _build(sources, WASM_CFLAGS, "matvec_check.c to wasm", only=["matvec_check.c"])


def _leb(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, pos


def wasm_sections(data: bytes) -> dict[str, int]:
    """Bytes of each section (with its header) of a wasm module."""
    if data[:4] != b"\0asm":
        raise WebError("not a wasm module")
    pos, sizes = 8, dict[str, int]()
    while pos < len(data):
        sid = data[pos]
        size, body = _leb(data, pos + 1)
        name = SECTION_NAMES.get(sid, str(sid))
        sizes[name] = sizes.get(name, 0) + (body - pos) + size
        pos = body + size
    return sizes


def write_test_assets(model_dir: Path, out: Path) -> dict[str, object]:
    """The wasm modules and the native C's reference for the page's node tests."""
    manifest = Manifest.read(model_dir)
    files = read_c_files(model_dir, manifest)
    out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(build_wasm(files), out / "char_lstm.wasm")
    shutil.copyfile(build_matvec_check(), out / "matvec_check.wasm")
    native = CharLSTMLibrary(files[SOURCE], files[HEADER])
    vocab = manifest.vocabulary
    greedy = {}
    for prompt in TEST_PROMPTS:
        ids = vocab.encode(prompt or vocab.start_text)
        greedy[prompt] = vocab.decode(native.greedy(ids, TEST_LENGTH))
    text = "ROMEO:" + greedy["ROMEO:"][:120]
    reference = {
        "model": str(model_dir),
        "length": TEST_LENGTH,
        "greedy": greedy,
        "logits_text": text,
        "logits": native.run(vocab.encode(text))["logits"].tolist(),
    }
    (out / "reference.json").write_text(json.dumps(reference, ensure_ascii=False))
    return reference


def main(argv: list[str] | None = None) -> int:
    from toolkit.runtime.generator import default_model_dir

    parser = argparse.ArgumentParser(prog="python -m toolkit.web.wasm", description=__doc__)
    parser.add_argument("model_dir", type=Path, nargs="?")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    try:
        write_test_assets(args.model_dir or default_model_dir("c"), args.out)
    except ToolkitError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
