"""One writer per run directory: train, resume and export hold an exclusive lock while they work.

The lock is `flock` on a small file beside the directory (`runs/.NAME.lock`), so the kernel
releases it when the holder dies, even by kill -9; the file keeps the holder's pid and command
so that a refusal can name the process, and a successor can say it took over from a dead one.
It sits beside the directory, not inside, because a fresh `train --force` deletes the directory.
"""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any, Concatenate, ParamSpec, TypeVar

from toolkit.errors import RunDirError


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


class RunDirLock:
    """`with RunDirLock(run_dir, "train"):` — refuses if another live process holds it."""

    def __init__(self, run_dir: Path, purpose: str, log: Callable[[str], None] = print) -> None:
        run_dir = Path(run_dir)
        self.run_dir = run_dir
        self.path = run_dir.parent / f".{run_dir.name}.lock"
        self.purpose = purpose
        self.log = log
        self.fd: int | None = None

    def __enter__(self) -> RunDirLock:
        try:
            import fcntl
        except ImportError:  # not POSIX: no lock, as before
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        previous = _read_holder(fd)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            who = f"process {previous.get('pid', '?')}"
            if previous.get("command"):
                who += f" ({previous['command']})"
            raise RunDirError(
                f"{self.run_dir} is in use by {who}; wait for it to finish or stop it"
            ) from None
        pid = previous.get("pid")
        if isinstance(pid, int) and pid != os.getpid() and not _alive(pid):
            self.log(
                f"note: {self.run_dir} was left locked by process {pid}, which is no longer "
                "running; taking over"
            )
        holder = {"pid": os.getpid(), "purpose": self.purpose, "command": _command()}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(holder).encode(), 0)
        self.fd = fd
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.fd is None:
            return
        import fcntl

        os.ftruncate(self.fd, 0)  # released cleanly: no holder to report
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)
        self.fd = None


P = ParamSpec("P")
R = TypeVar("R")


def holds_run_dir_lock(
    purpose: str,
) -> Callable[[Callable[Concatenate[Path, P], R]], Callable[Concatenate[Path, P], R]]:
    """Decorate a function whose first argument is a run directory to hold its lock."""

    def decorate(fn: Callable[Concatenate[Path, P], R]) -> Callable[Concatenate[Path, P], R]:
        @functools.wraps(fn)
        def locked(run_dir: Path, *args: P.args, **kwargs: P.kwargs) -> R:
            log: Any = kwargs.get("log") or print
            with RunDirLock(Path(run_dir), purpose, log):
                return fn(Path(run_dir), *args, **kwargs)

        return locked

    return decorate


def _read_holder(fd: int) -> dict[str, object]:
    try:
        data = os.pread(fd, 4096, 0)
        holder = json.loads(data) if data.strip() else {}
    except (OSError, ValueError):
        return {}
    return holder if isinstance(holder, dict) else {}


def _command() -> str:
    return " ".join([Path(sys.argv[0]).name, *sys.argv[1:3]]) if sys.argv else "python"
