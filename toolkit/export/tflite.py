"""The TFLite target (LiteRT): fp32, fp16 weights, and dynamic-range int8.

describe  the step graph's signature `serving_default`, batch resizable
convert   TFLiteConverter.from_concrete_functions, builtin ops only (no Flex);
          fp16: float16 weights; int8: int8 weights, float activations (no calibration)
validate  LiteRT (export/validate.py)
"""

from __future__ import annotations

from typing import Any

from toolkit.errors import ExportError, first_line
from toolkit.logs import import_tensorflow
from toolkit.runtime.backends.tflite import TFLiteBackend
from toolkit.runtime.step import StepBackend


def convert(module: Any, quantization: str) -> bytes:
    tf = import_tensorflow()
    concrete = module.step.get_concrete_function()
    converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete], module)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]  # no Flex ops
    if quantization == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif quantization == "int8":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    try:
        return bytes(converter.convert())
    except Exception as exc:
        raise ExportError(f"TFLite conversion failed: {first_line(exc)}") from None


def op_types(data: bytes) -> set[str]:
    """The builtin op names of a .tflite file (FULLY_CONNECTED, GATHER, ...)."""
    from tensorflow.lite.python import analyzer  # noqa: F401  (loads the schema visualize reads)
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import visualize

    names = {
        value: name
        for name, value in vars(schema.BuiltinOperator).items()
        if not name.startswith("_")
    }
    model = visualize.CreateDictFromFlatbuffer(data)
    codes = (
        max(code.get("builtin_code", 0), code.get("deprecated_builtin_code", 0))
        for code in model["operator_codes"]
    )
    return {str(names.get(code, code)) for code in codes}


def backends(data: bytes) -> list[StepBackend]:
    return [TFLiteBackend(data, threads=1)]
