"""Match a full-int8 char-LSTM step graph and reduce it to integer constants (a `Plan`).

The graph the toolkit's converter makes, per layer l (operand order and op order may vary):

    layer 0:  z = ADD(GATHER(table[vocab, 4U], token), FULLY_CONNECTED(h[l], W_hh))
    layer >0: z = FULLY_CONNECTED(CONCATENATION(x, h[l]), W, b), x = h_new[l-1], or
              QUANTIZE(h_new[l-1]) where the concatenation's scale is not h_new's
    i, f, g, o = SPLIT(z, 4)                    (gate -> split output found from the graph)
    c_sum  = ADD(MUL(LOGISTIC(f), c[l]), MUL(LOGISTIC(i), TANH(g)))
    c_new  = MAXIMUM(MINIMUM(c_sum, hi), lo)   (optional clip; either order)
    h_new  = MUL(LOGISTIC(o), TANH(c_new))
    logits = FULLY_CONNECTED(h_new[L-1], W_d, b_d)
    h_out  = PACK(h_new[0..L-1]) or RESHAPE(h_new[0]); c_out likewise
    h[l], c[l] = STRIDED_SLICE of the h, c inputs

Data movement (SLICE, RESHAPE, PACK, CONCATENATION, SPLIT, GATHER) and MINIMUM/MAXIMUM
work on raw int8 codes in TFLite Micro, so they need no arithmetic here; every arithmetic op
gets the integer constants TFLM's Prepare computes from its own tensors' float32 scales, and
the elementwise ones of one int8 input (LOGISTIC, TANH, QUANTIZE) a table of TFLM's outputs.
Anything else raises ModelMismatch with one line.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from toolkit.export.c import quant
from toolkit.export.c.graph import Graph, ModelMismatch, Op, Tensor, tflm_unary_table
from toolkit.runtime.backends.tflite import QuantizedIO

GATES = ("i", "f", "g", "o")  # the C code's order of the four rows of a unit


@dataclass
class FullyConnected:
    weights: np.ndarray  # int8 [rows, cols], as in the graph
    bias: np.ndarray  # int64 [rows]: the graph's bias - input_zp * sum(row), exact
    multiplier: np.ndarray  # int64 [rows], Q31
    shift: np.ndarray  # int64 [rows]
    output_zp: int
    input_zp: int


@dataclass
class AddParams:  # TFLM OpDataAdd for int8 (left_shift 20)
    a_offset: int
    a_multiplier: int
    a_shift: int
    b_offset: int
    b_multiplier: int
    b_shift: int
    out_multiplier: int
    out_shift: int
    out_offset: int
    left_shift: int = 20


@dataclass
class MulParams:  # TFLM OpDataMul for int8
    a_offset: int
    b_offset: int
    multiplier: int
    shift: int
    out_offset: int


@dataclass
class Layer:
    units: int
    input_units: int  # 0 for layer 0 (its input is the token)
    gather: np.ndarray | None  # int8 [vocab, 4U], layer 0
    z_add: AddParams | None  # layer 0: ADD(gather, fc)
    fc: FullyConnected  # layer 0: W_hh on h; layers > 0: W on [x; h] (x columns first)
    x_first: bool  # layers > 0: the concatenation puts x before h
    x_table: np.ndarray | None  # layers > 0: int8 [256] QUANTIZE of x into the concatenation
    gate_split: dict[str, int]  # gate -> which SPLIT output (rows k*U .. k*U+U-1)
    tables: dict[str, np.ndarray]  # sig_i, sig_f, tanh_g, sig_o, tanh_c: int8 [256]
    mul_fc: MulParams  # sig_f * c
    mul_ig: MulParams  # sig_i * tanh_g
    add_c: AddParams  # (sig_f * c) + (sig_i * tanh_g)
    clip_lo: int
    clip_hi: int
    mul_oc: MulParams  # sig_o * tanh_c


@dataclass
class Plan:
    vocab: int
    layers: list[Layer]
    logits: FullyConnected
    carry_h: np.ndarray  # int8 [256]: h_out code -> next step's h code (QuantizedIO's numpy)
    carry_c: np.ndarray
    h_reset: int  # the code of 0.0 in the h input
    c_reset: int
    logits_scale: float
    logits_zp: int
    io: dict[str, dict[str, Any]]  # micro's inputs/outputs by name


# --------------------------------------------------------------------------- helpers


class _Matcher:
    def __init__(self, graph: Graph) -> None:
        self.g = graph
        self.used: set[int] = set()
        self._producer = {t: op for op in graph.ops for t in op.outputs}

    def t(self, index: int) -> Tensor:
        return self.g.tensors[index]

    def op(self, tensor: int, names: tuple[str, ...], what: str) -> Op:
        op = self._producer.get(tensor)
        found = op.name if op else "a graph input or constant"
        if op is None or op.name not in names:
            raise ModelMismatch(
                f"{what}: expected {'/'.join(names)} to produce tensor "
                f"{self.t(tensor).name!r}, found {found}"
            )
        self.used.add(op.index)
        return op

    def producer(self, tensor: int) -> Op | None:
        return self._producer.get(tensor)

    def kind(self, tensor: int) -> str | None:
        op = self._producer.get(tensor)
        return op.name if op else None

    def const(self, tensor: int, what: str) -> np.ndarray:
        data = self.t(tensor).data
        if data is None:
            raise ModelMismatch(f"{what}: tensor {self.t(tensor).name!r} is not a constant")
        return data

    def int8(self, tensor: int, what: str) -> Tensor:
        t = self.t(tensor)
        if t.dtype is not np.int8 or len(t.scales) != 1:
            raise ModelMismatch(f"{what}: tensor {t.name!r} is not per-tensor int8")
        return t

    def no_activation(self, op: Op, what: str) -> None:
        act = getattr(op.options, "fusedActivationFunction", 0)
        if act:
            raise ModelMismatch(f"{what}: {op.name} has a fused activation ({act}), unsupported")


def _add_params(a: Tensor, b: Tensor, out: Tensor) -> AddParams:
    """TFLM CalculateOpDataAdd (add_common.cc), int8."""
    left_shift = 20
    twice_max = 2 * float(max(np.float32(a.scale), np.float32(b.scale)))
    ma, sa = quant.quantize_multiplier_smaller_than_one_exp(a.scale / twice_max)
    mb, sb = quant.quantize_multiplier_smaller_than_one_exp(b.scale / twice_max)
    mo, so = quant.quantize_multiplier_smaller_than_one_exp(
        twice_max / ((1 << left_shift) * out.scale)
    )
    return AddParams(-a.zero_point, ma, sa, -b.zero_point, mb, sb, mo, so, out.zero_point)


def _mul_params(a: Tensor, b: Tensor, out: Tensor) -> MulParams:
    """TFLM CalculateOpDataMul (mul_common.cc), int8."""
    m, s = quant.quantize_multiplier(a.scale * b.scale / out.scale)
    return MulParams(-a.zero_point, -b.zero_point, m, s, out.zero_point)


def _strided_slice_rows(m: _Matcher, op: Op, layers: int, units: int, what: str) -> int:
    """Which layer of a [layers, 1, units] state the STRIDED_SLICE takes (evaluated on indices)."""
    o = op.options
    if o is None or o.ellipsisMask or o.newAxisMask or getattr(o, "offset", False):
        raise ModelMismatch(f"{what}: STRIDED_SLICE with ellipsis/new-axis/offset is unsupported")
    begin = m.const(op.inputs[1], what).astype(int).tolist()
    end = m.const(op.inputs[2], what).astype(int).tolist()
    strides = m.const(op.inputs[3], what).astype(int).tolist()
    index = np.arange(layers * units).reshape(layers, 1, units)
    slices: list[Any] = []
    for d, (b, e, s) in enumerate(zip(begin, end, strides, strict=False)):
        if o.shrinkAxisMask >> d & 1:
            slices.append(b)
        else:
            slices.append(
                slice(None if o.beginMask >> d & 1 else b, None if o.endMask >> d & 1 else e, s)
            )
    picked = index[tuple(slices)]
    if picked.shape != (1, units) or tuple(m.t(op.outputs[0]).shape) != (1, units):
        raise ModelMismatch(f"{what}: the state slice has shape {picked.shape}, not [1, {units}]")
    layer = int(picked[0, 0]) // units
    if not np.array_equal(picked.ravel(), layer * units + np.arange(units)):
        raise ModelMismatch(f"{what}: the state slice is not one layer's units")
    return layer


def _fully_connected(m: _Matcher, op: Op, what: str) -> FullyConnected:
    """TFLM FullyConnectedPerChannel's constants, the input zero point folded into the bias."""
    m.no_activation(op, what)
    if getattr(op.options, "weightsFormat", 0) != 0:
        raise ModelMismatch(f"{what}: FULLY_CONNECTED weights format is not DEFAULT")
    x = m.int8(op.inputs[0], what)
    out = m.int8(op.outputs[0], what)
    w_t = m.t(op.inputs[1])
    w = m.const(op.inputs[1], what)
    if w.dtype != np.int8 or w.ndim != 2:
        raise ModelMismatch(
            f"{what}: FULLY_CONNECTED weights are {w.dtype} {w.shape}, not int8 2-D"
        )
    rows, cols = w.shape
    if len(w_t.scales) != rows or w_t.quantized_dimension != 0:
        raise ModelMismatch(
            f"{what}: FULLY_CONNECTED weights are not per-channel quantized over {rows} rows"
        )
    if np.any(w_t.zero_points != 0):
        raise ModelMismatch(f"{what}: FULLY_CONNECTED weights have a nonzero zero point")
    if x.size != cols or out.size != rows:
        raise ModelMismatch(f"{what}: FULLY_CONNECTED shapes {x.shape} x {w.shape} -> {out.shape}")
    bias = np.zeros(rows, np.int64)
    if len(op.inputs) > 2 and op.inputs[2] >= 0:
        b = m.const(op.inputs[2], what)
        if b.dtype != np.int32 or b.shape != (rows,):
            raise ModelMismatch(f"{what}: FULLY_CONNECTED bias is {b.dtype} {b.shape}, not int32")
        bias = b.astype(np.int64)
    # acc = sum w*(x - zp) + b = sum w*x + (b - zp * sum w): exact in integers.
    folded = bias - x.zero_point * w.astype(np.int64).sum(axis=1)
    worst = np.abs(folded) + np.abs(w.astype(np.int64)).sum(axis=1) * 128
    if worst.max() > quant.INT32_MAX:
        raise ModelMismatch(f"{what}: the int32 accumulator could overflow")
    mults, shifts = [], []
    for s in w_t.scales:  # double(input_scale) * double(filter_scale) / double(output_scale)
        mult, shift = quant.quantize_multiplier(x.scale * float(s) / out.scale)
        mults.append(mult)
        shifts.append(shift)
    return FullyConnected(
        weights=w,
        bias=folded,
        multiplier=np.array(mults, np.int64),
        shift=np.array(shifts, np.int64),
        output_zp=out.zero_point,
        input_zp=x.zero_point,
    )


