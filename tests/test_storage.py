"""A full disk while writing a checkpoint, a model or an export: one line, nothing lost."""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import os
import shutil
from pathlib import Path

import pytest

from toolkit.errors import StorageError

DISK_FULL = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def _fail(*args: object, **kwargs: object) -> None:
    raise DISK_FULL


def _digests(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_atomic_write_keeps_the_previous_file(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from toolkit.files import atomic_write_bytes

    target = tmp_path / "checkpoint.npz"
    target.write_bytes(b"previous")
    monkeypatch.setattr(os, "fsync", _fail)
    with pytest.raises(StorageError, match="No space left on device"):
        atomic_write_bytes(target, b"new" * 1000)
    assert target.read_bytes() == b"previous"
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.npz"]  # no temp file left


def test_training_on_a_full_disk_keeps_the_last_checkpoint(
    tiny_run: Path, tiny_config, tmp_path: Path, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    from toolkit.train.loop import train

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    before = _digests(run)
    monkeypatch.setattr(os, "fsync", _fail)  # every atomic write fails from now on
    more = dataclasses.replace(tiny_config, epochs=tiny_config.epochs + 1)
    with pytest.raises(StorageError, match="No space left on device"):
        train(more, run, resume=True, overrides={"epochs": more.epochs}, log=lambda _: None)
    after = _digests(run)
    for name in ("checkpoints/last.npz", "checkpoints/best.npz", "model.keras", "run.json"):
        assert after[name] == before[name], name
    monkeypatch.undo()  # space again: the run resumes from its last checkpoint
    train(more, run, resume=True, overrides={"epochs": more.epochs}, log=lambda _: None)


def test_export_on_a_full_disk_leaves_the_folder_as_it_was(
    tiny_run: Path, tiny_export: Path, tmp_path: Path, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    from toolkit.export.exporter import export_run

    out = tmp_path / "exported"
    shutil.copytree(tiny_export, out)
    before = _digests(out)
    real_write = Path.write_bytes

    def write_until_full(self: Path, data: bytes) -> int:
        if self.name.endswith(".onnx"):
            raise DISK_FULL
        return real_write(self, data)

    monkeypatch.setattr(Path, "write_bytes", write_until_full)
    with pytest.raises(StorageError, match="No space left on device"):
        export_run(tiny_run, out, formats=["onnx"], force=True, log=lambda _: None)
    assert _digests(out) == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".export-")]


def test_the_cli_reports_a_write_error_in_one_line(monkeypatch, capsys) -> None:  # type: ignore[no-untyped-def]
    import toolkit.cli.entry as cli

    def full(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "runs/x/model.keras")

    monkeypatch.setattr(cli, "app", full)
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    assert exit_info.value.code == 9
    err = capsys.readouterr().err
    assert err == "error: cannot write runs/x/model.keras: No space left on device\n"
