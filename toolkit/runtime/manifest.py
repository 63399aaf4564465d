"""The manifest of an exported model folder: everything a runtime in any language needs.

`manifest.json` is read and written here and nowhere else, as one typed, frozen `Manifest`:
the vocabulary, the model's shape, the step's tensors, every file with its checksum and
validation, and where the weights came from. No TensorFlow here: the runtime reads manifests.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from toolkit.config import ModelConfig
from toolkit.errors import ModelFileError
from toolkit.files import atomic_write_text, sha256_bytes
from toolkit.runtime.targets import FILES, file_format, runtime_named, variant_of
from toolkit.runtime.targets import FORMATS as FORMATS
from toolkit.runtime.targets import VARIANTS as TARGET_VARIANTS
from toolkit.vocabulary import Vocabulary

MANIFEST_NAME = "manifest.json"
FORMAT_VERSION = 1

# What toolkit/runtime/targets.py describes, as the manifest looks it up.
ARTIFACT_FILES: dict[tuple[str, str], str] = {(f.format, f.quantization): f.name for f in FILES}
# The user's word for each quantization (`generate --variant`, `export --quantize`) and the
# manifest's (`quantization`): fp32 is "none", fp16 is "float16".
VARIANTS = {v.name: v.quantization for v in TARGET_VARIANTS}
QUANTIZATIONS = tuple(VARIANTS.values())
DESCRIPTION = (
    "Single-step character LSTM with explicit state. Feed token ids one at a time; carry "
    "h_out/c_out back into h/c. Gate order i, f, c, o (Keras)."
)
STATE_LAYOUT = "[layers, batch, units]; zeros is the initial state"


def artifact_name(fmt: str, quantization: str) -> str:
    try:
        return ARTIFACT_FILES[(fmt, quantization)]
    except KeyError:
        supported = [variant_of(q) for q in QUANTIZATIONS if (fmt, q) in ARTIFACT_FILES]
        asked = variant_of(quantization) if quantization in QUANTIZATIONS else repr(quantization)
        raise ModelFileError(
            f"{fmt} has no {asked} variant; {fmt} supports: {', '.join(supported) or 'nothing'}"
        ) from None


@dataclass(frozen=True)
class Artifact:
    """One model file of the folder and what its export recorded."""

    file: str
    format: str
    quantization: str
    bytes: int
    sha256: str
    validation: Mapping[str, Any] | None = None
    exported_at: str | None = None
    # Target-specific fields, kept as they are: `micro` (TFLite Micro's tensor order,
    # quantization and arena), `c` (the C's quantization, sizes, header), `validation_litert`...
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def micro(self) -> Mapping[str, Any] | None:
        micro = self.extra.get("micro")
        return micro if isinstance(micro, Mapping) else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": self.format,
            "quantization": self.quantization,
            "bytes": self.bytes,
            "sha256": self.sha256,
            "validation": dict(self.validation) if self.validation is not None else None,
            **self.extra,
            "exported_at": self.exported_at,
        }

    @classmethod
    def from_dict(cls, file: str, entry: Mapping[str, Any]) -> Artifact:
        known = {"format", "quantization", "bytes", "sha256", "validation", "exported_at"}
        return cls(
            file=file,
            format=str(entry["format"]),
            quantization=str(entry["quantization"]),
            bytes=int(entry["bytes"]),
            sha256=str(entry["sha256"]),
            validation=entry.get("validation"),
            exported_at=entry.get("exported_at"),
            extra={k: v for k, v in entry.items() if k not in known},
        )


def model_config(sizes: Mapping[str, Any]) -> ModelConfig:
    """The model's sizes as recorded in a manifest or a run.json (KeyError, ValueError if not)."""
    return ModelConfig(
        vocab_size=int(sizes["vocab_size"]),
        embedding_dim=int(sizes["embedding_dim"]),
        units=int(sizes["units"]),
        layers=int(sizes["layers"]),
    )


def step_tensors(shape: ModelConfig) -> tuple[dict[str, Any], dict[str, Any]]:
    """The step graph's inputs and outputs: names, dtypes, shapes (None: the dynamic batch)."""
    state = [shape.layers, None, shape.units]
    inputs = {
        "token": {"dtype": "int32", "shape": [None]},
        "h": {"dtype": "float32", "shape": state},
        "c": {"dtype": "float32", "shape": state},
    }
    outputs = {
        "logits": {"dtype": "float32", "shape": [None, shape.vocab_size]},
        "h_out": {"dtype": "float32", "shape": state},
        "c_out": {"dtype": "float32", "shape": state},
    }
    return inputs, outputs


