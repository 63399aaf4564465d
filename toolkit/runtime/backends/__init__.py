"""Step backends, one module each (numpy, onnx, tflite, tflm, c, keras): the step of
toolkit/runtime/step.py on a model file. Each imports its library (onnxruntime, LiteRT,
TFLite Micro, TensorFlow for keras; c compiles the generated C) only when it is opened, so
`import toolkit.runtime` imports none of them.

Each module is named after its runtime in toolkit/runtime/targets.py and has
`open_file(model_dir, artifact, data, model, threads) -> StepBackend`, the file's bytes
already checked against the manifest.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from toolkit.errors import ModelFileError
from toolkit.runtime.manifest import Manifest, read_verified
from toolkit.runtime.step import StepBackend
from toolkit.runtime.targets import RUNTIME_NAMES, runtime_named

# Every runtime `load` and `toolkit generate --runtime` accept; keras reads a run directory.
RUNTIMES = RUNTIME_NAMES


def open_backend(
    model_dir: Path, manifest: Manifest, runtime: str, quantization: str, threads: int = 1
) -> StepBackend:
    """The backend of `runtime` on the folder's file of that quantization, checksum verified."""
    if runtime not in RUNTIMES:
        raise ModelFileError(f"unknown runtime {runtime!r}; choose from {', '.join(RUNTIMES)}")
    target = runtime_named(runtime)
    artifact = manifest.runtime_artifact(runtime, quantization)
    data = read_verified(model_dir, artifact)
    module = importlib.import_module(f"{__name__}.{target.name}")
    backend: StepBackend = module.open_file(model_dir, artifact, data, manifest.model, threads)
    return backend
