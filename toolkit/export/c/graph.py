"""A .tflite flatbuffer as plain Python: tensors, quantization, constant data, operators.

Parsed with the flatbuffer schema that ships inside the `tflite-micro` wheel (object API),
so no TensorFlow is needed. Also builds one-op probe models and runs them in TensorFlow
Lite Micro's interpreter: that is how the LOGISTIC/TANH tables are made (by TFLM itself),
and how the tests check each elementwise kernel against TFLM exhaustively.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from toolkit.errors import ExportError


class ModelMismatch(ExportError):
    """The model is not a graph the C target can translate (always a one-line message)."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))


def _schema() -> Any:
    try:
        from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as fb
    except ImportError:
        raise ExportError(
            "the C target needs tflite-micro (its schema reads the model, its interpreter makes "
            "the LOGISTIC/TANH tables): pip install 'char-lstm-toolkit[micro]'"
        ) from None
    return fb


_DTYPES = {
    9: np.int8,
    2: np.int32,
    0: np.float32,
    1: np.float16,
    7: np.int16,
    3: np.uint8,
    4: np.int64,
}


@dataclass
class Tensor:
    index: int
    name: str
    shape: tuple[int, ...]
    dtype: Any  # numpy dtype class
    scales: np.ndarray  # float32 [n] (empty if not quantized)
    zero_points: np.ndarray  # int64 [n]
    quantized_dimension: int
    data: np.ndarray | None  # constant data, or None for activations

    @property
    def scale(self) -> float:
        """The per-tensor scale (exactly the float32 value, as a Python float)."""
        if len(self.scales) != 1:
            raise ModelMismatch(f"tensor {self.name!r} is not per-tensor quantized")
        return float(self.scales[0])

    @property
    def zero_point(self) -> int:
        if len(self.zero_points) != 1:
            raise ModelMismatch(f"tensor {self.name!r} is not per-tensor quantized")
        return int(self.zero_points[0])

    @property
    def size(self) -> int:
        return int(np.prod(self.shape)) if self.shape else 1


@dataclass
class Op:
    index: int
    name: str  # builtin name, e.g. "FULLY_CONNECTED"
    inputs: list[int]  # tensor indices, -1 for an absent optional input
    outputs: list[int]
    options: Any  # the schema's *OptionsT object (or None)
    opcode: Any  # the schema's OperatorCodeT


@dataclass
class Graph:
    tensors: list[Tensor]
    ops: list[Op]
    inputs: list[int]
    outputs: list[int]
    model: Any = field(repr=False)  # the schema's ModelT (for probe models)


def builtin_names() -> dict[int, str]:
    fb = _schema()
    return {v: k for k, v in vars(fb.BuiltinOperator).items() if not k.startswith("_")}