def _split_mul(m: _Matcher, tensor: int, kinds: tuple[str, str], what: str) -> tuple[Op, int, int]:
    """A MUL whose operands are produced by `kinds` (either order): (op, first, second)."""
    op = m.op(tensor, ("MUL",), what)
    m.no_activation(op, what)
    a, b = op.inputs[:2]
    if m.kind(a) == kinds[0] and (kinds[1] == "*" or m.kind(b) == kinds[1]):
        return op, a, b
    if m.kind(b) == kinds[0] and (kinds[1] == "*" or m.kind(a) == kinds[1]):
        return op, b, a
    raise ModelMismatch(f"{what}: MUL of {m.kind(a)} and {m.kind(b)}, expected {kinds}")


# --------------------------------------------------------------------------- the match


def match(graph: Graph, micro: Mapping[str, Any], vocab: list[str]) -> Plan:
    """The graph's integer constants per layer, walking back from the outputs; every op must
    be part of the pattern in the module docstring."""
    m = _Matcher(graph)
    io, idx = _boundary(graph, micro, vocab)
    n_layers, units = graph.tensors[idx["h"]].shape[0], graph.tensors[idx["h"]].shape[2]
    # Outputs: logits = FC(h_new[last]); h_out/c_out = PACK(per layer) or RESHAPE(layer 0).
    h_new = _per_layer(m, idx["h_out"], "h_out", n_layers)
    c_new = _per_layer(m, idx["c_out"], "c_out", n_layers)
    logits = _logits(m, idx["logits"], h_new[-1], len(vocab))
    layers = []
    for layer in range(n_layers):
        h_prev = h_new[layer - 1] if layer else None
        cell = _cell(m, idx, h_new[layer], c_new[layer], layer, n_layers, units)
        layers.append(_layer(m, idx, cell, h_prev, layer, n_layers, units, len(vocab)))
    unused = [f"{op.index}:{op.name}" for op in graph.ops if op.index not in m.used]
    if unused:
        raise ModelMismatch(f"ops outside the char-LSTM pattern: {', '.join(unused)}")
    return _plan(io, layers, logits, len(vocab))


