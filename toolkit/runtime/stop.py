"""Stop strings: where a row's text ends, found one token at a time without re-scanning."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def stop_table(stop: str, chars: Sequence[str]) -> np.ndarray:
    """The Knuth-Morris-Pratt automaton of `stop` over token ids, int32 [len(stop) + 1, vocab].

    `table[state, token]` is the length of the longest tail of (the text so far + token) that
    is a start of `stop`, for a text whose longest such tail has length `state`. That length is
    also how many characters a stream must hold back (they may turn out to be the stop
    string); reaching len(stop) means the text ends with it. A stop string with a character
    outside the vocabulary can never appear, but its known prefix is still held back until the
    text moves past it.
    """
    n = len(stop)
    # border[k]: the longest proper suffix of stop[:k] that is also a prefix of stop.
    border = [0] * (n + 1)
    for k in range(2, n + 1):
        b = border[k - 1]
        while b and stop[b] != stop[k - 1]:
            b = border[b]
        border[k] = b + 1 if stop[b] == stop[k - 1] else 0
    # A mismatch falls back to the border's row.
    index = {ch: i for i, ch in enumerate(chars)}
    table = np.zeros((n + 1, len(chars)), dtype=np.int32)
    for state in range(n + 1):
        if state:
            table[state] = table[border[state]]
        if state < n and stop[state] in index:
            table[state, index[stop[state]]] = state + 1
    return table
