"""What an export is made from, and the reference it is validated against.

A trained run: the Keras model is the reference, its weights folded into the step layout.
An exported folder: its fp32 weights (weights.npz, else model.onnx), which were validated
against Keras when that folder was exported, so that a model folder alone is enough to add
a variant for a new target.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from toolkit.config import ModelConfig
from toolkit.errors import ExportError, ModelFileError
from toolkit.export.validate import keras_reference_logits, step_logits
from toolkit.runtime.backends.keras import load_keras_model
from toolkit.runtime.backends.numpy import NumpyBackend
from toolkit.runtime.lstm import fold_weights
from toolkit.runtime.manifest import MANIFEST_NAME, Manifest, read_verified
from toolkit.train.run_dir import check_run_dir, load_run_config
from toolkit.vocabulary import Vocabulary


@dataclass
class ExportSource:
    path: Path
    config: ModelConfig
    vocab: Vocabulary
    folded: dict[str, np.ndarray]
    info: dict[str, Any]  # the manifest's `source` fields: run name, preset, losses, command
    data: Path | None  # training corpus (None: the bundled one)
    val_fraction: float
    reference_name: str  # "Keras", or the fp32 file the weights came from
    keras_model: Any = None

    @property
    def is_run(self) -> bool:
        return self.keras_model is not None

    def reference_logits(self, tokens: np.ndarray) -> np.ndarray:
        if self.keras_model is not None:
            return keras_reference_logits(self.keras_model, self.config, tokens)
        return step_logits(NumpyBackend(self.folded, self.config.layers), self.config, tokens)


def load_source(path: Path, log: Callable[[str], None] = print) -> ExportSource:
    """A run directory (has run.json) or an exported model folder (has manifest.json)."""
    path = Path(path)
    if not (path / "run.json").exists() and (path / MANIFEST_NAME).exists():
        return _from_export(path, log)
    return _from_run(path)


def _from_run(path: Path) -> ExportSource:
    from toolkit.train.model import lstm_weights  # imports TensorFlow

    info = check_run_dir(path)
    try:
        model = load_keras_model(path)
    except ModelFileError as exc:
        raise ExportError(str(exc)) from None
    config = ModelConfig(**info["model"])
    val_fraction = load_run_config(path).val_fraction
    source_info: dict[str, Any] = {
        "run_dir": str(path),
        "run_name": path.resolve().name,
        "preset": info.get("preset"),
        "best_val_loss": info.get("best_val_loss"),
        "best_val_bpc": info.get("best_val_bpc"),
        "steps": info.get("steps"),
        "train_command": info.get("command"),
        "data": info.get("data"),
        "val_fraction": val_fraction,
    }
    return ExportSource(
        path=path,
        config=config,
        vocab=Vocabulary.load(path / "vocab.json"),
        folded=fold_weights(lstm_weights(model, config), config.layers),
        info=source_info,
        data=Path(info["data"]) if info.get("data") else None,
        val_fraction=val_fraction,
        reference_name="Keras",
        keras_model=model,
    )


def _from_export(path: Path, log: Callable[[str], None]) -> ExportSource:
    from toolkit.export import onnx

    manifest = Manifest.read(path)
    config = manifest.model
    if manifest.has("numpy", "none"):  # the weights file first: it needs no graph reading
        artifact = manifest.artifact("numpy", "none")
        folded = NumpyBackend.from_bytes(read_verified(path, artifact), config.layers).w
    elif manifest.has("onnx", "none"):
        artifact = manifest.artifact("onnx", "none")
        folded = onnx.folded_weights(read_verified(path, artifact), config)
    else:
        raise ExportError(
            f"{path} has no fp32 ONNX or numpy model to export from; export from the run "
            "directory instead"
        )
    info = dict(manifest.source)
    info.pop("commands", None)
    log(
        f"exporting from the fp32 weights in {path / artifact.file}; validation reference: "
        "those weights (they matched Keras when exported)"
    )
    return ExportSource(
        path=path,
        config=config,
        vocab=manifest.vocabulary,
        folded=folded,
        info=info,
        data=Path(info["data"]) if info.get("data") else None,
        val_fraction=float(info.get("val_fraction") or 0.1),
        reference_name=artifact.file,
    )
