"""TensorFlow Lite Micro's own interpreter (PyPI `tflite-micro`), run on the host."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from toolkit.config import ModelConfig
from toolkit.errors import ModelFileError, first_line
from toolkit.logs import native_stderr_hidden
from toolkit.runtime.backends.tflite import QuantizedIO
from toolkit.runtime.manifest import Artifact
from toolkit.runtime.step import StepOutput


class TFLMBackend:
    """TensorFlow Lite Micro has no tensor names: inputs and outputs come in subgraph order,
    which the exporter records in the manifest (`micro.inputs` / `micro.outputs`) and this
    backend follows. The model has batch 1 and int8 state: rows run one after another, and
    the state is carried as float (`QuantizedIO`)."""

    name = "tflm"

    @classmethod
    def from_artifact(cls, data: bytes, artifact: Artifact, shape: ModelConfig) -> TFLMBackend:
        micro = artifact.micro
        if micro is None:
            raise ModelFileError(f"{artifact.file} has no micro section in the manifest")
        state = [shape.layers, 1, shape.units]
        shapes = {t["name"]: t["shape"] for t in micro["inputs"]}
        if shapes.get("h") != state or shapes.get("c") != state:
            raise ModelFileError(
                f"{artifact.file} takes state {shapes.get('h')}, the manifest's model says {state}"
            )
        return cls(data, micro)

    def __init__(self, data: bytes, micro: Mapping[str, Any]) -> None:
        try:
            from tflite_micro.python.tflite_micro import runtime as tflm
        except ImportError:
            raise ModelFileError(
                "tflite-micro is not installed: pip install 'char-lstm-toolkit[micro]'"
            ) from None
        try:
            with native_stderr_hidden():
                self.interpreter = tflm.Interpreter.from_bytes(
                    data, arena_size=int(micro["arena_bytes"])
                )
        except Exception as exc:  # RuntimeError with the allocator's report
            raise ModelFileError(f"TFLite Micro cannot load the model: {first_line(exc)}") from None
        self.inputs = [t["name"] for t in micro["inputs"]]
        self.outputs = [t["name"] for t in micro["outputs"]]
        if sorted(self.inputs) != ["c", "h", "token"] or sorted(self.outputs) != [
            "c_out",
            "h_out",
            "logits",
        ]:
            raise ModelFileError(f"unexpected micro signature in the manifest: {micro}")
        self.codec = QuantizedIO(
            {
                t["name"]: (float(t["scale"]), int(t["zero_point"]))
                for t in [*micro["inputs"], *micro["outputs"]]
                if t["dtype"] == "int8"
            }
        )

    def _step_raw(self, token: np.ndarray, h: np.ndarray, c: np.ndarray) -> StepOutput:
        feeds = {"token": token.astype(np.int32), "h": h, "c": c}
        for index, name in enumerate(self.inputs):
            self.interpreter.set_input(feeds[name], index)
        self.interpreter.invoke()
        out = {name: self.interpreter.get_output(i) for i, name in enumerate(self.outputs)}
        return out["logits"], out["h_out"], out["c_out"]

    def step(self, token: np.ndarray, h: np.ndarray, c: np.ndarray) -> StepOutput:
        return self.codec.step_rows(self._step_raw, token, h, c)


def open_file(
    model_dir: Path, artifact: Artifact, data: bytes, model: ModelConfig, threads: int
) -> TFLMBackend:
    return TFLMBackend.from_artifact(data, artifact, model)