def _boundary(
    graph: Graph, micro: Mapping[str, Any], vocab: list[str]
) -> tuple[dict[str, dict[str, Any]], dict[str, int]]:
    """(micro's tensors by name, graph tensor index by name), once the graph's inputs and
    outputs are checked against the micro section: names, int8 state, quantization, shapes."""
    names_in = [t["name"] for t in micro["inputs"]]
    names_out = [t["name"] for t in micro["outputs"]]
    if sorted(names_in) != ["c", "h", "token"] or sorted(names_out) != ["c_out", "h_out", "logits"]:
        raise ModelMismatch(f"micro section names {names_in} -> {names_out}, expected token/h/c")
    if len(graph.inputs) != 3 or len(graph.outputs) != 3:
        raise ModelMismatch(f"graph has {len(graph.inputs)} inputs, {len(graph.outputs)} outputs")
    io = {t["name"]: t for t in [*micro["inputs"], *micro["outputs"]]}
    idx = dict(zip(names_in, graph.inputs, strict=False)) | dict(
        zip(names_out, graph.outputs, strict=False)
    )
    for name in ("h", "c", "h_out", "c_out", "logits"):
        if graph.tensors[idx[name]].dtype is not np.int8:
            dtype = np.dtype(graph.tensors[idx[name]].dtype).name
            raise ModelMismatch(f"not a full-int8 model: {name} is {dtype}, not int8")
    for name, index in idx.items():  # the manifest must describe this very model
        t, d = graph.tensors[index], io[name]
        if list(t.shape) != list(d["shape"]) or np.dtype(t.dtype).name != d["dtype"]:
            raise ModelMismatch(
                f"{name}: model has {np.dtype(t.dtype).name} {list(t.shape)}, "
                f"the micro section says {d['dtype']} {d['shape']}"
            )
        if d["dtype"] == "int8" and (
            np.float32(d["scale"]) != t.scales[0] or int(d["zero_point"]) != t.zero_point
        ):
            raise ModelMismatch(f"{name}: micro section quantization differs from the model's")
    if list(graph.tensors[idx["token"]].shape) != [1]:
        raise ModelMismatch("token input is not int32 [1] (batch must be 1)")
    h_shape = graph.tensors[idx["h"]].shape
    if len(h_shape) != 3 or h_shape[1] != 1 or graph.tensors[idx["c"]].shape != h_shape:
        raise ModelMismatch(f"state inputs are {list(h_shape)}, expected [layers, 1, units]")
    if h_shape[2] % 4:
        raise ModelMismatch(f"units = {h_shape[2]} is not a multiple of 4")
    if len(vocab) < 1:
        raise ModelMismatch("empty vocabulary")
    return io, idx


