"""The model's generated C step (char_lstm.c, `toolkit export --format c`), compiled on this
machine into a shared library and called through ctypes.

The library is compiled once per source and cached by the hash of the sources, the flags
and the compiler (under `toolkit.files.cache_dir()`, or $TOOLKIT_C_CACHE), so only the first
load of a model pays for the compiler. A small shim is compiled with it: bulk entry points
(a whole teacher-forced run, a batch of rows) and the state struct's layout. So is the C
decoder (char_lstm_decode.c, see c_decode.py): `CBackend.decode_native` lets it choose the
characters too, as the firmware and the wasm module do.

The step keeps the runtime's contract, float state in and out: h and c are quantized into
the C state struct with the model's h/c input quantization, and the state the C carried into
the next step's input codes comes back dequantized with the same quantization, so the next
step quantizes it back to the very same codes. The int8 state therefore follows TensorFlow
Lite Micro's step for step, as the export validated (identical logits and carried state).
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from toolkit.config import ModelConfig
from toolkit.errors import ModelFileError, UsageError, first_line
from toolkit.files import cache_dir
from toolkit.runtime.backends.c_decode import c_tables, decoder_sources, temperature_milli
from toolkit.runtime.backends.tflite import QuantizedIO
from toolkit.runtime.manifest import Artifact, Manifest, read_verified
from toolkit.runtime.pattern import Pattern
from toolkit.runtime.step import StepOutput

SOURCE, HEADER = "char_lstm.c", "char_lstm.h"
# Tried in this order after $CC.
COMPILERS = ("cc", "gcc", "clang")
# The runtime's build: C99 as the file promises; -O2 is what the export validated with
# (the step is integer arithmetic, so any optimisation gives the same bits).
FLAGS = ("-std=c99", "-O2")

# Bulk entry points for Python (one ctypes call for many steps) and the state's layout.
SHIM = r"""
#include <stddef.h>
#include <string.h>
#include "char_lstm.h"
#include "char_lstm_decode.h"

size_t shim_state_bytes(void) { return sizeof(char_lstm_state); }
size_t shim_offset(int field) {
    switch (field) {
    case 0: return offsetof(char_lstm_state, h);
    case 1: return offsetof(char_lstm_state, c);
    default: return offsetof(char_lstm_state, logits);
    }
}

/* n states back to back (shim_state_bytes each), one token each; logits [n][vocab] out.
 * Returns the first row whose token is out of range (its state untouched), or n. */
int shim_step_rows(unsigned char *states, const int32_t *tokens, int n, int8_t *logits) {
    for (int r = 0; r < n; r++) {
        const int8_t *q = char_lstm_step((char_lstm_state *)(states + (size_t)r * sizeof(char_lstm_state)), tokens[r]);
        if (q == NULL) return r;
        memcpy(logits + (size_t)r * CHAR_LSTM_VOCAB_SIZE, q, CHAR_LSTM_VOCAB_SIZE);
    }
    return n;
}

/* Teacher-forced: step every token; after step t, logits[t], the carried h[t] and c[t] and
 * h_new[t] (the last layer's h_out codes). Returns the number of steps taken. */
int shim_run(char_lstm_state *s, const int32_t *tokens, int n, int8_t *logits, int8_t *h,
             int8_t *c, int8_t *h_new) {
    for (int t = 0; t < n; t++) {
        const int8_t *q = char_lstm_step(s, tokens[t]);
        if (q == NULL) return t;
        memcpy(logits + (size_t)t * CHAR_LSTM_VOCAB_SIZE, q, CHAR_LSTM_VOCAB_SIZE);
        memcpy(h + (size_t)t * sizeof s->h, s->h, sizeof s->h);
        memcpy(c + (size_t)t * sizeof s->c, s->c, sizeof s->c);
        memcpy(h_new + (size_t)t * CHAR_LSTM_UNITS,
               s->h_new[(CHAR_LSTM_LAYERS - 1) % CHAR_LSTM_SCRATCH_ROWS], CHAR_LSTM_UNITS);
    }
    return n;
}

