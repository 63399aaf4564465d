"""The `toolkit` command: one module per command group, assembled in entry.py, where typed
errors become one-line messages and exit codes. Nothing here imports TensorFlow at module
level: `generate` must start fast without it."""

from toolkit.cli.entry import app, main

__all__ = ["app", "main"]
