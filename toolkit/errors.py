"""Typed errors. The CLI maps each to a one-line message and an exit code in one place."""

from __future__ import annotations


class ToolkitError(Exception):
    """Base class: anything the user can fix. Message is one line; no traceback is shown."""

    exit_code = 1


class UsageError(ToolkitError):
    """An option value that makes no sense (negative length, top-p outside (0, 1], ...)."""

    exit_code = 2


class DataError(ToolkitError):
    """The corpus is missing, empty, binary, not UTF-8, or too short."""

    exit_code = 3


class RunDirError(ToolkitError):
    """A run directory is missing, incomplete, already exists, or is incompatible."""

    exit_code = 4


class ExportError(ToolkitError):
    """The converter failed or the exported graph did not validate."""

    exit_code = 5


class ModelFileError(ToolkitError):
    """An exported model is missing, corrupted, or of an unknown manifest version."""

    exit_code = 6


class DownloadError(ToolkitError):
    """A corpus download failed or its checksum did not match."""

    exit_code = 7


class StorageError(ToolkitError):
    """A file could not be written (disk full, read-only, no permission); what was there before
    is left as it was."""

    exit_code = 9


def storage_error(exc: OSError, path: object) -> StorageError:
    """One line for an OSError while writing `path`."""
    return StorageError(f"cannot write {path}: {exc.strerror or exc}")


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message: converters and runtimes write essays."""
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


class WebError(ToolkitError):
    """The browser site cannot be built or served (no onnxruntime-web, no ONNX model, ...)."""

    exit_code = 8


class WorkerLostError(ToolkitError):
    """A worker of a multi-worker run stopped answering; the others stop too (--resume)."""

    exit_code = 10


class FirmwareError(ToolkitError):
    """The firmware cannot be built or run (no cross-compiler or QEMU, the model does not fit
    the part, the emulator timed out or the firmware failed)."""

    exit_code = 11
