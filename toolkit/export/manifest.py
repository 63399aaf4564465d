"""The export side of the manifest: what an export folder already holds, what this export
adds to it, and moving the validated files into place (the manifest last).

The manifest itself is read and written by toolkit/runtime/manifest.py.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from toolkit import __version__
from toolkit.config import ModelConfig
from toolkit.errors import ExportError, ModelFileError
from toolkit.export.tokenizer import TOKENIZER_NAME, tokenizer_entry, tokenizer_json
from toolkit.export.validate import Validation
from toolkit.files import sha256_bytes
from toolkit.machine import library_versions
from toolkit.runtime.manifest import FORMAT_VERSION, MANIFEST_NAME, Artifact, Manifest
from toolkit.vocabulary import Vocabulary


@dataclass
class ExportedArtifact:
    """A file this export made, validated, still in the staging folder."""

    file: str
    format: str
    quantization: str
    data: bytes = field(repr=False)
    validation: Validation | None
    extra: dict[str, Any] = field(default_factory=dict)  # manifest fields of this target
    files: dict[str, bytes] = field(default_factory=dict)  # companion files (C sources)

    @property
    def bytes(self) -> int:
        return len(self.data)

    def entry(self) -> Artifact:
        return Artifact(
            file=self.file,
            format=self.format,
            quantization=self.quantization,
            bytes=len(self.data),
            sha256=sha256_bytes(self.data),
            validation=self.validation.to_dict() if self.validation else None,
            exported_at=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            extra=self.extra,
        )


def existing_export(out_dir: Path) -> Manifest | None:
    """The manifest of an export folder there (None: nothing there yet, or a manifest of an
    older format, which is replaced); an ExportError for a folder that is not an export."""
    path = out_dir / MANIFEST_NAME
    if not path.exists():
        if out_dir.exists() and any(out_dir.iterdir()):
            raise ExportError(f"{out_dir} exists and is not an export folder (no {MANIFEST_NAME})")
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ExportError(f"{path} is not valid JSON; remove it or use another --out") from None
    if not isinstance(data, dict) or data.get("format_version") != FORMAT_VERSION:
        return None
    try:
        return Manifest.from_dict(data, str(path))
    except ModelFileError as exc:
        raise ExportError(str(exc)) from None


def same_training(manifest: Manifest, info: Mapping[str, Any]) -> bool:
    """Whether an existing export was made from the same weights as `info` describes."""
    previous = manifest.source
    return all(previous.get(k) == info.get(k) for k in ("run_name", "steps", "best_val_loss"))


def build_manifest(
    previous: Manifest | None,
    config: ModelConfig,
    vocab: Vocabulary,
    info: Mapping[str, Any],
    artifacts: list[ExportedArtifact],
    command: str | None,
    chat_format: Mapping[str, Any] | None = None,
) -> Manifest:
    """The folder's manifest after this export: the previous entries, this export's on top."""
    entries = dict(previous.artifacts) if previous else {}
    made = {art.file for art in artifacts}
    entries.update({art.file: art.entry() for art in artifacts})
    # The commands that made the files still here: once every earlier artifact is replaced
    # (a forced re-export of everything), none of the earlier ones did.
    earlier = list(previous.source.get("commands", [])) if previous else []
    if previous is None or not set(previous.artifacts) - made:
        earlier = []
    return Manifest(
        name=previous.name if previous else str(info["run_name"]),
        vocab=vocab.chars,
        model=config,
        artifacts=entries,
        source={**info, "commands": [*earlier, *([command] if command else [])]},
        versions={
            "toolkit": __version__,
            "python": platform.python_version(),
            **library_versions(),
        },
        tokenizer=tokenizer_entry(vocab),
        chat_format=chat_format or (previous.chat_format if previous else None),
    )


def companion_files(manifest: Manifest | None, names: Iterable[str]) -> list[str]:
    """Each named artifact's file and the companion files its export recorded."""
    out = []
    for name in names:
        out.append(name)
        artifact = manifest.artifacts.get(name) if manifest else None
        micro = artifact.micro if artifact else None
        if micro and "c_files" in micro:
            out.extend(micro["c_files"])
        c = artifact.extra.get("c") if artifact else None
        if isinstance(c, Mapping) and "files" in c:  # char_lstm.h
            out.extend(c["files"])
    return out


def commit(staging: Path, out_dir: Path, artifacts: list[ExportedArtifact], card: str,
           manifest: Manifest) -> None:  # fmt: skip
    """Move validated files into place: each file by atomic rename, then the manifest, then
    the model card written from it."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for art in artifacts:
        for name in (art.file, *art.files):
            os.replace(staging / name, out_dir / name)
    (staging / TOKENIZER_NAME).write_text(tokenizer_json(manifest.vocabulary), encoding="utf-8")
    os.replace(staging / TOKENIZER_NAME, out_dir / TOKENIZER_NAME)
    manifest.write(out_dir)
    (staging / "README.md").write_text(card, encoding="utf-8")
    os.replace(staging / "README.md", out_dir / "README.md")
