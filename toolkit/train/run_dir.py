"""The run directory: which files make a run, checkpoints, and what a resume may change.

Every file here is written atomically (toolkit.files.atomic_write_*): a reader, or a run
killed mid-write, sees the previous file or the new one, never half of one.
"""

from __future__ import annotations

import dataclasses
import io
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from toolkit.config import TrainConfig
from toolkit.errors import RunDirError
from toolkit.files import atomic_write_bytes

RUN_FILES = ("run.json", "config.json", "vocab.json", "model.keras")
# Options that change the model or the data order; a resumed run must keep them.
RESUME_LOCKED = (
    "embedding_dim",
    "units",
    "layers",
    "dropout",
    "seq_length",
    "batch_size",
    "val_fraction",
    "seed",
    "stateful",
    "ema_decay",  # the optimizer's variables (the average) follow it
)


def check_run_dir(run_dir: Path) -> dict[str, Any]:
    """Everything export and generate need must be there; returns run.json."""
    if not run_dir.is_dir():
        raise RunDirError(f"run directory not found: {run_dir}")
    missing = [name for name in RUN_FILES if not (run_dir / name).exists()]
    if missing:
        raise RunDirError(f"run directory {run_dir} is incomplete: missing {', '.join(missing)}")
    try:
        info: dict[str, Any] = json.loads((run_dir / "run.json").read_text())
    except json.JSONDecodeError:
        raise RunDirError(f"run directory {run_dir} has an unreadable run.json") from None
    return info


def load_run_config(run_dir: Path) -> TrainConfig:
    return TrainConfig.from_dict(json.loads((run_dir / "config.json").read_text()))


def prepare_fresh_run_dir(run_dir: Path, force: bool) -> None:
    if run_dir.exists() and any(run_dir.iterdir()):
        if not force:
            raise RunDirError(
                f"run directory {run_dir} already exists; use --resume to continue it "
                "or --force to start over"
            )
        if not (run_dir / "run.json").exists() and not (run_dir / "config.json").exists():
            # Refuse to wipe a folder that is not one of ours, even with --force.
            raise RunDirError(f"{run_dir} exists and is not a run directory; not overwriting")
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)


def resolve_resume_config(saved: TrainConfig, overrides: dict[str, Any]) -> TrainConfig:
    """Resuming keeps the saved config; only the budget (epochs, minutes, ...) may change."""
    clashes = [
        f"{key}={overrides[key]!r} (run has {getattr(saved, key)!r})"
        for key in RESUME_LOCKED
        if key in overrides and overrides[key] != getattr(saved, key)
    ]
    if clashes:
        raise RunDirError("cannot resume with an incompatible config: " + ", ".join(clashes))
    allowed = {k: v for k, v in overrides.items() if k not in RESUME_LOCKED and k != "preset"}
    return dataclasses.replace(saved, **allowed)


def save_checkpoint(path: Path, model: Any, optimizer: Any, progress: dict[str, Any]) -> None:
    arrays: dict[str, np.ndarray] = {}
    for i, w in enumerate(model.get_weights()):
        arrays[f"w{i}"] = w
    for i, v in enumerate(optimizer.variables):
        arrays[f"o{i}"] = np.asarray(v)
    for key in ("h", "c"):
        if progress.get(key) is not None:
            arrays[f"state_{key}"] = progress[key]
    meta = {k: v for k, v in progress.items() if k not in ("h", "c")}
    arrays["progress"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)  # type: ignore[arg-type]
    atomic_write_bytes(path, buffer.getvalue())


def load_checkpoint(path: Path, model: Any, optimizer: Any) -> dict[str, Any]:
    try:
        with np.load(path) as blob:
            n_w = sum(1 for k in blob.files if k.startswith("w"))
            n_o = sum(1 for k in blob.files if k.startswith("o"))
            model.set_weights([blob[f"w{i}"] for i in range(n_w)])
            optimizer.build(model.trainable_variables)
            if n_o != len(optimizer.variables):
                raise RunDirError(f"checkpoint {path} does not match the optimizer")
            for i, var in enumerate(optimizer.variables):
                var.assign(blob[f"o{i}"])
            progress: dict[str, Any] = json.loads(bytes(blob["progress"]).decode())
            progress["h"] = blob["state_h"] if "state_h" in blob.files else None
            progress["c"] = blob["state_c"] if "state_c" in blob.files else None
    except (OSError, ValueError, KeyError) as exc:
        raise RunDirError(f"checkpoint {path} is unreadable: {exc}") from None
    return progress


def iter_metrics(run_dir: Path) -> Iterator[dict[str, Any]]:
    path = run_dir / "metrics.jsonl"
    if path.exists():
        for line in path.read_text().splitlines():
            if line.strip():
                yield json.loads(line)
