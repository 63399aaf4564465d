"""`toolkit prepare`: a text corpus of any size -> token ids on disk, memory-mapped by training.

A prepared folder holds

    train.bin, val.bin   token ids, little-endian, uint8 / uint16 / uint32 (smallest that fits)
    vocab.json           the characters, in id order (sorted by code point, as Vocabulary)
    meta.json            dtype, character counts, split, and every source file's size and sha256

Two streaming passes over the source, in chunks of CHUNK_BYTES: the first decodes (strict
UTF-8, reporting the file and byte offset of a bad sequence), counts characters and hashes
the files; the second maps characters to ids and writes them. Memory stays bounded by the
chunk size, whatever the corpus size. The result is written to a temporary folder beside the
destination and renamed into place, so a failed or interrupted prepare leaves nothing behind
and an existing folder is only replaced when everything succeeded.

The split is the same as `load_corpus` + `split_corpus` give for the same text (files joined
with a newline, the last `val_fraction` held out), so a prepared corpus and the raw text train
the same model.
"""

from __future__ import annotations

import codecs
import datetime as _dt
import gzip
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from toolkit.data.corpus import bundled_corpus_text
from toolkit.errors import DataError, UsageError, storage_error
from toolkit.vocabulary import Vocabulary

FORMAT_VERSION = 1
CHUNK_BYTES = 4 << 20
META_FILE = "meta.json"
MAX_CODEPOINT = 0x110000
# Text joined between two files of a folder, as load_corpus does.
FILE_SEPARATOR = "\n"

ProgressFn = Callable[[int], None]  # called with bytes read since the last call


@dataclass(frozen=True)
class PreparedCorpus:
    """A prepared folder, opened: ids are read-only memory maps, never loaded whole."""

    path: Path
    vocab: Vocabulary
    train: np.ndarray
    val: np.ndarray
    meta: dict[str, Any]

    @property
    def chars(self) -> int:
        return len(self.train) + len(self.val)

    def text_sample(self, limit: int = 4_000_000) -> str:
        """Up to `limit` characters of text (train, then validation) for corpus statistics."""
        head = np.asarray(self.train[:limit])
        tail = np.asarray(self.val[: max(0, limit - len(head))])
        return self.vocab.decode(np.concatenate([head, tail]))


def is_prepared(path: Path) -> bool:
    return path.is_dir() and (path / META_FILE).is_file()


def open_prepared(path: Path) -> PreparedCorpus:
    """Open a prepared folder; one-line DataError if it is incomplete or inconsistent."""
    path = Path(path)
    try:
        meta = json.loads((path / META_FILE).read_text(encoding="utf-8"))
        chars = json.loads((path / "vocab.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(f"{path} is not a readable prepared corpus: {exc}") from None
    if meta.get("format") != FORMAT_VERSION:
        raise DataError(f"{path}: unknown prepared-corpus format {meta.get('format')!r}")
    dtype = np.dtype(meta["dtype"])
    arrays = []
    for split in ("train", "val"):
        file = path / f"{split}.bin"
        expected = int(meta["chars"][split])
        size = file.stat().st_size if file.exists() else -1
        if size != expected * dtype.itemsize:
            raise DataError(
                f"{file} has {size} bytes, meta.json says {expected} {dtype.name} ids; "
                "prepare the corpus again"
            )
        if expected == 0:
            arrays.append(np.zeros(0, dtype))
        else:
            arrays.append(np.memmap(file, dtype=dtype, mode="r", shape=(expected,)))
    if len(chars) != meta["vocab_size"]:
        raise DataError(f"{path}: vocab.json and meta.json disagree on the vocabulary size")
    return PreparedCorpus(path, Vocabulary(tuple(chars)), arrays[0], arrays[1], meta)


# --------------------------------------------------------------------------- sources


def source_files(source: Path) -> list[Path]:
    """The files of SOURCE in a fixed order: itself, or a folder's .txt / .txt.gz, recursive."""
    if not source.exists():
        raise DataError(f"corpus not found: {source}")
    if source.is_file():
        return [source]
    files = sorted(
        p for p in source.rglob("*") if p.is_file() and p.name.endswith((".txt", ".txt.gz"))
    )
    if not files:
        raise DataError(f"no .txt or .txt.gz files in folder: {source}")
    return files


def _open_binary(path: Path) -> IO[bytes]:
    if path.name.endswith(".gz"):
        return gzip.GzipFile(path, "rb")  # type: ignore[return-value]
    return path.open("rb")


def _decoded_chunks(path: Path, progress: ProgressFn | None) -> Iterator[tuple[str, bytes]]:
    """(text, raw bytes) chunks of one file, strictly decoded; one-line errors with offsets."""
    decoder = codecs.getincrementaldecoder("utf-8")("strict")
    offset = 0
    try:
        with _open_binary(path) as handle:
            while True:
                raw = handle.read(CHUNK_BYTES)
                if offset == 0 and b"\x00" in raw[:65536]:
                    raise DataError(f"corpus file looks binary (contains NUL bytes): {path}")
                try:
                    text = decoder.decode(raw, final=not raw)
                except UnicodeDecodeError as exc:
                    raise DataError(
                        f"corpus file is not valid UTF-8 (byte offset {offset + exc.start}): {path}"
                    ) from None
                if progress is not None:
                    progress(len(raw))
                offset += len(raw)
                if not raw:
                    return
                yield text, raw
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise DataError(f"cannot read {path}: {exc}") from None


def _codepoints(text: str) -> np.ndarray:
    return np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)


def _text_chunks(files: list[Path], progress: ProgressFn | None) -> Iterator[str]:
    """The corpus as load_corpus reads it: files joined by FILE_SEPARATOR."""
    for i, path in enumerate(files):
        if i:
            yield FILE_SEPARATOR
        for text, _ in _decoded_chunks(path, progress):
            yield text


# --------------------------------------------------------------------------- prepare


def _count(files: list[Path], progress: ProgressFn | None) -> tuple[np.ndarray, list[dict]]:
    """Pass 1: per-code-point counts and each file's size and sha256."""
    counts = np.zeros(MAX_CODEPOINT, dtype=np.int64)
    sources = []
    for i, path in enumerate(files):
        if i:
            counts[ord(FILE_SEPARATOR)] += 1
        digest, size = hashlib.sha256(), 0
        for text, raw in _decoded_chunks(path, progress):
            digest.update(raw)
            size += len(raw)
            if text:
                counts += np.bincount(_codepoints(text), minlength=MAX_CODEPOINT)
        if size == 0:
            raise DataError(f"corpus file is empty: {path}")
        sources.append({"path": str(path), "bytes": size, "sha256": digest.hexdigest()})
    return counts, sources


def id_dtype(vocab_size: int) -> np.dtype:
    for dtype in (np.uint8, np.uint16, np.uint32):
        if vocab_size <= np.iinfo(dtype).max + 1:
            return np.dtype(dtype)
    raise DataError(f"vocabulary of {vocab_size} characters is too large")


def prepare(
    source: Path | None,
    out: Path,
    val_fraction: float = 0.1,
    force: bool = False,
    progress: ProgressFn | None = None,
    log: Callable[[str], None] = print,
) -> PreparedCorpus:
    """Prepare SOURCE (a UTF-8 file or a folder of .txt / .txt.gz; None = bundled Shakespeare)."""
    if not 0.0 < val_fraction < 0.5:
        raise UsageError("val-fraction must be in (0, 0.5)")
    out = Path(out)
    if out.exists() and not force:
        raise UsageError(f"{out} already exists; use --force to replace it")
    if out.exists() and not is_prepared(out):
        raise UsageError(f"{out} exists and is not a prepared corpus; not replacing it")
    staging = None
    if source is None:  # the bundled corpus: written out once so both passes can stream it
        staging = Path(tempfile.mkdtemp(prefix="toolkit-bundled-"))
        files = [staging / "tinyshakespeare.txt"]
        files[0].write_text(bundled_corpus_text(), encoding="utf-8")
    else:
        files = source_files(Path(source))
    try:
        return _prepare(files, out, val_fraction, progress, log)
    finally:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)


