"""The engine: one thread owns the backend and advances every open stream in one batched step.

Each open stream is a row (h, c) of the batch. A request joins between steps with one row for
its prompt (or none, when the prefix cache has the prompt's state); after the prompt it forks
into its `n` sampling rows. A row leaves when it reaches `max_tokens`, meets a stop string, is
cancelled, times out or is aborted at shutdown. Rows are kept as the arrays the last step
returned ([layers, rows, units]), gathered again only when the membership changes.

Why a seeded request gives the same text alone or among 63 others, and the same as
`toolkit generate`: every request has its own random Generator and draws one uniform per
choice per character, as `Sampler` does; each row's token depends on its own logits and
uniform alone (`DrawPlan` uses `Float64Draw`, the arithmetic the generation loop's float32
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
    Sampler,
    SamplingOptions,
    inverse_cdf,
    next_token_probs,
    overflow_detected,
)
from toolkit.runtime.step import StepBackend
from toolkit.runtime.stop import StopMatcher
from toolkit.serve.state_token import StreamState
from toolkit.vocabulary import Vocabulary


def flush_interval(rows: int) -> float:
    """How often streamed text is handed to the HTTP side: every 20 ms (as `generate` streams
    to a terminal), stretched to 50 ms as the batch grows past 25 streams, where sending the
    chunks costs the step CPU time (benchmarks/reports/serve.md)."""
    return min(0.05, max(0.02, 0.0008 * rows))


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
    cancelled: bool = False
    chars: int = 0  # characters kept over all its choices, counted as each choice ends
    open_choices: int = 0
    rng: np.random.Generator | None = None
    # Per stop string: its KMP automaton's rows (state, token -> state) and its length.
    stop_tables: list[tuple[list[list[int]], int]] = field(default_factory=list)


class Row:
    """One row of the batch: a request's prompt pass (`choice` -1), or one of its choices."""

    __slots__ = ("choice", "finish", "out", "pending", "request", "sent", "stop_states")

    def __init__(self, request: Request, choice: int, pending: list[int]) -> None:
        self.request = request
        self.choice = choice
        self.pending = pending  # prompt tokens still to feed, last first (popped from the end)
        self.out: list[int] = []  # the choice's token ids so far
        self.sent = 0  # how many of `out` were handed over
        # Per stop string: how many of out's last characters are a start of it (StopMatcher).
        self.stop_states = [0] * len(request.stops)
        # Why the row ends, once it does. "length" rows of a request that returns its state
        # stay for one more step, so that the state includes their last character (as after
        # `generate`, whose loop feeds every character it keeps).
        self.finish: str | None = None


@dataclass
class Stats:
    """What /metrics reads; written by the engine thread."""

    steps: int = 0
    chars: int = 0  # drawn, stop strings included
    cache_hits: int = 0


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


class DrawPlan:
    """How a batch's rows draw their next token, each with its own options and uniform: the
    token `Sampler` gives for that row with that uniform (greedy: argmax, no uniform).

    Made once per batch membership (the engine remakes it when rows join or leave). Rows that
    share a temperature are drawn together by one `Float64Draw`, whose arithmetic is
    elementwise per row; top-k / top-p rows use `sample_next`'s arithmetic, as `Sampler` does.
    """

    def __init__(self, options: Sequence[SamplingOptions], vocab_size: int) -> None:
        self.greedy = np.array([i for i, o in enumerate(options) if o.greedy], np.int64)
        by_temperature: dict[float, list[int]] = collections.defaultdict(list)
        self.filtered: list[tuple[int, SamplingOptions]] = []
        for i, o in enumerate(options):
            if o.greedy:
                continue
            if o.plain:
                by_temperature[o.temperature].append(i)
            else:
                self.filtered.append((i, o))
        self.plain = [
            (np.array(rows, np.int64), Float64Draw(len(rows), vocab_size, temperature))
            for temperature, rows in by_temperature.items()
        ]

    def draw(self, logits: np.ndarray, uniforms: np.ndarray, out: np.ndarray) -> np.ndarray:
        """Tokens of [rows, vocab] logits into `out` (int32 [rows])."""
        if len(self.greedy):
            out[self.greedy] = logits[self.greedy].argmax(1)
        with overflow_detected():
            for rows, draw in self.plain:
                out[rows] = draw(logits[rows], uniforms[rows], np.empty(len(rows), np.int32))
        for i, o in self.filtered:
            probs = next_token_probs(logits[i : i + 1], o.temperature, o.top_k, o.top_p)
            out[i] = inverse_cdf(probs, uniforms[i : i + 1])[0]
        return out


