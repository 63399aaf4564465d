"""Pictures of training: TensorBoard scalars and curve.png, refreshed at every validation.

`tensorboard --logdir runs` shows every run (tensorboard comes with TensorFlow, the train
extra); curve.png is there for a glance without it. Both are written from the metrics rows
that train.py also appends to metrics.jsonl.
"""

from __future__ import annotations

import io
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from toolkit.files import atomic_write_bytes

TENSORBOARD_DIR = "tensorboard"
CURVE_PNG = "curve.png"
# metrics row field -> TensorBoard tag
SCALARS = {
    "train_loss": "loss/train",
    "val_loss": "loss/validation",
    "train_bpc": "bits_per_char/train",
    "val_bpc": "bits_per_char/validation",
    "lr": "learning_rate",
    "chars_per_sec": "chars_per_sec",
}


class TensorBoardLog:
    """A summary writer for one run directory (appends on resume)."""

    def __init__(self, run_dir: Path) -> None:
        import tensorflow as tf

        self.tf = tf
        self.writer = tf.summary.create_file_writer(str(run_dir / TENSORBOARD_DIR))

    def write(self, row: dict[str, Any]) -> None:
        with self.writer.as_default():
            for field, tag in SCALARS.items():
                value = row.get(field)
                if value is not None and value == value:  # skip NaN (no train steps yet)
                    self.tf.summary.scalar(tag, float(value), step=int(row["step"]))
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


def write_curve(rows: Iterable[dict[str, Any]], path: Path, title: str = "") -> None:
    """Train and validation bits/char against steps and against minutes, as one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = list(rows)
    steps = [r["step"] for r in rows]
    minutes = [r["elapsed_s"] / 60 for r in rows]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), sharey=True)
    for ax, x, label in ((axes[0], steps, "steps"), (axes[1], minutes, "minutes of training")):
        ax.plot(x, [r["train_bpc"] for r in rows], "o-", ms=3, label="train")
        ax.plot(x, [r["val_bpc"] for r in rows], "o-", ms=3, label="validation")
        ax.set_xlabel(label)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("bits per character")
    axes[0].legend()
    if rows:
        best = min(r["val_bpc"] for r in rows)
        fig.suptitle(f"{title}  best validation {best:.3f} bits/char".strip())
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())
