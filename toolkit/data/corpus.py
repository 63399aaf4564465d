"""The training text: the bundled corpus, a UTF-8 file or a folder, the train/validation
split, and the verified download of the public copy."""

from __future__ import annotations

import gzip
import hashlib
import http.client
import os
import tempfile
import urllib.error
import urllib.request
from importlib import resources
from pathlib import Path

import numpy as np

from toolkit.errors import DataError, DownloadError
from toolkit.files import cache_dir, sha256_file

SHAKESPEARE_URL = "https://storage.googleapis.com/download.tensorflow.org/data/shakespeare.txt"
SHAKESPEARE_SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"
BUNDLED_CORPUS = "tinyshakespeare.txt.gz"


def bundled_corpus_text() -> str:
    """The tiny Shakespeare corpus shipped inside the package (works offline)."""
    blob = resources.files("toolkit.data").joinpath(BUNDLED_CORPUS).read_bytes()
    return gzip.decompress(blob).decode("utf-8")


def _decode_text_file(path: Path) -> str:
    raw = path.read_bytes()
    if not raw:
        raise DataError(f"corpus file is empty: {path}")
    if b"\x00" in raw[:65536]:
        raise DataError(f"corpus file looks binary (contains NUL bytes): {path}")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(
            f"corpus file is not valid UTF-8 (byte offset {exc.start}): {path}"
        ) from None


def load_corpus(path: Path | str | None = None) -> str:
    """Read the training text: the bundled corpus, one UTF-8 file, or a folder of .txt files."""
    if path is None:
        return bundled_corpus_text()
    path = Path(path)
    if not path.exists():
        raise DataError(f"corpus not found: {path}")
    if path.is_dir():
        files = sorted(p for p in path.rglob("*.txt") if p.is_file())
        if not files:
            raise DataError(f"no .txt files in folder: {path}")
        text = "\n".join(_decode_text_file(p) for p in files)
    else:
        text = _decode_text_file(path)
    if not text.strip():
        raise DataError(f"corpus contains only whitespace: {path}")
    return text


def split_corpus(ids: np.ndarray, val_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """The last `val_fraction` of the text, contiguous, is held out (nanoGPT's split)."""
    n_val = int(len(ids) * val_fraction)
    return ids[: len(ids) - n_val], ids[len(ids) - n_val :]


def download_corpus(
    url: str = SHAKESPEARE_URL,
    sha256: str | None = SHAKESPEARE_SHA256,
    dest: Path | None = None,
    timeout: float = 30.0,
) -> Path:
    """Fetch a corpus into the user cache, verify its checksum, and write it atomically.

    An existing file with the right checksum is reused. On any failure nothing is left behind.
    """
    dest = dest or cache_dir() / "shakespeare.txt"
    if dest.exists() and (sha256 is None or sha256_file(dest) == sha256):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    tmp = Path(tmp_name)
    digest = hashlib.sha256()
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as resp:
            expected = resp.headers.get("Content-Length")
            received = 0
            for block in iter(lambda: resp.read(1 << 16), b""):
                out.write(block)
                digest.update(block)
                received += len(block)
            if expected is not None and received != int(expected):
                raise DownloadError(
                    f"download cut short: got {received} of {expected} bytes from {url}"
                )
        if sha256 is not None and digest.hexdigest() != sha256:
            raise DownloadError(
                f"checksum mismatch for {url}: expected {sha256[:12]}…, "
                f"got {digest.hexdigest()[:12]}…"
            )
        os.replace(tmp, dest)
        return dest
    except DownloadError:
        tmp.unlink(missing_ok=True)
        raise
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, urllib.error.HTTPError):
            reason: object = f"HTTP {exc.code} {exc.reason}"
        else:
            reason = getattr(exc, "reason", None) or exc
        raise DownloadError(f"download failed from {url}: {reason}") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
