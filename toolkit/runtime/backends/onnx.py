"""onnxruntime: an InferenceSession on the step graph, and a stepper that keeps the state in
buffers bound to the session (`OnnxBoundStepper`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from toolkit.config import ModelConfig
from toolkit.errors import ModelFileError, first_line
from toolkit.runtime.manifest import Artifact
from toolkit.runtime.step import ArrayStepper, StepOutput, Stepper


class OnnxBackend:
    """An onnxruntime InferenceSession; names are read from the model, never assumed."""

    name = "onnx"

    def __init__(self, data: bytes, threads: int = 1) -> None:
        try:
            import onnxruntime as ort
        except ImportError:
            raise ModelFileError(
                "onnxruntime is not installed: pip install 'char-lstm-toolkit[onnx]'"
            ) from None
        options = ort.SessionOptions()
        # Single-step latency is dominated by per-op overhead: one thread avoids the
        # hand-off cost; more pays only at larger batch or width. Set and reported.
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(
                data, sess_options=options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises its own exception types
            raise ModelFileError(f"onnxruntime cannot load the model: {first_line(exc)}") from None
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]
        expected = {"token", "h", "c"}
        if set(self.input_names) != expected or not {"logits", "h_out", "c_out"} <= set(
            self.output_names
        ):
            raise ModelFileError(
                f"unexpected ONNX signature: inputs {self.input_names}, outputs {self.output_names}"
            )
        self.threads = threads
        # InferenceSession.run re-validates the feed's names in Python on every call, which
        # costs a noticeable share of a small int8 step; the names were checked above, so the
        # binding's own run is called directly where it exists.
        self._run = getattr(self.session, "_sess", self.session).run
        self._outputs = ["logits", "h_out", "c_out"]

    def step(self, token: np.ndarray, h: np.ndarray, c: np.ndarray) -> StepOutput:
        logits, h_out, c_out = self._run(self._outputs, {"token": token, "h": h, "c": c}, None)
        return logits, h_out, c_out

    def stepper(self, logits: np.ndarray, h: np.ndarray, c: np.ndarray) -> Stepper:
        try:
            return OnnxBoundStepper(self.session, logits.shape, h, c)
        except AttributeError:  # an onnxruntime without the binding's private run
            return ArrayStepper(self, h, c)


class OnnxBoundStepper:
    """ONNX Runtime stepping with the token, state and logits in buffers bound once.

    `InferenceSession.run` wraps every input in a new OrtValue and allocates every output on
    every step; bound buffers avoid both. A step cannot read and write one buffer, so two
    bindings alternate: one reads state A and writes B, the other reads B and writes A.
    Setting up costs about one step, so it is made per generation, not per short call.
    """

    def __init__(
        self, session: Any, logits_shape: tuple[int, ...], h: np.ndarray, c: np.ndarray
    ) -> None:
        from onnxruntime import OrtValue

        self.token = np.zeros(h.shape[1], np.int32)
        self.logits = np.zeros(logits_shape, np.float32)
        self._h = (np.array(h, np.float32, order="C"), np.zeros(h.shape, np.float32))
        self._c = (np.array(c, np.float32, order="C"), np.zeros(c.shape, np.float32))
        # One OrtValue per buffer, shared by both bindings; they wrap these arrays' memory,
        # so they are kept alive with them.
        wrap = OrtValue.ortvalue_from_numpy
        token, logits = wrap(self.token), wrap(self.logits)
        self._values = [token, logits, *map(wrap, self._h), *map(wrap, self._c)]
        h_values, c_values = self._values[2:4], self._values[4:6]
        self._bindings = []
        for read in (0, 1):
            binding = session.io_binding()
            binding.bind_ortvalue_input("token", token)
            binding.bind_ortvalue_input("h", h_values[read])
            binding.bind_ortvalue_input("c", c_values[read])
            binding.bind_ortvalue_output("logits", logits)
            binding.bind_ortvalue_output("h_out", h_values[1 - read])
            binding.bind_ortvalue_output("c_out", c_values[1 - read])
            self._bindings.append(binding)
        self._raw = [binding._iobinding for binding in self._bindings]
        self._run = session._sess.run_with_iobinding
        self._read = 0  # which state buffers hold the current state

    def advance(self, token: np.ndarray) -> np.ndarray:
        np.copyto(self.token, token)
        self._run(self._raw[self._read], None)
        self._read ^= 1
        return self.logits

    def advance_one(self, token: int) -> np.ndarray:
        self.token[0] = token
        self._run(self._raw[self._read], None)
        self._read ^= 1
        return self.logits

    def state(self) -> tuple[np.ndarray, np.ndarray]:
        return self._h[self._read].copy(), self._c[self._read].copy()


def open_file(
    model_dir: Path, artifact: Artifact, data: bytes, model: ModelConfig, threads: int
) -> OnnxBackend:
    return OnnxBackend(data, threads)
