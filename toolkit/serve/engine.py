"""The engine: one thread owns the backend and advances every open stream in one batched step.

Each open stream is a row (h, c) of the batch. A request joins between steps with one row for
its prompt (or none, when the prefix cache has the prompt's state); after the prompt it forks
into its `n` sampling rows. A row leaves when it reaches `max_tokens`, meets a stop string, is
cancelled, times out or is aborted at shutdown. Rows are kept as the arrays the last step
returned ([layers, rows, units]), gathered again only when the membership changes.

Why a seeded request gives the same text alone or among 63 others, and the same as
`toolkit generate`: every request has its own random Generator and draws one uniform per
choice per character, as `Sampler` does; each row's token depends on its own logits and
uniform alone (`draw_tokens` uses `Float64Draw`, the arithmetic the generation loop's float32
draw is checked against); and a row's step is the same whatever shares its batch on backends
whose rows are batch-invariant (`batch_invariant` measures it at start-up).
"""

from __future__ import annotations

import collections
import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from toolkit.runtime.sampling import (
    Float64Draw,
    SamplingOptions,
    inverse_cdf,
    next_token_probs,
    overflow_detected,
)
from toolkit.runtime.step import StepBackend
from toolkit.serve.state_token import StreamState
from toolkit.vocabulary import Vocabulary

# Streamed text is handed to the HTTP side at most this often (as `generate` streams to a
# terminal): one hand-over per flush for every request, not one per character.
FLUSH_INTERVAL_S = 0.02
FINISH_REASONS = ("stop", "length", "abort", "timeout", "cancelled")


class QueueFull(Exception):
    """More requests are waiting than --max-queue allows (HTTP 429)."""


class NotAccepting(Exception):
    """The engine is loading or shutting down (HTTP 503)."""


@dataclass
class Event:
    """What the engine tells a request: new text of one choice, or that choice's end."""

    choice: int
    text: str
    finish_reason: str | None = None
    state: StreamState | None = None  # with return_state, on the choice's last event


@dataclass
class Request:
    """One prompt's `n` choices. `deliver` is called on the engine thread with a batch of
    events; it must hand them over without blocking (the HTTP side posts them to its loop)."""

    prompt_ids: list[int]
    max_tokens: int
    options: SamplingOptions
    n: int = 1
    stops: tuple[str, ...] = ()
    seed: int | None = None
    start: StreamState | None = None  # continue from a state token
    return_state: bool = False
    timeout_s: float = math.inf
    deliver: Callable[[Request, list[Event]], None] = lambda request, events: None
    # Filled in by the engine.
    arrived: float = field(default_factory=time.perf_counter)
    admitted: float | None = None
    first_char_at: float | None = None
    finished_at: float | None = None
    cache_hit: bool = False
    cancelled: bool = False
    chars: int = 0  # characters generated over all choices
    open_choices: int = 0
    rng: np.random.Generator | None = None
    uniforms: np.ndarray | None = None  # this step's, one per choice


class Row:
    """One row of the batch: a request's prompt pass (`choice` -1), or one of its choices."""

    __slots__ = ("choice", "finish", "held", "logits", "out", "pending", "request", "sent")

    def __init__(self, request: Request, choice: int, pending: list[int]) -> None:
        self.request = request
        self.choice = choice
        self.pending = pending  # prompt tokens still to feed, last first (popped from the end)
        self.logits: np.ndarray | None = None  # [vocab] float32: what the next draw uses
        self.out: list[int] = []  # the choice's token ids so far
        self.sent = 0  # how many of `out` were handed over
        self.held = 0  # `out`'s last characters that may be the start of a stop string
        # Why the row ends, once it does. "length" rows of a request that returns its state
        # stay for one more step, so that the state includes their last character (as after
        # `generate`, whose loop feeds every character it keeps).
        self.finish: str | None = None


@dataclass
class Stats:
    """What /metrics reads; written by the engine thread."""

    steps: int = 0
    chars: int = 0
    cache_hits: int = 0
    batch_sizes: collections.Counter[int] = field(default_factory=collections.Counter)


