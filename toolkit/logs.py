"""Quiet by default: only the toolkit's own lines, unless --verbose (TOOLKIT_VERBOSE=1).

TensorFlow prints its C++ start-up lines (oneDNN, CUDA probing) before absl logging is set
up, so TF_CPP_MIN_LOG_LEVEL cannot stop them all; LiteRT announces its XNNPACK delegate and
the TFLite converter its quantization settings the same way. Those go to file descriptor 2
directly, so the only way to hide them is to point that descriptor elsewhere while such a
call runs. What was hidden is replayed if the call fails, so no error message is lost.

TensorFlow is imported through `import_tensorflow` (or after `quiet_tensorflow_env`) and
nowhere else, so that its log level is set in this one place.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import sys
import tempfile
import warnings
from collections.abc import Iterator
from typing import Any

from toolkit.errors import UsageError

VERBOSE_ENV = "TOOLKIT_VERBOSE"
TRAIN_EXTRA = "this command needs TensorFlow: pip install 'char-lstm-toolkit[train]'"


def verbose() -> bool:
    return os.environ.get(VERBOSE_ENV, "") not in ("", "0")


def set_verbose(on: bool) -> None:
    """Called once by the CLI. Quiet: Python warnings and library log records below ERROR are
    dropped too (onnxruntime's quantizer warns through the root logger, tf2onnx logs INFO)."""
    os.environ[VERBOSE_ENV] = "1" if on else "0"
    if on:
        return
    quiet_tensorflow_env()
    warnings.simplefilter("ignore")
    logging.disable(logging.WARNING)


def quiet_tensorflow_env() -> None:
    """TensorFlow's C++ log level, before TensorFlow is imported: errors only unless verbose
    (a level the user set in the environment is kept)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "0" if verbose() else "3")


@contextlib.contextmanager
def native_stderr_hidden() -> Iterator[None]:
    """Hide what C/C++ code writes to stderr during the block (unless verbose)."""
    if verbose():
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        except BaseException:
            os.dup2(saved, 2)
            sink.seek(0)
            sys.stderr.write(sink.read().decode(errors="replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def require_tensorflow() -> None:
    """A one-line UsageError if TensorFlow is not installed; imports nothing (milliseconds),
    so a command can refuse early and check its own input before the slow import."""
    if importlib.util.find_spec("tensorflow") is None:
        raise UsageError(TRAIN_EXTRA)


def import_tensorflow() -> Any:
    """Import TensorFlow quietly, or say in one line what to install."""
    quiet_tensorflow_env()
    try:
        with native_stderr_hidden():
            import tensorflow as tf

            tf.config.list_physical_devices()  # probes CUDA now, and logs it now
    except ImportError:
        raise UsageError(TRAIN_EXTRA) from None
    return tf
