"""Text generation on any step backend: warm the state with the prompt, then sample.

`load(model_dir, runtime=...)` gives a `Generator`; `Generator.session()` gives a `Session`
that keeps its state between calls (feed text, sample more, feed more ...).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from toolkit.errors import ModelFileError, UsageError
from toolkit.runtime.backends import StepBackend, first_line, load_backend
from toolkit.runtime.manifest import VARIANTS, read_manifest, resolve_variant
from toolkit.runtime.sampling import check_sampling_args, sample_next

RUNTIMES = ("onnx", "tflite", "tflm", "numpy", "keras")
DEFAULT_MODEL_NAME = "shakespeare"
# Fed when the prompt is empty: text starts after a line break, so the model begins a line.
START_CANDIDATES = ("\n", " ")


@dataclass
class GenerationResult:
    prompt: str
    texts: list[str]
    runtime: str
    variant: str
    time_to_first_char_s: float
    elapsed_s: float
    chars_generated: int
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def chars_per_sec(self) -> float:
        return self.chars_generated / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "prompt": self.prompt,
            "texts": self.texts,
            "runtime": self.runtime,
            "variant": self.variant,
            "time_to_first_char_s": round(self.time_to_first_char_s, 6),
            "elapsed_s": round(self.elapsed_s, 6),
            "chars_generated": self.chars_generated,
            "chars_per_sec": round(self.chars_per_sec, 1),
            **self.extra,
        }


class Session:
    """Explicit LSTM state for `batch` parallel texts, advanced one character at a time."""

    def __init__(self, generator: Generator, batch: int = 1) -> None:
        self.generator = generator
        self.batch = batch
        shape = (generator.layers, batch, generator.units)
        self.h = np.zeros(shape, np.float32)
        self.c = np.zeros(shape, np.float32)
        self.logits: np.ndarray | None = None

    def _step(self, tokens: np.ndarray) -> None:
        self.logits, self.h, self.c = self.generator.backend.step(tokens, self.h, self.c)

    def feed(self, text: str, unknown: str = "error") -> None:
        """Run text through the model (same text for every row), updating the state."""
        ids = self.generator.encode(text, unknown)
        for token in ids:
            self._step(np.full(self.batch, token, dtype=np.int32))

    def sample(
        self,
        length: int,
        temperature: float = 1.0,
        top_k: int = 0,
        top_p: float = 1.0,
        rng: np.random.Generator | None = None,
        stop: str | None = None,
        on_text: Callable[[int, str], None] | None = None,
    ) -> list[str]:
        """Sample `length` characters per row; `on_text(row, chars)` streams them."""
        if length < 0:
            raise UsageError(f"length must be >= 0, got {length}")
        check_sampling_args(temperature, top_k, top_p)
        rng = rng or np.random.default_rng()
        if self.logits is None:
            self.feed(self.generator.start_text)
        chars = self.generator.chars
        out: list[list[str]] = [[] for _ in range(self.batch)]
        streamed = [0] * self.batch  # characters of each row already passed to on_text
        done = np.zeros(self.batch, dtype=bool)
        for _ in range(length):
            assert self.logits is not None
            tokens = sample_next(self.logits, rng, temperature, top_k, top_p)
            for row, token in enumerate(tokens):
                if done[row]:
                    continue
                out[row].append(chars[token])
                if stop and "".join(out[row][-len(stop) :]) == stop:
                    done[row] = True
                    del out[row][-len(stop) :]
                if on_text is not None:
                    # Hold back a tail that could still turn out to be the start of `stop`,
                    # so that what was streamed always equals the returned text.
                    safe = len(out[row]) if done[row] else _safe_length(out[row], stop)
                    if safe > streamed[row]:
                        on_text(row, "".join(out[row][streamed[row] : safe]))
                        streamed[row] = safe
            if done.all():
                break
            self._step(tokens)
        if on_text is not None:
            for row in range(self.batch):
                if len(out[row]) > streamed[row]:
                    on_text(row, "".join(out[row][streamed[row] :]))
        return ["".join(row) for row in out]


def _safe_length(chars: list[str], stop: str | None) -> int:
    """How many leading characters cannot be part of a `stop` match still in progress."""
    if not stop:
        return len(chars)
    for keep in range(min(len(stop) - 1, len(chars)), 0, -1):
        if "".join(chars[-keep:]) == stop[:keep]:
            return len(chars) - keep
    return len(chars)


class Generator:
    """A loaded model (any runtime) plus its vocabulary."""

    def __init__(
        self,
        backend: StepBackend,
        vocab: list[str],
        layers: int,
        units: int,
        runtime: str,
        variant: str,
    ) -> None:
        self.backend = backend
        self.chars = list(vocab)
        self.index = {ch: i for i, ch in enumerate(self.chars)}
        self.layers = layers
        self.units = units
        self.runtime = runtime
        self.variant = variant
        self.start_text = next((s for s in START_CANDIDATES if s in self.index), self.chars[0])

    def encode(self, text: str, unknown: str = "error") -> list[int]:
        if unknown not in ("error", "skip"):
            raise UsageError(f"--unknown must be 'error' or 'skip', got {unknown!r}")
        missing = sorted({ch for ch in text if ch not in self.index})
        if missing and unknown == "error":
            shown = ", ".join(repr(ch) for ch in missing[:20])
            raise UsageError(
                f"prompt has characters not in the model's vocabulary: {shown}"
                " (use --unknown skip to drop them)"
            )
        return [self.index[ch] for ch in text if ch in self.index]

    def session(self, batch: int = 1) -> Session:
        if batch < 1:
            raise UsageError(f"num-samples must be >= 1, got {batch}")
        return Session(self, batch)

    def generate(
        self,
        prompt: str = "",
        length: int = 200,
        temperature: float = 1.0,
        top_k: int = 0,
        top_p: float = 1.0,
        seed: int | None = None,
        num_samples: int = 1,
        stop: str | None = None,
        unknown: str = "error",
        on_text: Callable[[int, str], None] | None = None,
    ) -> GenerationResult:
        """Warm the state with `prompt`, then sample `num_samples` texts in one batch."""
        check_sampling_args(temperature, top_k, top_p)
        if length < 0:
            raise UsageError(f"length must be >= 0, got {length}")
        rng = np.random.default_rng(seed)
        t0 = time.perf_counter()
        session = self.session(num_samples)
        session.feed(prompt if prompt else self.start_text, unknown)
        first: list[float] = []

        def on_first(row: int, text: str) -> None:
            if not first:
                first.append(time.perf_counter() - t0)
            if on_text is not None:
                on_text(row, text)

        texts = session.sample(length, temperature, top_k, top_p, rng, stop, on_first)
        elapsed = time.perf_counter() - t0
        return GenerationResult(
            prompt=prompt,
            texts=texts,
            runtime=self.runtime,
            variant=self.variant,
            time_to_first_char_s=first[0] if first else elapsed,
            elapsed_s=elapsed,
            chars_generated=sum(len(t) for t in texts),
        )


def default_model_dir(runtime: str = "onnx") -> Path:
    """The model `generate` uses when none is named: exported/shakespeare here, in the
    checkout, or the copy inside an installed wheel (runs/shakespeare for keras)."""
    sub = ("runs" if runtime == "keras" else "exported", DEFAULT_MODEL_NAME)
    package = Path(__file__).resolve().parents[1]
    candidates = [Path.cwd().joinpath(*sub), package.parent.joinpath(*sub)]
    if runtime != "keras":
        candidates.append(package / "models" / DEFAULT_MODEL_NAME)
    for candidate in candidates:
        marker = "run.json" if runtime == "keras" else "manifest.json"
        if (candidate / marker).exists():
            return candidate
    if runtime == "keras":
        raise ModelFileError(
            "no trained run found at runs/shakespeare; create one with: toolkit train"
        )
    raise ModelFileError(
        "no exported model found at exported/shakespeare; create one with: "
        "toolkit train  then  toolkit export --format all"
    )


def load(
    model_dir: str | Path | None = None,
    runtime: str = "onnx",
    variant: str = "auto",
    threads: int = 1,
) -> Generator:
    """Load an exported model folder (or, for runtime='keras', a run directory)."""
    if runtime not in RUNTIMES:
        raise UsageError(f"unknown runtime {runtime!r}; choose from {', '.join(RUNTIMES)}")
    if variant not in (*VARIANTS, "auto"):
        raise UsageError(f"unknown variant {variant!r}; choose from auto, {', '.join(VARIANTS)}")
    if threads < 1:
        raise UsageError(f"threads must be >= 1, got {threads}")
    path = Path(model_dir) if model_dir is not None else default_model_dir(runtime)
    if runtime == "keras":
        if variant not in ("fp32", "auto"):
            raise UsageError("the keras runtime has only the fp32 variant")
        from toolkit.keras_runtime import load_keras_generator  # imports TensorFlow

        return load_keras_generator(path)  # variant: fp32
    manifest = read_manifest(path)
    variant = resolve_variant(manifest, runtime, variant)
    backend = load_backend(path, manifest, runtime, VARIANTS[variant], threads)
    model = manifest["model"]
    layers, units = int(model["layers"]), int(model["units"])
    check_backend(backend, manifest["vocab"], layers, units, f"{path} ({runtime} {variant})")
    return Generator(backend, manifest["vocab"], layers, units, runtime, variant)


def check_backend(
    backend: StepBackend, vocab: list[str], layers: int, units: int, what: str
) -> None:
    """One step from the zero state: the model must agree with the manifest it came with.

    A vocabulary shorter than the logits would otherwise fail mid-generation with an
    IndexError, and a wrong state shape deep inside a runtime.
    """
    h = np.zeros((layers, 1, units), np.float32)
    try:
        logits, h_out, c_out = backend.step(np.zeros(1, np.int32), h, h.copy())
    except ModelFileError:
        raise
    except Exception as exc:  # each runtime words a shape mismatch its own way
        raise ModelFileError(
            f"{what}: the model does not take the manifest's state [layers {layers}, batch, "
            f"units {units}]: {first_line(exc)}"
        ) from None
    if logits.shape != (1, len(vocab)):
        raise ModelFileError(
            f"{what}: the model gives {logits.shape[-1]} logits but the manifest's "
            f"vocabulary has {len(vocab)} characters"
        )
    if h_out.shape != h.shape or c_out.shape != h.shape:
        raise ModelFileError(
            f"{what}: the model returns state {list(h_out.shape)}, the manifest says "
            f"{[layers, 1, units]}"
        )
