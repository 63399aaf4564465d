"""The C target: char_lstm.c / char_lstm.h, bit-exact to TensorFlow Lite Micro, its contract,
its compile flags, and `--runtime c`."""

from __future__ import annotations

import ctypes
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import COMMITTED_MODEL, manifest_json, without_c

from toolkit.errors import ExportError, UsageError
from toolkit.export.c import quant
from toolkit.export.c.emit import emit_c
from toolkit.export.c.graph import ModelMismatch, parse, probe_model, run_tflm
from toolkit.export.c.match import _add_params, _mul_params, match
from toolkit.export.c.validate import compare, tflm_codes, validate_c
from toolkit.export.plan import plan_artifacts
from toolkit.runtime import load
from toolkit.runtime.backends.c import (
    HEADER,
    SOURCE,
    CBackend,
    CharLSTMLibrary,
    build,
    c_section,
    header_int,
    read_c_files,
)
from toolkit.runtime.manifest import FORMATS, Manifest

TFLITE = "model.full-int8.tflite"
SANITIZE = ["-std=c99", "-O1", "-g", "-fno-omit-frame-pointer", "-fsanitize=address,undefined",
            "-fno-sanitize-recover=all"]  # fmt: skip
STRICT = ["-std=c99", "-Wall", "-Wextra", "-Werror"]
# Single instead of double rounding in TFLM's MultiplyByQuantizedMultiplier (what a build with
# TFLITE_SINGLE_ROUNDING computes): close, and still not TFLM's bits.
DOUBLE_ROUNDING = (
    "return divide_by_pot(doubling_high_mul((int32_t)((uint32_t)x << left), multiplier), right);"
)
SINGLE_ROUNDING = (
    "(void)left; (void)right;\n    return (int32_t)(((int64_t)x * multiplier + "
    "((int64_t)1 << (30 - shift))) >> (31 - shift));"
)


def model_inputs(folder: Path) -> tuple[bytes, dict, list[str]]:
    """(full-int8 model, its micro section, vocabulary) of an exported folder."""
    manifest = manifest_json(folder)
    return (
        (folder / TFLITE).read_bytes(),
        manifest["artifacts"][TFLITE]["micro"],
        manifest["vocab"],
    )


def c_files(folder: Path) -> dict[str, bytes]:
    return read_c_files(folder, Manifest.read(folder))


def validation_ids(folder: Path, steps: int) -> np.ndarray:
    """The start of the bundled corpus's validation split, in the folder's vocabulary."""
    from toolkit.data.corpus import bundled_corpus_text

    text = bundled_corpus_text()
    val = text[int(len(text) * 0.9) :]
    index = {ch: i for i, ch in enumerate(manifest_json(folder)["vocab"])}
    return np.array([index[ch] for ch in val if ch in index][:steps], np.int32)


@pytest.fixture(scope="module")
def tiny_reference(tiny_export: Path) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    data, micro, _ = model_inputs(tiny_export)
    ids = validation_ids(tiny_export, 2048)
    return ids, tflm_codes(data, micro, ids)


# --------------------------------------------------------------------------- bit-exactness


def test_committed_c_is_the_emitters_output_and_bit_exact_with_tflm() -> None:
    """The committed files are what the emitter makes of the committed full-int8 model today,
    and they match TensorFlow Lite Micro over 4,096 characters of validation text."""
    data, micro, vocab = model_inputs(COMMITTED_MODEL)
    files = c_files(COMMITTED_MODEL)
    assert emit_c(data, micro, vocab, f"shakespeare/{TFLITE}") == files
    section = c_section(Manifest.read(COMMITTED_MODEL).artifacts[SOURCE])
    assert section["validation_tflm"]["steps"] >= 4096
    ids = validation_ids(COMMITTED_MODEL, 4096)
    report = validate_c(data, micro, files, ids)
    assert report["steps"] == 4096