def _per_layer(m: _Matcher, output: int, name: str, n_layers: int) -> list[int]:
    """The per-layer tensors an h_out/c_out output gathers: PACK(layers) or RESHAPE(layer 0)."""
    op = m.op(output, ("PACK", "RESHAPE"), name)
    parts = op.inputs[:1] if op.name == "RESHAPE" else op.inputs
    if op.name == "PACK" and (op.options.axis != 0 or op.options.valuesCount != n_layers):
        raise ModelMismatch(f"{name}: PACK is not along the layer axis")
    if len(parts) != n_layers:
        raise ModelMismatch(f"{name} gathers {len(parts)} layers, the state has {n_layers}")
    return parts


def _logits(m: _Matcher, output: int, h_last: int, vocab_size: int) -> FullyConnected:
    """logits = FULLY_CONNECTED(h_new[last layer])."""
    op = m.op(output, ("FULLY_CONNECTED",), "logits")
    if op.inputs[0] != h_last:
        raise ModelMismatch("logits are not computed from the last layer's h")
    if m.t(output).shape != (1, vocab_size):
        raise ModelMismatch(
            f"logits are {list(m.t(output).shape)}, the vocabulary has {vocab_size}"
        )
    return _fully_connected(m, op, "logits")


@dataclass
class _Cell:
    """One layer's cell, found from h_new back to the four gate activations (tensor indices)."""

    h_new: int
    sig_o: int  # h_new = sig_o * tanh_c
    tanh_c: int
    c_sum: int  # c_new = clip(c_sum), c_sum = f_c + i_g
    clip_lo: int
    clip_hi: int
    f_c: int  # sig_f * c_slice
    sig_f: int
    c_slice: int
    i_g: int  # sig_i * tanh_g
    sig_i: int
    tanh_g: int
    muls: tuple[Op, Op, Op]  # the MULs of o * tanh_c, i * g, f * c
    gate_ops: dict[str, Op]  # i, f, g, o -> their LOGISTIC/TANH
    tanh_c_op: Op


