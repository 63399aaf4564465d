"""Stop strings: where a row's text ends, found one token at a time without re-scanning."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


class StopMatcher:
    """Finds `stop` in each row's token stream, one token per row per step (no re-scanning).

    A Knuth-Morris-Pratt automaton over token ids: `state[row]` is the length of the longest
    tail of the row's text that is a start of `stop`, which is also how many characters the
    stream must hold back (they may turn out to be the stop string). A stop string with a
    character outside the vocabulary can never appear, but its known prefix is still held back
    until the text moves past it, as before.
    """

    def __init__(self, stop: str, chars: Sequence[str], batch: int) -> None:
        self.length = n = len(stop)
        # border[k]: the longest proper suffix of stop[:k] that is also a prefix of stop.
        border = [0] * (n + 1)
        for k in range(2, n + 1):
            b = border[k - 1]
            while b and stop[b] != stop[k - 1]:
                b = border[b]
            border[k] = b + 1 if stop[b] == stop[k - 1] else 0
        # table[state, token]: the longest suffix of stop[:state] + chars[token] that is a
        # prefix of `stop`. A mismatch falls back to the border's row (the KMP automaton).
        index = {ch: i for i, ch in enumerate(chars)}
        table = np.zeros((n + 1, len(chars)), dtype=np.int32)
        for state in range(n + 1):
            if state:
                table[state] = table[border[state]]
            if state < n and stop[state] in index:
                table[state, index[stop[state]]] = state + 1
        self.table = table
        self.rows = table.tolist()  # the batch-1 loop: plain Python indexing, cheaper than numpy
        # Arrays of rows (`advance`): the state kept as a row offset into the flattened table,
        # whose entries are offsets too, so one step is an add and a take (no fancy indexing).
        self._vocab = len(chars)
        self._flat = (table * self._vocab).ravel()
        self._offset = np.zeros(batch, dtype=np.int32)
        self._index = np.zeros(batch, dtype=np.int32)
        self._hit_offset = n * self._vocab
        self.hit = np.zeros(batch, dtype=bool)

    @property
    def state(self) -> np.ndarray:
        """Per row: how many of the text's last characters may be the start of `stop`."""
        return self._offset // self._vocab

    def advance(self, tokens: np.ndarray) -> bool:
        """Feed one token per row; True if some row's text now ends with `stop` (then `hit`
        says which)."""
        np.add(self._offset, tokens, self._index)
        self._flat.take(self._index, None, self._offset)  # not np.take: its Python wrapper costs
        if np.maximum.reduce(self._offset) < self._hit_offset:
            return False
        self.hit = self._offset == self._hit_offset
        return True
