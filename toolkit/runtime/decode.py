"""The decoder: each step's logits in, the next characters out, for a set of rows.

Every caller decodes through it: `Session.sample` (a fixed set of rows) and the server's
`Engine` (rows join, fork and leave between steps). Per row it keeps the options, the
characters drawn, the stop strings' automata, the text held back because it may be the start
of a stop string, and the characters left; per group of rows (one request's `n` choices, or a
session's batch) one random stream, from which the group draws one uniform per row per
character whether or not a row still runs, as `reference.sample` does. A row's token depends
on its own logits, options and uniform alone, so a seeded text is the same alone or among
any other rows.

    decoder = Decoder(vocab)
    rows = decoder.add(Group(options, vocab, rng))    # options.n rows
    tokens = decoder.step(logits)                      # [rows, vocab] -> int32 [rows]
    decoder.ended                                      # positions whose row ended this step
    decoder.flush()                                    # (row, text safe to show) pairs

`step_one` is `step` for a lone row, with Python scalars instead of arrays (at batch 1 a
small model's step costs only tens of microseconds); it is the same stages in the same order.
`toolkit/runtime/reference.py` is the plain loop both are tested against.
"""

from __future__ import annotations

import collections
import heapq
import math
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from toolkit.errors import UsageError
from toolkit.runtime.pattern import Pattern, compile_choice, compile_regex
from toolkit.runtime.sampling import OneDraw, RowsDraw, draw_filtered, overflow_detected
from toolkit.runtime.stop import stop_table
from toolkit.vocabulary import Vocabulary

__all__ = ["DecodeOptions", "Decoder", "Group", "Row", "overflow_detected", "score_tokens"]

Index = np.ndarray | slice  # positions in the batch: a slice when they are every row

# Uniforms are drawn from a group's random stream this many characters at a time (one numpy
# call instead of one per character); `Group.sync` hands back what was drawn ahead.
UNIFORM_BLOCK = 256


@dataclass(frozen=True)
class DecodeOptions:
    """How a request's characters are chosen; checked once, when made (the CLI and the
    server's request models build it; nothing below checks it again)."""

    length: int = 200  # characters at most
    temperature: float = 1.0  # 0 is greedy
    top_k: int = 0  # keep the k most likely; 0 keeps all
    top_p: float = 1.0  # keep the smallest set whose probability reaches p
    stop: tuple[str, ...] = ()  # the text ends before the first of these to appear
    seed: int | None = None
    n: int = 1  # rows (texts) decoded from the same prompt
    # Controls, each a stage applied to a row's logits before the draw (OpenAI's semantics).
    logit_bias: tuple[tuple[int, float], ...] = ()  # (token id, -100...100) added to its logit
    presence_penalty: float = 0.0  # -2...2, off each character already generated
    frequency_penalty: float = 0.0  # -2...2, times how often it was generated
    regex: str | None = None  # the text must match this in full ...
    choice: tuple[str, ...] = ()  # ... or be one of these
    # Per character drawn: its log-probability and the `logprobs` most likely characters'
    # (the model's distribution: log-softmax of the raw logits, before any stage or filter).
    logprobs: int | None = None

    def __post_init__(self) -> None:
        if self.length < 0:
            raise UsageError(f"length must be >= 0, got {self.length}")
        if not np.isfinite(self.temperature) or self.temperature < 0:
            raise UsageError(f"temperature must be >= 0 (0 means greedy), got {self.temperature}")
        if self.top_k < 0:
            raise UsageError(f"top-k must be >= 0 (0 means no limit), got {self.top_k}")
        if not (0.0 < self.top_p <= 1.0):
            raise UsageError(f"top-p must be in (0, 1], got {self.top_p}")
        if self.n < 1:
            raise UsageError(f"num-samples must be >= 1, got {self.n}")
        if any(not s for s in self.stop):
            raise UsageError("a stop string must not be empty")
        for token, bias in self.logit_bias:
            if token < 0:
                raise UsageError(f"logit bias: token ids are >= 0, got {token}")
            if not -100 <= bias <= 100:
                raise UsageError(f"logit bias must be in [-100, 100], got {bias} for {token}")
        for name in ("presence_penalty", "frequency_penalty"):
            value = getattr(self, name)
            if not -2 <= value <= 2:
                raise UsageError(f"{name.replace('_', ' ')} must be in [-2, 2], got {value}")
        if self.regex is not None and self.choice:
            raise UsageError("give a regex or a choice list, not both")
        if self.choice and any(not c for c in self.choice):
            raise UsageError("a choice must not be empty")
        if self.logprobs is not None and not 0 <= self.logprobs <= 20:
            raise UsageError(f"logprobs must be in [0, 20], got {self.logprobs}")

    @property
    def controlled(self) -> bool:
        """Some stage changes the logits before the draw."""
        return bool(
            self.logit_bias
            or self.presence_penalty
            or self.frequency_penalty
            or self.regex is not None
            or self.choice
        )

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    @property
    def plain(self) -> bool:
        """Temperature alone: no top-k or top-p filter."""
        return self.top_k == 0 and self.top_p >= 1.0


