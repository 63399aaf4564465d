"""`toolkit export`: describe, convert, validate, as Hugging Face optimum's exporters do.

    describe  the source (a run's Keras model, or an exported folder's fp32 weights) and
              the plan: which (format, quantization) targets, each a row of TARGETS
    convert   each target's module (onnx.py, tflite.py, numpy.py, micro.py) makes its file
    validate  validate.py steps every file over held-out text against the reference
    commit    everything is built in a staging folder beside the export and moved into
              place only when every file validated; the manifest last

A failed conversion or validation leaves the export folder as it was.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from toolkit.chat_format import ChatFormat
from toolkit.data.batches import open_training_data
from toolkit.data.corpus import load_corpus
from toolkit.errors import ExportError, ModelFileError, UsageError, storage_error
from toolkit.export import c as c_target
from toolkit.export import micro, numpy, onnx, tflite
from toolkit.export.manifest import (
    ExportedArtifact,
    build_manifest,
    commit,
    companion_files,
    existing_export,
    same_training,
)
from toolkit.export.model_card import model_card
from toolkit.export.plan import plan_artifacts
from toolkit.export.source import ExportSource, load_source
from toolkit.export.step_graph import CONTROL_FLOW_OPS, make_step_module
from toolkit.export.validate import (
    BPC_TOLERANCE,
    VALIDATION_STEPS,
    VALIDATION_STREAMS,
    check,
    validate_backend,
    validation_tokens,
)
from toolkit.logs import native_stderr_hidden
from toolkit.runtime.manifest import ARTIFACT_FILES, FORMATS, Manifest, artifact_name, read_verified
from toolkit.runtime.step import StepBackend
from toolkit.runtime.targets import file_for, file_named, runtime_named
from toolkit.train.lock import holds_run_dir_lock
from toolkit.vocabulary import Vocabulary

Log = Callable[[str], None]


@dataclass
class ExportJob:
    """What every target's converter may need: the source, its step graph, the training
    text (for calibration) and the options."""

    source: ExportSource
    staging: Path
    train_ids: np.ndarray
    calibration_chars: int = micro.CALIBRATION_CHARS
    calibration_data: Path | None = None
    limits: micro.MicroLimits = field(default_factory=micro.MicroLimits)
    log: Log = print
    val_ids: np.ndarray | None = None  # the validation text (the C target's bit-exact check)
    out_dir: Path | None = None
    previous: Manifest | None = None  # what the target folder holds already
    made: dict[str, Converted] = field(default_factory=dict)  # this export's files so far
    _module: Any = None

    @property
    def module(self) -> Any:
        """The step graph with a dynamic batch, made once for every target that converts it."""
        if self._module is None:
            self._module = make_step_module(self.source.folded, self.source.config)
        return self._module

    def built_on(self, name: str) -> tuple[bytes, dict[str, Any]]:
        """A file a later target is made from (the C target from the full-int8 model), and
        its manifest fields: this export's, else the target folder's (checksum verified)."""
        if name in self.made:
            return self.made[name].data, self.made[name].extra
        if self.previous is None or self.out_dir is None or name not in self.previous.artifacts:
            raise ExportError(
                f"{name} is needed first: export --format tflite --quantize full-int8"
            )
        artifact = self.previous.artifacts[name]
        try:
            return read_verified(self.out_dir, artifact), dict(artifact.extra)
        except ModelFileError as exc:
            raise ExportError(str(exc)) from None


@dataclass
class Converted:
    data: bytes
    extra: dict[str, Any] = field(default_factory=dict)
    files: dict[str, bytes] = field(default_factory=dict)


@dataclass(frozen=True)
class Target:
    """One row of the table: how a (format, quantization) file is made and where it runs."""

    convert: Callable[[ExportJob, str], Converted]
    backends: Callable[[Converted, ExportJob], list[StepBackend]]
    op_types: Callable[[bytes], set[str]] | None = None


def _onnx(job: ExportJob, quantization: str) -> Converted:
    with native_stderr_hidden():
        return Converted(onnx.convert(job.module, quantization, job.staging))


def _tflite(job: ExportJob, quantization: str) -> Converted:
    with native_stderr_hidden():
        return Converted(tflite.convert(job.module, quantization))


def _numpy(job: ExportJob, quantization: str) -> Converted:
    return Converted(numpy.convert(job.source.folded))


def _micro(job: ExportJob, quantization: str) -> Converted:
    ids = job.train_ids
    if job.calibration_data is not None:
        ids = calibration_ids(job.calibration_data, job.source.vocab, job.log)
    data, section, files = micro.convert(
        job.source.folded,
        job.source.config,
        list(job.source.vocab.chars),
        ids,
        job.calibration_chars,
        str(job.calibration_data or "training text"),
        job.limits,
        job.log,
    )
    return Converted(data, {"micro": section}, files)


def _c(job: ExportJob, quantization: str) -> Converted:
    name = file_for("c", quantization).made_from
    assert name is not None
    data, extra = job.built_on(name)
    if not isinstance(extra.get("micro"), dict):
        raise ExportError(f"{name} has no micro section in the manifest; export it again")
    assert job.out_dir is not None and job.val_ids is not None
    source, section, files = c_target.convert(
        data, extra["micro"], list(job.source.vocab.chars), f"{job.out_dir.name}/{name}",
        job.val_ids, job.log,
    )  # fmt: skip
    return Converted(source, {"c": section}, files)


def _c_backends(converted: Converted, job: ExportJob) -> list[StepBackend]:
    return c_target.backends(converted.data, converted.extra["c"], converted.files["char_lstm.h"])


TARGETS: dict[tuple[str, str], Target] = {
    ("onnx", "none"): Target(_onnx, lambda c, j: onnx.backends(c.data), onnx.op_types),
    ("onnx", "int8"): Target(_onnx, lambda c, j: onnx.backends(c.data), onnx.op_types),
    ("tflite", "none"): Target(_tflite, lambda c, j: tflite.backends(c.data), tflite.op_types),
    ("tflite", "float16"): Target(_tflite, lambda c, j: tflite.backends(c.data), tflite.op_types),
    ("tflite", "int8"): Target(_tflite, lambda c, j: tflite.backends(c.data), tflite.op_types),
    ("tflite", "full-int8"): Target(
        _micro, lambda c, j: micro.backends(c.data, c.extra["micro"]), tflite.op_types
    ),
    ("numpy", "none"): Target(_numpy, lambda c, j: numpy.backends(c.data, j.source.config)),
    # From the full-int8 model (made first when the folder lacks it), checked bit for bit
    # against TensorFlow Lite Micro as it is made.
    ("c", "full-int8"): Target(_c, _c_backends),
}
assert set(TARGETS) == set(ARTIFACT_FILES), "every file of toolkit/runtime/targets.py is made"


def calibration_ids(path: Path, vocab: Vocabulary, log: Log) -> np.ndarray:
    """Token ids of a calibration text; characters the model does not know are dropped."""
    text = load_corpus(path)
    unknown = vocab.unknown(text)
    if unknown:
        known = set(vocab.chars)
        dropped = sum(1 for ch in text if ch not in known)
        text = "".join(ch for ch in text if ch in known)
        shown = ", ".join(repr(ch) for ch in unknown[:10])
        log(f"calibration text: dropped {dropped:,} characters not in the vocabulary ({shown})")
    if not text:
        raise ExportError(f"calibration text {path} has no character of the model's vocabulary")
    return vocab.encode(text)


@holds_run_dir_lock("export")  # no training writes the run while it is exported
def _describe(
    run_dir: Path,
    out_dir: Path | None,
    formats: list[str] | None,
    quantization: str,
    bpc_tolerance: float | None,
    force: bool,
    log: Log,
    calibration_chars: int,
    chat_format: Mapping[str, Any] | None,
) -> tuple[Any, list[tuple[str, str]], Path, Any, list[str], Any]:
    """What the export will make, from what, into which folder: the options checked, the
    source read, the plan of (format, quantization), the folder and what it already holds,
    and the run's corpus (a prepared corpus stays memory-mapped)."""
    if bpc_tolerance is not None and bpc_tolerance < 0:
        raise UsageError("bpc-tolerance must be >= 0")
    if calibration_chars < 1:
        raise UsageError(f"calibration-chars must be >= 1, got {calibration_chars}")
    plan = plan_artifacts(formats or list(FORMATS), quantization)
    source = load_source(Path(run_dir), log)
    if chat_format is not None:  # its own text must be characters the model knows
        ChatFormat.from_dict(dict(chat_format)).check_vocabulary(source.vocab)
    unable = c_target.unable(source.config) if ("c", "full-int8") in plan else None
    if unable and len(formats or FORMATS) > 1 and len(plan) > 1:  # `--format all`, no compiler
        plan.remove(("c", "full-int8"))
        log(f"left out char_lstm.c: {unable}")
    elif unable:
        raise ExportError(f"cannot make char_lstm.c: {unable}")
    run_name = source.info.get("run_name") or source.path.resolve().name
    if out_dir is None:
        out_dir = Path("exported") / run_name if source.is_run else source.path
    out_dir = Path(out_dir)
    previous, stale = _check_target_folder(out_dir, existing_export(out_dir), source, plan, force)
    plan = _with_inputs(plan, previous)
    corpus = open_training_data(source.data, source.val_fraction, log=log)
    if corpus.vocab != source.vocab:
        unknown = [ch for ch in corpus.vocab.chars if ch not in source.vocab.index]
        raise ExportError(
            "the training text's characters are not the model's vocabulary"
            + (f" ({unknown[0]!r} is unknown)" if unknown else "")
            + "; is this the corpus the model was trained on?"
        )
    return source, plan, out_dir, previous, stale, corpus


