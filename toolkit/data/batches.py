"""What training reads: the corpus opened as token ids, and each step's (x, y) windows.

Ids come from a prepared folder (memory-mapped: `toolkit prepare`), from a raw file or folder
(prepared once into the user cache, then memory-mapped), or from the bundled Shakespeare (in
memory: 1 MB). A step's batch is sliced from the ids when it is needed, so no epoch is ever
materialised and training memory does not grow with the corpus.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from toolkit.config import TrainConfig
from toolkit.data.corpus import load_corpus, split_corpus
from toolkit.data.prepare import is_prepared, open_prepared, prepare, source_files
from toolkit.errors import DataError
from toolkit.files import cache_dir
from toolkit.vocabulary import Vocabulary

# Corpus statistics (cold-start prompts, known words) read at most this much text.
SAMPLE_CHARS = 4_000_000


@dataclass
class TrainingData:
    vocab: Vocabulary
    train: np.ndarray  # token ids; a read-only memmap for prepared corpora
    val: np.ndarray
    chars: int  # the whole corpus, before the split
    sample_text: str  # up to SAMPLE_CHARS of text, for corpus statistics
    prepared: Path | None  # the prepared folder the ids come from, if any
    val_fraction: float


def open_training_data(
    data: Path | None,
    val_fraction: float,
    val_chars: int | None = None,
    log: Callable[[str], None] = print,
) -> TrainingData:
    """The corpus as token ids, split; `val_chars` caps the validation text (from its start)."""
    if data is None:  # the bundled tiny Shakespeare: small enough to hold in memory
        text = load_corpus(None)
        vocab = Vocabulary.from_text(text)
        train, val = split_corpus(vocab.encode(text), val_fraction)
        return TrainingData(vocab, train, val[:val_chars], len(text), text, None, val_fraction)
    data = Path(data)
    folder = data if is_prepared(data) else _prepared_cache(data, val_fraction, log)
    corpus = open_prepared(folder)
    if folder == data and abs(corpus.meta["val_fraction"] - val_fraction) > 1e-12:
        log(
            f"note: {data} was prepared with val-fraction {corpus.meta['val_fraction']}; "
            "using its split"
        )
    return TrainingData(
        corpus.vocab,
        corpus.train,
        corpus.val[:val_chars],
        corpus.chars,
        corpus.text_sample(SAMPLE_CHARS),
        folder,
        float(corpus.meta["val_fraction"]),
    )


def _prepared_cache(source: Path, val_fraction: float, log: Callable[[str], None]) -> Path:
    """Raw text is prepared once into the cache, keyed by its files' paths, sizes and mtimes."""
    files = source_files(source)
    key = json.dumps(
        [val_fraction] + [[str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns] for p in files]
    )
    folder = cache_dir() / "prepared" / hashlib.sha256(key.encode()).hexdigest()[:16]
    if not is_prepared(folder):
        log(f"preparing {source} into {folder} (once; `toolkit prepare` does it explicitly)")
        prepare(source, folder, val_fraction, force=True, log=lambda _: None)
    return folder


class EpochWindows:
    """The (x, y) batches of one epoch, cut from the ids on demand: [rows, seq_length] each.

    Stateful (default): the text is cut into `batch_size` contiguous streams and batch k holds
    the k-th window of every stream, so the LSTM state carries from batch k to k+1. A fresh
    random offset each epoch moves the window borders. Non-stateful: windows are shuffled.
    `rows` selects some of the streams: a worker of a multi-worker run reads only its own.
    """

    def __init__(
        self, ids: np.ndarray, config: TrainConfig, epoch: int, rows: slice = slice(None)
    ) -> None:
        rng = np.random.default_rng([config.seed, epoch])
        t, b = config.seq_length, config.batch_size
        self.ids, self.t, self.stateful = ids, t, config.stateful
        self.offset = int(rng.integers(0, t))
        usable = len(ids) - self.offset
        if config.stateful:
            stream_len = (usable - 1) // b
            self.n_batches = stream_len // t
            self.starts = (self.offset + np.arange(b) * stream_len)[rows]
        else:
            n_windows = (usable - 1) // t
            self.n_batches = n_windows // b
            if self.n_batches >= 1:
                order = rng.permutation(n_windows)[: self.n_batches * b]
                self.order = order.reshape(self.n_batches, b)[:, rows]
        if self.n_batches < 1:
            raise DataError(
                f"training text too short: {len(ids)} characters give no batch of "
                f"{b} x {t}; use a smaller --batch-size or --seq-length"
            )
        self.span = np.arange(t + 1)

    def __len__(self) -> int:
        return self.n_batches

    def batch(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        # First character of each row's window: its stream's k-th, or a shuffled window's.
        first = self.starts + k * self.t if self.stateful else self.offset + self.order[k] * self.t
        window = np.asarray(self.ids[first[:, None] + self.span], dtype=np.int32)
        return window[:, :-1], window[:, 1:]


def epoch_batches(
    ids: np.ndarray, config: TrainConfig, epoch: int
) -> tuple[np.ndarray, np.ndarray]:
    """Every batch of an epoch at once, [n_batches, batch, seq_length] (tests, benchmarks)."""
    windows = EpochWindows(ids, config, epoch)
    pairs = [windows.batch(k) for k in range(len(windows))]
    return np.stack([x for x, _ in pairs]), np.stack([y for _, y in pairs])
