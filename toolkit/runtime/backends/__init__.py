"""Step backends: one LSTM step with explicit state, (token, h, c) -> (logits, h', c').

Every backend takes `token` int32 [batch] and `h`, `c` float32 [layers, batch, units] and
returns float32 `logits` [batch, vocab] and the new state. Imports onnxruntime or LiteRT
lazily, and never TensorFlow.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from toolkit.errors import ModelFileError
from toolkit.quiet import native_stderr_hidden

StepOutput = tuple[np.ndarray, np.ndarray, np.ndarray]


class StepBackend(Protocol):
    name: str

    def step(self, token: np.ndarray, h: np.ndarray, c: np.ndarray) -> StepOutput: ...


class Stepper(Protocol):
    """Steps in a loop, the state carried from one step to the next by the stepper."""

    def advance(self, token: np.ndarray) -> np.ndarray:
        """One step; the logits, which the next call may overwrite."""
        ...

    def advance_one(self, token: int) -> np.ndarray:
        """`advance` at batch 1, the token as a Python int."""
        ...

    def state(self) -> tuple[np.ndarray, np.ndarray]:
        """The current h and c (arrays the stepper no longer writes)."""
        ...


class ArrayStepper:
    """Any backend's `step` in a loop: the state goes in and comes back as arrays."""

    def __init__(self, backend: StepBackend, h: np.ndarray, c: np.ndarray) -> None:
        self._step = backend.step
        self.h, self.c = h, c
        self._ids: list[np.ndarray] = []  # advance_one's input arrays, one per token id

    def advance(self, token: np.ndarray) -> np.ndarray:
        logits, self.h, self.c = self._step(token, self.h, self.c)
        return logits

    def advance_one(self, token: int) -> np.ndarray:
        # One ready array per token id: cheaper than writing the id into an array.
        while token >= len(self._ids):
            self._ids.append(np.array([len(self._ids)], dtype=np.int32))
        logits, self.h, self.c = self._step(self._ids[token], self.h, self.c)
        return logits

    def state(self) -> tuple[np.ndarray, np.ndarray]:
        return self.h, self.c


def make_stepper(backend: StepBackend, logits: np.ndarray, h: np.ndarray, c: np.ndarray) -> Stepper:
    """The backend's own stepper if it has one (ONNX: state kept in bound buffers), else
    `ArrayStepper`. `logits` gives the logits' shape; h and c are the state to start from."""
    own = getattr(backend, "stepper", None)
    return own(logits, h, c) if own is not None else ArrayStepper(backend, h, c)


def fold_weights(raw: dict[str, np.ndarray], layers: int) -> dict[str, np.ndarray]:
    """Rewrite Keras weights into the step layout.

    Layer 0: the embedding lookup followed by the input projection is a lookup in one
    [vocab, 4*units] table (bias included), so the step needs a Gather, not a MatMul.
    Layers > 0: input and recurrent kernels stacked to one [2*units, 4*units] matrix, so
    each layer is a single MatMul. Gate order stays Keras's: i, f, c (candidate), o.
    """
    folded = {
        "table_0": raw["embedding"] @ raw["lstm_0_kernel"] + raw["lstm_0_bias"],
        "recurrent_0": raw["lstm_0_recurrent"],
        "dense_kernel": raw["dense_kernel"],
        "dense_bias": raw["dense_bias"],
    }
    for layer in range(1, layers):
        folded[f"stacked_{layer}"] = np.concatenate(
            [raw[f"lstm_{layer}_kernel"], raw[f"lstm_{layer}_recurrent"]], axis=0
        )
        folded[f"bias_{layer}"] = raw[f"lstm_{layer}_bias"]
    return {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in folded.items()}


def _sigmoid(x: np.ndarray) -> np.ndarray:
    # tanh form: no overflow warnings for large |x|, same value as 1 / (1 + exp(-x)).
    return 0.5 * (np.tanh(0.5 * x) + 1.0)


