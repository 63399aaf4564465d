"""The `keras` runtime: a run directory's Keras model stepped with explicit state via model(x).

The one loader of a run's Keras model (export and bench use it too). It imports TensorFlow
when a model is opened, never at import. `model.predict` costs tens of milliseconds a call;
a direct `model(x)` call is what a step loop should use.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from toolkit.config import ModelConfig
from toolkit.errors import ModelFileError, first_line
from toolkit.runtime.manifest import model_config
from toolkit.runtime.step import StepOutput
from toolkit.vocabulary import Vocabulary


class KerasBackend:
    """Adapts the Keras model ([batch, layers, units] state) to the step interface."""

    name = "keras"

    def __init__(self, model: Any) -> None:
        self.model = model

    def step(self, token: np.ndarray, h: np.ndarray, c: np.ndarray) -> StepOutput:
        out = self.model(
            {
                "tokens": token.reshape(-1, 1),
                "h": np.ascontiguousarray(h.transpose(1, 0, 2)),
                "c": np.ascontiguousarray(c.transpose(1, 0, 2)),
            },
            training=False,
        )
        logits = np.asarray(out["logits"])[:, -1, :]
        h_out = np.asarray(out["h_out"]).transpose(1, 0, 2)
        c_out = np.asarray(out["c_out"]).transpose(1, 0, 2)
        return logits, np.ascontiguousarray(h_out), np.ascontiguousarray(c_out)


def float32_model(model: Any) -> Any:
    """`model` itself if every layer computes in float32, else a float32 copy with the same
    weights (a model trained in bf16 is validated, stepped and exported in float32)."""
    if all(layer.compute_dtype == "float32" for layer in model.layers):
        return model
    import keras

    config = model.get_config()
    for layer in config["layers"]:
        layer["config"]["dtype"] = "float32"
    twin = keras.Model.from_config(config)
    twin.set_weights(model.get_weights())
    return twin


def load_keras_model(run_dir: Path) -> Any:
    """The float32 Keras model of a run directory (model.keras)."""
    from toolkit.logs import import_tensorflow

    import_tensorflow()
    import keras

    path = Path(run_dir) / "model.keras"
    if not path.exists():
        raise ModelFileError(f"no Keras model at {path}; is {run_dir} a run directory?")
    try:
        model = keras.models.load_model(path, compile=False)
    except Exception as exc:  # keras raises many types for a damaged file
        raise ModelFileError(f"cannot load {path}: {first_line(exc)}") from None
    return float32_model(model)


def read_run(run_dir: Path) -> tuple[Vocabulary, ModelConfig, dict[str, Any]]:
    """A run directory's vocabulary, model shape and run.json."""
    run_dir = Path(run_dir)
    if not (run_dir / "run.json").exists():
        raise ModelFileError(f"not a run directory (no run.json): {run_dir}")
    try:
        info: dict[str, Any] = json.loads((run_dir / "run.json").read_text())
        shape = model_config(info["model"])
    except (json.JSONDecodeError, KeyError, TypeError, ValueError):
        raise ModelFileError(f"{run_dir / 'run.json'} is unreadable") from None
    return Vocabulary.load(run_dir / "vocab.json"), shape, info
