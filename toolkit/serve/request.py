"""What the engine and the HTTP side pass between them: requests, their rows and events."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from toolkit.runtime import decode
from toolkit.runtime.decode import DecodeOptions, Group, Score
from toolkit.serve.state_token import StreamState
from toolkit.vocabulary import Vocabulary


class QueueFull(Exception):
    """More requests are waiting than --max-queue allows (HTTP 429)."""


class NotAccepting(Exception):
    """The engine is loading or shutting down (HTTP 503)."""


def flush_interval(rows: int) -> float:
    """How often streamed text is handed to the HTTP side: every 20 ms (as `generate` streams
    to a terminal), stretched to 50 ms as the batch grows past 25 streams, where sending the
    chunks costs the step CPU time (benchmarks/reports/serve.md)."""
    return min(0.05, max(0.02, 0.0008 * rows))


StartState = tuple[np.ndarray, np.ndarray, np.ndarray | None]  # h, c, logits


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
    # When its new text next goes to the HTTP side: at once after its first character, then
    # at the hand-over interval (never before its first character).
    hand_over_at: float = math.inf
    finished_at: float | None = None
    cancelled: bool = False
    chars: int = 0  # characters kept over all its choices, counted as each choice ends
    open_choices: int = 0
    group: Group | None = None  # its rows' decoder group (options and random stream)
    # With prompt_logprobs, once the prompt is fed: a score per prompt character, None for
    # the first (nothing predicts it), as OpenAI's echo gives.
    prompt_scores: list[Score | None] = field(default_factory=list)

    def gone(self, now: float) -> str | None:
        """ "cancelled" or "timeout" once the request should leave, else None."""
        if self.cancelled:
            return "cancelled"
        return "timeout" if now - self.arrived > self.timeout_s else None

    def begin(
        self, vocab: Vocabulary, layers: int, units: int, cached: StartState | None
    ) -> StartState:
        """Admitted: its decoder group (the options, and a random stream continued from the
        state token if any), and the h, c [layers, units] and logits its rows start from:
        the state token's, the prefix cache's (`cached`), or zeros and no logits (its prompt
        is fed first)."""
        rng = np.random.default_rng(self.seed)
        zeros = np.zeros((layers, units), np.float32)
        start: StartState = (zeros, zeros, None)
        if self.start is not None:
            rng.bit_generator.state = self.start.rng_state
            start = (self.start.h, self.start.c, self.start.logits)
        elif cached is not None:
            start = cached
        self.group = Group(self.options, vocab, rng, owner=self)
        return start

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

    def score_next(self, logits: np.ndarray) -> None:
        """A prompt pass that scores its prompt: how likely [1, vocab] `logits` found the
        character about to be fed (none for a first character fed from the zero state:
        nothing predicts it)."""
        request = self.request
        if not request.prompt_scores and request.start is None:
            request.prompt_scores.append(None)
            return
        token = np.array([self.pending[-1]], np.int32)
        top = request.options.logprobs or 0
        request.prompt_scores.append(decode.score_tokens(logits, token, [top])[0])


@dataclass
class Stats:
    """What /metrics reads; written by the engine thread."""

    steps: int = 0
    step_seconds: float = 0.0  # in the backend's batched step
    chars: int = 0  # drawn, stop strings included
    cache_hits: int = 0


def choice_event(
    row: decode.Row,
    text: str,
    start: int,
    finish_reason: str | None = None,
    state: StreamState | None = None,
) -> Event:
    """A choice's new `text` (its characters from `start`), with their scores if asked."""
    event = Event(row.choice, text, finish_reason, state, offset=start)
    if row.group.options.logprobs is not None:
        event.logprobs = row.logprobs[start : start + len(text)]
    return event


def stream_state(request: Request, h: np.ndarray, c: np.ndarray, logits: np.ndarray) -> StreamState:
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
