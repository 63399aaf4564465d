"""The engine: one thread owns the backend and advances every open stream in one batched step.

Each open stream is a row (h, c) of the batch. A request joins between steps with one row for
its prompt (or none, when the prefix cache has the prompt's state); after the prompt it forks
into its `n` sampling rows. A row leaves when it reaches `max_tokens`, meets a stop string, is
cancelled, times out or is aborted at shutdown. Rows are kept as the arrays the last step
returned ([layers, rows, units]), gathered again only when the membership changes.

The engine admits, forks and drops rows, steps the backend and hands text over; choosing
each character, stop strings and holding back text are the decoder's
(`toolkit/runtime/decode.py`), the same one `toolkit generate` uses. So a seeded request
gives the same text alone, among 63 others, and as `toolkit generate`: each request is a
decoder group with its own random stream, a row's character depends on its own logits and
uniform alone, and a row's step is the same whatever shares its batch on backends whose rows
are batch-invariant (`batch_invariant` measures it at start-up).
"""

from __future__ import annotations

import collections
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from toolkit.runtime import decode
from toolkit.runtime.decode import (
    DecodeOptions,
    Decoder,
    Group,
    Score,
    overflow_detected,
    score_tokens,
)
from toolkit.runtime.step import StepBackend
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
    # With options.logprobs: one score per character of `text` (decode.Score), and where
    # `text` starts among the choice's characters.
    logprobs: list[Score] | None = None
    offset: int = 0


@dataclass
class Request:
    """One prompt's `options.n` choices. `deliver` is called on the engine thread with a
    batch of events; it must hand them over without blocking (the HTTP side posts them to its
    loop)."""

    prompt_ids: list[int]
    options: DecodeOptions
    start: StreamState | None = None  # continue from a state token
    return_state: bool = False
    prompt_logprobs: bool = False  # score the prompt's characters (echo with logprobs)
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
    group: Group | None = None  # its rows' decoder group (options and random stream)
    # With prompt_logprobs, once the prompt is fed: a score per prompt character, None for
    # the first (nothing predicts it), as OpenAI's echo gives.
    prompt_scores: list[Score | None] = field(default_factory=list)

    @property
    def n(self) -> int:
        return self.options.n

    @property
    def max_tokens(self) -> int:
        return self.options.length

    @property
    def seed(self) -> int | None:
        return self.options.seed


class Row:
    """One row of the batch: a request's prompt pass (`choice` -1, `pending` the prompt
    tokens still to feed, last first), or one of its choices (`decoding`, the decoder's row)."""

    __slots__ = ("choice", "decoding", "finish", "pending", "request")

    def __init__(self, request: Request, choice: int, pending: list[int] | None = None) -> None:
        self.request = request
        self.choice = choice
        self.pending = pending or []
        self.decoding: decode.Row | None = None
        if choice >= 0:
            assert request.group is not None
            self.decoding = decode.Row(request.group, choice)
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
    """Which rows draw and which feed a prompt, for one batch membership (remade when rows
    join or leave)."""

    sampling: np.ndarray  # positions of the rows that draw (the decoder's rows, in order)
    prompts: list[tuple[int, Row]]  # (position, row) of prompt passes
    starting: list[Request]  # requests whose first character the next draw is