/* Feed the prompt, then n greedy tokens (argmax, the first on ties), each fed back. */
int shim_greedy(char_lstm_state *s, const int32_t *prompt, int n_prompt, int n, int32_t *out) {
    const int8_t *q = NULL;
    for (int t = 0; t < n_prompt; t++)
        if ((q = char_lstm_step(s, prompt[t])) == NULL) return -1;
    if (q == NULL) return -1;
    for (int t = 0; t < n; t++) {
        int32_t best = 0;
        for (int32_t v = 1; v < CHAR_LSTM_VOCAB_SIZE; v++)
            if (q[v] > q[best]) best = v;
        out[t] = best;
        if (t + 1 < n) q = char_lstm_step(s, best);
    }
    return n;
}

/* The C decoder (char_lstm_decode.c) after the prompt, from the zero state: states == 0 is
 * no pattern. Returns the tokens written, -2 for a bad prompt, -3 for bad options, -1 where
 * char_lstm_decode refuses. */
int32_t shim_decode(const int32_t *prompt, int32_t n_prompt, int32_t temperature_milli,
                    int32_t top_k, uint64_t seed, const int16_t *next, const uint8_t *accepting,
                    const int16_t *distance, int32_t states, int32_t start, int32_t length,
                    int32_t *out) {
    char_lstm_state s;
    char_lstm_sampler sampler;
    char_lstm_rng rng;
    const int8_t *q = NULL;
    char_lstm_reset(&s);
    for (int32_t t = 0; t < n_prompt; t++)
        if ((q = char_lstm_step(&s, prompt[t])) == NULL) return -2;
    if (q == NULL) return -2;
    if (char_lstm_sampler_init(&sampler, temperature_milli, top_k) != 0) return -3;
    char_lstm_rng_seed(&rng, seed, 0u);
    const char_lstm_pattern p = {states, CHAR_LSTM_VOCAB_SIZE, start, next, accepting, distance};
    return char_lstm_decode(&s, q, &sampler, states > 0 ? &p : NULL, &rng, length, out);
}

/* n draws of char_lstm_choose from the same logits in pattern state `state` (states == 0: no
 * pattern) with `remaining` characters left: counts [vocab + 1], the last one END. */
int shim_choose_counts(const int8_t *logits, int32_t temperature_milli, int32_t top_k,
                       uint64_t seed, const int16_t *next, const uint8_t *accepting,
                       const int16_t *distance, int32_t states, int32_t state, int32_t remaining,
                       int32_t n, int32_t *counts) {
    char_lstm_sampler sampler;
    char_lstm_rng rng;
    if (char_lstm_sampler_init(&sampler, temperature_milli, top_k) != 0) return -1;
    char_lstm_rng_seed(&rng, seed, 0u);
    const char_lstm_pattern p = {states, CHAR_LSTM_VOCAB_SIZE, 0, next, accepting, distance};
    for (int32_t i = 0; i < n; i++) {
        const int32_t t = char_lstm_choose(&sampler, logits, states > 0 ? &p : NULL, state,
                                           remaining, &rng);
        counts[t == CHAR_LSTM_END ? CHAR_LSTM_VOCAB_SIZE : t]++;
    }
    return 0;
}

/* The sampler's weight table for a temperature (for the tests). */
int shim_weights(int32_t temperature_milli, uint32_t *out) {
    char_lstm_sampler sampler;
    if (char_lstm_sampler_init(&sampler, temperature_milli, 0) != 0) return -1;
    memcpy(out, sampler.weight, sizeof sampler.weight);
    return 0;
}

