"""What machine this is: its CPU, whether it computes in bf16, the libraries installed.

Recorded in run.json, manifests and benchmark reports, so that every figure says where it
was measured. Reads /proc/cpuinfo and package metadata; imports none of the libraries.
"""

from __future__ import annotations

import contextlib
import importlib.metadata as md
import os
import platform
from typing import Any

# Every library whose version a report or manifest records, in this order.
LIBRARIES = (
    "tensorflow",
    "keras",
    "tf2onnx",
    "onnx",
    "onnxruntime",
    "ai-edge-litert",
    "tflite-micro",
    "numpy",
)


def _cpuinfo_line(prefix: str) -> str | None:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            return next((line for line in handle if line.startswith(prefix)), None)
    except OSError:
        return None


def cpu_name() -> str:
    line = _cpuinfo_line("model name")
    if line is not None:
        return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def cpu_has_bf16() -> bool:
    """AVX512-BF16 or AMX-BF16 (Linux /proc/cpuinfo); elsewhere, assume not."""
    flags = (_cpuinfo_line("flags") or "").split()
    return bool({"avx512_bf16", "amx_bf16"} & set(flags))


def library_versions(names: tuple[str, ...] = LIBRARIES) -> dict[str, str]:
    """Installed versions of `names` (those not installed are left out)."""
    versions: dict[str, str] = {}
    for name in names:
        with contextlib.suppress(md.PackageNotFoundError):
            versions[name] = md.version(name)
    return versions


def machine_info() -> dict[str, Any]:
    """CPU, cores, platform, Python, library versions and the thread-related environment."""
    return {
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "bf16": cpu_has_bf16(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "versions": library_versions(),
        "env": {
            k: os.environ[k]
            for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "OPENBLAS_CORETYPE")
            if os.environ.get(k)
        },
    }