class Group:
    """Rows that share options and one random stream: a request's `n` choices, or a
    session's batch. The stream gives `n` uniforms per character (none when greedy)."""

    def __init__(
        self,
        options: DecodeOptions,
        vocab: Vocabulary,
        rng: np.random.Generator | None = None,
        owner: object = None,
    ) -> None:
        self.options = options
        self.owner = owner  # whatever the caller decodes it for (the server: its request)
        self.n = options.n
        self.rng = rng if rng is not None else np.random.default_rng(options.seed)
        # Per stop string: its automaton's rows (state, token -> state) and its length.
        self.stops = [(stop_table(s, vocab.chars).tolist(), len(s)) for s in options.stop]
        # The characters that begin a stop string: a row holding nothing back moves none of
        # its automata on any other character (bool [vocab]).
        self.stop_starts = np.zeros(len(vocab), bool)
        for table, _ in self.stops:
            self.stop_starts[np.flatnonzero(table[0])] = True
        self.pattern = compile_pattern(options, vocab)
        self.bias: np.ndarray | None = None  # float32 [vocab]
        if options.logit_bias:
            self.bias = np.zeros(len(vocab), np.float32)
            for token, bias in options.logit_bias:
                if token >= len(vocab):
                    raise UsageError(
                        f"logit bias: token id {token} is not in the vocabulary (0-{len(vocab) - 1})"
                    )
                self.bias[token] = bias
        self.block = UNIFORM_BLOCK
        self._uniforms = np.empty((0, self.n))
        self._floats: list[float] = []  # n == 1: the block as Python floats
        self._used = 0
        self._state_before: Mapping[str, Any] | None = None

    def uniforms(self) -> np.ndarray:
        """The next character's n uniforms."""
        if self._used == len(self._uniforms):
            self._refill()
        self._used += 1
        return self._uniforms[self._used - 1]

    def uniform(self) -> float:
        """`uniforms()[0]` as a Python float, for a group of one."""
        if self._used == len(self._floats):
            self._refill()
        self._used += 1
        return self._floats[self._used - 1]

    def _refill(self) -> None:
        self._state_before = self.rng.bit_generator.state
        # Row i holds what the i-th `rng.random(n)` call would return.
        self._uniforms = self.rng.random((self.block, self.n))
        self._floats = self._uniforms[:, 0].tolist() if self.n == 1 else []
        self._used = 0

    def sync(self) -> None:
        """Rewind the random stream past the uniforms drawn ahead: it is then where one
        `rng.random(n)` per character drawn leaves it (for a state token, or the caller)."""
        if self._state_before is not None and self._used < len(self._uniforms):
            self.rng.bit_generator.state = self._state_before
            if self._used:
                self.rng.random((self._used, self.n))
        self._uniforms = np.empty((0, self.n))
        self._floats = []
        self._used = 0
        self._state_before = None