def _cell(
    m: _Matcher, idx: dict[str, int], h_t: int, c_t: int, layer: int, n_layers: int, units: int
) -> _Cell:
    """h_new = sig(o) * tanh(c_new), c_new = clip(sig(f) * c[layer] + sig(i) * tanh(g))."""
    w = f"layer {layer}"
    mul_oc_op, sig_o_t, tanh_c_t = _split_mul(m, h_t, ("LOGISTIC", "TANH"), w)
    sig_o_op = m.op(sig_o_t, ("LOGISTIC",), w)
    tanh_c_op = m.op(tanh_c_t, ("TANH",), w)
    if tanh_c_op.inputs[0] != c_t:
        raise ModelMismatch(f"{w}: h is not o * tanh(c_out)")
    lo, hi, c_sum_t = _clip(m, c_t, w)
    add_c_op = m.op(c_sum_t, ("ADD",), w)
    m.no_activation(add_c_op, w)
    p, q = add_c_op.inputs[:2]

    def has_tanh(tensor: int) -> bool:
        op = m.producer(tensor)
        return op is not None and op.name == "MUL" and "TANH" in [m.kind(i) for i in op.inputs]

    if has_tanh(p) == has_tanh(q):
        raise ModelMismatch(f"{w}: cell update is not f * c + i * g")
    fc_t, ig_t = (q, p) if has_tanh(p) else (p, q)
    mul_ig_op, sig_i_t, tanh_g_t = _split_mul(m, ig_t, ("LOGISTIC", "TANH"), w)
    mul_fc_op, sig_f_t, c_slice_t = _split_mul(m, fc_t, ("LOGISTIC", "STRIDED_SLICE"), w)
    c_slice = m.op(c_slice_t, ("STRIDED_SLICE",), w)
    if (
        c_slice.inputs[0] != idx["c"]
        or _strided_slice_rows(m, c_slice, n_layers, units, w) != layer
    ):
        raise ModelMismatch(f"{w}: cell update does not read c[{layer}]")
    gate_ops = {
        "i": m.op(sig_i_t, ("LOGISTIC",), w),
        "f": m.op(sig_f_t, ("LOGISTIC",), w),
        "g": m.op(tanh_g_t, ("TANH",), w),
        "o": sig_o_op,
    }
    return _Cell(
        h_new=h_t,
        sig_o=sig_o_t,
        tanh_c=tanh_c_t,
        c_sum=c_sum_t,
        clip_lo=lo,
        clip_hi=hi,
        f_c=fc_t,
        sig_f=sig_f_t,
        c_slice=c_slice_t,
        i_g=ig_t,
        sig_i=sig_i_t,
        tanh_g=tanh_g_t,
        muls=(mul_oc_op, mul_ig_op, mul_fc_op),
        gate_ops=gate_ops,
        tanh_c_op=tanh_c_op,
    )