def draw_tokens(
    logits: np.ndarray, options: Sequence[SamplingOptions], uniforms: np.ndarray
) -> np.ndarray:
    """One token per row of [rows, vocab] logits (`DrawPlan` for a single draw)."""
    plan = DrawPlan(options, logits.shape[1])
    return plan.draw(logits, uniforms, np.zeros(len(options), np.int32))


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


@dataclass
class _Plan:
    """What each step of one batch membership does, worked out once (remade when rows join or
    leave): which rows draw, how, with whose uniforms, which feed a prompt."""

    sampling: np.ndarray  # positions of the rows that draw
    sampling_rows: list[Row]
    draw: DrawPlan
    single: np.ndarray  # positions (in `sampling`) of the one-choice requests that sample
    single_rngs: list[np.random.Generator]  # ... and their random Generators
    sources: list[tuple[Request, np.ndarray, np.ndarray]]  # n > 1: request, positions, choices
    starting: list[Request]  # requests whose first character this draw is
    stop_rows: list[tuple[int, Row]]  # (index into `sampling`, row) of rows with stop strings
    prompts: list[tuple[int, Row]]  # (position, row) of prompt passes
    uniforms: np.ndarray
    tokens: np.ndarray
    # One stream alone, sampling with temperature only: `generate`'s own batch-1 draw (the
    # float32 path of `Sampler.row_drawer`), the same tokens at a fraction of the cost.
    solo: Sampler | None = None
    solo_draw: Callable[[np.ndarray], int] | None = None


