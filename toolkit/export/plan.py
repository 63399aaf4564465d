"""Which files an export makes: (format, quantization) pairs from the command's choices.
Light (no TensorFlow), so that an impossible combination is refused at once."""

from __future__ import annotations

from toolkit.errors import UsageError
from toolkit.runtime.manifest import ARTIFACT_FILES, FORMATS, QUANTIZATIONS, variant_of


def plan_artifacts(formats: list[str], quantization: str) -> list[tuple[str, str]]:
    """Which (format, quantization) pairs to build; 'all' quantization means every variant."""
    for fmt in formats:
        if fmt not in FORMATS:
            raise UsageError(f"unknown format {fmt!r}; choose from {', '.join(FORMATS)}, all")
    if quantization not in (*QUANTIZATIONS, "all"):
        raise UsageError(
            f"unknown quantization {quantization!r}; choose from {', '.join(QUANTIZATIONS)}, all"
        )
    if quantization == "all":
        return [(f, q) for f in formats for q in QUANTIZATIONS if (f, q) in ARTIFACT_FILES]
    plan = []
    for fmt in formats:
        if (fmt, quantization) not in ARTIFACT_FILES:
            if len(formats) > 1:
                continue  # `--format all --quantize float16`: only those that have it
            supported = [variant_of(q) for f, q in ARTIFACT_FILES if f == fmt]
            raise UsageError(
                f"{fmt} has no {variant_of(quantization)} variant; "
                f"{fmt} supports: {', '.join(supported)}"
            )
        plan.append((fmt, quantization))
    if not plan:
        raise UsageError(f"no format has the {variant_of(quantization)} variant")
    return plan