def _prepare(
    files: list[Path],
    out: Path,
    val_fraction: float,
    progress: ProgressFn | None,
    log: Callable[[str], None],
) -> PreparedCorpus:
    counts, sources = _count(files, progress)
    total = int(counts.sum())
    present = np.flatnonzero(counts)
    if total == 0 or not any(not chr(int(cp)).isspace() for cp in present):
        raise DataError("corpus contains only whitespace")
    vocab = Vocabulary(tuple(chr(int(cp)) for cp in present))  # sorted by code point
    dtype = id_dtype(len(vocab))
    lookup = np.zeros(MAX_CODEPOINT, dtype=dtype)
    lookup[present] = np.arange(len(present), dtype=dtype)
    n_val = int(total * val_fraction)
    n_train = total - n_val

    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
        mask = os.umask(0)
        os.umask(mask)
        tmp.chmod(0o777 & ~mask)  # mkdtemp makes 0700; the usual permissions for a folder
    except OSError as exc:
        raise storage_error(exc, out) from None
    try:
        written = 0
        with (tmp / "train.bin").open("wb") as train_f, (tmp / "val.bin").open("wb") as val_f:
            for text in _text_chunks(files, progress):
                ids = lookup[_codepoints(text)]
                cut = max(0, min(len(ids), n_train - written))
                train_f.write(ids[:cut].tobytes())
                val_f.write(ids[cut:].tobytes())
                written += len(ids)
        if written != total:
            raise DataError(
                f"the corpus changed while it was being prepared ({source_names(files)})"
            )
        meta = {
            "format": FORMAT_VERSION,
            "dtype": dtype.name,
            "vocab_size": len(vocab),
            "chars": {"train": n_train, "val": n_val, "total": total},
            "val_fraction": val_fraction,
            "split": "the last val_fraction of the text is validation (nanoGPT's split)",
            "file_separator": FILE_SEPARATOR,
            "sources": sources,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        }
        (tmp / "vocab.json").write_text(
            json.dumps(list(vocab.chars), ensure_ascii=False, indent=0), encoding="utf-8"
        )
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2), encoding="utf-8")
        _replace_dir(tmp, out)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise storage_error(exc, out) from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log(
        f"prepared {out}: {total:,} characters ({n_train:,} train / {n_val:,} val), "
        f"vocab {len(vocab)}, {dtype.name} ids, from {len(files)} file(s)"
    )
    return open_prepared(out)


def source_names(files: list[Path]) -> str:
    return files[0].name if len(files) == 1 else f"{len(files)} files"


def _replace_dir(new: Path, dest: Path) -> None:
    """Put `new` at `dest`; an existing `dest` is moved aside first and removed last."""
    old = None
    if dest.exists():
        old = dest.with_name(f".{dest.name}.old-{os.getpid()}")
        dest.rename(old)
    try:
        new.rename(dest)
    except OSError:
        if old is not None:
            old.rename(dest)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
