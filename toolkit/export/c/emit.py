"""Emit dependency-free C (char_lstm.c / char_lstm.h) for a full-int8 char-LSTM TFLite model.

    emit_c(tflite_bytes, micro, vocab, source) -> {"char_lstm.c": bytes, "char_lstm.h": bytes}

`micro` is the manifest's `micro` section of the model file (input/output order, scales and
zero points), `vocab` the manifest's vocabulary. The C code is the fixed template in
templates/; only the constants are generated. Needs numpy and tflite-micro (whose schema
parses the model and whose interpreter makes the LOGISTIC/TANH tables), not TensorFlow.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from toolkit.export.c import quant
from toolkit.export.c.graph import ModelMismatch, parse
from toolkit.export.c.match import GATES, AddParams, Layer, MulParams, Plan, match

TEMPLATES = Path(__file__).parent / "templates"
PER_LINE = 32  # numbers per line in the generated arrays
# The matvec_s8 bodies in the C template, between these two lines.
MATVEC_BEGIN = "/* matvec_s8: begin */"
MATVEC_END = "/* matvec_s8: end */"


def emit_c(
    tflite_bytes: bytes, micro: Mapping[str, Any], vocab: list[str], source: str
) -> dict[str, bytes]:
    """char_lstm.c and char_lstm.h for a full-int8 model; `source` names it in the header."""
    plan = match(parse(tflite_bytes), micro, vocab)
    return render(plan, vocab, source, hashlib.sha256(tflite_bytes).hexdigest())


def matvec_source() -> str:
    """The template's matvec_s8 bodies alone (DSP, wasm SIMD, portable), for the on-target and
    in-browser checks that hold the fast paths to the portable one."""
    text = (TEMPLATES / "char_lstm.c.in").read_text()
    begin, end = text.index(MATVEC_BEGIN), text.index(MATVEC_END)
    return text[begin:end] + MATVEC_END + "\n"


def matvec_harness_source() -> str:
    """templates/matvec_harness.h: the checks the on-target and in-browser matvec tests share
    (both builds write it beside matvec_s8.c)."""
    return (TEMPLATES / "matvec_harness.h").read_text()


# --------------------------------------------------------------------------- rendering


def _c_string(text: str) -> str:
    escaped = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\t": "\\t", "\r": "\\r"}
    out = []
    for ch in text:
        if ch in escaped:
            out.append(escaped[ch])
        elif ch.isascii() and ch.isprintable():
            out.append(ch)
        else:  # UTF-8 bytes; the file stays ASCII. "" splits off following hex digits.
            out.append("".join(f"\\x{b:02x}" for b in ch.encode()) + '""')
    return '"' + "".join(out) + '"'


class _Consts:
    """The generated constants, in order, and their flash bytes."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.flash = 0
        self.tables: dict[bytes, str] = {}  # identical LOGISTIC/TANH tables are stored once

    def array(
        self,
        ctype: str,
        name: str,
        values: np.ndarray,
        dims: str,
        comment: str,
        align: bool = False,
    ) -> str:
        flat = np.asarray(values).reshape(-1)
        size = {"int8_t": 1, "int32_t": 4}[ctype]
        self.flash += flat.size * size
        text = [str(v) for v in flat.tolist()]
        rows = [", ".join(text[i : i + PER_LINE]) for i in range(0, len(text), PER_LINE)]
        body = ",\n    ".join(rows)
        attr = " ALIGN4" if align else ""
        self.parts.append(
            f"/* {comment} */\nstatic const {ctype} {name}{dims}{attr} = {{\n    {body}\n}};\n"
        )
        return name

    def table(self, values: np.ndarray, name: str, comment: str) -> str:
        """An int8 [256] table, or the name of an identical one already stored (any layer)."""
        key = values.astype(np.int8).tobytes()
        if key not in self.tables:
            self.tables[key] = self.array("int8_t", name, values, "[256]", comment)
        return self.tables[key]


def _unit_major(values: np.ndarray, layer: Layer) -> np.ndarray:
    """Rows of a [4U, ...] gate matrix reordered to [U][4 gates (i, f, g, o)][...]."""
    u = layer.units
    order = np.array([[layer.gate_split[g] * u + j for g in GATES] for j in range(u)]).reshape(-1)
    return values[order]


def _add(p: AddParams) -> str:
    return (
        f"{{{p.a_offset}, {p.a_multiplier}, {p.a_shift}, {p.b_offset}, {p.b_multiplier}, "
        f"{p.b_shift}, {p.out_multiplier}, {p.out_shift}, {p.out_offset}}}"
    )


def _mul(p: MulParams) -> str:
    return f"{{{p.a_offset}, {p.b_offset}, {p.multiplier}, {p.shift}, {p.out_offset}}}"


def _check_int32(name: str, values: np.ndarray) -> None:
    if values.size and (values.min() < quant.INT32_MIN or values.max() > quant.INT32_MAX):
        raise ModelMismatch(f"{name} does not fit int32")