/* The same step n times with nothing in between (for timing). */
int32_t shim_loop(char_lstm_state *s, const int32_t *tokens, int n) {
    int32_t check = 0;
    for (int t = 0; t < n; t++) check += char_lstm_step(s, tokens[t])[0];
    return check;
}
"""


# --------------------------------------------------------------------------- compiling


def find_compiler() -> str:
    """$CC, else the first of cc, gcc, clang on PATH; a one-line ModelFileError if none."""
    names = [os.environ["CC"]] if os.environ.get("CC") else list(COMPILERS)
    for name in names:
        path = shutil.which(name)
        if path:
            return path
    raise ModelFileError(
        f"no C compiler found ({', '.join(names)}): install one (apt-get install gcc) or set CC"
    )


def compiler_id(cc: str) -> str:
    """The compiler's first `--version` line (part of the cache key)."""
    try:
        proc = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=60)
    except OSError as exc:
        raise ModelFileError(f"cannot run the C compiler {cc}: {exc.strerror or exc}") from None
    return (proc.stdout.strip().splitlines() or [cc])[0]


def c_cache() -> Path:
    """Where compiled C is kept: $TOOLKIT_C_CACHE, else the user cache's c/."""
    explicit = os.environ.get("TOOLKIT_C_CACHE")
    return Path(explicit) if explicit else cache_dir() / "c"


@contextmanager
def locked(path: Path) -> Iterator[None]:
    """An exclusive lock on `path` (other processes building the same thing wait)."""
    try:
        import fcntl
    except ImportError:  # not POSIX: builds go to a temporary name and are moved in atomically
        yield
        return
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def build(
    sources: Mapping[str, bytes],
    flags: Sequence[str],
    *,
    cc: str | None = None,
    suffix: str = ".so",
    compile_only: Sequence[str] | None = None,
    what: str = SOURCE,
) -> Path:
    """Compile and link the .c files of `sources` (headers beside them) with `flags` (e.g.
    -shared -fPIC for a library), cached by content; the cached output's path.

    compile_only: the .c files to compile (default: all of them). A compiler error is a
    ModelFileError naming its first error line."""
    cc = cc or find_compiler()
    key = hashlib.sha256()
    for name in sorted(sources):
        key.update(name.encode() + b"\0" + hashlib.sha256(sources[name]).digest())
    key.update(repr([cc, compiler_id(cc), *flags, compile_only]).encode())
    digest = key.hexdigest()[:24]
    cache = c_cache()
    target = cache / f"char_lstm-{digest}{suffix}"
    if target.exists():
        return target
    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ModelFileError(f"cannot write {cache}: {exc.strerror or exc}") from None
    with locked(cache / f".{digest}.lock"):
        if target.exists():  # another process built it while this one waited
            return target
        with tempfile.TemporaryDirectory(dir=cache, prefix=".build-") as tmp:
            for name, data in sources.items():
                (Path(tmp) / name).write_bytes(data)
            c_files = [n for n in sources if n.endswith(".c")]
            if compile_only is not None:
                c_files = [n for n in c_files if n in compile_only]
            out = Path(tmp) / "out"
            cmd = [cc, *flags, *c_files, "-o", "out"]
            proc = subprocess.run(cmd, cwd=tmp, capture_output=True, text=True)
            if proc.returncode != 0 or not out.exists():
                raise ModelFileError(f"compiling {what} failed: {first_error(proc.stderr)}")
            os.replace(out, target)
    return target


def first_error(stderr: str) -> str:
    """The compiler's first error line (or its last line)."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    for line in lines:
        if "error" in line.lower():
            return line
    return lines[-1] if lines else "no output"


def header_int(header: bytes | str, name: str) -> int:
    """An integer #define of char_lstm.h."""
    text = header.decode() if isinstance(header, bytes) else header
    match = re.search(rf"^#define {name} \(?(-?\d+)\)?", text, re.M)
    if match is None:
        raise ModelFileError(f"{HEADER} has no {name}; is it the toolkit's generated header?")
    return int(match.group(1))


# --------------------------------------------------------------------------- the library


