"""Character-level LSTM toolkit: train with Keras, export to TFLite/ONNX with explicit state,
generate with a lightweight runtime that never imports TensorFlow."""

from __future__ import annotations

__version__ = "0.1.0"
