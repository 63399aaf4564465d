"""Step backends, one module each (numpy, onnx, tflite, tflm, c, keras): the step of
toolkit/runtime/step.py on a model file. Each imports its library (onnxruntime, LiteRT,
TFLite Micro, TensorFlow for keras; c compiles the generated C) only when it is opened, so
`import toolkit.runtime` imports none of them.
"""

from __future__ import annotations

from pathlib import Path

from toolkit.errors import ModelFileError
from toolkit.runtime.manifest import Manifest, file_format, read_verified
from toolkit.runtime.step import StepBackend

# Every runtime `load` and `toolkit generate --runtime` accept; keras reads a run directory.
RUNTIMES = ("onnx", "tflite", "tflm", "c", "numpy", "keras")


def open_backend(
    model_dir: Path, manifest: Manifest, runtime: str, quantization: str, threads: int = 1
) -> StepBackend:
    """The backend of `runtime` on the folder's file of that quantization, checksum verified."""
    if runtime == "numpy" and quantization == "none" and not manifest.has("numpy", "none"):
        return _numpy_from_onnx(model_dir, manifest)
    artifact = manifest.artifact(file_format(runtime), quantization)
    data = read_verified(model_dir, artifact)
    if runtime == "onnx":
        from toolkit.runtime.backends.onnx import OnnxBackend

        return OnnxBackend(data, threads)
    if runtime == "tflite":
        from toolkit.runtime.backends.tflite import TFLiteBackend

        return TFLiteBackend(data, threads)
    if runtime == "tflm":
        from toolkit.runtime.backends.tflm import TFLMBackend

        return TFLMBackend.from_artifact(data, artifact, manifest.model)
    if runtime == "c":
        from toolkit.runtime.backends.c import CBackend

        return CBackend.from_artifact(model_dir, artifact, data, manifest.model)
    if runtime == "numpy":
        from toolkit.runtime.backends.numpy import NumpyBackend

        return NumpyBackend.from_bytes(data, manifest.model.layers)
    raise ModelFileError(f"unknown runtime {runtime!r}; choose from {', '.join(RUNTIMES)}")


def _numpy_from_onnx(model_dir: Path, manifest: Manifest) -> StepBackend:
    """The numpy step on model.onnx's weights (a folder without weights.npz), checked against
    onnxruntime on a few steps where it is installed."""
    import numpy as np

    from toolkit.runtime.backends.numpy import NumpyBackend, weights_from_onnx

    data = read_verified(model_dir, manifest.artifact("onnx", "none"))
    backend = NumpyBackend(weights_from_onnx(data, manifest.model.layers), manifest.model.layers)
    try:
        from toolkit.runtime.backends.onnx import OnnxBackend

        reference: StepBackend = OnnxBackend(data)
    except ModelFileError:  # no onnxruntime: the weights are used as read
        return backend
    token = np.arange(3, dtype=np.int32) % manifest.model.vocab_size
    h = np.zeros(manifest.model.state_shape(3), np.float32)
    state = (h, h)
    for _ in range(4):
        ours = backend.step(token, *state)
        theirs = reference.step(token, *state)
        if not all(np.allclose(a, b, atol=1e-4) for a, b in zip(ours, theirs, strict=True)):
            raise ModelFileError("the weights read from model.onnx do not reproduce it")
        state = theirs[1], theirs[2]
    return backend