class Row:
    """One text being decoded: its group, which of the group's uniforms it takes, the token
    ids drawn, how many were handed out, its stop automata's states and the characters left."""

    __slots__ = (
        "choice",
        "counts",
        "finish",
        "group",
        "logprobs",
        "out",
        "remaining",
        "sent",
        "state",
        "stop_states",
    )

    def __init__(self, group: Group, choice: int) -> None:
        self.group = group
        self.choice = choice
        self.out: list[int] = []
        self.sent = 0  # how many of `out` were handed out
        # Per stop string: how many of out's last characters are a start of it.
        self.stop_states = [0] * len(group.stops)
        self.remaining = group.options.length
        # "stop" or "length" once it ended
        self.finish: str | None = None if self.remaining else "length"
        self.state = group.pattern.start if group.pattern is not None else 0  # its automaton's
        # How often each character was generated (the penalties): float32 [vocab], made by
        # the decoder's first controlled step.
        self.counts: np.ndarray | None = None
        # Per character in `out`: its log-probability and the top alternatives (token, lp).
        self.logprobs: list[Score] = []

    @property
    def held(self) -> int:
        """Characters at the end of `out` that may be the start of a stop string."""
        return max(self.stop_states, default=0)

    def take(self) -> tuple[int, list[int]]:
        """The ids not yet handed out that are safe to show (all of them once it ended), and
        where they start in `out`."""
        upto = len(self.out) if self.finish is not None else len(self.out) - self.held
        start = self.sent
        ids = self.out[start:upto]
        self.sent = max(start, upto)
        return start, ids


@dataclass
class _Plan:
    """How one membership of rows draws, worked out once (remade when rows join or leave)."""

    greedy: np.ndarray  # positions of greedy rows
    plain: list[tuple[Index, RowsDraw]]  # rows sharing a temperature
    filtered: list[tuple[Index, DecodeOptions]]  # top-k / top-p rows sharing options
    sources: list[tuple[Group, Index, Index]]  # group, its positions, their choices (n > 1)
    singles: np.ndarray  # positions of the rows of one-row groups (a request with n = 1) ...
    single_draws: list[Callable[[], float]]  # ... and their groups' `uniform`
    # Rows with stop strings: their positions, the rows, whether each holds text back (some
    # automaton has left its start) and the characters that begin one of its stop strings.
    stop_positions: np.ndarray  # int64 [stopping rows]
    stop_rows: list[Row]
    stop_held: np.ndarray  # bool [stopping rows]
    stop_starts: np.ndarray  # bool [stopping rows, vocab]
    controlled: list[tuple[int, Row]]  # rows with a pattern, logit bias or penalties
    bias: tuple[np.ndarray, np.ndarray] | None  # positions with a logit bias, their biases
    penalised: list[tuple[int, Row]]  # rows with presence or frequency penalties
    patterns: list[tuple[PatternMasks, np.ndarray, list[Row]]]  # rows sharing a pattern
    scored_positions: np.ndarray  # rows whose log-probabilities are kept ...
    scored_rows: list[Row]
    scored_tops: list[int]  # ... and how many likely characters each keeps
    uniforms: np.ndarray  # float64 [rows]
    tokens: np.ndarray  # int32 [rows]
    # Characters each row had left when the plan was made, and steps since: a row ends on
    # length when they meet (one integer compare per step until the nearest end).
    left: np.ndarray  # int64 [rows]
    steps: int = 0
    next_end: int = 0  # the fewest characters left of an open row
    one: Callable[[np.ndarray], int] | None = None  # a lone plain row's draw (step_one) ...
    lone: Callable[[np.ndarray], int] | None = None  # ... and a lone row's draw after stages
    # A lone row with a pattern and no other stage: its draw (the token, and whether the
    # match ends instead) and how far the end must be for it to serve.
    patterned: tuple[Callable[[np.ndarray], tuple[int, bool]], int] | None = None


