"""`toolkit prepare`: token ids on disk, the same split as the raw text, bounded memory."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from toolkit.config import preset
from toolkit.data.batches import EpochWindows, epoch_batches, open_training_data
from toolkit.data.corpus import load_corpus, split_corpus
from toolkit.data.prepare import id_dtype, open_prepared, prepare
from toolkit.errors import DataError, UsageError
from toolkit.vocabulary import Vocabulary


def quiet(_: str) -> None:
    return None


def test_prepared_ids_equal_the_raw_text_split(small_corpus: Path, tmp_path: Path) -> None:
    corpus = prepare(small_corpus, tmp_path / "data", val_fraction=0.1, log=quiet)
    text = load_corpus(small_corpus)
    vocab = Vocabulary.from_text(text)
    train, val = split_corpus(vocab.encode(text), 0.1)
    assert corpus.vocab == vocab
    np.testing.assert_array_equal(corpus.train, train)
    np.testing.assert_array_equal(corpus.val, val)
    assert isinstance(corpus.train, np.memmap) and corpus.train.dtype == np.uint8
    meta = json.loads((tmp_path / "data" / "meta.json").read_text())
    assert meta["chars"] == {"train": len(train), "val": len(val), "total": len(text)}
    assert meta["sources"][0]["bytes"] == small_corpus.stat().st_size
    assert len(meta["sources"][0]["sha256"]) == 64
    assert corpus.text_sample() == text
    # The windows a step trains on are the same as from the raw text.
    cfg = preset("tiny")
    for a, b in zip(epoch_batches(corpus.train, cfg, 1), epoch_batches(train, cfg, 1), strict=True):
        np.testing.assert_array_equal(a, b)


def test_folder_of_txt_and_gz_in_small_chunks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("toolkit.data.prepare.CHUNK_BYTES", 7)  # multi-byte characters cross chunks
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "a.txt").write_text("héllo wörld\n" * 50, encoding="utf-8")
    with gzip.open(src / "sub" / "b.txt.gz", "wt", encoding="utf-8") as handle:
        handle.write("ünïcode → text\n" * 40)
    (src / "ignored.md").write_text("not part of the corpus")
    corpus = prepare(src, tmp_path / "out", log=quiet)
    expected = "héllo wörld\n" * 50 + "\n" + "ünïcode → text\n" * 40
    table = np.array(corpus.vocab.chars)
    got = "".join(table[np.concatenate([corpus.train, corpus.val])].tolist())
    assert got == expected
    assert [Path(s["path"]).name for s in corpus.meta["sources"]] == ["a.txt", "b.txt.gz"]


def test_large_vocabularies_use_wider_ids(tmp_path: Path) -> None:
    assert id_dtype(256) == np.uint8 and id_dtype(257) == np.uint16
    assert id_dtype(70_000) == np.uint32
    text = "".join(chr(0x4E00 + i) for i in range(300)) * 20
    (tmp_path / "cjk.txt").write_text(text, encoding="utf-8")
    corpus = prepare(tmp_path / "cjk.txt", tmp_path / "out", log=quiet)
    assert corpus.train.dtype == np.uint16 and len(corpus.vocab) == 300


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "corpus file is empty"),
        (b"abc\x00def", "looks binary"),
        (b"good text \xff\xfe more", r"not valid UTF-8 \(byte offset 10\)"),
        (b" \n\t \n", "only whitespace"),
    ],
)
def test_bad_input_is_one_error_and_leaves_nothing(
    tmp_path: Path, content: bytes, message: str
) -> None:
    (tmp_path / "bad.txt").write_bytes(content)
    with pytest.raises(DataError, match=message):
        prepare(tmp_path / "bad.txt", tmp_path / "out", log=quiet)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.txt"]  # no folder, no temp


def test_existing_folder_needs_force_and_survives_a_failure(
    small_corpus: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    prepare(small_corpus, out, log=quiet)
    before = (out / "train.bin").read_bytes()
    with pytest.raises(UsageError, match="already exists"):
        prepare(small_corpus, out, log=quiet)
    (tmp_path / "bad.txt").write_bytes(b"\xff\xff")
    with pytest.raises(DataError):
        prepare(tmp_path / "bad.txt", out, force=True, log=quiet)
    assert (out / "train.bin").read_bytes() == before  # the old folder is intact
    (tmp_path / "other.txt").write_text("another corpus entirely " * 100)
    prepare(tmp_path / "other.txt", out, force=True, log=quiet)
    assert open_prepared(out).chars == len("another corpus entirely " * 100)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.txt", "other.txt", "out"]
    not_ours = tmp_path / "mine"
    not_ours.mkdir()
    with pytest.raises(UsageError, match="not a prepared corpus"):
        prepare(small_corpus, not_ours, force=True, log=quiet)


def test_a_damaged_prepared_folder_is_refused(small_corpus: Path, tmp_path: Path) -> None:
    prepare(small_corpus, tmp_path / "out", log=quiet)
    with (tmp_path / "out" / "train.bin").open("ab") as handle:
        handle.write(b"x")
    with pytest.raises(DataError, match="prepare the corpus again"):
        open_prepared(tmp_path / "out")


def test_training_data_from_raw_text_is_prepared_once_into_the_cache(
    small_corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    first = open_training_data(small_corpus, 0.1, log=quiet)
    assert first.prepared is not None and tmp_path / "cache" in first.prepared.parents
    mtime = (first.prepared / "train.bin").stat().st_mtime_ns
    again = open_training_data(small_corpus, 0.1, val_chars=1000, log=quiet)
    assert again.prepared == first.prepared
    assert (first.prepared / "train.bin").stat().st_mtime_ns == mtime  # reused
    assert len(again.val) == 1000 and len(first.val) > 1000


def test_worker_rows_are_slices_of_the_whole_batch() -> None:
    ids = np.arange(50_000, dtype=np.int32)
    cfg = preset("tiny")
    whole = EpochWindows(ids, cfg, 2)
    halves = [EpochWindows(ids, cfg, 2, slice(0, 8)), EpochWindows(ids, cfg, 2, slice(8, 16))]
    for k in (0, 5, len(whole) - 1):
        x, y = whole.batch(k)
        parts = [h.batch(k) for h in halves]
        np.testing.assert_array_equal(x, np.concatenate([p[0] for p in parts]))
        np.testing.assert_array_equal(y, np.concatenate([p[1] for p in parts]))


def test_cli_prepare_then_train(tmp_path: Path, cli, monkeypatch: pytest.MonkeyPatch) -> None:
    src = tmp_path / "corpus.txt"
    src.write_text(load_corpus(None)[:30_000], encoding="utf-8")
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}

    def toolkit(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "toolkit", *args], capture_output=True,
                              text=True, env=env, cwd=tmp_path, timeout=300)  # fmt: skip

    proc = toolkit("prepare", str(src))
    assert proc.returncode == 0, proc.stderr
    assert "toolkit train --data data/corpus" in proc.stdout
    again = toolkit("prepare", str(src))
    assert again.returncode == 2 and again.stderr.startswith("error: data/corpus already exists")
    # Train and export in this process (the same entry point; TensorFlow is loaded already).
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_CACHE_HOME", env["XDG_CACHE_HOME"])
    proc = cli("train", "--data", "data/corpus", "--preset", "tiny", "--no-progress",
               "--no-sample", "--val-chars", "1000")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    info = json.loads((tmp_path / "runs" / "corpus" / "run.json").read_text())
    assert info["prepared"] == str((tmp_path / "data" / "corpus").resolve())
    assert info["status"] == "finished"
    assert not (tmp_path / "cache" / "char-lstm-toolkit").exists()  # used in place
    # Export validates against the prepared corpus's validation ids (memory-mapped).
    proc = cli("export", "runs/corpus", "--format", "onnx")
    assert proc.returncode == 0, proc.stderr
    assert "validated model.onnx" in proc.stdout
