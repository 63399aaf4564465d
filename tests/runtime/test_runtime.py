"""The lightweight runtime: cross-runtime equality, no TensorFlow, errors, the Python API."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from toolkit.errors import ModelFileError, UsageError
from toolkit.files import sha256_bytes
from toolkit.runtime import load
from toolkit.runtime.backends.onnx import OnnxBoundStepper
from toolkit.runtime.step import ArrayStepper, make_stepper

RUNTIMES = ("onnx", "tflite", "numpy")


@pytest.fixture(scope="module")
def tf_blocker(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder that, first on PYTHONPATH, makes `import tensorflow` (and friends) fail."""
    root = tmp_path_factory.mktemp("blocker")
    for name in ("tensorflow", "keras", "tf2onnx", "tf_keras"):
        (root / name).mkdir()
        (root / name / "__init__.py").write_text(
            f"raise ImportError('{name} is blocked: the runtime must not import it')\n"
        )
    return root


def run_cli(
    args: list[str], env_extra: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    env = {**os.environ, **(env_extra or {})}
    return subprocess.run(
        [sys.executable, "-m", "toolkit", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def test_generate_without_tensorflow(tiny_export: Path, tf_blocker: Path) -> None:
    texts = {}
    pythonpath = os.pathsep.join([str(tf_blocker), os.environ.get("PYTHONPATH", "")])
    for runtime in RUNTIMES:
        proc = run_cli(
            [
                "generate",
                str(tiny_export),
                "--runtime",
                runtime,
                "--prompt",
                "ROMEO:",
                "--length",
                "80",
                "--temperature",
                "0",
                "--json",
            ],
            {"PYTHONPATH": pythonpath},
        )
        assert proc.returncode == 0, proc.stderr
        assert "blocked" not in proc.stderr
        result = json.loads(proc.stdout)
        assert result["runtime"] == runtime
        assert result["chars_per_sec"] > 0 and result["time_to_first_char_s"] > 0
        texts[runtime] = result["texts"][0]
    assert len(texts["onnx"]) == 80
    assert texts["onnx"] == texts["tflite"] == texts["numpy"]
    # And the blocker really blocks: importing TensorFlow fails under it.
    probe = subprocess.run(
        [sys.executable, "-c", "import tensorflow"],
        env={**os.environ, "PYTHONPATH": pythonpath},
        capture_output=True,
        text=True,
    )
    assert probe.returncode != 0 and "blocked" in probe.stderr


def test_runtimes_agree_with_keras(tiny_export: Path, tiny_run: Path) -> None:
    greedy = {}
    sampled = {}
    for runtime, path in [*((r, tiny_export) for r in RUNTIMES), ("keras", tiny_run)]:
        gen = load(path, runtime=runtime)
        greedy[runtime] = gen.generate("ROMEO:", length=60, temperature=0).texts[0]
        sampled[runtime] = gen.generate(
            "JULIET:", length=60, temperature=0.9, top_k=20, top_p=0.95, seed=7, num_samples=2
        ).texts
    assert len(set(greedy.values())) == 1, greedy
    assert all(v == sampled["keras"] for v in sampled.values()), sampled


def test_quantized_variants_load_and_generate(tiny_export: Path) -> None:
    for runtime, variant in [("tflite", "fp16"), ("tflite", "int8"), ("onnx", "int8")]:
        result = load(tiny_export, runtime=runtime, variant=variant).generate(
            "A", length=30, seed=1
        )
        assert len(result.texts[0]) == 30
    with pytest.raises(ModelFileError, match="onnx supports: fp32, int8"):
        load(tiny_export, runtime="onnx", variant="fp16")
    with pytest.raises(ModelFileError, match="numpy has no int8 variant; numpy supports: fp32"):
        load(tiny_export, runtime="numpy", variant="int8")


def test_batched_samples_are_one_batch(tiny_export: Path) -> None:
    gen = load(tiny_export, runtime="onnx")
    calls = []
    step, own_stepper = gen.backend.step, gen.backend.stepper  # type: ignore[attr-defined]

    def counting_step(token, h, c):
        calls.append(token.shape[0])
        return step(token, h, c)

    def counting_stepper(logits, h, c):  # sampling steps through the ONNX bound stepper
        stepper = own_stepper(logits, h, c)
        advance = stepper.advance

        def counted(token):
            calls.append(token.shape[0])
            return advance(token)

        stepper.advance = counted
        return stepper

    gen.backend.step = counting_step  # type: ignore[method-assign]
    gen.backend.stepper = counting_stepper  # type: ignore[attr-defined]
    result = gen.generate("AB", length=25, temperature=1.0, seed=3, num_samples=4)
    assert len(result.texts) == 4 and all(len(t) == 25 for t in result.texts)
    assert set(calls) == {4}  # every step carried all four samples
    # Prompt steps + one step per generated character (the last one too, so that the state
    # already includes it when a session continues).
    assert len(calls) == 2 + 25
    assert len(set(result.texts)) > 1  # independent samples


@pytest.mark.parametrize("variant", ["fp32", "int8"])
def test_onnx_bound_stepper_is_the_step_in_a_loop(tiny_export: Path, variant: str) -> None:
    """The stepper that keeps the state in bound buffers gives the step's exact numbers."""
    gen = load(tiny_export, runtime="onnx", variant=variant)
    backend = gen.backend
    tokens = np.random.default_rng(0).integers(0, len(gen.chars), (40, 3)).astype(np.int32)
    shape = (gen.layers, 3, gen.units)
    h = np.random.default_rng(1).standard_normal(shape).astype(np.float32) * 0.5
    logits, h, c = backend.step(tokens[0], h, h * 2)
    bound = make_stepper(backend, logits, h, c)
    assert isinstance(bound, OnnxBoundStepper)
    plain = ArrayStepper(backend, h, c)
    for token in tokens[1:]:
        np.testing.assert_array_equal(bound.advance(token), plain.advance(token))
    for got, expected in zip(bound.state(), plain.state(), strict=True):
        np.testing.assert_array_equal(got, expected)
    # Batch 1, the token as an int (Session._sample_one).
    row = (slice(None), slice(0, 1))
    bound = make_stepper(backend, logits[:1], h[row], c[row])
    plain = ArrayStepper(backend, h[row], c[row])
    for token in tokens[:, 0].tolist():
        np.testing.assert_array_equal(bound.advance_one(token), plain.advance_one(token))
    np.testing.assert_array_equal(bound.state()[1], plain.state()[1])


def test_session_keeps_state(tiny_export: Path) -> None:
    gen = load(tiny_export, runtime="numpy")
    whole = gen.generate("ROMEO: hello", length=20, temperature=0).texts[0]
    session = gen.session()
    session.feed("ROMEO:")
    session.feed(" hello")
    assert session.sample(20, temperature=0)[0] == whole
    more = session.sample(10, temperature=0)[0]
    assert len(more) == 10


def test_stop_string_and_empty_prompt(tiny_export: Path) -> None:
    gen = load(tiny_export, runtime="numpy")
    full = gen.generate("", length=200, temperature=0).texts[0]
    assert len(full) == 200
    stop = full[50:52]
    streamed: list[str] = []
    cut = gen.generate(
        "", length=200, temperature=0, stop=stop, on_text=lambda _, s: streamed.append(s)
    ).texts[0]
    assert cut == full[: full.index(stop)]
    assert "".join(streamed) == cut  # the stream never shows part of the stop string
    never = gen.generate("", length=50, temperature=0, stop="\x00never", on_text=lambda *_: None)
    assert never.texts[0] == full[:50]


def test_unknown_characters(tiny_export: Path) -> None:
    gen = load(tiny_export, runtime="numpy")
    with pytest.raises(UsageError, match="not in the model's vocabulary: '~', '日'"):
        gen.generate("ROMEO~日", length=5)
    skipped = gen.generate("ROMEO~日", length=5, temperature=0, unknown="skip").texts[0]
    assert skipped == gen.generate("ROMEO", length=5, temperature=0).texts[0]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"temperature": -1.0}, "temperature"),
        ({"top_p": 0.0}, "top-p"),
        ({"top_p": 1.01}, "top-p"),
        ({"top_k": -2}, "top-k"),
        ({"length": -1}, "length"),
        ({"num_samples": 0}, "num-samples"),
    ],
)
def test_bad_parameters(tiny_export: Path, kwargs, message) -> None:
    gen = load(tiny_export, runtime="numpy")
    with pytest.raises(UsageError, match=message):
        gen.generate("A", **kwargs)