class Decoder:
    """The rows being decoded, in the order of the logits' rows.

    Call `step_one` under `overflow_detected()` (entered once around a loop: it costs as much
    as the draw): at very low temperatures exp overflows, which the draws detect and redo.
    `step` enters it itself.
    """

    def __init__(self, vocab: Vocabulary) -> None:
        self.vocab = vocab
        self.vocab_size = len(vocab)
        self.rows: list[Row] = []
        self.ended: list[int] = []  # positions of the rows that ended on the last step
        self.open = 0  # rows not ended
        self._plan: _Plan | None = None

    # ----------------------------------------------------------------- membership

    def add(self, group: Group, choices: Iterable[int] | None = None) -> list[Row]:
        """Rows for the group's choices (all n by default), after the present ones."""
        rows = [Row(group, k) for k in (range(group.n) if choices is None else choices)]
        self.set_rows(self.rows + rows)
        return rows

    def keep(self, index: Sequence[int]) -> None:
        """The rows become those at `index`, in that order (the others leave)."""
        self.set_rows([self.rows[i] for i in index])

    def set_rows(self, rows: list[Row]) -> None:
        """The rows become `rows` (the server's batch after a change of membership)."""
        plan, self._plan = self._plan, None
        if plan is not None and plan.steps:  # `step` counts for all rows at once
            for row, left in zip(self.rows, plan.left.tolist(), strict=True):
                row.remaining = left - plan.steps
        self.rows = rows
        self.open = sum(row.finish is None for row in rows)

    # ----------------------------------------------------------------- the step

    def step(self, logits: np.ndarray) -> np.ndarray:
        """Draw one character for every row from its [rows, vocab] logits: int32 [rows]
        (a row that has ended draws too, and its character is dropped). `ended` then holds
        the positions of the rows that ended with this character (or, for a pattern that
        may end there, instead of it)."""
        plan = self._plan = self._plan or self._make_plan()
        ended: list[int] = []
        self.ended = ended
        raw, may_end = logits, list[tuple[int, np.ndarray]]()
        if plan.controlled:
            logits, may_end = self._control(logits, plan, ended)
        u, tokens = plan.uniforms, plan.tokens
        if plan.single_draws:  # one Python float each: the server's many one-row requests
            u[plan.singles] = [uniform() for uniform in plan.single_draws]
        for group, positions, choices in plan.sources:
            u[positions] = group.uniforms()[choices]
        if len(plan.greedy):
            tokens[plan.greedy] = logits[plan.greedy].argmax(1)
        with overflow_detected():
            for positions, draw in plan.plain:
                tokens[positions] = draw(logits[positions], u[positions], tokens[positions])
        for positions, o in plan.filtered:
            tokens[positions] = draw_filtered(
                logits[positions], u[positions], o.temperature, o.top_k, o.top_p
            )
        return self._settle(plan, raw, tokens, may_end, ended)

    def _settle(
        self,
        plan: _Plan,
        raw: np.ndarray,
        tokens: np.ndarray,
        may_end: list[tuple[int, np.ndarray]],
        ended: list[int],
    ) -> np.ndarray:
        """After the draw: the rows' scores, characters, automata and ends."""
        for position, allowed in may_end:  # a character that cannot continue: the match ends
            if not allowed[tokens[position]]:
                self.rows[position].finish = "stop"
                ended.append(position)
        if plan.scored_rows:
            self._score(raw, plan, tokens)
        for row, token in zip(self.rows, tokens.tolist(), strict=True):
            if row.finish is None:
                row.out.append(token)
        if plan.controlled:
            for position, row in plan.controlled:
                if row.finish is None:
                    token = int(tokens[position])
                    if row.group.pattern is not None:
                        row.state = int(row.group.pattern.table[row.state, token])
                    if row.counts is not None:
                        row.counts[token] += 1
        if plan.stop_rows:  # only a row holding text back or starting a stop string moves
            held, starts, positions = plan.stop_held, plan.stop_starts, plan.stop_positions
            moved = held | starts[np.arange(len(positions)), tokens[positions]]
            for k in np.flatnonzero(moved).tolist():
                row = plan.stop_rows[k]
                if row.finish is None:
                    if _stopped(row):
                        row.finish = "stop"
                        ended.append(int(positions[k]))
                    held[k] = row.held > 0
        plan.steps += 1
        if plan.steps == plan.next_end:
            for position in np.flatnonzero(plan.left == plan.steps).tolist():
                row = self.rows[position]
                if row.finish is None:
                    row.finish = "length"
                    ended.append(position)
            later = plan.left[plan.left > plan.steps]
            plan.next_end = int(later.min()) if len(later) else -1
        if ended:
            ended.sort()
            self.open -= len(ended)
        return tokens

    def _control(
        self, logits: np.ndarray, plan: _Plan, ended: list[int]
    ) -> tuple[np.ndarray, list[tuple[int, np.ndarray]]]:
        """The controlled rows' logits after their stages, in a copy: logit bias, then the
        penalties, then the pattern. In a state that is not accepting, characters that would
        leave the pattern (or not finish it within the characters left) are masked out; in
        an accepting state nothing is masked, and drawing a character that cannot continue
        ends the match (returned, with the allowed set, for after the draw). A row whose
        pattern cannot continue at all ends here."""
        logits = logits.copy()
        if plan.bias is not None:
            logits[plan.bias[0]] += plan.bias[1]
        for position, row in plan.penalised:
            o = row.group.options
            if row.counts is None:
                row.counts = np.zeros(self.vocab_size, np.float32)
            penalty = o.frequency_penalty * row.counts + o.presence_penalty * (row.counts > 0)
            logits[position] -= penalty
        may_end: list[tuple[int, np.ndarray]] = []
        for masks, positions, rows in plan.patterns:
            states = np.array([row.state for row in rows])
            left = plan.left[positions] - plan.steps
            allowed = masks.live[states]  # [rows, vocab], exact while the end is far
            for k in np.flatnonzero(left <= masks.far).tolist():
                allowed[k] = masks.pattern.allowed(rows[k].state, int(left[k]))
            accepting = masks.pattern.accepting[states]
            free = accepting | np.array([row.finish is not None for row in rows])  # no mask
            logits[positions] = np.where(allowed | free[:, None], logits[positions], -np.inf)
            for k in np.flatnonzero(accepting).tolist():
                if rows[k].finish is not None:
                    continue
                if allowed[k].any():
                    may_end.append((int(positions[k]), allowed[k]))
                else:
                    rows[k].finish = "stop"
                    ended.append(int(positions[k]))
        return logits, may_end

    def _score(self, logits: np.ndarray, plan: _Plan, tokens: np.ndarray) -> None:
        """Each scored row's log-probability of its character and its most likely ones."""
        positions, rows, tops = plan.scored_positions, plan.scored_rows, plan.scored_tops
        scores = score_tokens(logits[positions], tokens[positions], tops)
        for row, score in zip(rows, scores, strict=True):
            if row.finish is None:
                row.logprobs.append(score)

    def step_one(self, logits: np.ndarray) -> int:
        """`step` for a lone row, the token as a Python int."""
        plan = self._plan = self._plan or self._make_plan()
        if plan.patterned is not None and plan.left[0] - plan.steps > plan.patterned[1]:
            return self._step_patterned(logits, plan)
        if plan.one is None:  # a controlled or scored row: `step`'s stages, this row's draw
            ended: list[int] = []
            self.ended = ended
            z, may_end = self._control(logits, plan, ended) if plan.controlled else (logits, [])
            assert plan.lone is not None
            plan.tokens[0] = plan.lone(z)
            return int(self._settle(plan, logits, plan.tokens, may_end, ended)[0])
        token = plan.one(logits)
        row = self.rows[0]
        if self.ended:
            self.ended = []
        if row.finish is not None:
            return token
        row.out.append(token)
        row.remaining -= 1
        if row.stop_states and _stopped(row):
            row.finish = "stop"
        elif not row.remaining:
            row.finish = "length"
        else:
            return token
        self.ended = [0]
        self.open = 0
        return token

    def _step_patterned(self, logits: np.ndarray, plan: _Plan) -> int:
        """`step_one` for a lone row whose only stage is a pattern, while its end is far
        (then the allowed characters are the state's live ones): `_control` and `_settle`
        for one row, with the state's mask as one add and the rest in Python."""
        assert plan.patterned is not None
        draw, _ = plan.patterned
        row = self.rows[0]
        token, ends = draw(logits)
        self.ended = []
        plan.steps += 1
        if row.finish is not None:
            return token
        if ends:
            row.finish = "stop"
        else:
            row.out.append(token)
            row.state = pattern_masks(row.group.pattern).rows[row.state][token]  # type: ignore[arg-type]
            if not row.stop_states:
                return token
            stopped = _stopped(row)
            plan.stop_held[0] = row.held > 0  # for `_settle`, near the end
            if not stopped:
                return token
            row.finish = "stop"
        self.ended = [0]
        self.open = 0
        return token

    def all_stopped(self) -> bool:
        return all(row.finish == "stop" for row in self.rows)

    def _make_plan(self) -> _Plan:
        rows = self.rows
        by_temperature: dict[float, list[int]] = collections.defaultdict(list)
        by_options: dict[DecodeOptions, list[int]] = collections.defaultdict(list)
        groups: dict[int, tuple[Group, list[int]]] = {}
        greedy = []
        for i, row in enumerate(rows):
            o = row.group.options
            if o.greedy:
                greedy.append(i)
                continue
            groups.setdefault(id(row.group), (row.group, []))[1].append(i)
            if o.plain:
                by_temperature[o.temperature].append(i)
            else:
                by_options[o].append(i)
        n = len(rows)
        sources, singles = [], []
        for group, positions in groups.values():
            if group.n == 1:
                singles.append((positions[0], group.uniform))
                continue
            choices = [rows[i].choice for i in positions]
            every = choices == list(range(group.n))  # all of the group's rows, in order
            sources.append((group, _positions(positions, n), slice(None) if every else choices))
        left = np.array([row.remaining for row in rows], np.int64)
        scored = [i for i, r in enumerate(rows) if r.group.options.logprobs is not None]
        stopping = [i for i, row in enumerate(rows) if row.stop_states]
        open_left = [row.remaining for row in rows if row.finish is None]
        return _Plan(
            greedy=np.array(greedy, np.int64),
            plain=[
                (_positions(p, n), RowsDraw(len(p), self.vocab_size, t))
                for t, p in by_temperature.items()
            ],
            filtered=[(_positions(p, n), o) for o, p in by_options.items()],
            sources=sources,  # type: ignore[arg-type]
            singles=np.array([p for p, _ in singles], np.int64),
            single_draws=[draw for _, draw in singles],
            stop_positions=np.array(stopping, np.int64),
            stop_rows=[rows[i] for i in stopping],
            stop_held=np.array([rows[i].held > 0 for i in stopping], bool),
            stop_starts=np.array([rows[i].group.stop_starts for i in stopping], bool).reshape(
                len(stopping), self.vocab_size
            ),
            controlled=[(i, row) for i, row in enumerate(rows) if row.group.options.controlled],
            bias=_stack_bias(rows),
            penalised=[(i, r) for i, r in enumerate(rows) if _penalised(r.group.options)],
            patterns=_by_pattern(rows),
            scored_positions=np.array(scored, np.int64),
            scored_rows=[rows[i] for i in scored],
            scored_tops=[rows[i].group.options.logprobs or 0 for i in scored],
            uniforms=np.zeros(n),
            tokens=np.zeros(n, np.int32),
            left=left,
            next_end=min(open_left, default=-1),
            one=self._one_draw(rows[0]) if n == 1 and _simple(rows[0]) else None,
            lone=self._one_draw(rows[0]) if n == 1 else None,
            patterned=self._patterned_draw(rows[0]) if n == 1 else None,
        )

    def _one_draw(self, row: Row) -> Callable[[np.ndarray], int]:
        """A lone row's draw from its [1, vocab] logits, with its uniform as a Python float."""
        group, o = row.group, row.group.options
        if o.greedy:
            return lambda logits: int(logits.argmax())
        uniform = group.uniform if group.n == 1 else lambda: float(group.uniforms()[row.choice])
        if o.plain:
            draw = OneDraw(self.vocab_size, o.temperature).draw
            return lambda logits: draw(logits, uniform())
        t, k, p = o.temperature, o.top_k, o.top_p
        return lambda logits: int(draw_filtered(logits, np.array([uniform()]), t, k, p)[0])

    def _patterned_draw(
        self, row: Row
    ) -> tuple[Callable[[np.ndarray], tuple[int, bool]], int] | None:
        """For a lone row whose only stage is its pattern: the draw on its state's mask (in
        an accepting state on the raw logits, ending when the character cannot continue)."""
        o, pattern = row.group.options, row.group.pattern
        if pattern is None or o.logprobs is not None or row.group.bias is not None:
            return None
        if o.presence_penalty or o.frequency_penalty:
            return None
        masks, base = pattern_masks(pattern), self._one_draw(row)
        accepting, live, blocked = masks.accepting, masks.live_rows, masks.blocked
        buffer = np.zeros((1, self.vocab_size), np.float32)

        def draw(logits: np.ndarray) -> tuple[int, bool]:
            state = row.state
            if accepting[state]:
                token = base(logits)
                return token, not live[state][token]
            np.add(logits, blocked[state], buffer)
            return base(buffer), False

        return draw, masks.far

    def sync(self) -> None:
        """Rewind every group's random stream past the uniforms drawn ahead (when decoding
        ends, so that the caller's stream is where one draw per character leaves it)."""
        for group in {id(row.group): row.group for row in self.rows}.values():
            group.sync()

    # ----------------------------------------------------------------- text

    def flush(self, positions: Iterable[int] | None = None) -> list[tuple[int, str, int]]:
        """Each row's (or the rows at `positions`') new text that is safe to show: (position,
        text, where the text starts in the row's characters) for rows that have some.
        Characters that may be the start of a stop string are held back."""
        out = []
        for i in range(len(self.rows)) if positions is None else positions:
            row = self.rows[i]
            if len(row.out) > row.sent:
                start, ids = row.take()
                if ids:
                    out.append((i, self.vocab.decode(ids), start))
        return out

    def text(self, row: Row) -> str:
        return self.vocab.decode(row.out)


