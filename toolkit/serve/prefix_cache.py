"""The prefix cache: the state after a prompt, so that a repeated prompt skips its steps."""

from __future__ import annotations

import collections

import numpy as np


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