def parse(data: bytes) -> Graph:
    """The first subgraph of a .tflite model."""
    fb = _schema()
    try:
        model = fb.ModelT.InitFromObj(fb.Model.GetRootAsModel(bytearray(data), 0))
    except Exception as exc:  # flatbuffers raises anything on garbage
        raise ModelMismatch(f"not a TFLite flatbuffer: {type(exc).__name__}: {exc}") from None
    if not model.subgraphs or len(model.subgraphs) != 1:
        raise ModelMismatch(f"expected 1 subgraph, found {len(model.subgraphs or [])}")
    names = builtin_names()
    sub = model.subgraphs[0]
    tensors = []
    for i, t in enumerate(sub.tensors):
        tname = t.name.decode() if isinstance(t.name, bytes) else str(t.name)
        q = t.quantization
        scales = np.asarray(q.scale if q is not None and q.scale is not None else [], np.float32)
        zps = np.asarray(q.zeroPoint if q is not None and q.zeroPoint is not None else [], np.int64)
        dtype = _DTYPES.get(t.type)
        const = None
        buf = model.buffers[t.buffer] if t.buffer < len(model.buffers) else None
        raw = None
        if buf is not None and buf.data is not None and len(buf.data):
            raw = np.asarray(buf.data, np.uint8).tobytes()
        elif buf is not None and buf.offset and buf.size:  # large models: data after the buffer
            raw = data[buf.offset : buf.offset + buf.size]
        shape = tuple(int(x) for x in (t.shape if t.shape is not None else []))
        if raw is not None:
            if dtype is None:
                raise ModelMismatch(f"constant tensor {tname!r} has unsupported type {t.type}")
            const = np.frombuffer(raw, dtype=dtype).reshape(shape).copy()
        tensors.append(
            Tensor(
                index=i,
                name=tname,
                shape=shape,
                dtype=dtype,
                scales=scales,
                zero_points=zps,
                quantized_dimension=int(q.quantizedDimension) if q is not None else 0,
                data=const,
            )
        )
    ops = []
    for i, o in enumerate(sub.operators):
        code = model.operatorCodes[o.opcodeIndex]
        builtin = max(int(code.builtinCode), int(code.deprecatedBuiltinCode))
        ops.append(
            Op(
                index=i,
                name=names.get(builtin, f"BUILTIN_{builtin}"),
                inputs=[int(x) for x in o.inputs],
                outputs=[int(x) for x in o.outputs],
                options=o.builtinOptions,
                opcode=code,
            )
        )
    return Graph(tensors, ops, [int(x) for x in sub.inputs], [int(x) for x in sub.outputs], model)


# --------------------------------------------------------------------------- probes


def probe_model(graph: Graph, op: Op, length: int) -> bytes:
    """A model of `op` alone, its inputs and outputs as activations of `length` elements
    with the original tensors' types and quantization (constant inputs become inputs too)."""
    import copy

    import flatbuffers

    fb = _schema()
    sub = graph.model.subgraphs[0]
    tensors = []
    for index in [*op.inputs, *op.outputs]:
        t = copy.deepcopy(sub.tensors[index])
        t.shape = np.array([length], np.int32)
        t.shapeSignature = None
        t.buffer = 0
        t.isVariable = False
        tensors.append(t)
    n_in = len(op.inputs)
    operator = fb.OperatorT()
    operator.opcodeIndex = 0
    operator.inputs = np.arange(n_in, dtype=np.int32)
    operator.outputs = np.arange(n_in, len(tensors), dtype=np.int32)
    original = sub.operators[op.index]
    operator.builtinOptionsType = original.builtinOptionsType
    operator.builtinOptions = copy.deepcopy(original.builtinOptions)
    subgraph = fb.SubGraphT()
    subgraph.tensors = tensors
    subgraph.inputs = operator.inputs
    subgraph.outputs = operator.outputs
    subgraph.operators = [operator]
    model = fb.ModelT()
    model.version = 3
    model.operatorCodes = [copy.deepcopy(op.opcode)]
    model.subgraphs = [subgraph]
    model.buffers = [fb.BufferT()]
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def run_tflm(
    model: bytes, inputs: list[np.ndarray], outputs: int = 1, arena: int = 1 << 20
) -> list[np.ndarray]:
    """One invoke of `model` in TensorFlow Lite Micro's interpreter."""
    from tflite_micro.python.tflite_micro import runtime as tflm

    interp = tflm.Interpreter.from_bytes(model, arena_size=arena)
    for i, x in enumerate(inputs):
        interp.set_input(x, i)
    interp.invoke()
    return [np.array(interp.get_output(i)) for i in range(outputs)]


def tflm_unary_table(graph: Graph, op: Op) -> np.ndarray:
    """int8 [256]: TFLM's output of `op` (LOGISTIC, TANH, ...) for every int8 input -128..127."""
    x = np.arange(-128, 128, dtype=np.int8)
    (out,) = run_tflm(probe_model(graph, op, 256), [x])
    if out.dtype != np.int8 or out.shape != (256,):
        raise ModelMismatch(f"{op.name} probe gave {out.dtype} {out.shape}, expected int8 [256]")
    return out