class CharLSTMLibrary:
    """char_lstm.c (+ the shim) compiled and loaded: reset, step and bulk runs on states
    that live in numpy buffers (int8 codes, as the C keeps them)."""

    def __init__(
        self, source: bytes, header: bytes, flags: Sequence[str] = FLAGS, cc: str | None = None
    ) -> None:
        self.vocab = header_int(header, "CHAR_LSTM_VOCAB_SIZE")
        self.layers = header_int(header, "CHAR_LSTM_LAYERS")
        self.units = header_int(header, "CHAR_LSTM_UNITS")
        files = {SOURCE: source, HEADER: header, "shim.c": SHIM.encode(), **decoder_sources()}
        self.path = build(files, [*flags, "-shared", "-fPIC"], cc=cc)
        try:
            lib = ctypes.CDLL(str(self.path))
        except OSError as exc:
            raise ModelFileError(f"cannot load {self.path}: {first_line(exc)}") from None
        self.lib = lib
        p8, p32 = np.ctypeslib.ndpointer(np.int8), np.ctypeslib.ndpointer(np.int32)
        pu8 = np.ctypeslib.ndpointer(np.uint8)
        lib.shim_state_bytes.restype = ctypes.c_size_t
        lib.shim_offset.restype = ctypes.c_size_t
        lib.shim_offset.argtypes = [ctypes.c_int]
        lib.char_lstm_step.restype = ctypes.c_void_p
        lib.char_lstm_step.argtypes = [ctypes.c_void_p, ctypes.c_int32]
        lib.char_lstm_reset.argtypes = [ctypes.c_void_p]
        lib.shim_step_rows.argtypes = [pu8, p32, ctypes.c_int, p8]
        lib.shim_run.argtypes = [ctypes.c_void_p, p32, ctypes.c_int, p8, p8, p8, p8]
        lib.shim_greedy.argtypes = [ctypes.c_void_p, p32, ctypes.c_int, ctypes.c_int, p32]
        lib.shim_loop.argtypes = [ctypes.c_void_p, p32, ctypes.c_int]
        lib.shim_loop.restype = ctypes.c_int32
        lib.shim_decode.restype = ctypes.c_int32
        lib.shim_decode.argtypes = [
            p32, ctypes.c_int32, ctypes.c_int32, ctypes.c_int32, ctypes.c_uint64,
            np.ctypeslib.ndpointer(np.int16), pu8, np.ctypeslib.ndpointer(np.int16),
            ctypes.c_int32, ctypes.c_int32, ctypes.c_int32, p32,
        ]  # fmt: skip
        lib.shim_choose_counts.argtypes = [
            p8, ctypes.c_int32, ctypes.c_int32, ctypes.c_uint64,
            np.ctypeslib.ndpointer(np.int16), pu8, np.ctypeslib.ndpointer(np.int16),
            ctypes.c_int32, ctypes.c_int32, ctypes.c_int32, ctypes.c_int32, p32,
        ]  # fmt: skip
        lib.shim_weights.argtypes = [ctypes.c_int32, np.ctypeslib.ndpointer(np.uint32)]
        self.state_bytes = int(lib.shim_state_bytes())
        if self.state_bytes != header_int(header, "CHAR_LSTM_RAM_BYTES"):
            raise ModelFileError(f"{SOURCE} and {HEADER} disagree on the state's size")
        self.h_offset, self.c_offset, self.logits_offset = (
            int(lib.shim_offset(i)) for i in range(3)
        )

    def new_states(self, rows: int = 1) -> np.ndarray:
        """`rows` zero states, [rows, state_bytes] uint8 (each 4-byte aligned as the C needs)."""
        states = np.zeros((rows, self.state_bytes), np.uint8)
        assert states.ctypes.data % 4 == 0 and self.state_bytes % 4 == 0
        for row in states:
            self.lib.char_lstm_reset(row.ctypes.data)
        return states

    def codes(self, states: np.ndarray, field: str) -> np.ndarray:
        """A view of the states' h or c codes, int8 [rows, layers, units]."""
        start = self.h_offset if field == "h" else self.c_offset
        size = self.layers * self.units
        return states[:, start : start + size].view(np.int8).reshape(-1, self.layers, self.units)

    def step_rows(self, states: np.ndarray, tokens: np.ndarray, logits: np.ndarray) -> None:
        """One step of each state with its token; int8 logits [rows, vocab] into `logits`."""
        done = self.lib.shim_step_rows(states, tokens, len(tokens), logits)
        if done != len(tokens):
            raise UsageError(
                f"token {int(tokens[done])} is out of the vocabulary's range 0..{self.vocab - 1}"
            )

    def run(self, tokens: np.ndarray) -> dict[str, np.ndarray]:
        """Teacher-forced steps from the zero state: int8 logits [n, vocab], carried h and c
        [n, layers, units], the last layer's h_out [n, units]."""
        tokens = np.ascontiguousarray(tokens, np.int32)
        n = len(tokens)
        out = {
            "logits": np.zeros((n, self.vocab), np.int8),
            "h": np.zeros((n, self.layers, self.units), np.int8),
            "c": np.zeros((n, self.layers, self.units), np.int8),
            "h_new": np.zeros((n, self.units), np.int8),
        }
        state = self.new_states()
        done = self.lib.shim_run(
            state.ctypes.data, tokens, n, out["logits"], out["h"], out["c"], out["h_new"]
        )
        if done != n:
            raise UsageError(f"token {int(tokens[done])} at step {done} is out of range")
        return out

    def greedy(self, prompt: Sequence[int] | np.ndarray, length: int) -> list[int]:
        """Token ids of `length` greedy steps after feeding `prompt` from the zero state."""
        out = np.zeros(length, np.int32)
        state = self.new_states()
        ids = np.asarray(prompt, np.int32)
        if self.lib.shim_greedy(state.ctypes.data, ids, len(ids), length, out) < 0:
            raise UsageError("the prompt is empty or has a token out of range")
        return [int(t) for t in out]

    def decode(
        self,
        prompt: Sequence[int] | np.ndarray,
        length: int,
        temperature: float = 0.0,
        top_k: int = 0,
        seed: int = 0,
        pattern: Pattern | None = None,
    ) -> list[int]:
        """The C decoder (char_lstm_decode.c) after `prompt` from the zero state: up to
        `length` token ids, fewer where the pattern's match ended."""
        if length < 0:
            raise UsageError(f"length must be >= 0, got {length}")
        if top_k < 0:
            raise UsageError(f"top-k must be >= 0 (0 means no limit), got {top_k}")
        if not 0 <= seed < 2**64:
            raise UsageError(f"the C sampler's seed must be in 0..2^64-1, got {seed}")
        milli = temperature_milli(temperature)
        empty16, empty8 = np.zeros(1, np.int16), np.zeros(1, np.uint8)
        nxt, accepting, distance, states, start = empty16, empty8, empty16, 0, 0
        if pattern is not None:
            pattern.check_length(length)
            nxt, accepting, distance = c_tables(pattern, self.vocab)
            states, start = pattern.states, pattern.start
        ids = np.ascontiguousarray(prompt, np.int32)
        out = np.zeros(max(length, 1), np.int32)
        n = self.lib.shim_decode(
            ids, len(ids), milli, top_k, seed, nxt, accepting, distance, states, start, length,
            out,
        )  # fmt: skip
        if n == -2:
            raise UsageError("the prompt is empty or has a token out of range")
        if n < 0:
            raise UsageError("the C decoder refused the options")
        return [int(t) for t in out[:n]]

    def choose_counts(
        self,
        logits: np.ndarray,
        draws: int,
        temperature: float,
        top_k: int = 0,
        seed: int = 0,
        pattern: Pattern | None = None,
        state: int = 0,
        remaining: int = 1,
    ) -> np.ndarray:
        """How often char_lstm_choose picks each token (and, last, END) in `draws` draws
        from the same int8 logits: the C sampler's distribution, for the tests."""
        counts = np.zeros(self.vocab + 1, np.int32)
        empty16, empty8 = np.zeros(1, np.int16), np.zeros(1, np.uint8)
        nxt, accepting, distance, states = empty16, empty8, empty16, 0
        if pattern is not None:
            nxt, accepting, distance = c_tables(pattern, self.vocab)
            states = pattern.states
        q = np.ascontiguousarray(logits, np.int8)
        if self.lib.shim_choose_counts(
            q, temperature_milli(temperature), top_k, seed, nxt, accepting, distance, states,
            state, remaining, draws, counts,
        ) != 0:  # fmt: skip
            raise UsageError("bad sampler options")
        return counts

    def sampler_weights(self, temperature: float) -> np.ndarray:
        """The C sampler's fixed-point weights 2^16 * exp(-d * scale / T), d = 0..255."""
        out = np.zeros(256, np.uint32)
        if self.lib.shim_weights(temperature_milli(temperature), out) != 0:
            raise UsageError(f"bad temperature {temperature}")
        return out


