"""The engine: one thread owns the backend and advances every open stream in one batched step.

A request joins between steps with one row for its prompt (none when the prefix cache has the
prompt's state), which then forks into its `n` choice rows; a row leaves when it ends, is
cancelled, times out or is aborted at shutdown. The engine admits, forks and drops rows, steps
the backend and hands text over; choosing characters, stop strings and held-back text are the
decoder's (`toolkit/runtime/decode.py`), the one `toolkit generate` uses. So a seeded request
gives the same text alone, among 63 others, and as `toolkit generate`, on backends whose rows
are batch-invariant (`batch_invariant` measures it at start-up).
"""

from __future__ import annotations

import collections
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from toolkit.runtime.decode import Decoder, overflow_detected
from toolkit.runtime.step import StepBackend
from toolkit.serve.batch import Batch
from toolkit.serve.prefix_cache import PrefixCache
from toolkit.serve.request import (
    Event,
    NotAccepting,
    QueueFull,
    Request,
    Row,
    Stats,
    choice_event,
    deliver_each,
    flush_interval,
    stream_state,
)
from toolkit.serve.state_token import StreamState
from toolkit.vocabulary import Vocabulary


@dataclass
class _Plan:
    """Which rows draw and which feed a prompt, for one batch membership (remade when rows
    join or leave)."""

    sampling: np.ndarray  # positions of the rows that draw (the decoder's rows, in order)
    prompts: list[tuple[int, Row]]  # (position, row) of prompt passes
    starting: list[Request]  # requests whose first character the next draw is