@pytest.fixture
def model_copy(tiny_export: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "model"
    shutil.copytree(tiny_export, dst)
    return dst


def test_checksum_mismatch_is_refused(model_copy: Path) -> None:
    path = model_copy / "model.onnx"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ModelFileError, match="checksum"):
        load(model_copy, runtime="onnx")


@pytest.mark.parametrize(
    ("runtime", "file"),
    [("onnx", "model.onnx"), ("tflite", "model.tflite"), ("numpy", "weights.npz")],
)
def test_truncated_file_with_matching_manifest(model_copy: Path, runtime: str, file: str) -> None:
    """A truncated file whose checksum was (wrongly) updated still fails with one clear line."""

    path = model_copy / file
    data = path.read_bytes()[: len(path.read_bytes()) // 3]
    path.write_bytes(data)
    manifest = json.loads((model_copy / "manifest.json").read_text())
    manifest["artifacts"][file]["sha256"] = sha256_bytes(data)
    (model_copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelFileError):
        load(model_copy, runtime=runtime).generate("A", length=3)


def test_unknown_manifest_version_and_missing_dir(model_copy: Path, tmp_path: Path) -> None:
    manifest = json.loads((model_copy / "manifest.json").read_text())
    manifest["format_version"] = 99
    (model_copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelFileError, match="format version 99"):
        load(model_copy, runtime="onnx")
    with pytest.raises(ModelFileError, match="not found"):
        load(tmp_path / "nowhere", runtime="onnx")


@pytest.mark.parametrize(
    "args",
    [
        ["--temperature", "-1"],
        ["--top-p", "0"],
        ["--top-k", "-3"],
        ["--length", "-5"],
        ["--runtime", "coreml"],
        ["--variant", "int4"],
        ["--prompt", "ROMEO~"],
    ],
)
def test_cli_errors_are_one_line(tiny_export: Path, tf_blocker: Path, args: list[str]) -> None:
    pythonpath = os.pathsep.join([str(tf_blocker), os.environ.get("PYTHONPATH", "")])
    proc = run_cli(["generate", str(tiny_export), *args], {"PYTHONPATH": pythonpath})
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), proc.stderr
    assert proc.stdout == ""  # refused before any text, the prompt included