# --------------------------------------------------------------------------- the backend


class CBackend:
    """The step in the compiled C: rows run one after another (the C step has batch 1)."""

    name = "c"

    @classmethod
    def from_artifact(
        cls, model_dir: Path, artifact: Artifact, source: bytes, shape: ModelConfig
    ) -> CBackend:
        """The backend of an exported folder's char_lstm.c (and its header, checksum-checked)."""
        header = read_header(model_dir, artifact)
        backend = cls(source, header, c_section(artifact))
        if (backend.lib.layers, backend.lib.units) != (shape.layers, shape.units):
            raise ModelFileError(
                f"{artifact.file} is a {backend.lib.layers} x {backend.lib.units} LSTM, the "
                f"manifest's model is {shape.layers} x {shape.units}"
            )
        return backend

    def __init__(
        self, source: bytes, header: bytes, section: Mapping[str, Any], flags: Sequence[str] = FLAGS
    ) -> None:
        self.lib = CharLSTMLibrary(source, header, flags)
        self.codec = codec(section)

    def step(self, token: np.ndarray, h: np.ndarray, c: np.ndarray) -> StepOutput:
        token = np.ascontiguousarray(token, np.int32)
        rows = token.shape[0]
        states = self.lib.new_states(rows)
        # [layers, rows, units] float -> each row's codes in its state
        self.lib.codes(states, "h")[:] = self.codec.quantize("h", h).transpose(1, 0, 2)
        self.lib.codes(states, "c")[:] = self.codec.quantize("c", c).transpose(1, 0, 2)
        logits = np.empty((rows, self.lib.vocab), np.int8)
        self.lib.step_rows(states, token, logits)
        return (
            self.codec.dequantize("logits", logits),
            self.codec.dequantize("h", self.lib.codes(states, "h").transpose(1, 0, 2)),
            self.codec.dequantize("c", self.lib.codes(states, "c").transpose(1, 0, 2)),
        )

    def stepper(self, logits: np.ndarray, h: np.ndarray, c: np.ndarray) -> CStepper:
        return CStepper(self, h, c)

    def decode_native(
        self,
        prompt_ids: Sequence[int] | np.ndarray,
        length: int,
        temperature: float = 0.0,
        top_k: int = 0,
        seed: int = 0,
        pattern: Pattern | None = None,
    ) -> list[int]:
        """Tokens chosen by the C decoder itself (integer sampler, seeded PCG32, the pattern
        rule): what the firmware and the wasm module write for the same options and seed."""
        return self.lib.decode(prompt_ids, length, temperature, top_k, seed, pattern)