def test_two_layer_model_is_bit_exact(tiny2_c_export: Path) -> None:
    """Exported as C alone: the full-int8 model was made first, and the export validated the
    C over 4,096 characters; here again on other text (training text, not validation)."""
    manifest = Manifest.read(tiny2_c_export)
    assert manifest.model.layers == 2 and set(manifest.artifacts) == {TFLITE, SOURCE}
    assert c_section(manifest.artifacts[SOURCE])["validation_tflm"]["steps"] == 4096
    data, micro, _ = model_inputs(tiny2_c_export)
    ids = validation_ids(tiny2_c_export, 30_000)[-3000:]
    validate_c(data, micro, c_files(tiny2_c_export), ids)
    assert header_int(c_files(tiny2_c_export)[HEADER], "CHAR_LSTM_SCRATCH_ROWS") == 2


def test_single_rounding_fails_validation_in_one_line(tiny_export: Path) -> None:
    data, micro, _ = model_inputs(tiny_export)
    files = c_files(tiny_export)
    source = files[SOURCE].decode()
    assert source.count(DOUBLE_ROUNDING) == 1
    mutated = {**files, SOURCE: source.replace(DOUBLE_ROUNDING, SINGLE_ROUNDING).encode()}
    with pytest.raises(ExportError, match="not bit-exact with TensorFlow Lite Micro") as err:
        validate_c(data, micro, mutated, validation_ids(tiny_export, 4096))
    assert "\n" not in str(err.value)


