"""LiteRT (TensorFlow Lite's interpreter, `ai-edge-litert`), driven through the model's
signature; a full-integer model's int8 boundary is converted by `QuantizedIO`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from toolkit.config import ModelConfig
from toolkit.errors import ModelFileError, first_line
from toolkit.logs import native_stderr_hidden
from toolkit.runtime.manifest import Artifact
from toolkit.runtime.step import StepOutput


class TFLiteBackend:
    """LiteRT interpreter driven through the model's signature (names from the model)."""

    name = "tflite"

    def __init__(self, data: bytes, threads: int = 1) -> None:
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError:
            raise ModelFileError(
                "ai-edge-litert is not installed: pip install 'char-lstm-toolkit[tflite]'"
            ) from None
        try:
            self.interpreter = Interpreter(model_content=data, num_threads=threads)
            signatures = self.interpreter.get_signature_list()
            key = "serving_default" if "serving_default" in signatures else next(iter(signatures))
            runner = self.interpreter.get_signature_runner(key)
            self.input_details = runner.get_input_details()
            self.output_details = runner.get_output_details()
            # The runner keeps views into the interpreter's buffers, which would forbid the
            # resize below; we only needed the signature's names and tensor indices.
            del runner
        except Exception as exc:  # LiteRT raises ValueError/RuntimeError with long text
            raise ModelFileError(f"LiteRT cannot load the model: {first_line(exc)}") from None
        if set(self.input_details) != {"token", "h", "c"} or not {
            "logits",
            "h_out",
            "c_out",
        } <= set(self.output_details):
            raise ModelFileError(
                f"unexpected TFLite signature: inputs {sorted(self.input_details)}, "
                f"outputs {sorted(self.output_details)}"
            )
        self.threads = threads
        self._in_idx = {n: d["index"] for n, d in self.input_details.items()}
        self._out_idx = {n: d["index"] for n, d in self.output_details.items()}
        # A full-integer model has int8 state and logits at its boundary, and batch fixed to 1.
        self.codec = QuantizedIO.from_details(
            {n: _litert_quant(d) for n, d in {**self.input_details, **self.output_details}.items()}
        )
        self._shape: tuple[int, ...] | None = None
        layers, units = self.input_details["h"]["shape_signature"][[0, 2]]
        # Allocate for batch 1 now, so that loading (and LiteRT's delegate log line, hidden
        # unless verbose) happens before the first character, not in the stream.
        with native_stderr_hidden():
            self._resize(1, np.zeros((int(layers), 1, int(units)), np.float32))

    def _resize(self, batch: int, h: np.ndarray) -> None:
        interp = self.interpreter
        interp.resize_tensor_input(self._in_idx["token"], [batch], strict=False)
        interp.resize_tensor_input(self._in_idx["h"], list(h.shape), strict=False)
        interp.resize_tensor_input(self._in_idx["c"], list(h.shape), strict=False)
        interp.allocate_tensors()
        self._shape = h.shape

    def step(self, token: np.ndarray, h: np.ndarray, c: np.ndarray) -> StepOutput:
        if self.codec is not None:
            return self.codec.step_rows(self._step_raw, token, h, c)
        return self._step_raw(token, h, c)

    def _step_raw(self, token: np.ndarray, h: np.ndarray, c: np.ndarray) -> StepOutput:
        # set_tensor/invoke/get_tensor by index: the signature runner re-checks shapes and
        # re-resolves names on every call, which costs more than a small step itself.
        if h.shape != self._shape:
            self._resize(token.shape[0], h)
        interp = self.interpreter
        interp.set_tensor(self._in_idx["token"], token)
        interp.set_tensor(self._in_idx["h"], h)
        interp.set_tensor(self._in_idx["c"], c)
        interp.invoke()
        get = interp.get_tensor
        return (
            get(self._out_idx["logits"]),
            get(self._out_idx["h_out"]),
            get(self._out_idx["c_out"]),
        )


def _litert_quant(details: dict[str, Any]) -> tuple[Any, float, int]:
    """(dtype, scale, zero point) of a LiteRT tensor; scale 0 means not quantized."""
    scale, zero_point = details.get("quantization", (0.0, 0))
    return np.dtype(details["dtype"]), float(scale), int(zero_point)


class QuantizedIO:
    """Float state and logits in, int8 tensors at a full-integer model's boundary.

    The generator keeps h/c as float32; each step quantizes them with the input tensors'
    scale and zero point and dequantizes the outputs. That is the same arithmetic as
    requantizing h_out's int8 codes to h's (their scales differ slightly), which is what a
    C program carrying int8 state does. Such a model has batch 1: rows run one after another.
    """

    def __init__(self, params: dict[str, tuple[float, int]]) -> None:
        self.params = params  # tensor name -> (scale, zero point), int8 tensors only

    @classmethod
    def from_details(cls, tensors: dict[str, tuple[Any, float, int]]) -> QuantizedIO | None:
        """From (dtype, scale, zero point) by tensor name; None if nothing is int8."""
        params = {
            name: (scale, zero)
            for name, (dtype, scale, zero) in tensors.items()
            if dtype == np.int8 and scale > 0
        }
        return cls(params) if params else None

    def quantize(self, name: str, x: np.ndarray) -> np.ndarray:
        if name not in self.params:
            return x
        scale, zero = self.params[name]
        return np.clip(np.round(x / scale) + zero, -128, 127).astype(np.int8)

    def dequantize(self, name: str, q: np.ndarray) -> np.ndarray:
        if name not in self.params:
            return q
        scale, zero = self.params[name]
        return ((q.astype(np.float32) - zero) * scale).astype(np.float32)

    def step_rows(
        self,
        raw_step: Any,
        token: np.ndarray,
        h: np.ndarray,
        c: np.ndarray,
    ) -> StepOutput:
        logits, h_out, c_out = [], np.empty_like(h), np.empty_like(c)
        for row in range(token.shape[0]):
            out = raw_step(
                token[row : row + 1],
                self.quantize("h", h[:, row : row + 1]),
                self.quantize("c", c[:, row : row + 1]),
            )
            logits.append(self.dequantize("logits", out[0]))
            h_out[:, row : row + 1] = self.dequantize("h_out", out[1])
            c_out[:, row : row + 1] = self.dequantize("c_out", out[2])
        return np.concatenate(logits, axis=0), h_out, c_out


def open_file(
    model_dir: Path, artifact: Artifact, data: bytes, model: ModelConfig, threads: int
) -> TFLiteBackend:
    return TFLiteBackend(data, threads)