def _convert_and_validate(
    job: ExportJob,
    target: Any,
    name: str,
    quant: str,
    tokens: np.ndarray | None,
    reference: np.ndarray | None,
    bpc_tolerance: float | None,
) -> tuple[Any, Any]:
    """One file made and checked: no control flow, and validated in each of its backends
    (the last backend's result is the manifest's `validation`)."""
    converted = target.convert(job, quant)
    job.made[name] = converted
    loops = target.op_types(converted.data) & CONTROL_FLOW_OPS if target.op_types else set()
    if loops:
        raise ExportError(f"{name} contains control-flow ops {sorted(loops)}")
    result = None
    if tokens is not None and reference is not None:
        source = job.source
        tolerance = bpc_tolerance if bpc_tolerance is not None else BPC_TOLERANCE[quant]
        *others, last = target.backends(converted, job)
        for backend in [*others, last]:
            result = validate_backend(
                backend, reference, source.config, tokens, quant, tolerance,
                source.reference_name,
            )  # fmt: skip
            check(job.log, name, backend.name, result)
            if backend is not last:  # e.g. the full-int8 model in LiteRT, then TFLM
                label = runtime_named(backend.name).label
                converted.extra[f"validation_{label}"] = result.to_dict()
    return converted, result


def export_run(
    run_dir: Path,
    out_dir: Path | None = None,
    formats: list[str] | None = None,
    quantization: str = "none",
    validate: bool = True,
    bpc_tolerance: float | None = None,
    force: bool = False,
    log: Log = print,
    command: str | None = None,
    calibration_chars: int = micro.CALIBRATION_CHARS,
    calibration_data: Path | None = None,
    limits: micro.MicroLimits | None = None,
    chat_format: Mapping[str, Any] | None = None,
) -> tuple[Path, list[ExportedArtifact]]:
    """Export `run_dir` (a run, or an exported folder) into `out_dir` (default
    exported/<run name>; an exported folder gains the variants itself), adding to its
    manifest. `bpc_tolerance` None uses BPC_TOLERANCE per quantization. The full-int8 variant
    is calibrated on `calibration_chars` of the run's training text (or `calibration_data`).
    """
    source, plan, out_dir, previous, stale, corpus = _describe(
        run_dir, out_dir, formats, quantization, bpc_tolerance, force, log, calibration_chars,
        chat_format,
    )  # fmt: skip
    tokens = reference = None
    if validate:
        steps = min(VALIDATION_STEPS, len(corpus.val) - 1)
        tokens = validation_tokens(corpus.val, steps, VALIDATION_STREAMS)
        reference = source.reference_logits(tokens)

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".export-", dir=out_dir.parent))
    try:
        job = ExportJob(
            source, staging, corpus.train, calibration_chars, calibration_data,
            limits or micro.MicroLimits(), log, corpus.val, out_dir, previous,
        )  # fmt: skip
        artifacts = []
        for fmt, quant in plan:
            name = artifact_name(fmt, quant)
            converted, result = _convert_and_validate(
                job, TARGETS[(fmt, quant)], name, quant, tokens, reference, bpc_tolerance
            )
            artifact = ExportedArtifact(
                name, fmt, quant, converted.data, result, converted.extra, converted.files
            )
            try:
                for file, content in ((name, converted.data), *converted.files.items()):
                    (staging / file).write_bytes(content)
            except OSError as exc:  # a full disk: the export folder is not touched yet
                raise storage_error(exc, out_dir / name) from None
            artifacts.append(artifact)

        # commit
        manifest = build_manifest(
            previous, source.config, source.vocab, source.info, artifacts, command, chat_format
        )
        commit(staging, out_dir, artifacts, model_card(manifest, str(out_dir)), manifest)
        written = {file for a in artifacts for file in (a.file, *a.files)}
        for file in stale:  # the earlier weights' files, once the new manifest is in place
            if file not in written:
                (out_dir / file).unlink(missing_ok=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out_dir, artifacts


def _with_inputs(plan: list[tuple[str, str]], previous: Manifest | None) -> list[tuple[str, str]]:
    """The plan with each file a planned one is made from (the C target's full-int8 model)
    just before it, if neither the plan nor the folder has it."""
    out: list[tuple[str, str]] = []
    for fmt, quant in plan:
        source = file_for(fmt, quant).made_from
        if source is not None:
            needed = file_named(source)
            key = (needed.format, needed.quantization)
            held = previous is not None and source in previous.artifacts
            if key not in plan and key not in out and not held:
                out.append(key)
        out.append((fmt, quant))
    return out


def _check_target_folder(
    out_dir: Path,
    previous: Manifest | None,
    source: ExportSource,
    plan: list[tuple[str, str]],
    force: bool,
) -> tuple[Manifest | None, list[str]]:
    """Refuse to overwrite without --force. A folder exported from other weights (another
    run, or this run trained again) must not end up mixing them with these: --force replaces
    the whole export. Returns the manifest to add to, and the earlier files to remove once
    the new manifest is in place."""
    if previous is None:
        return None, []
    if not same_training(previous, source.info):
        if not force:
            old = previous.source
            raise ExportError(
                f"{out_dir} holds an export of other weights (run {old.get('run_name')}, "
                f"{old.get('steps')} steps); use --force to replace it or --out for another folder"
            )
        return None, companion_files(previous, previous.artifacts)
    clashes = [artifact_name(f, q) for f, q in plan if artifact_name(f, q) in previous.artifacts]
    if clashes and not force:
        raise ExportError(f"{out_dir} already has {', '.join(clashes)}; use --force to overwrite")
    return previous, []