def test_cli_missing_model_dir(tmp_path: Path) -> None:
    proc = run_cli(["generate", str(tmp_path / "missing")])
    assert proc.returncode != 0 and proc.stderr.strip().startswith("error: model directory")


def test_missing_default_model_names_the_commands(tmp_path: Path, monkeypatch) -> None:
    import toolkit.runtime.generator as generator

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(generator, "__file__", str(tmp_path / "a" / "b" / "generator.py"))
    with pytest.raises(ModelFileError, match="toolkit train  then  toolkit export"):
        generator.default_model_dir("onnx")
    with pytest.raises(ModelFileError, match="toolkit train"):
        load(None, runtime="keras")


def test_numpy_reads_the_onnx_weights_without_weights_npz(
    model_copy: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    manifest = json.loads((model_copy / "manifest.json").read_text())
    del manifest["artifacts"]["weights.npz"]
    (model_copy / "weights.npz").unlink()
    (model_copy / "manifest.json").write_text(json.dumps(manifest))
    gen = load(model_copy, runtime="numpy")
    assert gen.variant == "fp32"
    onnx = load(model_copy, runtime="onnx")
    for kwargs in ({"temperature": 0}, {"temperature": 0.9, "seed": 4, "num_samples": 2}):
        assert (
            gen.generate("ROMEO:", length=60, **kwargs).texts
            == onnx.generate("ROMEO:", length=60, **kwargs).texts
        )
    # Weights that do not reproduce the graph (misread) are refused.
    import toolkit.runtime.backends.numpy as numpy_backend

    read = numpy_backend.weights_from_onnx

    def misread(data: bytes, layers: int) -> dict[str, np.ndarray]:
        weights = read(data, layers)
        weights["dense_bias"] = weights["dense_bias"] + 0.5
        return weights

    monkeypatch.setattr(numpy_backend, "weights_from_onnx", misread)
    with pytest.raises(ModelFileError, match="do not reproduce"):
        load(model_copy, runtime="numpy")


def test_auto_variant_picks_most_precise(tiny_export: Path, model_copy: Path) -> None:
    assert load(tiny_export, runtime="tflite").variant == "fp32"
    manifest = json.loads((model_copy / "manifest.json").read_text())
    del manifest["artifacts"]["model.tflite"]
    (model_copy / "manifest.json").write_text(json.dumps(manifest))
    assert load(model_copy, runtime="tflite").variant == "fp16"
    with pytest.raises(ModelFileError, match=r"no model\.tflite"):
        load(model_copy, runtime="tflite", variant="fp32")


def test_generate_streams_prompt_and_text(tiny_export: Path) -> None:
    outputs = []
    for runtime in ("numpy", "tflite"):
        args = ["--runtime", runtime, "--prompt", "ROMEO:", "--length", "40", "--seed", "5"]
        proc = run_cli(["generate", str(tiny_export), *args])
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.startswith("ROMEO:")
        assert len(proc.stdout.rstrip("\n")) >= len("ROMEO:") + 30
        outputs.append(proc.stdout)
    assert outputs[0] == outputs[1]  # same seed, same streamed text from either runtime


@pytest.mark.parametrize(
    ("runtime", "variant"),
    [("onnx", "fp32"), ("onnx", "int8"), ("tflite", "fp32"), ("tflite", "full-int8"),
     ("tflm", "full-int8"), ("numpy", "fp32")],
)  # fmt: skip
def test_a_manifest_that_does_not_match_its_model_is_refused(
    tiny_export: Path, tmp_path: Path, runtime: str, variant: str
) -> None:
    def broken(edit: str) -> Path:
        folder = tmp_path / edit
        shutil.copytree(tiny_export, folder)
        manifest = json.loads((folder / "manifest.json").read_text())
        if edit == "vocab":
            manifest["vocab"] = manifest["vocab"][:-1]  # shorter than the logits
        else:
            manifest["model"]["units"] *= 2
        (folder / "manifest.json").write_text(json.dumps(manifest))
        return folder

    with pytest.raises(ModelFileError, match="logits but the manifest's vocabulary"):
        load(broken("vocab"), runtime=runtime, variant=variant)
    with pytest.raises(ModelFileError, match="state"):
        load(broken("units"), runtime=runtime, variant=variant)
