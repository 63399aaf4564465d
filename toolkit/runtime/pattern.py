"""Patterns the generated text must match in full, compiled to a table over the model's
characters: the same plain data drives the Python decoder, the page and the C target.

    p = compile_regex(r"[A-Z][a-z]{2,9}\\n", vocab.chars)   # or compile_choice(["yes", "no"], ...)
    state = p.start
    ok = p.allowed(state, remaining)    # bool [vocab]: chars that keep a full match reachable
    state = int(p.table[state, char])    # -1 = dead (never for an allowed char)

`interegular` turns the regex into a deterministic automaton over its own character classes;
here each of the model's characters is mapped onto those classes (a character the model does
not have simply has no transitions), states that cannot reach acceptance are pruned, equivalent
states merged, and the states renumbered in breadth-first order so that the start is 0.
Anchors are implied (a full match; a leading ^ and a trailing $ are accepted and ignored);
lookaround and back-references are refused. Compilation is bounded in states and time, and
results (errors too) are kept in an LRU cache keyed by (pattern, vocabulary, limits).
"""

from __future__ import annotations

import re
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from toolkit.errors import UsageError

MAX_STATES = 10_000
TIMEOUT_S = 5.0
CACHE_SIZE = 256
SHOWN = 60  # characters of a pattern quoted in an error


class PatternError(UsageError):
    """A pattern that cannot be used: unsupported syntax, nothing to match, too big or slow,
    or longer than the length allowed. The message is one line."""


class PatternTimeout(PatternError):
    """Compiling took longer than allowed: not cached, as a less busy moment may manage."""


@dataclass(frozen=True, eq=False)
class Pattern:
    source: str  # the regex, or a description of the choice list
    table: np.ndarray  # int32 [states, vocab]: next state, -1 = dead
    accepting: np.ndarray  # bool [states]
    distance: np.ndarray  # int32 [states]: fewest characters to reach acceptance
    start: int  # start state (0)

    @property
    def states(self) -> int:
        return int(self.table.shape[0])

    def allowed(self, state: int, remaining: int) -> np.ndarray:
        """bool [vocab]: the characters whose next state is live and can reach acceptance
        within remaining - 1 more characters (none when remaining <= 0)."""
        nxt = self.table[state]
        live = nxt >= 0
        if remaining <= 0:
            return np.zeros_like(live)
        live[live] = self.distance[nxt[live]] <= remaining - 1
        return live

    def check_length(self, length: int) -> None:
        """A PatternError when no match fits in `length` characters."""
        need = int(self.distance[self.start])
        if need > length:
            raise PatternError(
                f"pattern {_shown(self.source)} needs at least {need} characters, more than "
                f"the length {length}"
            )

    def accepts(self, ids: Sequence[int]) -> bool:
        """Whether these token ids, from the start, are a full match."""
        state = self.start
        for t in ids:
            state = int(self.table[state, t])
            if state < 0:
                return False
        return bool(self.accepting[state])


def _shown(source: str) -> str:
    return repr(source if len(source) <= SHOWN else source[: SHOWN - 3] + "...")


# --------------------------------------------------------------------------- bounded crawl

# interegular builds every automaton by one function, fsm.crawl (a subset construction that
# looks states up in a list). It is replaced by one that counts states and watches a deadline
# set per thread for the compile in progress, and finds known states by hash where it can.
_budget = threading.local()


class _Exceeded(Exception):
    def __init__(self, what: str) -> None:
        self.what = what


def _bounded_crawl(alphabet: Any, initial: Any, final: Any, follow: Any) -> Any:
    from interegular.fsm import FSM, OblivionError

    limit: int | None = getattr(_budget, "max_states", None)
    deadline: float | None = getattr(_budget, "deadline", None)
    states = [initial]
    index: dict[Any, int] = {}
    try:
        index[initial] = 0
        hashable = True
    except TypeError:  # everythingbut's states are dicts
        hashable = False
    finals = set()
    table: dict[int, dict[Any, int]] = {}
    i = 0
    while i < len(states):
        if limit is not None and len(states) > limit:
            raise _Exceeded("states")
        if deadline is not None and i % 64 == 0 and time.monotonic() > deadline:
            raise _Exceeded("time")
        state = states[i]
        if final(state):
            finals.add(i)
        table[i] = {}
        for transition in alphabet.by_transition:
            try:
                nxt = follow(state, transition)
            except OblivionError:
                continue
            j = (
                index.get(nxt)
                if hashable
                else next((k for k, s in enumerate(states) if s == nxt), None)
            )
            if j is None:
                j = len(states)
                states.append(nxt)
                if hashable:
                    index[nxt] = j
            table[i][transition] = j
        i += 1
    return FSM(
        alphabet=alphabet,
        states=range(len(states)),
        initial=0,
        finals=finals,
        map=table,
        __no_validation__=True,
    )


