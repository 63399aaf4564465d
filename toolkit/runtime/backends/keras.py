"""The `keras` runtime: the trained Keras model stepped with explicit state via model(x).

It imports TensorFlow, so it lives outside toolkit/runtime. `model.predict` costs tens of
milliseconds a call; a direct `model(x)` call is what a step loop should use.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from toolkit.errors import ModelFileError
from toolkit.runtime.backends import StepOutput
from toolkit.runtime.generator import Generator


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


def load_keras_model(run_dir: Path) -> Any:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras

    path = run_dir / "model.keras"
    if not path.exists():
        raise ModelFileError(f"no Keras model at {path}; is {run_dir} a run directory?")
    try:
        return keras.models.load_model(path, compile=False)
    except Exception as exc:  # keras raises many types for a damaged file
        raise ModelFileError(f"cannot load {path}: {str(exc).splitlines()[0]}") from None


def load_keras_generator(run_dir: Path) -> Generator:
    if not (run_dir / "run.json").exists():
        raise ModelFileError(f"not a run directory (no run.json): {run_dir}")
    info = json.loads((run_dir / "run.json").read_text())
    vocab = json.loads((run_dir / "vocab.json").read_text(encoding="utf-8"))
    m = info["model"]
    from toolkit.config import ModelConfig
    from toolkit.model import float32_model

    model = float32_model(load_keras_model(run_dir), ModelConfig(**m))
    return Generator(KerasBackend(model), vocab, int(m["layers"]), int(m["units"]), "keras", "fp32")