def _clip(m: _Matcher, c_t: int, w: str) -> tuple[int, int, int]:
    """(lo, hi, c_sum): c_new = MAXIMUM(MINIMUM(c_sum, hi), lo) in either order, or c_sum
    itself (the full int8 range)."""
    lo, hi, c_sum_t = -128, 127, c_t
    for _ in range(2):
        if m.kind(c_sum_t) not in ("MINIMUM", "MAXIMUM"):
            break
        op = m.op(c_sum_t, ("MINIMUM", "MAXIMUM"), w)
        consts = [i for i in op.inputs if m.t(i).data is not None]
        if len(consts) != 1 or m.t(consts[0]).size != 1:
            raise ModelMismatch(f"{w}: {op.name} is not against one constant")
        k = int(m.const(consts[0], w).reshape(-1)[0])
        if op.name == "MINIMUM":
            hi = min(hi, k)
        else:
            lo = max(lo, k)
        c_sum_t = next(i for i in op.inputs if i != consts[0])
    if lo > hi:
        raise ModelMismatch(f"{w}: empty cell clip range [{lo}, {hi}]")
    return lo, hi, c_sum_t


def _gate_split(
    m: _Matcher, gate_ops: dict[str, Op], units: int, w: str
) -> tuple[int, dict[str, int]]:
    """(z, gate -> SPLIT output): the four gates are the outputs of one SPLIT of z into 4
    along the last axis."""
    splits = {m.op(op.inputs[0], ("SPLIT",), w).index for op in gate_ops.values()}
    if len(splits) != 1:
        raise ModelMismatch(f"{w}: the gates do not come from one SPLIT")
    split = m.g.ops[splits.pop()]
    axis = int(m.const(split.inputs[0], w).reshape(-1)[0])
    z_t = split.inputs[1]
    if len(split.outputs) != 4 or axis not in (1, -1) or m.t(z_t).shape != (1, 4 * units):
        raise ModelMismatch(f"{w}: SPLIT is not z[1, {4 * units}] into 4 along axis 1")
    gate_split = {gate: split.outputs.index(op.inputs[0]) for gate, op in gate_ops.items()}
    if sorted(gate_split.values()) != [0, 1, 2, 3]:
        raise ModelMismatch(f"{w}: two gates read the same SPLIT output")
    return z_t, gate_split


