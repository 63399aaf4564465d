"""The manifest of an exported model folder: everything a runtime in any language needs.

No TensorFlow here: the runtime reads manifests.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from toolkit.errors import ModelFileError

MANIFEST_NAME = "manifest.json"
FORMAT_VERSION = 1

# (format, quantization) -> file name. One folder holds every variant side by side.
ARTIFACT_FILES: dict[tuple[str, str], str] = {
    ("onnx", "none"): "model.onnx",
    ("onnx", "int8"): "model.int8.onnx",
    ("tflite", "none"): "model.tflite",
    ("tflite", "float16"): "model.fp16.tflite",
    ("tflite", "int8"): "model.int8.tflite",
    # Full-integer (int8 weights and activations, batch 1) for microcontrollers: TFLite Micro.
    ("tflite", "full-int8"): "model.full-int8.tflite",
    ("numpy", "none"): "weights.npz",
}
# User-facing variant names (generate --variant) to quantization names (export --quantize).
VARIANTS = {"fp32": "none", "fp16": "float16", "int8": "int8", "full-int8": "full-int8"}


def file_format(runtime: str) -> str:
    """The format of the file a runtime reads: TFLite Micro runs .tflite files."""
    return "tflite" if runtime == "tflm" else runtime


def resolve_variant(manifest: dict[str, Any], fmt: str, variant: str) -> str:
    """'auto' picks the most precise variant of `fmt` present in the folder (fp32 first)."""
    if fmt == "tflm":  # TFLite Micro runs the full-integer model and nothing else
        if variant not in ("auto", "full-int8"):
            raise ModelFileError("the tflm runtime runs only the full-int8 variant")
        return "full-int8"
    if variant != "auto":
        return variant
    for name, quantization in VARIANTS.items():
        if quantization == "full-int8":
            continue  # batch 1 and int8 state: chosen only when asked for
        if ARTIFACT_FILES.get((fmt, quantization)) in manifest["artifacts"]:
            return name
    have = ", ".join(sorted(manifest["artifacts"])) or "none"
    raise ModelFileError(
        f"this model folder has no {fmt} model (has: {have}); "
        f"create one with: toolkit export RUN_DIR --format {fmt}"
    )


def artifact_name(fmt: str, quantization: str) -> str:
    try:
        return ARTIFACT_FILES[(fmt, quantization)]
    except KeyError:
        supported = sorted(q for f, q in ARTIFACT_FILES if f == fmt)
        raise ModelFileError(
            f"no {fmt} variant with quantization {quantization!r}; "
            f"{fmt} supports: {', '.join(supported) or 'nothing'}"
        ) from None


def read_manifest(model_dir: Path) -> dict[str, Any]:
    path = model_dir / MANIFEST_NAME
    if not model_dir.is_dir():
        raise ModelFileError(f"model directory not found: {model_dir}")
    if not path.exists():
        raise ModelFileError(f"{model_dir} has no {MANIFEST_NAME}; is it an exported model?")
    try:
        manifest: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelFileError(f"{path} is not valid JSON: {exc}") from None
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise ModelFileError(
            f"{path} has manifest format version {version!r}; this toolkit reads "
            f"version {FORMAT_VERSION}"
        )
    for key in ("vocab", "model", "artifacts"):
        if key not in manifest:
            raise ModelFileError(f"{path} is missing {key!r}")
    return manifest


def find_artifact(manifest: dict[str, Any], fmt: str, quantization: str) -> dict[str, Any]:
    name = artifact_name(fmt, quantization)
    entry = manifest["artifacts"].get(name)
    if entry is None:
        have = ", ".join(sorted(manifest["artifacts"])) or "none"
        raise ModelFileError(
            f"this model folder has no {name} (has: {have}); "
            f"create it with: toolkit export RUN_DIR --format {fmt} --quantize {quantization}"
        )
    return {"file": name, **entry}


def sha256_bytes(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


def read_verified(model_dir: Path, entry: dict[str, Any]) -> bytes:
    """The artifact's bytes, after checking them against the manifest's sha256."""
    path = model_dir / entry["file"]
    if not path.exists():
        raise ModelFileError(f"model file missing: {path}")
    data = path.read_bytes()
    if sha256_bytes(data) != entry.get("sha256"):
        raise ModelFileError(
            f"model file {path} does not match its manifest checksum (corrupted or replaced)"
        )
    return data