def _install_crawl() -> None:
    import interegular.fsm

    if interegular.fsm.crawl is not _bounded_crawl:
        interegular.fsm.crawl = _bounded_crawl


# --------------------------------------------------------------------------- compiling


def _strip_anchors(pattern: str) -> str:
    """Without a leading ^ and a trailing unescaped $: every match is a full match anyway."""
    if pattern.startswith("^"):
        pattern = pattern[1:]
    if pattern.endswith("$"):
        backslashes = len(pattern[:-1]) - len(pattern[:-1].rstrip("\\"))
        if backslashes % 2 == 0:
            pattern = pattern[:-1]
    return pattern


def _re_error(pattern: str) -> str:
    try:
        re.compile(pattern)
    except re.error as exc:
        return str(exc)
    return ""


def _has_lookaround(node: Any) -> bool:
    from interegular.patterns import _NonCapturing

    if isinstance(node, _NonCapturing):
        return True
    children = [
        *getattr(node, "options", ()),
        *getattr(node, "parts", ()),
        *([node.base] if hasattr(node, "base") else []),
    ]
    return any(_has_lookaround(c) for c in children)


def _raw_table(pattern: str, chars: Sequence[str]) -> tuple[np.ndarray, np.ndarray, int]:
    """interegular's automaton over the vocabulary: (table, accepting, start)."""
    import interegular
    from interegular.patterns import InvalidSyntax, Unsupported

    _install_crawl()
    try:
        parsed = interegular.parse_pattern(_strip_anchors(pattern))
    except Unsupported as exc:
        raise PatternError(f"unsupported syntax in pattern {_shown(pattern)}: {exc}") from None
    except (InvalidSyntax, ValueError, IndexError) as exc:
        # Python's own parser words the mistake where interegular's message is empty.
        why = str(exc).strip() or _re_error(pattern) or type(exc).__name__
        raise PatternError(f"invalid pattern {_shown(pattern)}: {why}") from None
    if _has_lookaround(parsed):
        raise PatternError(f"unsupported syntax in pattern {_shown(pattern)}: lookahead/lookbehind")
    try:
        fsm = parsed.to_fsm()
    except Unsupported as exc:
        raise PatternError(f"unsupported syntax in pattern {_shown(pattern)}: {exc}") from None
    if fsm.empty():
        raise PatternError(f"pattern {_shown(pattern)} matches nothing (no accepting path)")
    n = len(fsm.states)
    order = {s: i for i, s in enumerate(fsm.states)}
    symbols = [fsm.alphabet[ch] if len(ch) == 1 else None for ch in chars]
    table = np.full((n, len(chars)), -1, np.int32)
    for s, row in fsm.map.items():
        for v, sym in enumerate(symbols):
            if sym is not None and sym in row:
                table[order[s], v] = order[row[sym]]
    accepting = np.zeros(n, bool)
    accepting[[order[s] for s in fsm.finals]] = True
    return table, accepting, order[fsm.initial]


