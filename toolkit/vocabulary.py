"""The characters a model knows, and the conversion between text and token ids.

Training and every runtime share it: a model's vocabulary is saved with its run
(vocab.json) and in its manifest, and a token id is a character's index in it.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from toolkit.files import atomic_write_text


@dataclass(frozen=True)
class Vocabulary:
    """Characters in a deterministic order (by code point); a character's id is its index."""

    chars: tuple[str, ...]

    @classmethod
    def from_text(cls, text: str) -> Vocabulary:
        return cls(tuple(sorted(set(text))))

    def __len__(self) -> int:
        return len(self.chars)

    @functools.cached_property
    def index(self) -> dict[str, int]:
        return {ch: i for i, ch in enumerate(self.chars)}

    def encode(self, text: str) -> np.ndarray:
        index = self.index
        return np.fromiter((index[ch] for ch in text), dtype=np.int32, count=len(text))

    @functools.cached_property
    def _table(self) -> np.ndarray:
        return np.array(self.chars)

    @functools.cached_property
    def _bytes(self) -> bytes | None:
        """ids -> characters as a bytes.translate table, for vocabularies within Latin-1."""
        if len(self.chars) > 256 or any(ord(ch) > 255 for ch in self.chars):
            return None
        return bytes(ord(ch) for ch in self.chars).ljust(256, b"\0")

    def decode(self, ids: np.ndarray | list[int]) -> str:
        # Latin-1 vocabularies (Shakespeare's is ASCII): one bytes.translate, much cheaper than
        # joining an array of strings; it runs on every streamed chunk of `generate`.
        table = self._bytes
        if table is not None:
            codes = bytes(ids) if isinstance(ids, list) else np.asarray(ids, np.uint8).tobytes()
            return codes.translate(table).decode("latin-1")
        return "".join(self._table[np.asarray(ids, dtype=np.int64)].tolist())

    @property
    def start_text(self) -> str:
        """What generation feeds for an empty prompt: a line break (the model begins a line),
        else a space, else the first character."""
        return next((s for s in ("\n", " ") if s in self.index), self.chars[0])

    def unknown(self, text: str) -> list[str]:
        known = set(self.chars)
        return sorted({ch for ch in text if ch not in known})

    def save(self, path: Path) -> None:
        atomic_write_text(path, json.dumps(list(self.chars), ensure_ascii=False, indent=0))

    @classmethod
    def load(cls, path: Path) -> Vocabulary:
        return cls(tuple(json.loads(path.read_text(encoding="utf-8"))))