def render(plan: Plan, vocab: list[str], source: str, sha256: str) -> dict[str, bytes]:
    """char_lstm.h and char_lstm.c: the templates with the plan's constants filled in."""
    units = plan.layers[0].units
    if any(layer.units != units for layer in plan.layers):
        raise ModelMismatch("layers of different widths are unsupported")
    for layer in plan.layers[1:]:
        if layer.input_units != units:
            raise ModelMismatch("a layer input of a different width is unsupported")
    c = _Consts()
    initializers = [_layer_constants(c, plan, i, layer) for i, layer in enumerate(plan.layers)]
    _output_constants(c, plan)
    c.parts.append(
        "static const layer_params LAYERS[CHAR_LSTM_LAYERS] = {\n"
        + ",\n".join(initializers)
        + "\n};\n"
    )
    vocab_c = ",\n".join(f"    {_c_string(ch)}" for ch in vocab)
    c.parts.append(
        f"const char *const char_lstm_vocab[CHAR_LSTM_VOCAB_SIZE] = {{\n{vocab_c}\n}};\n"
    )
    return _fill_templates(_template_values(plan, c, source, sha256))


def _layer_constants(c: _Consts, plan: Plan, index: int, layer: Layer) -> str:
    """A layer's arrays, added to `c`; its `layer_params` initializer."""
    pre = f"L{index}_"
    fc = layer.fc
    x_cols = layer.input_units
    w_x_name, w_h_name, x_table_name = _layer_weights(c, index, layer)
    bias = _unit_major(fc.bias, layer)
    _check_int32(f"layer {index} bias", bias)
    units = layer.units
    c.array(
        "int32_t",
        pre + "BIAS",
        bias,
        f"[{units * 4}]",
        f"layer {index}: b - zero point * sum(row), [units][4]",
    )
    c.array(
        "int32_t",
        pre + "MULTIPLIER",
        _unit_major(fc.multiplier, layer),
        f"[{units * 4}]",
        f"layer {index}: z's requantization multipliers (Q31), [units][4]",
    )
    c.array(
        "int8_t",
        pre + "SHIFT",
        _unit_major(fc.shift, layer),
        f"[{units * 4}]",
        f"layer {index}: z's requantization shifts, [units][4]",
    )
    if layer.gather is not None:
        g = _unit_major(layer.gather.T, layer).T  # [vocab][4U] -> [vocab][U][4]
        table_name = c.array(
            "int8_t",
            pre + "TABLE",
            g,
            f"[{plan.vocab * units * 4}]",
            f"layer {index}: embedding @ W_x + b per token, [vocab][units][4]",
        )
        table_add = _add(layer.z_add)  # type: ignore[arg-type]
    else:
        table_name, table_add = "NULL", "{0, 0, 0, 0, 0, 0, 0, 0, 0}"
    t = _activation_tables(c, index, layer)
    return (
        "    {\n"
        f"        .input_units = {x_cols if index else 0},\n"
        f"        .w_x = {w_x_name},\n"
        f"        .x_table = {x_table_name},\n"
        f"        .w_h = {w_h_name},\n"
        f"        .bias = {pre}BIAS,\n"
        f"        .multiplier = {pre}MULTIPLIER,\n"
        f"        .shift = {pre}SHIFT,\n"
        f"        .z_zero_point = {fc.output_zp},\n"
        f"        .table = {table_name},\n"
        f"        .table_add = {table_add},\n"
        f"        .sig_i = {t['sig_i']}, .sig_f = {t['sig_f']}, .tanh_g = {t['tanh_g']},\n"
        f"        .sig_o = {t['sig_o']}, .tanh_c = {t['tanh_c']},\n"
        f"        .f_c = {_mul(layer.mul_fc)},\n"
        f"        .i_g = {_mul(layer.mul_ig)},\n"
        f"        .o_tanh_c = {_mul(layer.mul_oc)},\n"
        f"        .c_sum = {_add(layer.add_c)},\n"
        f"        .c_min = {layer.clip_lo}, .c_max = {layer.clip_hi},\n"
        "    }"
    )


def _layer_weights(c: _Consts, index: int, layer: Layer) -> tuple[str, str, str]:
    """(W_X, W_H, X_REQUANTIZE) array names ("NULL" where absent): W's columns split into
    those for the input x (layers > 0) and for the recurrent h, rows in unit-major order."""
    pre = f"L{index}_"
    units, x_cols = layer.units, layer.input_units
    w = _unit_major(layer.fc.weights, layer)
    x_table_name = "NULL"
    if layer.x_table is not None:
        x_table_name = c.array(
            "int8_t",
            pre + "X_REQUANTIZE",
            layer.x_table,
            "[256]",
            f"layer {index}: x (layer {index - 1}'s h_out code) into the concatenation's "
            "quantization, TFLM's QUANTIZE for codes -128..127",
        )
    if index == 0:
        w_x_name = "NULL"
        w_h = w
    else:
        w_x = w[:, :x_cols] if layer.x_first else w[:, units:]
        w_h = w[:, x_cols:] if layer.x_first else w[:, :units]
        w_x_name = c.array(
            "int8_t",
            pre + "W_X",
            w_x,
            f"[{units * 4 * x_cols}]",
            f"layer {index}: W's columns for x, [units][4][{x_cols}]",
            True,
        )
    w_h_name = c.array(
        "int8_t",
        pre + "W_H",
        w_h,
        f"[{units * 4 * units}]",
        f"layer {index}: W's columns for h, [units][4][units]",
        True,
    )
    return w_x_name, w_h_name, x_table_name


