"""The C target's own validation: the generated C against TensorFlow Lite Micro, bit for bit.

The same teacher-forced text runs through
    TFLM's interpreter (batch 1), the state carried exactly as the toolkit's tflm runtime
        carries it (QuantizedIO: dequantize h_out/c_out, quantize them into h/c), and
    the generated C, compiled on this machine and called through ctypes,
and every step must give identical int8 logits, identical last-layer h_out codes and an
identical carried int8 state. The first difference fails the export in one line.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from toolkit.errors import ExportError, ModelFileError
from toolkit.runtime.backends.c import FLAGS, CharLSTMLibrary, compiler_id, find_compiler
from toolkit.runtime.backends.tflm import TFLMBackend

STEPS = 4096  # at least this many characters of validation text


def tflm_codes(
    tflite_bytes: bytes, micro: Mapping[str, Any], ids: np.ndarray
) -> dict[str, np.ndarray]:
    """TFLM's codes at every step, in the layout of CharLSTMLibrary.run."""
    backend = TFLMBackend(tflite_bytes, micro)
    codec = backend.codec
    shape = next(t["shape"] for t in micro["inputs"] if t["name"] == "h")
    h = np.zeros(shape, np.float32)  # the runtime keeps the state as float32
    c = np.zeros(shape, np.float32)
    rows: dict[str, list[np.ndarray]] = {"logits": [], "h_new": [], "h": [], "c": []}
    for token in ids.tolist():
        logits, h_out, c_out = backend._step_raw(
            np.array([token], np.int32), codec.quantize("h", h), codec.quantize("c", c)
        )
        h, c = codec.dequantize("h_out", h_out), codec.dequantize("c_out", c_out)
        rows["logits"].append(np.array(logits[0]))
        rows["h_new"].append(np.array(h_out[-1, 0]))
        rows["h"].append(codec.quantize("h", h)[:, 0])
        rows["c"].append(codec.quantize("c", c)[:, 0])
    return {name: np.stack(values) for name, values in rows.items()}


def compare(
    want: Mapping[str, np.ndarray], have: Mapping[str, np.ndarray], ids: np.ndarray
) -> None:
    """An ExportError (one line) at the first step where anything differs."""
    names = {"logits": "logits", "h_new": "h_out (last layer)", "h": "carried h", "c": "carried c"}
    same = np.ones(len(ids), bool)
    for key in names:
        same &= (want[key].reshape(len(ids), -1) == have[key].reshape(len(ids), -1)).all(axis=1)
    if same.all():
        return
    t = int(np.flatnonzero(~same)[0])
    for key, what in names.items():
        a, b = want[key][t].ravel(), have[key][t].ravel()
        bad = np.flatnonzero(a != b)
        if bad.size:
            raise ExportError(
                f"char_lstm.c is not bit-exact with TensorFlow Lite Micro: at step {t} (token "
                f"{int(ids[t])}) {what} differ at {bad.size} of {a.size} positions, the first "
                f"at {int(bad[0])}: TFLM {int(a[bad[0]])}, C {int(b[bad[0]])}"
            )


def validate_c(
    tflite_bytes: bytes,
    micro: Mapping[str, Any],
    files: Mapping[str, bytes],
    ids: np.ndarray,
) -> dict[str, Any]:
    """Teacher-force `ids` through TFLM and the compiled C; all must match (ExportError)."""
    try:
        cc = find_compiler()
        lib = CharLSTMLibrary(files["char_lstm.c"], files["char_lstm.h"], FLAGS, cc)
    except ModelFileError as exc:
        raise ExportError(f"the C target is validated by compiling it: {exc}") from None
    have = lib.run(ids)
    want = tflm_codes(tflite_bytes, micro, ids)
    compare(want, have, ids)
    return {
        "steps": len(ids),
        "identical": ["logits", "h_out", "carried h", "carried c"],
        "reference": "TensorFlow Lite Micro's interpreter, state carried as the tflm runtime does",
        "compiler": compiler_id(cc),
        "flags": list(FLAGS),
    }