class PatternMasks:
    """What a pattern's rows need at every step, worked out once per pattern: which
    characters each state can take (exact while at least `far` characters are left, as every
    state then reaches acceptance in time)."""

    def __init__(self, pattern: Pattern) -> None:
        self.pattern = pattern
        self.live = pattern.table >= 0  # bool [states, vocab]
        self.far = int(pattern.distance.max()) + 1
        # For one row at a time: the same as Python lists, and each state's mask to add.
        self.rows: list[list[int]] = pattern.table.tolist()
        self.live_rows: list[list[bool]] = self.live.tolist()
        self.accepting: list[bool] = pattern.accepting.tolist()
        self.blocked = np.where(self.live, 0.0, -np.inf).astype(np.float32)[:, None, :]


_MASKS: weakref.WeakKeyDictionary[Pattern, PatternMasks] = weakref.WeakKeyDictionary()


def pattern_masks(pattern: Pattern) -> PatternMasks:
    masks = _MASKS.get(pattern)
    if masks is None:
        masks = _MASKS[pattern] = PatternMasks(pattern)
    return masks


def _by_pattern(rows: list[Row]) -> list[tuple[PatternMasks, np.ndarray, list[Row]]]:
    groups: dict[int, tuple[Pattern, list[int]]] = {}
    for i, row in enumerate(rows):
        if row.group.pattern is not None:
            groups.setdefault(id(row.group.pattern), (row.group.pattern, []))[1].append(i)
    return [
        (pattern_masks(p), np.array(ps, np.int64), [rows[i] for i in ps])
        for p, ps in groups.values()
    ]


