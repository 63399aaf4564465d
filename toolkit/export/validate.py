"""Validation, the same for every target: step the exported file over held-out text, carrying
the state from zeros, and compare with the reference (the Keras model, or the fp32 weights an
exported folder was made from).

fp32 files must match every logit within FP32_ATOL and choose the same argmax; quantized
files must keep bits per character within a tolerance of the reference's.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from toolkit.config import ModelConfig
from toolkit.errors import ExportError
from toolkit.metrics import mean_bits_per_char
from toolkit.runtime.step import StepBackend

FP32_ATOL = 1e-4
# Default allowed relative bits/char loss against the reference, per quantization
# (--bpc-tolerance overrides): full-integer activations cost more than int8 weights alone.
BPC_TOLERANCE = {"none": 0.0, "float16": 0.02, "int8": 0.02, "full-int8": 0.03}
VALIDATION_STEPS = 512
VALIDATION_STREAMS = 4


@dataclass
class Validation:
    steps: int
    streams: int
    max_abs_logit_diff: float
    argmax_agreement: float
    keras_bpc: float  # the reference's (named `reference`), Keras or not
    exported_bpc: float
    passed: bool
    criterion: str
    reference: str = "Keras"

    def to_dict(self) -> dict[str, Any]:
        return {
            "steps": self.steps,
            "streams": self.streams,
            "max_abs_logit_diff": self.max_abs_logit_diff,
            "argmax_agreement": self.argmax_agreement,
            "keras_bpc": self.keras_bpc,
            "exported_bpc": self.exported_bpc,
            "bpc_ratio": self.exported_bpc / self.keras_bpc if self.keras_bpc else float("nan"),
            "passed": self.passed,
            "criterion": self.criterion,
            "reference": self.reference,
        }


def validation_tokens(ids: np.ndarray, steps: int, streams: int) -> np.ndarray:
    """[streams, steps + 1] contiguous slices spread over the text (the +1 is the target)."""
    need = steps + 1
    if len(ids) < need:
        raise ExportError(f"validation text too short: {len(ids)} < {need} characters")
    starts = np.linspace(0, len(ids) - need, streams).astype(int)
    return np.stack([ids[s : s + need] for s in starts]).astype(np.int32)


def keras_reference_logits(model: Any, config: ModelConfig, tokens: np.ndarray) -> np.ndarray:
    """Keras logits [streams, steps, vocab] for the whole window in one call, state from zero."""
    streams = tokens.shape[0]
    zeros = np.zeros((streams, config.layers, config.units), np.float32)
    out = model({"tokens": tokens[:, :-1], "h": zeros, "c": zeros}, training=False)
    return np.asarray(out["logits"], np.float32)


def step_logits(backend: StepBackend, config: ModelConfig, tokens: np.ndarray) -> np.ndarray:
    """The backend's logits [streams, steps, vocab], stepping each column with the state
    carried from zeros."""
    streams, n = tokens.shape[0], tokens.shape[1] - 1
    h = np.zeros(config.state_shape(streams), np.float32)
    c = np.zeros_like(h)
    logits = np.empty((streams, n, config.vocab_size), np.float32)
    for t in range(n):
        out, h, c = backend.step(np.ascontiguousarray(tokens[:, t]), h, c)
        logits[:, t] = out
    return logits


def validate_backend(
    backend: StepBackend,
    reference: np.ndarray,
    config: ModelConfig,
    tokens: np.ndarray,
    quantization: str,
    bpc_tolerance: float,
    reference_name: str = "Keras",
) -> Validation:
    logits = step_logits(backend, config, tokens)
    targets = tokens[:, 1:]
    diff = float(np.max(np.abs(logits - reference)))
    agree = float(np.mean(logits.argmax(-1) == reference.argmax(-1)))
    reference_bpc = mean_bits_per_char(reference, targets)
    exported_bpc = mean_bits_per_char(logits, targets)
    if quantization == "none":
        passed = diff <= FP32_ATOL and agree == 1.0
        criterion = f"max |dlogits| <= {FP32_ATOL:g} and identical argmax"
    else:
        passed = exported_bpc <= reference_bpc * (1 + bpc_tolerance)
        criterion = f"bits/char within {bpc_tolerance:.1%} of {reference_name}"
        if backend.name == "tflm":
            criterion += ", in TensorFlow Lite Micro's interpreter"
    return Validation(
        steps=tokens.shape[1] - 1,
        streams=tokens.shape[0],
        max_abs_logit_diff=diff,
        argmax_agreement=agree,
        keras_bpc=reference_bpc,
        exported_bpc=exported_bpc,
        passed=passed,
        criterion=criterion,
        reference=reference_name,
    )


def check(log: Callable[[str], None], name: str, where: str, result: Validation) -> None:
    """Log a validation; an ExportError (nothing is written) if it failed."""
    log(
        f"validated {name} in {where}: max|dlogits| {result.max_abs_logit_diff:.2e}, "
        f"argmax agreement {result.argmax_agreement:.2%}, bits/char "
        f"{result.exported_bpc:.4f} vs {result.reference} {result.keras_bpc:.4f} over "
        f"{result.streams}x{result.steps} steps: {'ok' if result.passed else 'FAILED'}"
    )
    if not result.passed:
        raise ExportError(
            f"validation failed for {name} in {where}: {result.criterion} not met "
            f"(max |dlogits| {result.max_abs_logit_diff:.2e}, bits/char "
            f"{result.exported_bpc:.4f} vs {result.keras_bpc:.4f})"
        )