@dataclass
class _Input:
    """How a layer makes z: the FULLY_CONNECTED on the recurrent h, and what comes with it."""

    fc_op: Op
    h_slice: Op  # the STRIDED_SLICE of the h input that the FULLY_CONNECTED reads
    gather: np.ndarray | None = None  # layer 0
    z_add: AddParams | None = None  # layer 0
    x_first: bool = True  # layers > 0
    x_table: np.ndarray | None = None  # layers > 0
    input_units: int = 0  # layers > 0


def _token_input(m: _Matcher, z_t: int, token: int, vocab_size: int, units: int, w: str) -> _Input:
    """Layer 0: z = ADD(GATHER(table[vocab, 4U], token), FULLY_CONNECTED(h[0], W_hh))."""
    add_op = m.op(z_t, ("ADD",), w)
    m.no_activation(add_op, w)
    a, b = add_op.inputs[:2]
    if m.kind(a) != "GATHER":
        a, b = b, a
    gather_op = m.op(a, ("GATHER",), w)
    fc_op = m.op(b, ("FULLY_CONNECTED",), w)
    o = gather_op.options
    if gather_op.inputs[1] != token or (o is not None and (o.axis or o.batchDims)):
        raise ModelMismatch(f"{w}: GATHER is not a row lookup by the token")
    gather = m.const(gather_op.inputs[0], w)
    table_t = m.int8(gather_op.inputs[0], w)
    if gather.dtype != np.int8 or gather.shape != (vocab_size, 4 * units):
        raise ModelMismatch(f"{w}: GATHER table is {gather.shape}, not [vocab, 4 units]")
    gathered = m.int8(a, w)
    if (gathered.scale, gathered.zero_point) != (table_t.scale, table_t.zero_point):
        raise ModelMismatch(f"{w}: GATHER output requantizes, unsupported")
    z_add = _add_params(gathered, m.int8(b, w), m.int8(z_t, w))
    h_slice = m.op(fc_op.inputs[0], ("STRIDED_SLICE",), w)
    return _Input(fc_op, h_slice, gather=gather, z_add=z_add)


def _stacked_input(m: _Matcher, z_t: int, h_prev: int, layer: int, w: str) -> _Input:
    """Layers > 0: z = FULLY_CONNECTED(CONCATENATION(x, h[l]), W, b), x = the layer below's
    h_new, or QUANTIZE(h_new) where the concatenation's scale is not h_new's."""
    fc_op = m.op(z_t, ("FULLY_CONNECTED",), w)
    concat = m.op(fc_op.inputs[0], ("CONCATENATION",), w)
    if concat.options.axis not in (1, -1) or len(concat.inputs) != 2:
        raise ModelMismatch(f"{w}: CONCATENATION is not [x, h] along axis 1")
    m.no_activation(concat, w)

    def source(tensor: int) -> int:  # through a QUANTIZE (int8 -> int8)
        op = m.producer(tensor)
        return op.inputs[0] if op is not None and op.name == "QUANTIZE" else tensor

    first, second = concat.inputs
    if source(first) == h_prev:
        x_first, x_part, h_part = True, first, second
    elif source(second) == h_prev:
        x_first, x_part, h_part = False, second, first
    else:
        raise ModelMismatch(f"{w}: input is not layer {layer - 1}'s h")
    x_table = None
    if x_part != h_prev:
        requantize = m.op(x_part, ("QUANTIZE",), w)
        m.int8(requantize.inputs[0], w)
        x_table = tflm_unary_table(m.g, requantize)
    joined = m.int8(concat.outputs[0], w)
    for part in (x_part, h_part):  # TFLM's concatenation copies codes: one scale
        t = m.int8(part, w)
        if (t.scale, t.zero_point) != (joined.scale, joined.zero_point):
            raise ModelMismatch(f"{w}: the concatenation requantizes {t.name!r}")
    h_slice = m.op(h_part, ("STRIDED_SLICE",), w)
    return _Input(fc_op, h_slice, x_first=x_first, x_table=x_table, input_units=m.t(h_prev).size)


