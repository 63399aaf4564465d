"""Text generation on any step backend: warm the state with the prompt, then sample.

`load(model_dir, runtime=...)` gives a `Generator`; `Generator.session()` gives a `Session`
that keeps its state between calls (feed text, sample more, feed more ...). The loops here are
the fast ones; `toolkit/runtime/reference.py` is the plain loop they are tested against.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from toolkit.config import ModelConfig
from toolkit.errors import ModelFileError, UsageError, first_line
from toolkit.runtime.backends import RUNTIMES, open_backend
from toolkit.runtime.decode import DecodeOptions, Decoder, Group, Row
from toolkit.runtime.manifest import VARIANTS, Manifest
from toolkit.runtime.sampling import overflow_detected
from toolkit.runtime.step import ArrayStepper, StepBackend, Stepper, make_stepper
from toolkit.vocabulary import Vocabulary

if TYPE_CHECKING:
    from toolkit.runtime.score import Score

DEFAULT_MODEL_NAME = "shakespeare"
# `sample` runs of at least this many characters use the backend's own stepper.
OWN_STEPPER_FROM = 16
UNKNOWN_CHOICES = ("error", "skip")


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
    # With DecodeOptions.logprobs: per text, per character, its log-probability and the most
    # likely characters' ({character: log-probability}).
    logprobs: list[list[CharLogprob]] | None = None

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
            **({"logprobs": self.logprobs} if self.logprobs is not None else {}),
            **self.extra,
        }


CharLogprob = dict[str, Any]  # {"char", "logprob", "top_logprobs": {char: logprob}}


def char_logprobs(vocab: Vocabulary, row: Row) -> list[CharLogprob]:
    """A decoded row's log-probabilities, one entry per character of its text."""
    chars = vocab.chars
    return [
        {
            "char": chars[token],
            "logprob": lp,
            "top_logprobs": {chars[t]: v for t, v in zip(ids, values, strict=True)},
        }
        for token, (lp, ids, values) in zip(row.out, row.logprobs, strict=True)
    ]


class Session:
    """Explicit LSTM state for `batch` parallel texts, advanced one character at a time."""

    def __init__(self, generator: Generator, batch: int = 1) -> None:
        self.generator = generator
        self.batch = batch
        shape = generator.shape.state_shape(batch)
        self.h = np.zeros(shape, np.float32)
        self.c = np.zeros(shape, np.float32)
        self.logits: np.ndarray | None = None
        self.first_char_at: float | None = None  # set by sample(): when text was first ready
        # Set by sample() when its options ask for log-probabilities: per row (char_logprobs).
        self.logprobs: list[list[CharLogprob]] | None = None

    def _step(self, tokens: np.ndarray) -> None:
        self.logits, self.h, self.c = self.generator.backend.step(tokens, self.h, self.c)

    def _stepper(self, length: int) -> Stepper:
        """How `sample` steps: the backend's own stepper (ONNX keeps the state in bound
        buffers, set up in about one step's time) for all but the shortest runs."""
        assert self.logits is not None
        if length < OWN_STEPPER_FROM:
            return ArrayStepper(self.generator.backend, self.h, self.c)
        return make_stepper(self.generator.backend, self.logits, self.h, self.c)

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
        options: DecodeOptions | None = None,
    ) -> list[str]:
        """Sample `length` characters per row; `on_text(row, chars)` streams them.

        `options` (a DecodeOptions) replaces the loose arguments when given; its seed is
        used when `rng` is not. Streamed text is handed over in chunks, at most every
        STREAM_INTERVAL_S, never a character that may be the start of a stop string.
        """
        if options is None:
            stops = (stop,) if stop else ()
            options = DecodeOptions(length, temperature, top_k, top_p, stops, n=self.batch)
        elif options.n != self.batch:
            options = dataclasses.replace(options, n=self.batch)
        if self.logits is None:
            self.feed(self.generator.start_text)
        decoder = Decoder(self.generator.vocab)
        decoder.add(Group(options, self.generator.vocab, rng))
        logits = self.logits
        assert logits is not None
        stepper = self._stepper(options.length)
        # Batch 1 draws and steps with Python ints: the same stages, without [batch] arrays.
        one = self.batch == 1
        draw = decoder.step_one if one else decoder.step
        advance = stepper.advance_one if one else stepper.advance
        perf_counter, next_flush = time.perf_counter, -math.inf
        self.first_char_at = None
        try:
            with overflow_detected():  # see Decoder
                for _ in range(options.length):
                    token = draw(logits)
                    # Every row met a stop string: nothing more to feed. (A row that ran to the
                    # length is fed its last character, so that the session continues from it.)
                    if not decoder.open and decoder.all_stopped():
                        break
                    if on_text is not None:
                        now = perf_counter()
                        if now >= next_flush:
                            next_flush = now + STREAM_INTERVAL_S
                            self._hand_over(decoder, on_text)
                    elif self.first_char_at is None:
                        self.first_char_at = perf_counter()
                    logits = advance(token)  # type: ignore[arg-type]
        finally:
            decoder.sync()
            self.logits = logits
            self.h, self.c = stepper.state()
        if on_text is not None:
            self._hand_over(decoder, on_text, last=True)
        vocab = self.generator.vocab
        self.logprobs = None
        if options.logprobs is not None:
            self.logprobs = [char_logprobs(vocab, row) for row in decoder.rows]
        return [decoder.text(row) for row in decoder.rows]

    def _hand_over(
        self, decoder: Decoder, on_text: Callable[[int, str], None], last: bool = False
    ) -> None:
        if last:
            for row in decoder.rows:
                row.finish = row.finish or "length"
        for position, text, _ in decoder.flush():
            if self.first_char_at is None:
                self.first_char_at = time.perf_counter()
            on_text(position, text)


