"""Corpus loading, vocabulary, split, atomic writes and the verified download (loopback)."""

from __future__ import annotations

import gzip
import hashlib
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from conftest import SHARED_CORPUS

from toolkit.data.corpus import (
    SHAKESPEARE_SHA256,
    bundled_corpus_text,
    download_corpus,
    load_corpus,
    split_corpus,
)
from toolkit.errors import DataError, DownloadError, StorageError
from toolkit.files import atomic_write_text
from toolkit.vocabulary import Vocabulary


def test_bundled_corpus_is_tiny_shakespeare() -> None:
    text = bundled_corpus_text()
    assert len(text) == 1_115_394
    assert len(set(text)) == 65
    assert hashlib.sha256(text.encode()).hexdigest() == SHAKESPEARE_SHA256
    if SHARED_CORPUS.exists():
        assert text == SHARED_CORPUS.read_text(encoding="utf-8")


def test_load_default_and_file_and_folder(tmp_path: Path) -> None:
    assert load_corpus(None).startswith("First Citizen:")
    (tmp_path / "a.txt").write_text("héllo wörld — 日本\n", encoding="utf-8")
    sub = tmp_path / "sub"
    sub.mkdir()
    (sub / "b.txt").write_text("second file", encoding="utf-8")
    (tmp_path / "ignored.md").write_text("not text", encoding="utf-8")
    assert load_corpus(tmp_path / "a.txt") == "héllo wörld — 日本\n"
    assert load_corpus(tmp_path) == "héllo wörld — 日本\n\nsecond file"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "empty"),
        (b"ab\x00\x01\x02cd", "binary"),
        (b"caf\xe9 latin-1", "not valid UTF-8"),
        (b"   \n\t ", "only whitespace"),
    ],
)
def test_bad_corpus_files(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "bad.txt"
    path.write_bytes(content)
    with pytest.raises(DataError, match=message):
        load_corpus(path)


def test_missing_corpus_and_empty_folder(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found"):
        load_corpus(tmp_path / "nope.txt")
    with pytest.raises(DataError, match=r"no \.txt files"):
        load_corpus(tmp_path)


def test_vocabulary_is_deterministic_and_round_trips(tmp_path: Path) -> None:
    text = "zebra ÄÖ apple\n"
    a = Vocabulary.from_text(text)
    b = Vocabulary.from_text(text[::-1])
    assert a == b
    assert list(a.chars) == sorted(set(text))
    ids = a.encode(text)
    assert ids.dtype == np.int32
    assert a.decode(ids) == text
    a.save(tmp_path / "vocab.json")
    assert Vocabulary.load(tmp_path / "vocab.json") == a
    assert a.unknown("zq!") == ["!", "q"]


@pytest.mark.parametrize("text", ["zebra ÄÖ apple\n", "Ωmega ∑ and ascii\n"])
def test_vocabulary_decodes_arrays_and_lists_alike(text: str) -> None:
    """Latin-1 vocabularies decode by bytes.translate, others through the string table."""
    vocab = Vocabulary.from_text(text)
    assert (vocab._bytes is None) == any(ord(ch) > 255 for ch in text)
    ids = vocab.encode(text)
    strided = np.stack([ids, ids[::-1]], axis=1)[:, 0]  # a non-contiguous view
    assert vocab.decode(ids) == vocab.decode(ids.tolist()) == vocab.decode(strided) == text
    assert vocab.decode([]) == ""


def test_split_holds_out_contiguous_tail() -> None:
    ids = np.arange(1000, dtype=np.int32)
    train, val = split_corpus(ids, 0.1)
    assert len(val) == 100
    np.testing.assert_array_equal(val, np.arange(900, 1000))
    np.testing.assert_array_equal(train, np.arange(900))


def test_atomic_write_leaves_no_temp_on_failure(tmp_path: Path, monkeypatch) -> None:
    target = tmp_path / "f.txt"
    atomic_write_text(target, "old")

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("os.replace", boom)
    with pytest.raises(StorageError, match=r"cannot write .*f\.txt: disk full"):
        atomic_write_text(target, "new")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.txt"]


# --------------------------------------------------------------------------- download


PAYLOAD = gzip.decompress(gzip.compress(b"To be, or not to be: that is the question.\n" * 500))
PAYLOAD_SHA = hashlib.sha256(PAYLOAD).hexdigest()


class _Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args) -> None:  # keep test output clean
        pass

    def do_GET(self) -> None:
        if self.path == "/good.txt":
            self.send_response(200)
            self.send_header("Content-Length", str(len(PAYLOAD)))
            self.end_headers()
            self.wfile.write(PAYLOAD)
        elif self.path == "/cut.txt":
            # Promise the whole file, send a third of it, then drop the connection.
            self.send_response(200)
            self.send_header("Content-Length", str(len(PAYLOAD)))
            self.end_headers()
            self.wfile.write(PAYLOAD[: len(PAYLOAD) // 3])
            self.wfile.flush()
            self.close_connection = True
        else:
            self.send_error(404)


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def test_download_good_file_is_verified_and_cached(server: str, tmp_path: Path) -> None:
    dest = tmp_path / "cache" / "shakespeare.txt"
    path = download_corpus(f"{server}/good.txt", PAYLOAD_SHA, dest)
    assert path.read_bytes() == PAYLOAD
    # Second call reuses the verified file, even if the server is gone.
    assert download_corpus("http://127.0.0.1:9/none", PAYLOAD_SHA, dest) == dest


def test_download_checksum_mismatch_leaves_nothing(server: str, tmp_path: Path) -> None:
    dest = tmp_path / "shakespeare.txt"
    with pytest.raises(DownloadError, match="checksum mismatch"):
        download_corpus(f"{server}/good.txt", "0" * 64, dest)
    assert list(tmp_path.iterdir()) == []


def test_download_cut_mid_file_leaves_nothing(server: str, tmp_path: Path) -> None:
    dest = tmp_path / "shakespeare.txt"
    with pytest.raises(DownloadError):
        download_corpus(f"{server}/cut.txt", PAYLOAD_SHA, dest)
    assert list(tmp_path.iterdir()) == []


def test_download_http_error_keeps_existing_file(server: str, tmp_path: Path) -> None:
    dest = tmp_path / "shakespeare.txt"
    dest.write_text("user's own file")
    with pytest.raises(DownloadError, match="404"):
        download_corpus(f"{server}/missing.txt", PAYLOAD_SHA, dest)
    assert dest.read_text() == "user's own file"
    assert [p.name for p in tmp_path.iterdir()] == ["shakespeare.txt"]


def test_download_command(server: str, tmp_path: Path) -> None:
    import subprocess
    import sys

    dest = tmp_path / "corpus.txt"
    args = [sys.executable, "-m", "toolkit", "download", "--sha256", PAYLOAD_SHA]
    ok = subprocess.run(
        [*args, "--url", f"{server}/good.txt", "--dest", str(dest)],
        capture_output=True,
        text=True,
    )
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.strip() == str(dest) and dest.read_bytes() == PAYLOAD
    bad = subprocess.run(
        [
            *args,
            "--url",
            f"{server}/cut.txt",
            "--sha256",
            PAYLOAD_SHA,
            "--dest",
            str(tmp_path / "x"),
        ],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 7
    assert bad.stderr.startswith("error: download") and len(bad.stderr.splitlines()) == 1
    assert not (tmp_path / "x").exists()
