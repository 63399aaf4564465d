"""What `toolkit serve` serves: an exported model folder on one runtime, and the limits a
public endpoint can live with."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from toolkit.chat_format import chat_format_of
from toolkit.errors import UsageError
from toolkit.runtime.backends import open_backend
from toolkit.runtime.generator import check_backend, check_load_args, default_model_dir
from toolkit.runtime.manifest import VARIANTS, Manifest
from toolkit.runtime.step import batch_invariant
from toolkit.runtime.targets import SERVE_RUNTIMES, runtime_named, variant_named
from toolkit.serve.engine import Engine
from toolkit.serve.state_token import StateCodec
from toolkit.vocabulary import Vocabulary


@dataclass(frozen=True)
class ServeLimits:
    """The server's limits; each is a `toolkit serve` option."""

    max_batch: int = 64  # rows in one step (a request takes n)
    max_queue: int = 256  # requests waiting to join; more get 429
    cache_mb: float = 64.0  # the prefix cache's bound
    max_prompt_chars: int = 100_000
    max_tokens: int = 100_000  # characters one choice may ask for
    max_n: int = 16
    max_prompts: int = 32  # prompts in one request
    max_stops: int = 16
    max_body_bytes: int = 1 << 20
    request_timeout_s: float = 600.0
    api_key: str | None = None
    state_secret: str | None = None

    def __post_init__(self) -> None:
        for name in ("max_batch", "max_queue", "max_prompt_chars", "max_tokens", "max_n"):
            if getattr(self, name) < 1:
                raise UsageError(f"--{name.replace('_', '-')} must be >= 1")
        if self.cache_mb < 0:
            raise UsageError("--cache-mb must be >= 0")
        if self.request_timeout_s <= 0:
            raise UsageError("--request-timeout must be > 0")


class ServedModel:
    """The model folder, its manifest and the file the runtime will run; checked when made
    (missing folder, variant or file: a one-line ModelFileError), opened by `open_engine`."""

    def __init__(
        self,
        model_dir: Path | None,
        runtime: str = "onnx",
        variant: str = "auto",
        threads: int = 1,
        name: str | None = None,
        state_secret: str | None = None,
        chat_format: Path | None = None,
    ) -> None:
        if runtime not in SERVE_RUNTIMES:
            raise UsageError(f"serve runs {', '.join(SERVE_RUNTIMES)}; got {runtime!r}")
        check_load_args(runtime, variant, threads)
        self.dir = Path(model_dir) if model_dir is not None else default_model_dir(runtime)
        self.manifest = Manifest.read(self.dir)
        self.runtime = runtime
        self.variant = self.manifest.resolve_variant(runtime, variant)
        self.quantization = VARIANTS[self.variant]
        self.threads = threads
        self.artifact = self.manifest.runtime_artifact(runtime, self.quantization)
        self.name = name or self.manifest.name
        self.vocab: Vocabulary = self.manifest.vocabulary
        # The chat turn format: the file given, else the manifest's, else the default.
        self.chat_format = chat_format_of(self.manifest.chat_format, chat_format)
        self.chat_format.check_vocabulary(self.vocab, str(chat_format or "the chat format"))
        shape = self.manifest.model
        self.state_shape = (shape.layers, shape.units)
        self.codec = StateCodec(
            self.artifact.sha256, shape.layers, shape.units, len(self.vocab), state_secret
        )
        self.fingerprint = self.artifact.sha256[:16]
        self.created = int(time.time())
        self.batch_invariant: bool | None = None  # measured when opened

    def open_engine(self, limits: ServeLimits) -> Engine:
        backend = open_backend(
            self.dir, self.manifest, self.runtime, self.quantization, self.threads
        )
        check_backend(backend, self.manifest, f"{self.dir} ({self.runtime} {self.variant})")
        self.batch_invariant = batch_invariant(backend, self.state_shape, len(self.vocab))
        return Engine(
            backend,
            self.vocab,
            self.state_shape,
            max_batch=limits.max_batch,
            max_queue=limits.max_queue,
            cache_bytes=int(limits.cache_mb * (1 << 20)),
            # Padded to a power of two where the runtime reallocates on every new batch size;
            # an integer-only model steps its rows one at a time, where padding only adds rows.
            pad_batches=runtime_named(self.runtime).pads_batches
            and not variant_named(self.variant).integer_only,
        )

    def card(self) -> dict[str, Any]:
        """The model as /v1/models lists it: OpenAI's fields, then ours."""
        return {
            "id": self.name,
            "object": "model",
            "created": self.created,
            "owned_by": "char-lstm-toolkit",
            "runtime": self.runtime,
            "variant": self.variant,
            "file": self.artifact.file,
            "sha256": self.artifact.sha256,
            "vocab_size": len(self.vocab),
            "layers": self.state_shape[0],
            "units": self.state_shape[1],
            # Whether a seeded text is the same whatever shares its batch (measured at load).
            "batch_invariant": self.batch_invariant,
            "max_model_len": None,  # the state carries any length
            "vocab": list(self.vocab.chars),  # token id = index
        }