def _layer(
    m: _Matcher,
    idx: dict[str, int],
    cell: _Cell,
    h_prev: int | None,
    layer: int,
    n_layers: int,
    units: int,
    vocab_size: int,
) -> Layer:
    """A layer's constants: its z input (token or layer below), the cell's MUL/ADD
    parameters and the TFLM tables of its LOGISTIC/TANH ops."""
    w = f"layer {layer}"
    z_t, gate_split = _gate_split(m, cell.gate_ops, units, w)
    if h_prev is None:
        z_in = _token_input(m, z_t, idx["token"], vocab_size, units, w)
    else:
        z_in = _stacked_input(m, z_t, h_prev, layer, w)
    if (
        z_in.h_slice.inputs[0] != idx["h"]
        or _strided_slice_rows(m, z_in.h_slice, n_layers, units, w) != layer
    ):
        raise ModelMismatch(f"{w}: recurrent input is not h[{layer}]")
    fc = _fully_connected(m, z_in.fc_op, w)
    mul_oc = _mul_params(m.int8(cell.sig_o, w), m.int8(cell.tanh_c, w), m.int8(cell.h_new, w))
    mul_ig = _mul_params(m.int8(cell.sig_i, w), m.int8(cell.tanh_g, w), m.int8(cell.i_g, w))
    mul_fc = _mul_params(m.int8(cell.sig_f, w), m.int8(cell.c_slice, w), m.int8(cell.f_c, w))
    add_c = _add_params(m.int8(cell.f_c, w), m.int8(cell.i_g, w), m.int8(cell.c_sum, w))
    for op in cell.muls:
        if m.t(op.inputs[0]).shape != m.t(op.inputs[1]).shape:
            raise ModelMismatch(f"{w}: broadcasting MUL is unsupported")
    tables = {
        "sig_i": tflm_unary_table(m.g, cell.gate_ops["i"]),
        "sig_f": tflm_unary_table(m.g, cell.gate_ops["f"]),
        "tanh_g": tflm_unary_table(m.g, cell.gate_ops["g"]),
        "sig_o": tflm_unary_table(m.g, cell.gate_ops["o"]),
        "tanh_c": tflm_unary_table(m.g, cell.tanh_c_op),
    }
    return Layer(
        units=units,
        input_units=z_in.input_units,
        gather=z_in.gather,
        z_add=z_in.z_add,
        fc=fc,
        x_first=z_in.x_first,
        x_table=z_in.x_table,
        gate_split=gate_split,
        tables=tables,
        mul_fc=mul_fc,
        mul_ig=mul_ig,
        add_c=add_c,
        clip_lo=cell.clip_lo,
        clip_hi=cell.clip_hi,
        mul_oc=mul_oc,
    )


def _plan(
    io: dict[str, dict[str, Any]], layers: list[Layer], logits: FullyConnected, vocab_size: int
) -> Plan:
    """The Plan, with the carry: the runtime's own arithmetic (dequantize h_out, quantize
    into h) as tables."""
    codec = QuantizedIO(
        {
            n: (float(t["scale"]), int(t["zero_point"]))
            for n, t in io.items()
            if t["dtype"] == "int8"
        }
    )
    codes = np.arange(-128, 128, dtype=np.int8)
    zeros = np.zeros(1, np.float32)
    return Plan(
        vocab=vocab_size,
        layers=layers,
        logits=logits,
        carry_h=codec.quantize("h", codec.dequantize("h_out", codes)),
        carry_c=codec.quantize("c", codec.dequantize("c_out", codes)),
        h_reset=int(codec.quantize("h", zeros)[0]),
        c_reset=int(codec.quantize("c", zeros)[0]),
        logits_scale=float(io["logits"]["scale"]),
        logits_zp=int(io["logits"]["zero_point"]),
        io=io,
    )