def _predecessors(table: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every transition's source, grouped by target: preds[starts[s]:starts[s + 1]] lead to s
    (once per character)."""
    src, _ = np.nonzero(table >= 0)
    dst = table[table >= 0]
    order = np.argsort(dst, kind="stable")
    return src[order], np.searchsorted(dst[order], np.arange(table.shape[0] + 1))


def _distance(table: np.ndarray, accepting: np.ndarray) -> np.ndarray:
    """Fewest characters from each state to acceptance (a large number where unreachable):
    a breadth-first search backwards from the accepting states."""
    preds, starts = _predecessors(table)
    far = np.iinfo(np.int32).max
    dist = np.full(table.shape[0], far, np.int64)
    queue = deque(np.flatnonzero(accepting).tolist())
    dist[accepting] = 0
    while queue:
        s = queue.popleft()
        for p in preds[starts[s] : starts[s + 1]].tolist():
            if dist[p] == far:
                dist[p] = dist[s] + 1
                queue.append(p)
    return dist


def _longest(table: np.ndarray) -> np.ndarray:
    """Most characters a live state can still take (-1: unbounded, a cycle is reachable):
    longest paths over the acyclic part, peeled from the states with no way on."""
    preds, starts = _predecessors(table)
    out = (table >= 0).sum(axis=1)
    longest = np.zeros(table.shape[0], np.int64)
    queue = deque(np.flatnonzero(out == 0).tolist())
    while queue:
        s = queue.popleft()
        for p in preds[starts[s] : starts[s + 1]].tolist():
            longest[p] = max(longest[p], longest[s] + 1)
            out[p] -= 1
            if out[p] == 0:
                queue.append(p)
    longest[out > 0] = -1
    return longest


def _classes(rows: np.ndarray) -> np.ndarray:
    """A class number per row, equal rows alike (rows as one opaque key each: fast)."""
    rows = np.ascontiguousarray(rows, np.int64)
    keys = rows.view(np.dtype((np.void, rows.shape[1] * 8))).reshape(-1)
    _, cls = np.unique(keys, return_inverse=True)
    return np.asarray(cls.reshape(-1), np.int64)


def _finish(
    source: str,
    table: np.ndarray,
    accepting: np.ndarray,
    start: int,
    deadline: float,
    on_empty: Callable[[], PatternError],
) -> Pattern:
    """Prune, minimise and renumber a raw automaton into a Pattern."""
    far = np.iinfo(np.int32).max
    dist = _distance(table, accepting)
    if dist[start] == far:
        raise on_empty()
    table = np.where((table >= 0) & (dist[np.maximum(table, 0)] < far), table, -1)
    # Equivalent states (Moore's refinement). Equivalent states have the same shortest and
    # longest way to acceptance, so those start the partition: counted repetitions ({m,n})
    # are then told apart at once instead of in one round per repetition.
    longest = _longest(table)
    cls = _classes(np.column_stack([accepting, dist, longest]))
    count = int(cls.max()) + 1
    while True:
        if time.monotonic() > deadline:
            raise _Exceeded("time")
        succ = np.where(table >= 0, cls[np.maximum(table, 0)], -1)
        new = _classes(np.column_stack([cls, succ]))
        if int(new.max()) + 1 == count:
            break
        cls, count = new, int(new.max()) + 1
    # One representative per class; breadth-first numbering from the start.
    rep = np.zeros(count, np.int64)
    rep[cls[::-1]] = np.arange(len(cls))[::-1]  # the first state of each class
    number = np.full(count, -1, np.int64)
    number[cls[start]] = 0
    order = [int(cls[start])]
    queue = deque(order)
    while queue:
        c = queue.popleft()
        for nxt in table[rep[c]].tolist():
            if nxt >= 0 and number[cls[nxt]] < 0:
                number[cls[nxt]] = len(order)
                order.append(int(cls[nxt]))
                queue.append(int(cls[nxt]))
    reps = rep[order]
    rows = table[reps]
    out = np.where(rows >= 0, number[cls[np.maximum(rows, 0)]], -1).astype(np.int32)
    pattern = Pattern(
        source=source,
        table=out,
        accepting=accepting[reps].copy(),
        distance=dist[reps].astype(np.int32),
        start=0,
    )
    for array in (pattern.table, pattern.accepting, pattern.distance):
        array.flags.writeable = False  # shared by every request that uses the pattern
    return pattern


_cache: OrderedDict[tuple[Any, ...], Pattern | PatternError] = OrderedDict()
_cache_lock = threading.Lock()


def _cached(key: tuple[Any, ...], build: Callable[[], Pattern]) -> Pattern:
    with _cache_lock:
        hit = _cache.get(key)
        if hit is not None:
            _cache.move_to_end(key)
    if hit is None:
        try:
            hit = build()
        except PatternTimeout:
            raise
        except PatternError as exc:
            hit = exc  # a bad pattern sent again is refused without compiling it again
        with _cache_lock:
            _cache[key] = hit
            while len(_cache) > CACHE_SIZE:
                _cache.popitem(last=False)
    if isinstance(hit, PatternError):
        raise PatternError(str(hit))
    return hit


def _bounded(
    source: str, max_states: int, timeout_s: float, build: Callable[[float], Pattern]
) -> Pattern:
    deadline = time.monotonic() + timeout_s
    _budget.max_states, _budget.deadline = max_states, deadline
    try:
        pattern = build(deadline)
    except _Exceeded as exc:
        if exc.what == "states":
            raise PatternError(
                f"pattern {_shown(source)} needs more than {max_states:,} states; simplify it"
            ) from None
        raise PatternTimeout(
            f"pattern {_shown(source)} took more than {timeout_s:g} s to compile; simplify it"
        ) from None
    except RecursionError:
        raise PatternError(f"pattern {_shown(source)} is nested too deeply") from None
    finally:
        _budget.max_states = _budget.deadline = None
    if pattern.states > max_states:
        raise PatternError(
            f"pattern {_shown(source)} needs {pattern.states:,} states, more than {max_states:,}"
        )
    return pattern


def compile_regex(
    pattern: str,
    chars: Sequence[str],
    max_states: int = MAX_STATES,
    timeout_s: float = TIMEOUT_S,
) -> Pattern:
    """The table of a regex over the vocabulary `chars` (in token id order); PatternError
    (one line) for unsupported syntax, nothing to match, too many states or too slow."""
    if not isinstance(pattern, str):
        raise PatternError("a pattern must be a string")
    vocab = tuple(chars)

    def build(deadline: float) -> Pattern:
        table, accepting, start = _raw_table(pattern, vocab)
        return _finish(
            pattern,
            table,
            accepting,
            start,
            deadline,
            lambda: PatternError(
                f"pattern {_shown(pattern)} cannot be matched with the model's characters"
            ),
        )

    return _cached(
        ("regex", pattern, vocab, max_states, timeout_s),
        lambda: _bounded(pattern, max_states, timeout_s, build),
    )


def compile_choice(
    choices: Sequence[str],
    chars: Sequence[str],
    max_states: int = MAX_STATES,
    timeout_s: float = TIMEOUT_S,
) -> Pattern:
    """The table that matches exactly one of the literal strings `choices` (a trie, merged)."""
    options = tuple(choices)
    if not options or not all(isinstance(c, str) for c in options):
        raise PatternError("a choice needs at least one string")
    listed = ", ".join(repr(c) for c in options[:3]) + (", ..." if len(options) > 3 else "")
    source = f"one of {len(options)}: {listed}"
    vocab = tuple(chars)
    ids = {ch: i for i, ch in enumerate(vocab)}

    def build(deadline: float) -> Pattern:
        usable = [c for c in options if all(ch in ids for ch in c)]
        if not usable:
            missing = sorted({ch for c in options for ch in c if ch not in ids})
            raise PatternError(
                f"no choice can be written with the model's characters (missing: "
                f"{', '.join(repr(ch) for ch in missing[:10])})"
            )
        edges: list[dict[int, int]] = [{}]
        final = [False]
        for text in usable:
            node = 0
            for ch in text:
                node_edges = edges[node]
                if ids[ch] not in node_edges:
                    if len(edges) > max_states:
                        raise _Exceeded("states")
                    node_edges[ids[ch]] = len(edges)
                    edges.append({})
                    final.append(False)
                node = node_edges[ids[ch]]
            final[node] = True
        table = np.full((len(edges), len(vocab)), -1, np.int32)
        for s, row in enumerate(edges):
            for v, t in row.items():
                table[s, v] = t
        return _finish(
            source, table, np.array(final), 0, deadline, lambda: PatternError("unreachable")
        )

    return _cached(
        ("choice", options, vocab, max_states, timeout_s),
        lambda: _bounded(source, max_states, timeout_s, build),
    )