def test_a_mismatch_fails_the_export_and_leaves_the_folder_as_it_was(
    tiny_export: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from toolkit.export import c as c_target
    from toolkit.export.exporter import export_run

    folder = tmp_path / "tiny"
    shutil.copytree(tiny_export, folder)
    before = {p.name: p.read_bytes() for p in folder.iterdir()}

    def single_rounding(*args: object) -> dict[str, bytes]:
        files = emit_c(*args)  # type: ignore[arg-type]
        return {**files, SOURCE: files[SOURCE].replace(DOUBLE_ROUNDING.encode(),
                                                        SINGLE_ROUNDING.encode())}  # fmt: skip

    monkeypatch.setattr(c_target, "emit_c", single_rounding)
    with pytest.raises(ExportError, match="not bit-exact"):
        export_run(folder, formats=["c"], quantization="full-int8", force=True, log=lambda _: None)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    assert not list(tmp_path.glob(".export-*"))


def test_a_model_with_requantizing_state_carries_it_exactly(tiny2_c_export: Path) -> None:
    """With h/c input scales unlike h_out/c_out's, the carry tables are not the identity; the
    C must still equal TFLM driven by the runtime's float carry."""
    import flatbuffers
    from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as fb

    data, micro, vocab = model_inputs(tiny2_c_export)
    model = fb.ModelT.InitFromObj(fb.Model.GetRootAsModel(bytearray(data), 0))
    sub = model.subgraphs[0]
    change = {"h": (1.37, 5), "c": (0.71, -9)}
    for index, entry in zip(sub.inputs, micro["inputs"], strict=True):
        if entry["name"] in change:
            factor, shift = change[entry["name"]]
            q = sub.tensors[index].quantization
            q.scale = np.asarray(q.scale, np.float32) * np.float32(factor)
            q.zeroPoint = np.asarray(q.zeroPoint, np.int64) + shift
            entry["scale"], entry["zero_point"] = float(q.scale[0]), int(q.zeroPoint[0])
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    data = bytes(builder.Output())
    plan = match(parse(data), micro, vocab)
    codes = np.arange(-128, 128)
    assert (plan.carry_h != codes).sum() > 100 and (plan.carry_c != codes).sum() > 100
    files = emit_c(data, micro, vocab, "requantized")
    validate_c(data, micro, files, validation_ids(tiny2_c_export, 2048))


def test_sanitizers_bad_tokens_and_exact_state(tiny2_c_export: Path, tmp_path: Path) -> None:
    """ASan + UBSan, no recovery, the state in an exact-size malloc: out-of-range tokens return
    NULL without touching the state, and every step's logits and state are TFLM's."""
    files = c_files(tiny2_c_export)
    driver = (Path(__file__).parent / "sanitize_driver.c").read_bytes()
    exe = build({**files, "driver.c": driver}, SANITIZE, cc="gcc", suffix="")
    data, micro, _ = model_inputs(tiny2_c_export)
    ids = validation_ids(tiny2_c_export, 1024)
    (tmp_path / "tokens.bin").write_bytes(ids.tobytes())
    proc = subprocess.run(
        [str(exe), str(tmp_path / "tokens.bin"), str(tmp_path / "out.bin")],
        capture_output=True, text=True,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    manifest = Manifest.read(tiny2_c_export)
    layers, units, vocab = manifest.model.layers, manifest.model.units, manifest.model.vocab_size
    out = np.frombuffer((tmp_path / "out.bin").read_bytes(), np.int8).reshape(len(ids), -1)
    have = {
        "logits": out[:, :vocab],
        "h": out[:, vocab : vocab + layers * units].reshape(-1, layers, units),
        "c": out[:, vocab + layers * units :].reshape(-1, layers, units),
    }
    want = tflm_codes(data, micro, ids)
    have["h_new"] = want["h_new"]  # not written by the driver
    compare(want, have, ids)


def test_add_and_mul_match_tflm_on_every_input_pair(tiny2_c_export: Path) -> None:
    """Each ADD and MUL of the graph, all 65,536 int8 pairs, against the op alone in TFLM."""
    kernels = b"""#include "char_lstm.c"
void kt_add(const int8_t *a, const int8_t *b, int n, const int32_t *q, int8_t *out) {
    add_params p = {q[0], q[1], q[2], q[3], q[4], q[5], q[6], q[7], q[8]};
    for (int i = 0; i < n; i++) out[i] = add_s8(a[i], b[i], &p);
}
void kt_mul(const int8_t *a, const int8_t *b, int n, const int32_t *q, int8_t *out) {
    mul_params p = {q[0], q[1], q[2], q[3], q[4]};
    for (int i = 0; i < n; i++) out[i] = mul_s8(a[i], b[i], &p);
}
int32_t kt_requantize(int32_t x, int32_t m, int shift) { return requantize(x, m, shift); }
"""
    files = c_files(tiny2_c_export)
    flags = ["-std=c99", "-O2", "-shared", "-fPIC"]
    lib = ctypes.CDLL(str(build({**files, "kt.c": kernels}, flags, compile_only=["kt.c"])))
    p8, p32 = np.ctypeslib.ndpointer(np.int8), np.ctypeslib.ndpointer(np.int32)
    for fn in (lib.kt_add, lib.kt_mul):
        fn.argtypes = [p8, p8, ctypes.c_int, p32, p8]
    lib.kt_requantize.argtypes = [ctypes.c_int32, ctypes.c_int32, ctypes.c_int]
    lib.kt_requantize.restype = ctypes.c_int32
    graph = parse(model_inputs(tiny2_c_export)[0])
    a = np.repeat(np.arange(-128, 128, dtype=np.int8), 256)
    b = np.tile(np.arange(-128, 128, dtype=np.int8), 256)
    checked = 0
    for op in graph.ops:
        if op.name not in ("ADD", "MUL"):
            continue
        (want,) = run_tflm(probe_model(graph, op, a.size), [a, b])
        t1, t2, out = (graph.tensors[i] for i in (*op.inputs[:2], op.outputs[0]))
        if op.name == "ADD":
            p = _add_params(t1, t2, out)
            q = [p.a_offset, p.a_multiplier, p.a_shift, p.b_offset, p.b_multiplier, p.b_shift,
                 p.out_multiplier, p.out_shift, p.out_offset]  # fmt: skip
        else:
            m = _mul_params(t1, t2, out)
            q = [m.a_offset, m.b_offset, m.multiplier, m.shift, m.out_offset]
        have = np.zeros_like(a)
        getattr(lib, f"kt_{op.name.lower()}")(a, b, a.size, np.array(q, np.int32), have)
        assert np.array_equal(want, have), f"op {op.index} {op.name}"
        checked += 1
    assert checked == 4 * 2 + 1  # per layer: 3 MUL, 1 ADD; layer 0's embedding ADD
    # MultiplyByQuantizedMultiplier against the Python reference, edge cases and random.
    rng = np.random.default_rng(0)
    xs = [0, 1, -1, 2**31 - 1, -(2**31), 2**30, -(2**30), *rng.integers(-(2**31), 2**31, 300)]
    for mult, shift in [(1 << 30, 0), (1717986918, -3), (2147483647, -31), (1518500250, -12)]:
        assert [lib.kt_requantize(int(x), mult, shift) for x in xs] == [
            quant.mbqm(int(x), mult, shift) for x in xs
        ]


def test_activation_tables_are_tflms_own_outputs(tiny_export: Path) -> None:
    data, micro, vocab = model_inputs(tiny_export)
    graph = parse(data)
    plan = match(graph, micro, vocab)
    x = np.arange(-128, 128, dtype=np.int8)
    ops = [op for op in graph.ops if op.name in ("LOGISTIC", "TANH")]
    assert len(ops) == 5
    for op in ops:
        (want,) = run_tflm(probe_model(graph, op, 256), [x])
        assert any(np.array_equal(want, t) for t in plan.layers[0].tables.values())
    source = c_files(tiny_export)[SOURCE].decode()
    body = re.search(r"L0_SIGMOID\w*\[256\] = \{(.*?)\};", source, re.S)
    assert body is not None
    assert [int(v) for v in body.group(1).split(",")] in [
        t.tolist() for t in plan.layers[0].tables.values()
    ]


# --------------------------------------------------------------------------- the contract


def test_bad_tokens_return_null_and_leave_the_state(tiny_export: Path) -> None:
    files = c_files(tiny_export)
    lib = CharLSTMLibrary(files[SOURCE], files[HEADER])
    state = lib.new_states()
    ptr = state.ctypes.data
    for token in validation_ids(tiny_export, 20).tolist():
        assert lib.lib.char_lstm_step(ptr, token)
    before = state.tobytes()
    for bad in (-1, lib.vocab, lib.vocab + 1000, 2**31 - 1, -(2**31)):
        assert lib.lib.char_lstm_step(ptr, bad) is None
        assert state.tobytes() == before
    assert lib.lib.char_lstm_step(None, 0) is None
    assert lib.lib.char_lstm_step(ptr, 0) and state.tobytes() != before
    with pytest.raises(UsageError, match="out of the vocabulary"):
        lib.step_rows(lib.new_states(2), np.array([0, lib.vocab], np.int32),
                      np.zeros((2, lib.vocab), np.int8))  # fmt: skip


def test_reset_is_the_zero_state_and_states_are_independent(tiny2_c_export: Path) -> None:
    files = c_files(tiny2_c_export)
    lib = CharLSTMLibrary(files[SOURCE], files[HEADER])
    quantization = c_section(Manifest.read(tiny2_c_export).artifacts[SOURCE])["quantization"]
    states = lib.new_states(2)
    assert (lib.codes(states, "h") == quantization["h"]["zero_point"]).all()
    assert (lib.codes(states, "c") == quantization["c"]["zero_point"]).all()
    ids = validation_ids(tiny2_c_export, 300)
    assert np.array_equal(lib.run(ids)["logits"], lib.run(ids)["logits"])


def test_header_api_sizes_and_vocabulary() -> None:
    files = c_files(COMMITTED_MODEL)
    header = files[HEADER].decode()
    manifest = manifest_json(COMMITTED_MODEL)
    for name in ("CHAR_LSTM_VOCAB_SIZE", "CHAR_LSTM_FLASH_BYTES", "CHAR_LSTM_RAM_BYTES",
                 "CHAR_LSTM_LOGITS_ZERO_POINT", "CHAR_LSTM_LOGITS_SCALE_MULTIPLIER"):  # fmt: skip
        assert f"#define {name} " in header
    for declaration in ("} char_lstm_state;", "void char_lstm_reset(char_lstm_state *s);",
                        "const int8_t *char_lstm_step(char_lstm_state *s, int32_t token);",
                        "extern const char *const char_lstm_vocab[CHAR_LSTM_VOCAB_SIZE];"):  # fmt: skip
        assert declaration in header
    lib = CharLSTMLibrary(files[SOURCE], files[HEADER])
    assert lib.state_bytes == header_int(header, "CHAR_LSTM_RAM_BYTES") <= 4096  # 1 x 512
    logits = next(t for t in manifest["artifacts"][TFLITE]["micro"]["outputs"]
                  if t["name"] == "logits")  # fmt: skip
    scale = re.search(r"#define CHAR_LSTM_LOGITS_SCALE (\S+)f\n", header)
    assert scale is not None and np.float32(scale.group(1)) == np.float32(logits["scale"])
    mult = header_int(header, "CHAR_LSTM_LOGITS_SCALE_MULTIPLIER")
    shift = header_int(header, "CHAR_LSTM_LOGITS_SCALE_SHIFT")
    assert mult * 2.0 ** (shift - 31) == logits["scale"]
    assert header_int(header, "CHAR_LSTM_LOGITS_ZERO_POINT") == logits["zero_point"]
    table = (ctypes.c_char_p * len(manifest["vocab"])).in_dll(lib.lib, "char_lstm_vocab")
    assert [table[i].decode() for i in range(len(manifest["vocab"]))] == manifest["vocab"]


def test_any_utf8_vocabulary_round_trips(tiny_export: Path) -> None:
    data, micro, vocab = model_inputs(tiny_export)
    odd = ["é", "\\", '"', "\x01", "日本", "a1", "?", *vocab[7:]]
    files = emit_c(data, micro, odd, "odd")
    lib = CharLSTMLibrary(files[SOURCE], files[HEADER])
    table = (ctypes.c_char_p * len(odd)).in_dll(lib.lib, "char_lstm_vocab")
    assert [table[i].decode() for i in range(len(odd))] == odd


@pytest.mark.parametrize(
    "cc,flags",
    [
        ("gcc", ["-O2", "-mgeneral-regs-only"]),  # no floating-point register anywhere
        ("gcc", ["-O3", "-pedantic", "-Wconversion", "-Wno-sign-conversion", "-Wshadow"]),
        ("clang", ["-O2", "-pedantic"]),
        ("arm-none-eabi-gcc", ["-O2", "-mcpu=cortex-m4", "-mthumb", "-mfloat-abi=soft"]),
        ("arm-none-eabi-gcc", ["-O2", "-mcpu=cortex-m0", "-mthumb", "-mfloat-abi=soft"]),
        ("clang", ["-O2", "--target=wasm32", "-msimd128", "-ffreestanding", "-nostdlib"]),
    ],
)
def test_compiles_cleanly(tiny2_c_export: Path, tmp_path: Path, cc: str, flags: list[str]) -> None:
    for name, data in c_files(tiny2_c_export).items():
        (tmp_path / name).write_bytes(data)
    cmd = [cc, *STRICT, *flags, "-c", SOURCE, "-o", "char_lstm.o"]
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    if cc.startswith("arm"):  # no soft-float or C library calls: integer code only
        nm = subprocess.run(["arm-none-eabi-nm", "-u", "char_lstm.o"], cwd=tmp_path,
                            capture_output=True, text=True, check=True)  # fmt: skip
        assert set(nm.stdout.split()) - {"U"} <= {"memset", "memcpy", "__aeabi_lmul"}


def test_no_floating_point_in_the_c() -> None:
    files = c_files(COMMITTED_MODEL)
    code = re.sub(r"/\*.*?\*/", "", (files[SOURCE] + files[HEADER]).decode(), flags=re.S)
    assert not re.search(r"\b(float|double)\b", code)
    assert "malloc" not in code
    # No dependencies: the C library's integer types, and the wasm SIMD intrinsics (clang's).
    includes = set(re.findall(r'#include [<"](.+?)[>"]', code))
    assert includes == {"char_lstm.h", "wasm_simd128.h", "stddef.h", "stdint.h"}


def test_refuses_other_models_in_one_line(tiny_export: Path) -> None:
    data, micro, vocab = model_inputs(tiny_export)
    for other in ("model.int8.tflite", "model.tflite"):
        with pytest.raises(ModelMismatch) as err:
            emit_c((tiny_export / other).read_bytes(), micro, vocab, other)
        assert "\n" not in str(err.value) and str(err.value)
    with pytest.raises(ModelMismatch, match="vocabulary"):
        emit_c(data, micro, vocab[:-1], "short")
    with pytest.raises(ModelMismatch):
        emit_c(b"not a model at all", micro, vocab, "garbage")


# --------------------------------------------------------------------------- export and runtime


def test_the_plan_and_format_c_options() -> None:
    plan = plan_artifacts(list(FORMATS), "all")
    assert plan.index(("c", "full-int8")) > plan.index(("tflite", "full-int8"))
    assert ("c", "full-int8") not in plan_artifacts(list(FORMATS), "none")
    with pytest.raises(UsageError, match="c supports: full-int8"):
        plan_artifacts(["c"], "int8")


def test_several_formats_leave_out_c_without_a_compiler(
    tiny_export: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--format all` makes what this machine can validate; `--format c` insists (above)."""
    from toolkit.export.exporter import export_run

    folder = without_c(tiny_export, tmp_path / "tiny")
    monkeypatch.setenv("CC", "no-such-cc")
    lines: list[str] = []
    _, made = export_run(folder, formats=["numpy", "c"], quantization="all", force=True,
                         log=lines.append)  # fmt: skip
    assert [a.file for a in made] == ["weights.npz"] and not (folder / SOURCE).exists()
    assert any(line.startswith("left out char_lstm.c: no C compiler") for line in lines)
    with pytest.raises(ExportError, match=r"^cannot make char_lstm\.c: no C compiler"):
        export_run(folder, formats=["c"], quantization="full-int8", log=lambda _: None)


def test_cli_export_format_c_from_an_exported_folder_needs_no_tensorflow(
    tiny_export: Path, tmp_path: Path
) -> None:
    folder = without_c(tiny_export, tmp_path / "tiny")
    probe = (
        "import sys\nfrom toolkit.cli.entry import main\n"
        f"sys.argv = ['toolkit', 'export', {str(folder)!r}, '--format', 'c']\n"
        "try:\n    main()\nfinally:\n"
        "    print('tensorflow' in sys.modules, file=sys.stderr)\n"
    )
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == "False"
    assert "bit-exact with TensorFlow Lite Micro over 4,096 characters" in proc.stdout
    assert f"wrote {folder / SOURCE}" in proc.stdout and f"wrote {folder / HEADER}" in proc.stdout
    entry = manifest_json(folder)["artifacts"][SOURCE]
    assert (entry["format"], entry["quantization"]) == ("c", "full-int8")
    assert entry["validation"]["passed"] and entry["c"]["files"][HEADER]
    again = subprocess.run([sys.executable, "-m", "toolkit", "export", str(folder), "--format", "c"],
                           capture_output=True, text=True)  # fmt: skip
    assert again.returncode == 5 and "already has char_lstm.c" in again.stderr


def test_runtime_c_gives_tflms_text_greedy_and_sampled() -> None:
    c = load(COMMITTED_MODEL, runtime="c")
    tflm = load(COMMITTED_MODEL, runtime="tflm")
    assert (c.runtime, c.variant) == ("c", "full-int8")
    for options in ({"temperature": 0}, {"temperature": 0.8, "seed": 1, "num_samples": 2}):
        want = tflm.generate("ROMEO:", length=120, **options).texts  # type: ignore[arg-type]
        assert c.generate("ROMEO:", length=120, **options).texts == want  # type: ignore[arg-type]
    # The float state the step returns goes back to the same int8 codes: step() and the
    # stepper (the state kept in the C struct) agree.
    backend = c.backend
    assert isinstance(backend, CBackend)
    h = np.zeros((1, 2, 512), np.float32)
    tokens = np.array([5, 9], np.int32)
    stepper = backend.stepper(np.zeros((2, 65), np.float32), h, h)
    state = (h, h)
    for _ in range(3):
        logits, *state = backend.step(tokens, *state)
        assert np.array_equal(stepper.advance(tokens), logits)
    assert all(np.array_equal(a, b) for a, b in zip(stepper.state(), state, strict=True))


def test_runtime_c_without_a_compiler_is_one_line(tiny_export: Path) -> None:
    env = {**os.environ, "CC": "no-such-cc"}
    proc = subprocess.run(
        [sys.executable, "-m", "toolkit", "generate", str(tiny_export), "--runtime", "c"],
        capture_output=True, text=True, env=env,
    )  # fmt: skip
    assert proc.returncode == 6
    assert proc.stderr.strip() == "error: no C compiler found (no-such-cc): install one " \
        "(apt-get install gcc) or set CC"  # fmt: skip
    assert proc.stdout == ""


def test_runtime_c_refuses_a_changed_header(tiny_export: Path, tmp_path: Path) -> None:
    folder = tmp_path / "tiny"
    shutil.copytree(tiny_export, folder)
    (folder / HEADER).write_bytes((folder / HEADER).read_bytes() + b"\n")
    with pytest.raises(Exception, match="checksum"):
        load(folder, runtime="c")
    json.loads((folder / "manifest.json").read_text())  # untouched