def _stack_bias(rows: list[Row]) -> tuple[np.ndarray, np.ndarray] | None:
    biased = [i for i, row in enumerate(rows) if row.group.bias is not None]
    if not biased:
        return None
    return np.array(biased, np.int64), np.stack([rows[i].group.bias for i in biased])  # type: ignore[misc]


def _penalised(o: DecodeOptions) -> bool:
    return bool(o.presence_penalty or o.frequency_penalty)


def _simple(row: Row) -> bool:
    """A row with no stage before the draw and no scores: the lone-row fast path serves it."""
    o = row.group.options
    return not o.controlled and o.logprobs is None


def compile_pattern(options: DecodeOptions, vocab: Vocabulary) -> Pattern | None:
    """The options' regex or choice list as an automaton over the vocabulary (cached), or
    None; a PatternError when it cannot match within the length."""
    if options.regex is None and not options.choice:
        return None
    if options.regex is not None:
        pattern = compile_regex(options.regex, vocab.chars)
    else:
        pattern = compile_choice(options.choice, vocab.chars)
    pattern.check_length(options.length)
    return pattern


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """float64 [rows, vocab]: the model's log-probabilities (temperature 1, no filter)."""
    z = logits.astype(np.float64)
    z -= z.max(axis=-1, keepdims=True)
    z -= np.log(np.exp(z).sum(axis=-1, keepdims=True))
    return z