def _activation_tables(c: _Consts, index: int, layer: Layer) -> dict[str, str]:
    """sig_i, sig_f, tanh_g, sig_o, tanh_c -> the name of its table. Identical tables are
    stored once, named by function and the gates they serve (L0_SIGMOID_I_F, L0_TANH)."""
    groups: dict[bytes, list[str]] = {}
    for k, v in layer.tables.items():
        groups.setdefault(v.astype(np.int8).tobytes(), []).append(k)
    names = {}
    for key, users in groups.items():
        kind = "SIGMOID" if users[0].startswith("sig") else "TANH"
        same_kind = [u for us in groups.values() for u in us[:1] if u.startswith(users[0][:3])]
        suffix = (
            "" if len(same_kind) == 1 else "_" + "_".join(u.split("_")[1].upper() for u in users)
        )
        what = ", ".join(f"{u.split('_')[0]}(z_{u.split('_')[1]})" for u in users)
        name = c.table(
            np.frombuffer(key, np.int8),
            f"L{index}_{kind}{suffix}",
            f"layer {index}: {what} for codes -128..127 (TFLM's own outputs)",
        )
        for u in users:
            names[u] = name
    return names


def _output_constants(c: _Consts, plan: Plan) -> None:
    """The output layer's arrays, the state carry tables and the zero points as #defines."""
    lg = plan.logits
    units = plan.layers[0].units
    _check_int32("logits bias", lg.bias)
    c.array(
        "int8_t",
        "LOGITS_W",
        lg.weights,
        f"[{plan.vocab * units}]",
        "the output layer's weights, [vocab][units]",
        True,
    )
    c.array(
        "int32_t",
        "LOGITS_BIAS",
        lg.bias,
        f"[{plan.vocab}]",
        "the output layer's b - zero point * sum(row), [vocab]",
    )
    c.array(
        "int32_t",
        "LOGITS_MULTIPLIER",
        lg.multiplier,
        f"[{plan.vocab}]",
        "the logits' requantization multipliers (Q31), [vocab]",
    )
    c.array(
        "int8_t",
        "LOGITS_SHIFT",
        lg.shift,
        f"[{plan.vocab}]",
        "the logits' requantization shifts, [vocab]",
    )
    c.array(
        "int8_t",
        "CARRY_H",
        plan.carry_h,
        "[256]",
        "h_out code -> next step's h code, for codes -128..127",
    )
    c.array(
        "int8_t",
        "CARRY_C",
        plan.carry_c,
        "[256]",
        "c_out code -> next step's c code, for codes -128..127",
    )
    c.parts.append(
        f"#define LOGITS_ZERO_POINT ({lg.output_zp})\n"
        f"#define H_ZERO ({plan.h_reset})\n#define C_ZERO ({plan.c_reset})\n"
    )


def _template_values(plan: Plan, c: _Consts, source: str, sha256: str) -> dict[str, str]:
    """The templates' {{PLACEHOLDER}} values."""
    n_layers, units = len(plan.layers), plan.layers[0].units
    scratch_rows = 1 if n_layers == 1 else 2
    # char_lstm_state: steps, h, c, h_new, logits; 4-byte aligned (uint32_t first). The C
    # checks this number with a static assertion.
    ram_bytes = 4 + 2 * n_layers * units + scratch_rows * units + plan.vocab
    ram_bytes = -(-ram_bytes // 4) * 4
    mult, shift = quant.quantize_multiplier(plan.logits_scale)
    return {
        "LAYERS": str(n_layers),
        "UNITS": str(units),
        "VOCAB": str(plan.vocab),
        "SOURCE": source,
        "SHA256": sha256,
        "LOGITS_SCALE": f"{plan.logits_scale:.9g}f",  # 9 digits: the float32 exactly
        "LOGITS_MULT": str(mult),
        "LOGITS_SHIFT": str(shift),
        "LOGITS_ZP": str(plan.logits_zp),
        "FLASH_BYTES": str(c.flash),
        "RAM_BYTES": str(ram_bytes),
        "SCRATCH_ROWS": str(scratch_rows),
        "CONSTANTS": "\n".join(c.parts).rstrip("\n"),
    }


def _fill_templates(values: dict[str, str]) -> dict[str, bytes]:
    out = {}
    for name in ("char_lstm.h", "char_lstm.c"):
        text = (TEMPLATES / f"{name}.in").read_text()
        for placeholder, value in values.items():
            text = text.replace("{{" + placeholder + "}}", value)
        if "{{" in text:
            raise AssertionError(f"unfilled placeholder in {name}")
        out[name] = text.encode()
    return out
