"""The numpy target: the folded fp32 weights as weights.npz, for the numpy backend."""

from __future__ import annotations

import io

import numpy as np

from toolkit.config import ModelConfig
from toolkit.runtime.backends.numpy import NumpyBackend
from toolkit.runtime.step import StepBackend


def convert(folded: dict[str, np.ndarray]) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **folded)  # type: ignore[arg-type]
    return buffer.getvalue()


def backends(data: bytes, config: ModelConfig) -> list[StepBackend]:
    return [NumpyBackend.from_bytes(data, config.layers)]