# A character's log-probability, and the ids and log-probabilities of the most likely ones.
Score = tuple[float, list[int], list[float]]


def score_tokens(logits: np.ndarray, tokens: np.ndarray, tops: Sequence[int]) -> list[Score]:
    """Per row of [rows, vocab] logits: the log-probability of its token and its `tops[row]`
    most likely tokens with theirs (the model's distribution: no temperature or filter)."""
    if len(tokens) == 1:  # one row: Python floats beat numpy's per-call cost
        z = logits[0].tolist()
        top_z = max(z)
        lse = top_z + math.log(math.fsum(math.exp(x - top_z) for x in z))
        ids = heapq.nlargest(tops[0], range(len(z)), key=z.__getitem__)
        return [(z[int(tokens[0])] - lse, ids, [z[i] - lse for i in ids])]
    lp = log_softmax(logits)
    chosen = lp[np.arange(len(tokens)), tokens].tolist()
    most = min(max(tops, default=0), lp.shape[1])
    if not most:
        return [(value, [], []) for value in chosen]
    # The `most` largest by a partition, then in order (cheaper than sorting every row).
    part = np.argpartition(-lp, most - 1, axis=1)[:, :most]
    order = np.take_along_axis(part, np.argsort(-np.take_along_axis(lp, part, 1), 1), 1)
    ids, values = order.tolist(), np.take_along_axis(lp, order, 1).tolist()
    if min(tops) == most:  # the usual case: every row keeps as many
        return list(zip(chosen, ids, values, strict=True))
    return [(chosen[k], ids[k][:top], values[k][:top]) for k, top in enumerate(tops)]


def _stopped(row: Row) -> bool:
    """Whether the row's text now ends with one of its stop strings (the first in the
    options' order); if so, that string is taken off the text."""
    token, states, hit = row.out[-1], row.stop_states, 0
    for k, (table, length) in enumerate(row.group.stops):
        states[k] = table[states[k]][token]
        if states[k] == length and not hit:
            hit = length
    if hit:
        del row.out[len(row.out) - hit :]
        del row.logprobs[len(row.out) :]
        row.sent = min(row.sent, len(row.out))
    return bool(hit)


def _positions(positions: list[int], rows: int) -> Index:
    """Positions as an index: a slice when they are every row (no gather, no scatter)."""
    return slice(None) if len(positions) == rows else np.array(positions, np.int64)