class Engine:
    """Continuous batching over one backend, on a thread of its own (`start`).

    The batch is kept as arrays aligned with `rows`: h and c [layers, rows, units] and the
    logits of the last step [rows, vocab]. The rows that draw are the decoder's rows, in the
    same order.
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
        self.decoder = Decoder(vocab)
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
            rng = np.random.default_rng(request.seed)
            start = request.start
            h = c = np.zeros((self.layers, self.units), np.float32)
            logits: np.ndarray | None = None
            if start is not None:
                rng.bit_generator.state = start.rng_state
                h, c, logits = start.h, start.c, start.logits
            elif not request.prompt_logprobs and (
                (cached := self.cache.get(tuple(request.prompt_ids))) is not None
            ):
                h, c, logits = cached
                self.stats.cache_hits += 1
            request.group = Group(request.options, self.vocab, rng, owner=request)
            self.running.append(request)
            if request.prompt_ids and (start is not None or logits is None):
                joining.append((Row(request, -1, request.prompt_ids[::-1]), h, c, logits))
            elif request.max_tokens == 0:
                assert logits is not None
                self._end_at_once(request, h, c, logits)
            else:
                joining.extend((Row(request, k), h, c, logits) for k in range(request.n))
        if joining:
            self.rows = self.rows + [row for row, *_ in joining]
            self.h = np.concatenate([self.h, np.stack([j[1] for j in joining], 1)], 1)
            self.c = np.concatenate([self.c, np.stack([j[2] for j in joining], 1)], 1)
            zero = np.zeros(self.vocab_size, np.float32)
            new_logits = np.stack([zero if j[3] is None else j[3] for j in joining])
            self.logits = np.concatenate([self.logits, new_logits])
            self._plan = None

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
        state = None
        if request.return_state:
            state = _stream_state(request, h, c, logits)
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
        finished: list[Request] = []
        for i in ending:
            row = self.rows[i]
            request = row.request
            reason = row.finish or "abort"
            if row.decoding is None:  # the prompt pass: every choice ends with it
                events = [Event(choice, "", reason) for choice in range(request.n)]
                request.open_choices = 0
            else:
                state = None
                if request.return_state:
                    state = _stream_state(request, self.h[:, i], self.c[:, i], self.logits[i])
                decoding = row.decoding
                decoding.finish = decoding.finish or reason  # the rest is handed over whole
                start, ids = decoding.take()
                text = self.vocab.decode(ids)
                event = Event(row.choice, text, reason, state, offset=start)
                if request.options.logprobs is not None:
                    event.logprobs = decoding.logprobs[start : start + len(ids)]
                events = [event]
                request.chars += len(decoding.out)
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
        self.h, self.c, self.logits = self.h[:, index], self.c[:, index], self.logits[index]
        self._plan = None

    def _make_plan(self) -> _Plan:
        sampling = [i for i, row in enumerate(self.rows) if row.decoding is not None]
        decoding = [self.rows[i].decoding for i in sampling]
        self.decoder.set_rows(decoding)  # type: ignore[arg-type]
        waiting = (self.rows[i].request for i in sampling)
        starting = {id(r): r for r in waiting if r.first_char_at is None}
        return _Plan(
            sampling=np.array(sampling, np.int64),
            prompts=[(i, row) for i, row in enumerate(self.rows) if row.decoding is None],
            starting=list(starting.values()),
        )

    def _step(self) -> None:
        """A character for every choice row, then one batched step for every row."""
        plan = self._plan = self._plan or self._make_plan()
        tokens = np.zeros(len(self.rows), np.int32)
        ending: list[int] = []
        feeding_last = False
        if len(plan.sampling):
            ending, feeding_last = self._draw(plan, tokens)
        scoring = [(i, row) for i, row in plan.prompts if row.request.prompt_logprobs]
        if scoring:
            self._score_prompts(scoring)
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

    def _score_prompts(self, rows: list[tuple[int, Row]]) -> None:
        """Before feeding its next character, each scoring prompt pass records how likely
        the logits it has found that character (none for a first character fed from the
        zero state: nothing predicts it)."""
        for i, row in rows:
            request = row.request
            first = len(request.prompt_scores) == 0 and request.start is None
            if first:
                request.prompt_scores.append(None)
                continue
            token = np.array([row.pending[-1]], np.int32)
            top = request.options.logprobs or 0
            request.prompt_scores.append(score_tokens(self.logits[i : i + 1], token, [top])[0])

    def _draw(self, plan: _Plan, tokens: np.ndarray) -> tuple[list[int], bool]:
        """The decoder draws for the plan's rows into `tokens`. The positions of the rows that
        end without a last step, and whether some row ends after one (to return its state)."""
        sampling = plan.sampling
        if len(sampling) == 1:
            i = int(sampling[0])
            with overflow_detected():  # see Decoder
                tokens[i] = self.decoder.step_one(self.logits[i : i + 1])
        else:
            all_rows = len(sampling) == len(self.rows)
            tokens[sampling] = self.decoder.step(self.logits if all_rows else self.logits[sampling])
        self.stats.chars += len(sampling)
        if plan.starting:
            now = time.perf_counter()
            for request in plan.starting:
                request.first_char_at = request.first_char_at or now
            plan.starting = []
            self._started = True
        ending: list[int] = []
        feeding_last = False
        for k in self.decoder.ended:
            position = int(sampling[k])
            row = self.rows[position]
            assert row.decoding is not None
            row.finish = row.decoding.finish
            # The state of a returned token includes the last character, as after `generate`,
            # whose loop feeds every character it keeps.
            if row.finish == "length" and row.request.return_state:
                feeding_last = True
            else:
                ending.append(position)
        return ending, feeding_last

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
                rows.append(Row(request, choice))
                index.append(i)
        self._reindex(index, rows)

    def flush(self) -> None:
        """Hand each request the text its choices produced since the last flush (the
        decoder holds back characters that may be the start of a stop string)."""
        events: dict[int, tuple[Request, list[Event]]] = {}
        for k, text, start in self.decoder.flush():
            row = self.decoder.rows[k]
            request: Request = row.group.owner  # type: ignore[assignment]
            event = Event(row.choice, text, offset=start)
            if request.options.logprobs is not None:
                event.logprobs = row.logprobs[start : start + len(text)]
            events.setdefault(id(request), (request, []))[1].append(event)
        if events:
            self.deliver_many(list(events.values()))


def _stream_state(
    request: Request, h: np.ndarray, c: np.ndarray, logits: np.ndarray
) -> StreamState:
    """The stream's state for a token: its random stream where one draw per character
    leaves it (the uniforms drawn ahead are handed back first)."""
    assert request.group is not None
    request.group.sync()
    rng_state = dict(request.group.rng.bit_generator.state)
    return StreamState(h.copy(), c.copy(), logits.copy(), rng_state)


def deliver_each(batches: list[tuple[Request, list[Event]]]) -> None:
    """Each request's events to its `deliver` (in the engine thread, or on the event loop)."""
    for request, events in batches:
        request.deliver(request, events)