# Streamed text is handed over at most this often: a terminal cannot show more, and a
# callback per character would cost as much as a step of a small model.
STREAM_INTERVAL_S = 0.02


class Generator:
    """A loaded model (any runtime) and its vocabulary."""

    def __init__(
        self,
        backend: StepBackend,
        vocab: Vocabulary,
        shape: ModelConfig,
        runtime: str,
        variant: str,
    ) -> None:
        self.backend = backend
        self.vocab = vocab  # ids are indices into it
        self.chars = list(vocab.chars)
        self.index = vocab.index
        self.shape = shape
        self.runtime = runtime
        self.variant = variant
        self.start_text = vocab.start_text

    @property
    def layers(self) -> int:
        return self.shape.layers

    @property
    def units(self) -> int:
        return self.shape.units

    def encode(self, text: str, unknown: str = "error") -> list[int]:
        """Token ids of `text`; characters the model does not know are an error (named), or
        dropped with unknown="skip"."""
        if unknown not in UNKNOWN_CHOICES:
            raise UsageError(f"--unknown must be 'error' or 'skip', got {unknown!r}")
        missing = self.vocab.unknown(text)
        if missing and unknown == "error":
            shown = ", ".join(repr(ch) for ch in missing[:20])
            raise UsageError(
                f"prompt has characters not in the model's vocabulary: {shown}"
                " (use --unknown skip to drop them)"
            )
        return [self.index[ch] for ch in text if ch in self.index]

    def decode(self, ids: np.ndarray | list[int]) -> str:
        return self.vocab.decode(ids)

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
        options: DecodeOptions | None = None,
        regex: str | None = None,
        choice: Sequence[str] = (),
        logit_bias: Mapping[int, float] | None = None,
        presence_penalty: float = 0.0,
        frequency_penalty: float = 0.0,
        logprobs: int | None = None,
    ) -> GenerationResult:
        """Warm the state with `prompt`, then sample `num_samples` texts in one batch.

        `regex` / `choice`: the text matches the pattern (or is one of the strings) in full,
        within `length`; `logit_bias` {token id: -100..100}; `presence_penalty` and
        `frequency_penalty` (-2..2) over the generated characters; `logprobs`: keep each
        character's log-probability and the N most likely ones (`result.logprobs`).
        `options` (a DecodeOptions, as the CLI and the server build it) replaces the loose
        arguments when given."""
        if options is None:
            options = decode_options(
                length, temperature, top_k, top_p, stop, seed, num_samples, logit_bias,
                presence_penalty, frequency_penalty, regex, choice, logprobs,
            )  # fmt: skip
        rng = np.random.default_rng(options.seed)
        t0 = time.perf_counter()
        session = self.session(options.n)
        session.feed(prompt if prompt else self.start_text, unknown)
        texts = session.sample(options.length, rng=rng, on_text=on_text, options=options)
        elapsed = time.perf_counter() - t0
        return GenerationResult(
            prompt=prompt,
            texts=texts,
            runtime=self.runtime,
            variant=self.variant,
            time_to_first_char_s=(
                session.first_char_at - t0 if session.first_char_at is not None else elapsed
            ),
            elapsed_s=elapsed,
            chars_generated=sum(len(t) for t in texts),
            logprobs=session.logprobs,
        )

    def score(
        self,
        text: str,
        top: int = 0,
        streams: int = 1,
        overlap: int = 256,
        unknown: str = "error",
        progress: Callable[[int, int], None] | None = None,
    ) -> Score:
        """Each character's log-probability given the ones before it, and the totals
        (toolkit/runtime/score.py: the state rule and `streams`)."""
        from toolkit.runtime.score import score

        return score(self, text, top, streams, overlap, unknown, progress)