def c_section(artifact: Artifact) -> Mapping[str, Any]:
    """The manifest's `c` section of char_lstm.c: quantization, sizes, the header's checksum."""
    section = artifact.extra.get("c")
    if not isinstance(section, Mapping) or HEADER not in section.get("files", {}):
        raise ModelFileError(f"{artifact.file} has no c section in the manifest")
    return section


def read_header(model_dir: Path, artifact: Artifact) -> bytes:
    """char_lstm.h beside char_lstm.c, checked against the checksum the export recorded."""
    sha256 = str(c_section(artifact)["files"][HEADER])
    return read_verified(model_dir, Artifact(HEADER, "c", artifact.quantization, 0, sha256))


def read_c_files(model_dir: Path, manifest: Manifest) -> dict[str, bytes]:
    """An exported folder's char_lstm.c and char_lstm.h, checksum-checked; a one-line
    ModelFileError naming the export command when the folder has none."""
    artifact = manifest.artifact("c", "full-int8")
    return {SOURCE: read_verified(model_dir, artifact), HEADER: read_header(model_dir, artifact)}


def codec(section: Mapping[str, Any]) -> QuantizedIO:
    """The boundary's quantization, recorded by the export: (scale, zero point) by name."""
    try:
        return QuantizedIO(
            {
                str(name): (float(q["scale"]), int(q["zero_point"]))
                for name, q in section["quantization"].items()
            }
        )
    except (KeyError, TypeError, ValueError, AttributeError):
        raise ModelFileError("the manifest's c section has no valid quantization") from None