class PrefixCache:
    """State and next logits after a prompt, exact match, least recently used first out,
    bounded in bytes. Used by the engine thread only."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self._entries: collections.OrderedDict[
            tuple[int, ...], tuple[np.ndarray, np.ndarray, np.ndarray]
        ] = collections.OrderedDict()

    def get(self, key: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        entry = self._entries.get(key)
        if entry is not None:
            self._entries.move_to_end(key)
        return entry

    def put(self, key: tuple[int, ...], h: np.ndarray, c: np.ndarray, logits: np.ndarray) -> None:
        size = _entry_bytes(key, h, c, logits)
        if size > self.max_bytes or key in self._entries:
            return
        self._entries[key] = (h.copy(), c.copy(), logits.copy())
        self.bytes += size
        while self.bytes > self.max_bytes:
            old_key, old = self._entries.popitem(last=False)
            self.bytes -= _entry_bytes(old_key, *old)

    def __len__(self) -> int:
        return len(self._entries)


def _entry_bytes(key: tuple[int, ...], *arrays: np.ndarray) -> int:
    return 8 * len(key) + sum(a.nbytes for a in arrays) + 200  # 200: the entry's own objects


def draw_tokens(
    logits: np.ndarray, options: Sequence[SamplingOptions], uniforms: np.ndarray
) -> np.ndarray:
    """One token per row of [rows, vocab] logits, each row with its own options and uniform:
    the token `Sampler` gives for that row with that uniform (greedy: argmax, no uniform).

    Rows sharing a temperature are drawn together with `Float64Draw`, whose arithmetic is
    elementwise per row; top-k / top-p rows use `sample_next`'s arithmetic, as `Sampler` does.
    """
    tokens = np.zeros(len(options), np.int32)
    plain: dict[float, list[int]] = collections.defaultdict(list)
    for row, o in enumerate(options):
        if o.greedy:
            tokens[row] = int(logits[row].argmax())
        elif o.plain:
            plain[o.temperature].append(row)
        else:
            probs = next_token_probs(logits[row : row + 1], o.temperature, o.top_k, o.top_p)
            tokens[row] = inverse_cdf(probs, uniforms[row : row + 1])[0]
    with overflow_detected():
        for temperature, rows in plain.items():
            draw = Float64Draw(len(rows), logits.shape[1], temperature)
            tokens[rows] = draw(logits[rows], uniforms[rows], np.zeros(len(rows), np.int32))
    return tokens


def batch_invariant(backend: StepBackend, state_shape: tuple[int, int], vocab: int) -> bool:
    """Whether each row of a batched step is bitwise the row stepped alone (probed on random
    tokens and states, batch 8 against 1): what makes a seeded text independent of the
    traffic. ONNX fp32 and TFLite int8/fp16 are; ONNX dynamic int8 is not (one activation
    scale over the whole batch)."""
    layers, units = state_shape
    rng = np.random.default_rng(0)
    token = rng.integers(0, vocab, 8).astype(np.int32)
    h = rng.uniform(-1, 1, (layers, 8, units)).astype(np.float32)
    c = rng.uniform(-2, 2, (layers, 8, units)).astype(np.float32)
    together = backend.step(token, h, c)
    for row in range(8):
        alone = backend.step(
            token[row : row + 1], h[:, row : row + 1].copy(), c[:, row : row + 1].copy()
        )
        if not np.array_equal(alone[0][0], together[0][row]):
            return False
        if not all(
            np.array_equal(a[:, 0], t[:, row]) for a, t in zip(alone[1:], together[1:], strict=True)
        ):
            return False
    return True


class Engine:
    """Continuous batching over one backend, on a thread of its own (`start`)."""

    def __init__(
        self,
        backend: StepBackend,
        vocab: Vocabulary,
        state_shape: tuple[int, int],
        max_batch: int = 64,
        max_queue: int = 256,
        cache_bytes: int = 64 << 20,
        pad_batches: bool = False,
    ) -> None:
        self.backend = backend
        self.vocab = vocab
        self.layers, self.units = state_shape
        self.max_batch = max_batch
        self.max_queue = max_queue
        # LiteRT reallocates its tensors whenever the batch changes: there the batch is padded
        # to a power of two (rows are batch-invariant, so padding changes no row).
        self.pad_batches = pad_batches
        self.cache = PrefixCache(cache_bytes)
        self.stats = Stats()
        self.waiting: collections.deque[Request] = collections.deque()
        self.running: list[Request] = []
        self.rows: list[Row] = []
        self.h = np.zeros((self.layers, 0, self.units), np.float32)  # [layers, rows, units]
        self.c = np.zeros_like(self.h)
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._accepting = True
        self._stop = False
        self._abort_requested = False
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None
        # Hooks for the metrics, called on the engine thread.
        self.on_step: Callable[[int], None] = lambda batch: None
        self.on_finish: Callable[[Request], None] = lambda request: None

    # ----------------------------------------------------------------- the HTTP side's calls

    def submit(self, request: Request) -> None:
        with self._lock:
            if not self._accepting:
                raise NotAccepting("the server is shutting down")
            if len(self.waiting) >= self.max_queue:
                raise QueueFull(
                    f"the queue is full ({len(self.waiting)} requests waiting); retry later"
                )
            request.arrived = time.perf_counter()
            self.waiting.append(request)
            self._wake.notify()

    def cancel(self, request: Request) -> None:
        """The client went away: its rows leave before the next step."""
        request.cancelled = True
        with self._lock:
            self._wake.notify()

    def stop_accepting(self) -> None:
        with self._lock:
            self._accepting = False

    def abort_all(self) -> None:
        """End every open and waiting request with finish_reason "abort" before the next step."""
        with self._lock:
            self._accepting = False
            self._abort_requested = True
            self._wake.notify()

    @property
    def busy(self) -> bool:
        return bool(self.waiting or self.running)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="toolkit-engine", daemon=True)
        self._thread.start()

    def close(self) -> None:
        with self._lock:
            self._stop = True
            self._wake.notify()
        if self._thread is not None:
            self._thread.join()

    # ----------------------------------------------------------------- the loop

    def _run(self) -> None:
        next_flush = 0.0
        try:
            while True:
                with self._lock:
                    while not (self._stop or self.rows or self.waiting or self._abort_requested):
                        self._wake.wait()
                    if self._stop:
                        return
                    aborting, self._abort_requested = self._abort_requested, False
                if aborting:
                    self._abort()
                self._admit()
                self._end_rows(self._ending_before_step())
                if self.rows:
                    self._step()
                now = time.perf_counter()
                if now >= next_flush or not self.rows:
                    next_flush = now + FLUSH_INTERVAL_S
                    self._flush()
        except BaseException as exc:  # the HTTP side reports it; open requests get "abort"
            self.error = exc
            self._abort()
            raise

    def _abort(self) -> None:
        with self._lock:
            waiting, self.waiting = list(self.waiting), collections.deque()
        for request in waiting:
            self._end_unstarted(request, "abort")
        for row in self.rows:
            row.finish = row.finish or "abort"
        self._end_rows(list(range(len(self.rows))))

    def _rows_in_use(self) -> int:
        return sum(row.request.n if row.choice < 0 else 1 for row in self.rows)

    def _admit(self) -> None:
        """Waiting requests join while their choices fit in the batch."""
        used = self._rows_in_use()
        rows: list[Row] = []
        state: list[tuple[np.ndarray, np.ndarray]] = []
        now = time.perf_counter()
        while True:
            with self._lock:
                if not self.waiting or used + self.waiting[0].n > self.max_batch:
                    break
                request = self.waiting.popleft()
            if request.cancelled or now - request.arrived > request.timeout_s:
                self._end_unstarted(request, "cancelled" if request.cancelled else "timeout")
                continue
            used += request.n
            request.admitted = now
            request.open_choices = request.n
            request.rng = np.random.default_rng(request.seed)
            self.running.append(request)
            start = request.start
            h = c = np.zeros((self.layers, self.units), np.float32)
            logits: np.ndarray | None = None
            if start is not None:
                request.rng.bit_generator.state = start.rng_state
                h, c, logits = start.h, start.c, start.logits
            elif (cached := self.cache.get(tuple(request.prompt_ids))) is not None:
                h, c, logits = cached
                request.cache_hit = True
                self.stats.cache_hits += 1
            if request.prompt_ids and (start is not None or logits is None):
                rows.append(Row(request, -1, request.prompt_ids[::-1]))
                state.append((h, c))
                continue
            assert logits is not None
            for choice in range(request.n):
                row = Row(request, choice, [])
                row.logits = logits
                row.finish = "length" if request.max_tokens == 0 else None
                rows.append(row)
                state.append((h, c))
        if rows:
            self.rows.extend(rows)
            self.h = np.concatenate([self.h, np.stack([s[0] for s in state], 1)], 1)
            self.c = np.concatenate([self.c, np.stack([s[1] for s in state], 1)], 1)

    def _ending_before_step(self) -> list[int]:
        """Rows to take out before the step: ended, cancelled or timed out, and not waiting to
        have their last character fed."""
        now = time.perf_counter()
        ending = []
        for i, row in enumerate(self.rows):
            request = row.request
            if row.finish is None:
                if request.cancelled:
                    row.finish = "cancelled"
                elif now - request.arrived > request.timeout_s:
                    row.finish = "timeout"
            if row.finish is not None and not self._feeds_last(row):
                ending.append(i)
        return ending

    def _feeds_last(self, row: Row) -> bool:
        return row.finish == "length" and row.request.return_state and bool(row.out)

    def _end_unstarted(self, request: Request, reason: str) -> None:
        request.open_choices = 0
        request.deliver(request, [Event(choice, "", reason) for choice in range(request.n)])
        request.finished_at = time.perf_counter()
        self.on_finish(request)

    def _end_rows(self, ending: list[int]) -> None:
        """Hand over the last text (and state) of the rows at `ending`, and take them out."""
        if not ending:
            return
        finished: list[Request] = []
        for i in ending:
            row = self.rows[i]
            request = row.request
            reason = row.finish or "abort"
            if row.choice < 0:  # the prompt pass: every choice ends with it
                events = [Event(choice, "", reason) for choice in range(request.n)]
                request.open_choices = 0
            else:
                state = None
                if request.return_state and row.logits is not None:
                    assert request.rng is not None
                    state = StreamState(
                        self.h[:, i].copy(),
                        self.c[:, i].copy(),
                        np.array(row.logits, copy=True),
                        dict(request.rng.bit_generator.state),
                    )
                events = [Event(row.choice, self.vocab.decode(row.out[row.sent :]), reason, state)]
                row.sent = len(row.out)
                request.open_choices -= 1
            request.deliver(request, events)
            if request.open_choices == 0:
                finished.append(request)
        gone = set(ending)
        keep = [i for i in range(len(self.rows)) if i not in gone]
        self.rows = [self.rows[i] for i in keep]
        self.h, self.c = self.h[:, keep], self.c[:, keep]
        now = time.perf_counter()
        for request in finished:
            self.running.remove(request)
            request.finished_at = now
            self.on_finish(request)

    def _draw(self) -> None:
        """A character for every choice row that has not ended: one uniform per choice of each
        request that draws (as `Sampler` draws one per row per character), the token from the
        row's logits and its own uniform, then the stop strings and the length."""
        drawing = [row for row in self.rows if row.choice >= 0 and row.finish is None]
        if not drawing:
            return
        now = time.perf_counter()
        requests = {id(row.request): row.request for row in drawing}
        for request in requests.values():
            if not request.options.greedy:
                assert request.rng is not None
                request.uniforms = request.rng.random(request.n)
            if request.first_char_at is None:
                request.first_char_at = now
        uniforms = np.array(
            [
                0.0 if row.request.uniforms is None else row.request.uniforms[row.choice]
                for row in drawing
            ]
        )
        logits = np.stack([row.logits for row in drawing if row.logits is not None])
        tokens = draw_tokens(logits, [row.request.options for row in drawing], uniforms).tolist()
        for row, token in zip(drawing, tokens, strict=True):
            out = row.out
            out.append(token)
            request = row.request
            request.chars += 1
            if request.stops and self._stopped(row):
                row.finish = "stop"
            elif len(out) >= request.max_tokens:
                row.finish = "length"
        self.stats.chars += len(tokens)

    def _stopped(self, row: Row) -> bool:
        """Whether the row's text now ends with a stop string; if so, the string is removed."""
        tail = self.vocab.decode(row.out[-max(map(len, row.request.stops)) :])
        for stop in row.request.stops:
            if tail.endswith(stop):
                del row.out[len(row.out) - len(stop) :]
                row.request.chars -= len(stop)
                row.sent = min(row.sent, len(row.out))
                return True
        return False

    def _step(self) -> None:
        """Draw a character for every choice row, then one batched step for every row."""
        self._draw()
        self._end_rows(self._ending_before_step())
        if not self.rows:
            return
        rows = self.rows
        tokens = np.array(
            [row.pending.pop() if row.choice < 0 else row.out[-1] for row in rows], np.int32
        )
        h, c, size = self.h, self.c, len(rows)
        if self.pad_batches and size & (size - 1):
            padded = 1 << size.bit_length()
            extra = padded - size
            tokens = np.concatenate([tokens, np.zeros(extra, np.int32)])
            h = np.concatenate([h, np.zeros((self.layers, extra, self.units), np.float32)], 1)
            c = np.concatenate([c, np.zeros((self.layers, extra, self.units), np.float32)], 1)
        logits, h, c = self.backend.step(tokens, np.ascontiguousarray(h), np.ascontiguousarray(c))
        self.h, self.c = h[:, :size], c[:, :size]
        self.stats.steps += 1
        self.on_step(size)
        # After the step: each row's next logits; prompt passes that are done fork into their
        # choices; rows that waited for their last character to be fed end.
        forks: list[tuple[int, Row]] = []
        ending: list[int] = []
        for i, row in enumerate(rows):
            row.logits = logits[i]
            if row.finish is not None:
                ending.append(i)
            elif row.choice < 0 and not row.pending:
                forks.append((i, row))
        self._end_rows(ending)
        if forks:
            self._fork(forks)

    def _fork(self, forks: list[tuple[int, Row]]) -> None:
        """Prompt passes that are done become their request's `n` choice rows, each starting
        from the prompt's state (and the prefix cache keeps that state)."""
        index: list[int] = []
        rows: list[Row] = []
        forking = {id(row): row for _, row in forks}
        for i, row in enumerate(self.rows):
            if id(row) not in forking:
                index.append(i)
                rows.append(row)
                continue
            request = row.request
            assert row.logits is not None
            if request.start is None:
                self.cache.put(tuple(request.prompt_ids), self.h[:, i], self.c[:, i], row.logits)
            for choice in range(request.n):
                child = Row(request, choice, [])
                child.logits = row.logits
                child.finish = "length" if request.max_tokens == 0 else None
                rows.append(child)
                index.append(i)
        self.rows = rows
        self.h, self.c = self.h[:, index], self.c[:, index]

    def _flush(self) -> None:
        """Hand each request the text its choices produced since the last flush, holding back
        characters that may be the start of a stop string."""
        events: dict[int, tuple[Request, list[Event]]] = {}
        for row in self.rows:
            if row.choice < 0 or row.finish is not None or len(row.out) == row.sent:
                continue
            upto = len(row.out)
            if row.request.stops:
                upto -= _held_back(self.vocab.decode(row.out[-_longest(row) :]), row.request.stops)
            if upto <= row.sent:
                continue
            text = self.vocab.decode(row.out[row.sent : upto])
            row.sent = upto
            events.setdefault(id(row.request), (row.request, []))[1].append(Event(row.choice, text))
        for request, batch in events.values():
            request.deliver(request, batch)


def _longest(row: Row) -> int:
    return max(len(stop) for stop in row.request.stops)


def _held_back(tail: str, stops: tuple[str, ...]) -> int:
    """How many of the text's last characters are the start of some stop string."""
    held = 0
    for stop in stops:
        for k in range(min(len(stop) - 1, len(tail)), held, -1):
            if tail.endswith(stop[:k]):
                held = k
                break
    return held