class Engine:
    """Continuous batching over one backend, on a thread of its own (`start`). The rows that
    draw are the decoder's rows, in batch order."""

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
        self.backend, self.vocab, self.vocab_size = backend, vocab, len(vocab)
        self.layers, self.units = state_shape
        self.max_batch, self.max_queue = max_batch, max_queue
        self.pad_batches = pad_batches  # see padded_step
        self.cache = PrefixCache(cache_bytes)
        self.stats = Stats()
        self.waiting: collections.deque[Request] = collections.deque()
        self.running: list[Request] = []
        self.batch = Batch(self.layers, self.units, self.vocab_size)
        self.decoder = Decoder(vocab)
        self._plan: _Plan | None = None
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._accepting = True
        self._stop = False
        self._abort_requested = False
        self._cancels = False  # a request was cancelled since the last look
        self._next_deadline = math.inf  # the nearest time limit of a running request
        self.clock: Callable[[], float] = time.perf_counter  # for the hand-overs
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None
        # Hooks for the metrics, called on the engine thread.
        self.on_step: Callable[[int], None] = lambda batch: None
        self.on_finish: Callable[[Request], None] = lambda request: None
        # How a flush's events reach the requests: one call for all (one wake of the loop).
        self.deliver_many: Callable[[list[tuple[Request, list[Event]]]], None] = deliver_each
        # Choices that ended: their last events, handed over with the next hand-over.
        self._outbox: list[tuple[Request, list[Event]]] = []

    @property
    def rows(self) -> list[Row]:
        return self.batch.rows

    # ----------------------------------------------------------------- the HTTP side's calls

    def submit(self, request: Request) -> None:
        if not request.prompt_ids and request.start is None:
            raise ValueError("a request needs a prompt or a state to start from")
        with self._lock:
            if not self._accepting:
                raise NotAccepting("the server is shutting down")
            if (waiting := len(self.waiting)) >= self.max_queue:
                raise QueueFull(f"the queue is full ({waiting} requests waiting); retry later")
            request.arrived = time.perf_counter()
            self.waiting.append(request)
            self._wake.notify()

    def cancel(self, request: Request) -> None:
        """The client went away: its rows leave before the next step."""
        request.cancelled = True
        with self._lock:
            self._cancels = True
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
        try:
            while True:
                with self._lock:
                    while not (self._stop or self.rows or self.waiting or self._abort_requested):
                        self._wake.wait()
                    if self._stop:
                        return
                    aborting, self._abort_requested = self._abort_requested, False
                self.iterate(aborting)
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
        if self._outbox:  # ends after this turn's hand-over
            self.flush([])

    def _abort(self) -> None:
        with self._lock:
            waiting, self.waiting = list(self.waiting), collections.deque()
        for request in waiting:
            self._end_unstarted(request, "abort")
        for row in self.rows:
            row.finish = row.finish or "abort"
        self._end_rows(list(range(len(self.rows))))
        self.flush([])  # their last events now: the loop may not turn again

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
            if reason := request.gone(now):
                self._end_unstarted(request, reason)
                continue
            used += request.n
            request.admitted = now
            request.open_choices = request.n
            cached = None
            if request.start is None and not request.prompt_logprobs:
                cached = self.cache.get(tuple(request.prompt_ids))
                self.stats.cache_hits += cached is not None
            h, c, logits = request.begin(self.vocab, self.layers, self.units, cached)
            self.running.append(request)
            self._next_deadline = min(self._next_deadline, request.arrived + request.timeout_s)
            if request.prompt_ids and (request.start is not None or logits is None):
                joining.append((Row(request, -1, request.prompt_ids[::-1]), h, c, logits))
            elif request.max_tokens == 0:
                assert logits is not None
                self._end_at_once(request, h, c, logits)
            else:
                joining.extend((Row(request, k), h, c, logits) for k in range(request.n))
        if joining:
            self.batch.join(joining)
            self._plan = None

    def _drop_cancelled(self) -> None:
        """Rows of requests that were cancelled or ran out of time leave now (looked for only
        after a cancel, or once the nearest time limit has passed)."""
        now, ending = time.perf_counter(), []
        if not (self._cancels or now >= self._next_deadline):
            return
        self._cancels = False
        deadlines = [r.arrived + r.timeout_s for r in self.running if not r.gone(now)]
        self._next_deadline = min(deadlines, default=math.inf)
        for i, row in enumerate(self.rows):
            if reason := row.request.gone(now):
                row.finish = reason
                ending.append(i)
        self._end_rows(ending)

    def _end_unstarted(
        self, request: Request, reason: str, state: StreamState | None = None
    ) -> None:
        """Every choice of the request ends at once (with `state` for a state token)."""
        request.open_choices = 0
        request.deliver(request, [Event(k, "", reason, state) for k in range(request.n)])
        if request in self.running:
            self.running.remove(request)
        request.finished_at = time.perf_counter()
        self.on_finish(request)

    def _end_at_once(
        self, request: Request, h: np.ndarray, c: np.ndarray, logits: np.ndarray
    ) -> None:
        """A request for no characters ends after its prompt, with that state."""
        state = stream_state(request, h, c, logits) if request.return_state else None
        self._end_unstarted(request, "length", state)

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
                    state = stream_state(
                        request, self.batch.h[:, i], self.batch.c[:, i], self.batch.logits[i]
                    )
                row.decoding.finish = row.decoding.finish or reason  # the rest, held or not
                start, ids = row.decoding.take()
                events = [choice_event(row.decoding, self.vocab.decode(ids), start, reason, state)]
                request.chars += len(row.decoding.out)
                request.open_choices -= 1
            self._outbox.append((request, events))
            if request.open_choices == 0:
                finished.append(request)
        gone = set(ending)
        keep = [i for i in range(len(self.rows)) if i not in gone]
        self.batch.select(keep)
        self._plan = None
        now = time.perf_counter()
        for request in finished:
            self.running.remove(request)
            request.finished_at = now
            self.on_finish(request)
        return keep

    def _make_plan(self) -> _Plan:
        sampling = [i for i, row in enumerate(self.rows) if row.decoding is not None]
        self.decoder.set_rows([self.rows[i].decoding for i in sampling])  # type: ignore[misc]
        starting = {id(r): r for i in sampling if (r := self.rows[i].request).first_char_at is None}
        prompts = [(i, row) for i, row in enumerate(self.rows) if row.decoding is None]
        return _Plan(np.array(sampling, np.int64), prompts, list(starting.values()))

    def _step(self) -> None:
        """A character for every choice row, then one batched step for every row."""
        plan = self._plan = self._plan or self._make_plan()
        tokens = np.zeros(len(self.rows), np.int32)
        ending: list[int] = []
        feeding_last = False
        if len(plan.sampling):
            ending, feeding_last = self._draw(plan, tokens)
        for i, row in plan.prompts:
            if row.request.prompt_logprobs:
                row.score_next(self.batch.logits[i : i + 1])
            tokens[i] = row.pending.pop()
        if ending:  # rows that ended on this draw and need no last step
            tokens = tokens[self._end_rows(ending)]
            if not self.rows:
                return
        self._hand_over()
        start = time.perf_counter()
        self.batch.step(self.backend, tokens, self.pad_batches)
        self.stats.step_seconds += time.perf_counter() - start
        self.stats.steps += 1
        self.on_step(len(self.rows))
        # Rows that waited for their last character to be fed end; prompt passes that are
        # done fork into their choices.
        if feeding_last:
            self._end_rows([i for i, row in enumerate(self.rows) if row.finish is not None])
        forks = [row for _, row in plan.prompts if not row.pending]
        if forks:
            self._fork(forks)

    def _draw(self, plan: _Plan, tokens: np.ndarray) -> tuple[list[int], bool]:
        """The decoder draws for the plan's rows into `tokens`. The positions of the rows that
        end without a last step, and whether some row ends after one (to return its state)."""
        sampling = plan.sampling
        if len(sampling) == 1:
            i = int(sampling[0])
            with overflow_detected():  # see Decoder
                tokens[i] = self.decoder.step_one(self.batch.logits[i : i + 1])
        else:
            all_rows = len(sampling) == len(self.rows)
            logits = self.batch.logits
            tokens[sampling] = self.decoder.step(logits if all_rows else logits[sampling])
        self.stats.chars += len(sampling)
        if plan.starting:
            now = time.perf_counter()
            for request in plan.starting:
                request.first_char_at = request.first_char_at or now
                request.hand_over_at = 0.0  # its first characters go out at once
            plan.starting = []
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
                    tuple(request.prompt_ids),
                    self.batch.h[:, i],
                    self.batch.c[:, i],
                    self.batch.logits[i],
                )
            if request.max_tokens == 0:
                self._end_at_once(
                    request, self.batch.h[:, i], self.batch.c[:, i], self.batch.logits[i]
                )
                continue
            for choice in range(request.n):
                rows.append(Row(request, choice))
                index.append(i)
        self.batch.select(index, rows)
        self._plan = None

    def _hand_over(self) -> None:
        """The text of each request whose hand-over is due, just before the model's step:
        the HTTP side formats and sends it while the step runs (the interpreter lock is free
        then). Requests start at different times, so their hand-overs spread over the
        interval: a few streams' chunks per step, not every stream's at once, which would
        keep the HTTP side busy past the step while the engine waits for the lock."""
        now = self.clock()
        due = [request for request in self.running if request.hand_over_at <= now]
        if due:
            interval = flush_interval(len(self.rows))
            for request in due:
                request.hand_over_at = now + interval
        if due or self._outbox:
            self.flush(due)

    def flush(self, only: list[Request] | None = None) -> None:
        """Hand each request (or `only` these) the text its choices produced since the last
        flush (the decoder holds back characters that may be the start of a stop string),
        after the last events of the choices that ended since."""
        events: dict[int, tuple[Request, list[Event]]] = {}
        positions: list[int] | None = None if only is None else []
        if only:
            wanted = {id(request) for request in only}
            rows = enumerate(self.decoder.rows)
            positions = [k for k, row in rows if id(row.group.owner) in wanted]
        for k, text, start in self.decoder.flush(positions):
            row = self.decoder.rows[k]
            request: Request = row.group.owner  # type: ignore[assignment]
            events.setdefault(id(request), (request, []))[1].append(choice_event(row, text, start))
        batches, self._outbox = self._outbox + list(events.values()), []
        if batches:
            self.deliver_many(batches)