class CStepper:
    """Steps with the state kept inside the C structs (no quantizing between steps): one
    ctypes call per step, the int8 logits dequantized into one reused buffer."""

    def __init__(self, backend: CBackend, h: np.ndarray, c: np.ndarray) -> None:
        self.lib, self.codec = backend.lib, backend.codec
        rows = h.shape[1]
        self.states = self.lib.new_states(rows)
        self.lib.codes(self.states, "h")[:] = self.codec.quantize("h", h).transpose(1, 0, 2)
        self.lib.codes(self.states, "c")[:] = self.codec.quantize("c", c).transpose(1, 0, 2)
        self.q = np.empty((rows, self.lib.vocab), np.int8)
        self.logits = np.empty((rows, self.lib.vocab), np.float32)
        self.scale, self.zero = self.codec.params["logits"]
        self._tokens = np.empty(rows, np.int32)
        self._step = self.lib.lib.char_lstm_step
        self._ptr = self.states.ctypes.data
        # The first state's int8 logits, where char_lstm_step leaves them.
        start = self.lib.logits_offset
        self._view = self.states[0, start : start + self.lib.vocab].view(np.int8)

    def _dequantize(self, q: np.ndarray, out: np.ndarray) -> np.ndarray:
        # The same float32 arithmetic as QuantizedIO.dequantize.
        np.subtract(q, self.zero, out=out, dtype=np.float32)
        out *= np.float32(self.scale)
        return out

    def advance(self, token: np.ndarray) -> np.ndarray:
        self._tokens[:] = token
        self.lib.step_rows(self.states, self._tokens, self.q)
        return self._dequantize(self.q, self.logits)

    def advance_one(self, token: int) -> np.ndarray:
        if not self._step(self._ptr, token):
            raise UsageError(f"token {token} is out of the vocabulary's range")
        self._dequantize(self._view, self.logits[0])
        return self.logits

    def state(self) -> tuple[np.ndarray, np.ndarray]:
        return (
            self.codec.dequantize("h", self.lib.codes(self.states, "h").transpose(1, 0, 2)),
            self.codec.dequantize("c", self.lib.codes(self.states, "c").transpose(1, 0, 2)),
        )


def open_file(
    model_dir: Path, artifact: Artifact, data: bytes, model: ModelConfig, threads: int
) -> CBackend:
    return CBackend.from_artifact(model_dir, artifact, data, model)