class Engine:
    """Continuous batching over one backend, on a thread of its own (`start`).

    The batch is kept as arrays aligned with `rows`: h and c [layers, rows, units], the
    logits of the last step [rows, vocab], the characters each row may still draw.
    """

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
        self.vocab_size = len(vocab)
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
        self.h = np.zeros((self.layers, 0, self.units), np.float32)
        self.c = np.zeros_like(self.h)
        self.logits = np.zeros((0, self.vocab_size), np.float32)
        self.remaining = np.zeros(0, np.int64)
        self._plan: _Plan | None = None
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._accepting = True
        self._stop = False
        self._abort_requested = False
        self._started = False  # a request drew its first character in this turn
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None
        # Hooks for the metrics, called on the engine thread.
        self.on_step: Callable[[int], None] = lambda batch: None
        self.on_finish: Callable[[Request], None] = lambda request: None
        # How a flush's events reach the requests: one call for all of them (the HTTP side
        # wakes its event loop once per flush, not once per request).
        self.deliver_many: Callable[[list[tuple[Request, list[Event]]]], None] = deliver_each

    # ----------------------------------------------------------------- the HTTP side's calls

    def submit(self, request: Request) -> None:
        if not request.prompt_ids and request.start is None:
            raise ValueError("a request needs a prompt or a state to start from")
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
                self.iterate(aborting)
                now = time.perf_counter()
                # A stream's first characters go out at once (time to first character), the
                # rest at the flush interval.
                if now >= next_flush or not self.rows or self._started:
                    self._started = False
                    next_flush = now + flush_interval(len(self.rows))
                    self.flush()
        except BaseException as exc:  # the HTTP side reports it; open requests get "abort"
            self.error = exc
            self._abort()
            raise

    def iterate(self, aborting: bool = False) -> None:
        """One turn of the loop: requests join, rows that must go leave, one step."""
        if aborting:
            self._abort()
        self._admit()
        self._drop_cancelled()
        if self.rows:
            self._step()

    def _abort(self) -> None:
        with self._lock:
            waiting, self.waiting = list(self.waiting), collections.deque()
        for request in waiting:
            self._end_unstarted(request, "abort")
        for row in self.rows:
            row.finish = row.finish or "abort"
        self._end_rows(list(range(len(self.rows))))

    def _admit(self) -> None:
        """Waiting requests join while their choices fit in the batch (a prompt pass holds
        its request's `n` places)."""
        if not self.waiting:
            return
        used = sum(row.request.n if row.choice < 0 else 1 for row in self.rows)
        joining: list[tuple[Row, np.ndarray, np.ndarray, np.ndarray | None]] = []
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
            request.stop_tables = [
                (m.rows, m.length)
                for m in (StopMatcher(stop, self.vocab.chars, 1) for stop in request.stops)
            ]
            self.running.append(request)
            start = request.start
            h = c = np.zeros((self.layers, self.units), np.float32)
            logits: np.ndarray | None = None
            if start is not None:
                request.rng.bit_generator.state = start.rng_state
                h, c, logits = start.h, start.c, start.logits
            elif (cached := self.cache.get(tuple(request.prompt_ids))) is not None:
                h, c, logits = cached
                self.stats.cache_hits += 1
            if request.prompt_ids and (start is not None or logits is None):
                joining.append((Row(request, -1, request.prompt_ids[::-1]), h, c, None))
            elif request.max_tokens == 0:
                assert logits is not None
                self._end_at_once(request, h, c, logits)
            else:
                joining.extend((Row(request, k, []), h, c, logits) for k in range(request.n))
        if joining:
            self.rows = self.rows + [row for row, *_ in joining]
            self.h = np.concatenate([self.h, np.stack([j[1] for j in joining], 1)], 1)
            self.c = np.concatenate([self.c, np.stack([j[2] for j in joining], 1)], 1)
            zero = np.zeros(self.vocab_size, np.float32)
            new_logits = np.stack([zero if j[3] is None else j[3] for j in joining])
            self.logits = np.concatenate([self.logits, new_logits])
            limits = [row.request.max_tokens for row, *_ in joining]
            self.remaining = np.concatenate([self.remaining, np.array(limits, np.int64)])
            self._invalidate_plan()

    def _drop_cancelled(self) -> None:
        """Rows of requests that were cancelled or ran out of time leave now."""
        now = time.perf_counter()
        gone = set()
        for request in self.running:
            if request.cancelled or now - request.arrived > request.timeout_s:
                gone.add(id(request))
        if not gone:
            return
        ending = []
        for i, row in enumerate(self.rows):
            if id(row.request) in gone:
                row.finish = "cancelled" if row.request.cancelled else "timeout"
                ending.append(i)
        self._end_rows(ending)

    def _end_unstarted(self, request: Request, reason: str) -> None:
        request.open_choices = 0
        request.deliver(request, [Event(choice, "", reason) for choice in range(request.n)])
        request.finished_at = time.perf_counter()
        self.on_finish(request)

    def _end_at_once(
        self, request: Request, h: np.ndarray, c: np.ndarray, logits: np.ndarray
    ) -> None:
        """A request for no characters ends after its prompt, with that state."""
        assert request.rng is not None
        state = None
        if request.return_state:
            state = StreamState(
                h.copy(), c.copy(), logits.copy(), dict(request.rng.bit_generator.state)
            )
        request.deliver(request, [Event(k, "", "length", state) for k in range(request.n)])
        request.open_choices = 0
        self.running.remove(request)
        request.finished_at = time.perf_counter()
        self.on_finish(request)

    def _end_rows(self, ending: list[int]) -> list[int]:
        """Hand over the last text (and state) of the rows at `ending` and take them out;
        the positions of the rows that stay."""
        if not ending:
            return list(range(len(self.rows)))
        self._invalidate_plan()  # before a state token reads the random generator
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
                if request.return_state:
                    assert request.rng is not None
                    state = StreamState(
                        self.h[:, i].copy(),
                        self.c[:, i].copy(),
                        self.logits[i].copy(),
                        dict(request.rng.bit_generator.state),
                    )
                text = self.vocab.decode(row.out[row.sent :])
                events = [Event(row.choice, text, reason, state)]
                request.chars += len(row.out)
                row.sent = len(row.out)
                request.open_choices -= 1
            request.deliver(request, events)
            if request.open_choices == 0:
                finished.append(request)
        gone = set(ending)
        keep = [i for i in range(len(self.rows)) if i not in gone]
        self._reindex(keep)
        now = time.perf_counter()
        for request in finished:
            self.running.remove(request)
            request.finished_at = now
            self.on_finish(request)
        return keep

    def _reindex(self, index: list[int], rows: list[Row] | None = None) -> None:
        """The batch becomes the rows at `index` (repeats allowed: a fork)."""
        self.rows = rows if rows is not None else [self.rows[i] for i in index]
        self.h, self.c = self.h[:, index], self.c[:, index]
        self.logits, self.remaining = self.logits[index], self.remaining[index]
        self._invalidate_plan()

    def _invalidate_plan(self) -> None:
        """The membership changed: the plan is remade before the next draw. A lone stream's
        Sampler hands back the uniforms it drew ahead, so that its random generator is where
        one uniform per character leaves it (for the next plan and for state tokens)."""
        if self._plan is not None and self._plan.solo is not None:
            self._plan.solo.close()
        self._plan = None

    def _make_plan(self) -> _Plan:
        sampling = [i for i, row in enumerate(self.rows) if row.choice >= 0]
        rows = [self.rows[i] for i in sampling]
        positions: dict[int, list[int]] = collections.defaultdict(list)
        requests: dict[int, Request] = {}
        for k, row in enumerate(rows):
            if not row.request.options.greedy:
                positions[id(row.request)].append(k)
                requests[id(row.request)] = row.request
        single = [key for key in positions if requests[key].n == 1]
        sources = [
            (requests[key], np.array(ks), np.array([rows[k].choice for k in ks]))
            for key, ks in positions.items()
            if requests[key].n > 1
        ]
        starting = {id(r.request): r.request for r in rows if r.request.first_char_at is None}
        solo = solo_draw = None
        if len(rows) == 1 and rows[0].request.n == 1:
            request = rows[0].request
            o = request.options
            if o.plain and not o.greedy:
                solo = Sampler(1, o.temperature, rng=request.rng)
                solo_draw = solo.row_drawer(self.vocab_size)
        return _Plan(
            sampling=np.array(sampling, np.int64),
            sampling_rows=rows,
            draw=DrawPlan([row.request.options for row in rows], self.vocab_size),
            single=np.array([positions[key][0] for key in single], np.int64),
            single_rngs=[requests[key].rng for key in single],  # type: ignore[misc]
            sources=sources,
            starting=list(starting.values()),
            stop_rows=[(k, row) for k, row in enumerate(rows) if row.request.stops],
            prompts=[(i, row) for i, row in enumerate(self.rows) if row.choice < 0],
            uniforms=np.zeros(len(rows)),
            tokens=np.zeros(len(rows), np.int32),
            solo=solo,
            solo_draw=solo_draw,
        )

    def _step(self) -> None:
        """A character for every choice row, then one batched step for every row."""
        plan = self._plan = self._plan or self._make_plan()
        tokens = np.zeros(len(self.rows), np.int32)
        ending: list[int] = []
        feeding_last = False
        if len(plan.sampling):
            ending, feeding_last = self._draw(plan, tokens)
        for i, row in plan.prompts:
            tokens[i] = row.pending.pop()
        if ending:  # rows that ended on this draw and need no last step
            tokens = tokens[self._end_rows(ending)]
            if not self.rows:
                return
        size = len(self.rows)
        h, c = self.h, self.c
        if self.pad_batches and size & (size - 1):
            extra = (1 << size.bit_length()) - size
            tokens = np.concatenate([tokens, np.zeros(extra, np.int32)])
            pad = np.zeros((self.layers, extra, self.units), np.float32)
            h, c = np.concatenate([h, pad], 1), np.concatenate([c, pad], 1)
        logits, h, c = self.backend.step(tokens, np.ascontiguousarray(h), np.ascontiguousarray(c))
        self.logits, self.h, self.c = logits[:size], h[:, :size], c[:, :size]
        self.stats.steps += 1
        self.on_step(size)
        # Rows that waited for their last character to be fed end; prompt passes that are
        # done fork into their choices.
        if feeding_last:
            self._end_rows([i for i, row in enumerate(self.rows) if row.finish is not None])
        forks = [row for _, row in plan.prompts if not row.pending]
        if forks:
            self._fork(forks)

    def _draw(self, plan: _Plan, tokens: np.ndarray) -> tuple[list[int], bool]:
        """Draw for the plan's rows into `tokens`: one uniform per choice of each request
        that samples (as `Sampler` draws one per row per character), each row's token from its
        own logits and uniform; then stop strings and lengths. The positions of the rows that
        end without a last step, and whether some row ends after one (to return its state)."""
        if plan.solo_draw is not None:
            i = int(plan.sampling[0])
            with overflow_detected():
                plan.tokens[0] = plan.solo_draw(self.logits[i : i + 1])
            drawn = plan.tokens
        else:
            uniforms = plan.uniforms
            if plan.single_rngs:
                uniforms[plan.single] = [rng.random() for rng in plan.single_rngs]
            for request, positions, choices in plan.sources:
                assert request.rng is not None
                uniforms[positions] = request.rng.random(request.n)[choices]
            drawn = plan.draw.draw(self.logits[plan.sampling], uniforms, plan.tokens)
        tokens[plan.sampling] = drawn
        for row, token in zip(plan.sampling_rows, drawn.tolist(), strict=True):
            row.out.append(token)
        remaining = self.remaining
        remaining[plan.sampling] -= 1
        self.stats.chars += len(drawn)
        if plan.starting:
            now = time.perf_counter()
            for request in plan.starting:
                request.first_char_at = request.first_char_at or now
            plan.starting = []
            self._started = True
        ending: list[int] = []
        feeding_last = False
        for k, row in plan.stop_rows:
            if self._stopped(row):
                row.finish = "stop"
                ending.append(int(plan.sampling[k]))
        for i in np.flatnonzero(remaining[plan.sampling] <= 0).tolist():
            position = int(plan.sampling[i])
            row = self.rows[position]
            if row.finish is None:
                row.finish = "length"
                # The state of a returned token includes the last character, as after
                # `generate`, whose loop feeds every character it keeps.
                if row.request.return_state:
                    feeding_last = True
                else:
                    ending.append(position)
        return sorted(ending), feeding_last

    def _stopped(self, row: Row) -> bool:
        """Whether the row's text now ends with a stop string (the first in the request's
        order); if so, the string is removed. Called once per character the row draws."""
        token, states, hit = row.out[-1], row.stop_states, 0
        for k, (table, length) in enumerate(row.request.stop_tables):
            states[k] = table[states[k]][token]
            if states[k] == length and not hit:
                hit = length
        if hit:
            del row.out[len(row.out) - hit :]
            row.sent = min(row.sent, len(row.out))
        return bool(hit)

    def _fork(self, forks: list[Row]) -> None:
        """Prompt passes that are done become their request's `n` choice rows, each starting
        from the prompt's state (which the prefix cache keeps)."""
        index: list[int] = []
        rows: list[Row] = []
        forking = {id(row) for row in forks}
        for i, row in enumerate(self.rows):
            if id(row) not in forking:
                index.append(i)
                rows.append(row)
                continue
            request = row.request
            if request.start is None:
                self.cache.put(
                    tuple(request.prompt_ids), self.h[:, i], self.c[:, i], self.logits[i]
                )
            if request.max_tokens == 0:
                self._end_at_once(request, self.h[:, i], self.c[:, i], self.logits[i])
                continue
            for choice in range(request.n):
                rows.append(Row(request, choice, []))
                index.append(i)
        self._reindex(index, rows)

    def flush(self) -> None:
        """Hand each request the text its choices produced since the last flush, holding back
        characters that may be the start of a stop string."""
        events: dict[int, tuple[Request, list[Event]]] = {}
        for row in self.rows:
            if row.choice < 0 or len(row.out) == row.sent:
                continue
            upto = len(row.out) - max(row.stop_states, default=0)
            if upto <= row.sent:
                continue
            text = self.vocab.decode(row.out[row.sent : upto])
            row.sent = upto
            events.setdefault(id(row.request), (row.request, []))[1].append(Event(row.choice, text))
        if events:
            self.deliver_many(list(events.values()))


def deliver_each(batches: list[tuple[Request, list[Event]]]) -> None:
    """Each request's events to its `deliver` (in the engine thread, or on the event loop)."""
    for request, events in batches:
        request.deliver(request, events)