class NumpyBackend:
    """Dependency-free reference: the step written in numpy on the folded weights."""

    name = "numpy"

    def __init__(self, weights: dict[str, np.ndarray], layers: int) -> None:
        self.w = weights
        self.layers = layers

    @classmethod
    def from_bytes(cls, data: bytes, layers: int) -> NumpyBackend:
        try:
            with np.load(io.BytesIO(data)) as blob:
                weights = {k: blob[k] for k in blob.files}
        except Exception as exc:  # zipfile/pickle errors vary; all mean a bad file
            raise ModelFileError(f"weights file is corrupted: {exc}") from None
        return cls(weights, layers)

    def step(self, token: np.ndarray, h: np.ndarray, c: np.ndarray) -> StepOutput:
        w = self.w
        h_out = np.empty_like(h)
        c_out = np.empty_like(c)
        x = None
        for layer in range(self.layers):
            if layer == 0:
                z = w["table_0"][token] + h[0] @ w["recurrent_0"]
            else:
                z = np.concatenate([x, h[layer]], axis=1) @ w[f"stacked_{layer}"]
                z += w[f"bias_{layer}"]
            i, f, g, o = np.split(z, 4, axis=1)
            c_new = _sigmoid(f) * c[layer] + _sigmoid(i) * np.tanh(g)
            x = _sigmoid(o) * np.tanh(c_new)
            h_out[layer] = x
            c_out[layer] = c_new
        logits = x @ w["dense_kernel"] + w["dense_bias"]
        return logits.astype(np.float32, copy=False), h_out, c_out


class OnnxBackend:
    """onnxruntime InferenceSession; names are read from the model, never assumed."""

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
        # InferenceSession.run re-validates the feed's names in Python on every call (~3 us, a
        # tenth of a small int8 step); the names were checked above, so the binding's own run
        # is called directly where it exists.
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

    `InferenceSession.run` wraps every input in a new OrtValue and allocates every output
    (at batch 1, a fifth of a small int8 step). Bound buffers avoid both. A step cannot read
    and write one buffer, so two bindings alternate: one reads state A and writes B, the
    other reads B and writes A. Created per generation (~40 us, about one step).
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


class TFLMBackend:
    """TensorFlow Lite Micro's own interpreter (PyPI `tflite-micro`), run on the host.

    It has no tensor names: inputs and outputs come in subgraph order, which the exporter
    records in the manifest (`micro.inputs` / `micro.outputs`) and this backend follows.
    """

    name = "tflm"

    def __init__(self, data: bytes, micro: dict[str, Any]) -> None:
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


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message: converters and runtimes write essays."""
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def load_backend(
    model_dir: Path, manifest: dict[str, Any], runtime: str, quantization: str, threads: int
) -> StepBackend:
    from toolkit.runtime.manifest import file_format, find_artifact, read_verified

    entry = find_artifact(manifest, file_format(runtime), quantization)
    data = read_verified(model_dir, entry)
    layers = int(manifest["model"]["layers"])
    if runtime == "onnx":
        return OnnxBackend(data, threads)
    if runtime == "tflite":
        return TFLiteBackend(data, threads)
    if runtime == "tflm":
        if "micro" not in entry:
            raise ModelFileError(f"{entry['file']} has no micro section in the manifest")
        units = int(manifest["model"]["units"])
        shapes = {t["name"]: t["shape"] for t in entry["micro"]["inputs"]}
        if shapes.get("h") != [layers, 1, units] or shapes.get("c") != [layers, 1, units]:
            raise ModelFileError(
                f"{entry['file']} takes state {shapes.get('h')}, the manifest's model says "
                f"{[layers, 1, units]}"
            )
        return TFLMBackend(data, entry["micro"])
    if runtime == "numpy":
        return NumpyBackend.from_bytes(data, layers)
    raise ModelFileError(f"unknown runtime {runtime!r}")
