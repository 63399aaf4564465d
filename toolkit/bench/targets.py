"""What the benchmark measures: every runtime by name, and a step closure for each.

Exported runtimes step a file of the model folder; the Keras rows step the run's Keras model
(`model.predict`, `model(x)`) and the exporter's compiled tf.function, for comparison.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from toolkit.logs import import_tensorflow
from toolkit.runtime.backends import open_backend
from toolkit.runtime.backends.keras import load_keras_model, read_run
from toolkit.runtime.lstm import fold_weights
from toolkit.runtime.manifest import Manifest
from toolkit.runtime.targets import RUNTIMES as TARGET_RUNTIMES
from toolkit.runtime.targets import variant_named

# Row name -> (kind, runtime, quantization); the order of the report. The Keras rows step the
# run's model for comparison; every other row is a runtime's `bench` variant in
# toolkit/runtime/targets.py, stepping a file of the model folder.
KERAS_ROWS: dict[str, tuple[str, str, str]] = {
    "keras-predict": ("keras", "predict", "none"),
    "keras-call": ("keras", "call", "none"),
    "tf-function": ("keras", "tf.function", "none"),
}
RUNTIMES: dict[str, tuple[str, str, str]] = {
    **KERAS_ROWS,
    **{
        row: ("exported", runtime.name, variant_named(variant).quantization)
        for runtime in TARGET_RUNTIMES
        for variant, row in runtime.bench.items()
    },
}
GENERATE_RUNTIME = {  # row name -> (generate --runtime, --variant)
    "keras-call": ("keras", "fp32"),
    **{
        row: (runtime.name, variant)
        for runtime in TARGET_RUNTIMES
        for variant, row in runtime.bench.items()
    },
}
THREADED = {runtime.name for runtime in TARGET_RUNTIMES if runtime.threaded}
StepFn = Callable[[], Any]


class TFFunctionBackend:
    """The compiled tf.function step (StepModel) behind the step interface, for comparison."""

    name = "tf-function"

    def __init__(self, module: Any) -> None:
        self.module = module

    def step(self, token: np.ndarray, h: np.ndarray, c: np.ndarray) -> Any:
        out = self.module.step(token, h, c)
        return out["logits"].numpy(), out["h_out"].numpy(), out["c_out"].numpy()


class StepFactory:
    """Builds one zero-argument step closure per (runtime, batch, threads), inputs bound."""

    def __init__(self, run_dir: Path, model_dir: Path) -> None:
        from toolkit.export.step_graph import make_step_module
        from toolkit.train.model import lstm_weights

        self.run_dir = run_dir
        self.model_dir = model_dir
        self.manifest = Manifest.read(model_dir)
        self.model = load_keras_model(run_dir)
        self.vocab, self.config, self.info = read_run(run_dir)
        self.folded = fold_weights(lstm_weights(self.model, self.config), self.config.layers)
        self.module = make_step_module(self.folded, self.config)

    def make(self, runtime: str, batch: int, threads: int) -> StepFn:
        kind, fmt, quant = RUNTIMES[runtime]
        cfg = self.config
        token = np.arange(batch, dtype=np.int32) % cfg.vocab_size
        h = np.zeros(cfg.state_shape(batch), np.float32)
        if kind == "keras":
            return self._keras_step(fmt, token, h)
        backend = open_backend(
            self.model_dir, self.manifest, fmt, quant, threads if fmt in THREADED else 1
        )
        step = backend.step
        return lambda: step(token, h, h)

    def _keras_step(self, how: str, token: np.ndarray, h: np.ndarray) -> StepFn:
        tf = import_tensorflow()

        if how == "tf.function":
            module = self.module
            t, hh = tf.constant(token), tf.constant(h)
            return lambda: module.step(t, hh, hh)
        inputs = {
            "tokens": token.reshape(-1, 1),
            "h": np.ascontiguousarray(h.transpose(1, 0, 2)),
            "c": np.ascontiguousarray(h.transpose(1, 0, 2)),
        }
        model = self.model
        if how == "predict":
            return lambda: model.predict(inputs, verbose=0, batch_size=len(token))
        return lambda: model(inputs, training=False)

    def weight_bytes(self) -> int:
        """fp32 bytes a batch-1 step must read: every matrix but the gathered table row."""
        total = 0
        for name, w in self.folded.items():
            total += w[:1].nbytes if name == "table_0" else w.nbytes
        return total
