"""The C target: the full-int8 step as dependency-free C (char_lstm.c / char_lstm.h).

    describe  the folder's full-int8 model (model.full-int8.tflite, made first when the
              export lacks it) and its manifest section (TFLite Micro's tensor order and
              quantization)
    convert   emit.py: the graph matched per layer (match.py), TFLite Micro's integer
              constants computed as its kernels' Prepare does, the LOGISTIC/TANH tables made
              by running TFLite Micro on every int8 input, all written into a fixed template
              (templates/: C99, no malloc, no floating point, weights const, the state in a
              struct the caller owns; DSP and wasm SIMD paths for the matrix product)
    validate  validate.py: compiled on this machine and run beside TFLite Micro's interpreter
              over at least 4,096 teacher-forced characters of validation text: identical int8
              logits and state at every step, or the export fails; then bits/char like every
              quantized target, in the compiled C (runtime `c`)

The ("c", "full-int8") target of exporter.py. Needs tflite-micro and a C compiler, not
TensorFlow.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from toolkit.config import ModelConfig
from toolkit.errors import ExportError, ModelFileError
from toolkit.export.c.emit import emit_c
from toolkit.export.c.validate import STEPS, validate_c
from toolkit.files import sha256_bytes
from toolkit.runtime.backends.c import HEADER, SOURCE, CBackend, find_compiler, header_int
from toolkit.runtime.step import StepBackend


def unable(config: ModelConfig) -> str | None:
    """Why this model cannot become C on this machine, before anything is converted; None if
    it can. The matrix product's fast paths read 4 weights per word: units % 4 == 0."""
    if config.units % 4:
        return f"the C target needs units divisible by 4; this model has {config.units}"
    try:
        find_compiler()
    except ModelFileError:
        return "no C compiler to validate it with (install gcc, or set CC)"
    return None


def validation_ids(val_ids: np.ndarray, steps: int = STEPS) -> np.ndarray:
    """The first `steps` characters of the validation text; a shorter text is repeated (the
    state carries on across the seam, so every step is still a new state)."""
    ids = np.asarray(val_ids[:steps], np.int32)  # a prepared corpus is memory-mapped
    if len(ids) == 0:
        raise ExportError("no validation text to check the C against TensorFlow Lite Micro")
    return np.resize(ids, steps)


def convert(
    tflite_bytes: bytes,
    micro: Mapping[str, Any],
    vocab: list[str],
    source_name: str,
    val_ids: np.ndarray,
    log: Callable[[str], None],
) -> tuple[bytes, dict[str, Any], dict[str, bytes]]:
    """char_lstm.c, its manifest section (`c`) and its companion char_lstm.h, validated
    bit for bit against TensorFlow Lite Micro."""
    files = emit_c(tflite_bytes, micro, vocab, source_name)
    source, header = files[SOURCE], files[HEADER]
    ids = validation_ids(val_ids)
    report = validate_c(tflite_bytes, micro, files, ids)
    repeated = " (the validation text repeated)" if len(val_ids) < len(ids) else ""
    log(
        f"validated {SOURCE} in {report['compiler']} {' '.join(report['flags'])}: bit-exact "
        f"with TensorFlow Lite Micro over {len(ids):,} characters of validation text{repeated} "
        "(int8 logits, h_out, carried h and c)"
    )
    tensors = [*micro["inputs"], *micro["outputs"]]
    section = {
        "source": source_name.rsplit("/", 1)[-1],
        "source_sha256": sha256_bytes(tflite_bytes),
        # What a caller of the C needs to read its int8 boundary as real numbers.
        "quantization": {
            t["name"]: {"scale": float(t["scale"]), "zero_point": int(t["zero_point"])}
            for t in tensors
            if t["dtype"] == "int8"
        },
        "flash_bytes": header_int(header, "CHAR_LSTM_FLASH_BYTES"),
        "ram_bytes": header_int(header, "CHAR_LSTM_RAM_BYTES"),
        "files": {HEADER: sha256_bytes(header)},
        "validation_tflm": report,
    }
    log(
        f"converted {SOURCE}: {section['flash_bytes']:,} bytes of constants (flash), state "
        f"{section['ram_bytes']:,} bytes (RAM)"
    )
    return source, section, {HEADER: header}


def backends(source: bytes, section: Mapping[str, Any], header: bytes) -> list[StepBackend]:
    """The compiled C itself (the bits/char of the manifest's `validation`)."""
    return [CBackend(source, header, section)]