def decode_options(
    length: int = 200,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    stop: str | None = None,
    seed: int | None = None,
    num_samples: int = 1,
    logit_bias: Mapping[int, float] | None = None,
    presence_penalty: float = 0.0,
    frequency_penalty: float = 0.0,
    regex: str | None = None,
    choice: Sequence[str] = (),
    logprobs: int | None = None,
) -> DecodeOptions:
    """`generate`'s loose arguments (and the CLI's options) as the one DecodeOptions."""
    return DecodeOptions(
        length,
        temperature,
        top_k,
        top_p,
        (stop,) if stop else (),
        seed,
        num_samples,
        logit_bias=tuple(sorted((logit_bias or {}).items())),
        presence_penalty=presence_penalty,
        frequency_penalty=frequency_penalty,
        regex=regex,
        choice=tuple(choice),
        logprobs=logprobs,
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


def check_load_args(runtime: str, variant: str, threads: int) -> None:
    if runtime not in RUNTIMES:
        raise UsageError(f"unknown runtime {runtime!r}; choose from {', '.join(RUNTIMES)}")
    if variant not in (*VARIANTS, "auto"):
        raise UsageError(f"unknown variant {variant!r}; choose from auto, {', '.join(VARIANTS)}")
    if runtime == "keras" and variant not in ("fp32", "auto"):
        raise UsageError("the keras runtime has only the fp32 variant")
    if threads < 1:
        raise UsageError(f"threads must be >= 1, got {threads}")


def load(
    model_dir: str | Path | None = None,
    runtime: str = "onnx",
    variant: str = "auto",
    threads: int = 1,
) -> Generator:
    """Load an exported model folder (or, for runtime='keras', a run directory)."""
    check_load_args(runtime, variant, threads)
    path = Path(model_dir) if model_dir is not None else default_model_dir(runtime)
    if runtime == "keras":
        from toolkit.runtime.backends.keras import KerasBackend, load_keras_model, read_run

        vocab, shape, _ = read_run(path)
        return Generator(KerasBackend(load_keras_model(path)), vocab, shape, "keras", "fp32")
    manifest = Manifest.read(path)
    variant = manifest.resolve_variant(runtime, variant)
    backend = open_backend(path, manifest, runtime, VARIANTS[variant], threads)
    check_backend(backend, manifest, f"{path} ({runtime} {variant})")
    return Generator(backend, manifest.vocabulary, manifest.model, runtime, variant)


def check_backend(backend: StepBackend, manifest: Manifest, what: str) -> None:
    """One step from the zero state: the model must agree with the manifest it came with.

    A vocabulary shorter than the logits would otherwise fail mid-generation with an
    IndexError, and a wrong state shape deep inside a runtime.
    """
    shape = manifest.model
    h = np.zeros(shape.state_shape(1), np.float32)
    try:
        logits, h_out, c_out = backend.step(np.zeros(1, np.int32), h, h.copy())
    except ModelFileError:
        raise
    except Exception as exc:  # each runtime words a shape mismatch its own way
        raise ModelFileError(
            f"{what}: the model does not take the manifest's state [layers {shape.layers}, "
            f"batch, units {shape.units}]: {first_line(exc)}"
        ) from None
    if logits.shape != (1, len(manifest.vocab)):
        raise ModelFileError(
            f"{what}: the model gives {logits.shape[-1]} logits but the manifest's "
            f"vocabulary has {len(manifest.vocab)} characters"
        )
    if h_out.shape != h.shape or c_out.shape != h.shape:
        raise ModelFileError(
            f"{what}: the model returns state {list(h_out.shape)}, the manifest says "
            f"{list(h.shape)}"
        )