@dataclass(frozen=True)
class Manifest:
    """manifest.json, typed. `source` says where the weights came from (run, preset, losses,
    the commands that made the files); `versions` the libraries that made them."""

    name: str
    vocab: tuple[str, ...]
    model: ModelConfig
    artifacts: Mapping[str, Artifact]
    source: Mapping[str, Any] = field(default_factory=dict)
    versions: Mapping[str, str] = field(default_factory=dict)
    description: str = DESCRIPTION
    state_layout: str = STATE_LAYOUT
    # tokenizer.json's entry ({"file", "bytes", "sha256"}); the chat turn format, if set at
    # export (toolkit/serve/chat.py reads it; absent: the default format).
    tokenizer: Mapping[str, Any] | None = None
    chat_format: Mapping[str, Any] | None = None

    @property
    def vocabulary(self) -> Vocabulary:
        return Vocabulary(self.vocab)

    # ----------------------------------------------------------------- reading

    @classmethod
    def read(cls, model_dir: Path) -> Manifest:
        """The folder's manifest; a one-line ModelFileError for anything a runtime cannot use."""
        model_dir = Path(model_dir)
        path = model_dir / MANIFEST_NAME
        if not model_dir.is_dir():
            raise ModelFileError(f"model directory not found: {model_dir}")
        if not path.exists():
            raise ModelFileError(f"{model_dir} has no {MANIFEST_NAME}; is it an exported model?")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ModelFileError(f"{path} is not valid JSON: {exc}") from None
        return cls.from_dict(data, str(path))

    @classmethod
    def from_dict(cls, data: Any, where: str = MANIFEST_NAME) -> Manifest:
        if not isinstance(data, dict):
            raise ModelFileError(f"{where} is not a JSON object")
        version = data.get("format_version")
        if version != FORMAT_VERSION:
            raise ModelFileError(
                f"{where} has manifest format version {version!r}; this toolkit reads "
                f"version {FORMAT_VERSION}"
            )
        for key in ("vocab", "model", "artifacts"):
            if key not in data:
                raise ModelFileError(f"{where} is missing {key!r}")
        try:
            model = model_config(data["model"])
            artifacts = {
                name: Artifact.from_dict(name, entry) for name, entry in data["artifacts"].items()
            }
            vocab = tuple(str(ch) for ch in data["vocab"])
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ModelFileError(f"{where} is not a valid manifest: {exc!r}") from None
        return cls(
            name=str(data.get("name") or "model"),
            vocab=vocab,
            model=model,
            artifacts=artifacts,
            source=dict(data.get("source") or {}),
            versions=dict(data.get("versions") or {}),
            description=str(data.get("description") or DESCRIPTION),
            state_layout=str(data.get("state_layout") or STATE_LAYOUT),
            tokenizer=_optional_object(data, "tokenizer", where),
            chat_format=_optional_object(data, "chat_format", where),
        )

    # ----------------------------------------------------------------- writing

    def to_dict(self) -> dict[str, Any]:
        inputs, outputs = step_tensors(self.model)
        return {
            "format_version": FORMAT_VERSION,
            "name": self.name,
            "description": self.description,
            "vocab": list(self.vocab),
            "model": self.model.sizes(),
            "inputs": inputs,
            "outputs": outputs,
            "state_layout": self.state_layout,
            "artifacts": {name: a.to_dict() for name, a in sorted(self.artifacts.items())},
            "source": dict(self.source),
            "versions": dict(self.versions),
            **({"tokenizer": dict(self.tokenizer)} if self.tokenizer else {}),
            **({"chat_format": dict(self.chat_format)} if self.chat_format else {}),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, ensure_ascii=False)

    def write(self, model_dir: Path) -> None:
        atomic_write_text(Path(model_dir) / MANIFEST_NAME, self.to_json())

    def with_artifacts(self, artifacts: Mapping[str, Artifact]) -> Manifest:
        return dataclasses.replace(self, artifacts=dict(artifacts))

    # ----------------------------------------------------------------- finding files

    def has(self, fmt: str, quantization: str) -> bool:
        return ARTIFACT_FILES.get((fmt, quantization)) in self.artifacts

    def artifact(self, fmt: str, quantization: str) -> Artifact:
        name = artifact_name(fmt, quantization)
        entry = self.artifacts.get(name)
        if entry is None:
            have = ", ".join(sorted(self.artifacts)) or "none"
            raise ModelFileError(
                f"this model folder has no {name} (has: {have}); create it with: "
                f"toolkit export RUN_DIR --format {fmt} --quantize {variant_of(quantization)}"
            )
        return entry

    def resolve_variant(self, runtime: str, variant: str) -> str:
        """'auto' picks the most precise variant of the runtime's format (fp32 first)."""
        target = runtime_named(runtime)
        if target.only is not None:  # TFLite Micro and the C run the full-integer model only
            if variant not in ("auto", target.only):
                raise ModelFileError(f"the {runtime} runtime runs only the {target.only} variant")
            return target.only
        if variant != "auto":
            return variant
        fmt = file_format(runtime)
        for choice in TARGET_VARIANTS:
            if not choice.integer_only and self.has(fmt, choice.quantization):
                return choice.name
        if target.fallback is not None and self.has(*target.fallback):
            return variant_of(target.fallback[1])
        have = ", ".join(sorted(self.artifacts)) or "none"
        raise ModelFileError(
            f"this model folder has no {fmt} model (has: {have}); "
            f"create one with: toolkit export RUN_DIR --format {fmt}"
        )

    def runtime_artifact(self, runtime: str, quantization: str) -> Artifact:
        """The file `runtime` runs at `quantization`: its own, else its fallback's."""
        target = runtime_named(runtime)
        if target.format is None:
            raise ModelFileError(f"the {runtime} runtime reads a run directory, not a model folder")
        fallback = target.fallback
        if (
            fallback is not None
            and fallback[1] == quantization
            and not self.has(target.format, quantization)
        ):
            return self.artifact(*fallback)
        return self.artifact(target.format, quantization)


def _optional_object(data: Mapping[str, Any], key: str, where: str) -> dict[str, Any] | None:
    value = data.get(key)
    if value is not None and not isinstance(value, dict):
        raise ModelFileError(f"{where}: {key!r} must be a JSON object")
    return value


def read_verified(model_dir: Path, artifact: Artifact) -> bytes:
    """The artifact's bytes, after checking them against the manifest's sha256."""
    path = Path(model_dir) / artifact.file
    if not path.exists():
        raise ModelFileError(f"model file missing: {path}")
    data = path.read_bytes()
    if sha256_bytes(data) != artifact.sha256:
        raise ModelFileError(
            f"model file {path} does not match its manifest checksum (corrupted or replaced)"
        )
    return data
