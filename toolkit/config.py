"""Model and training configuration as plain dataclasses, plus the named presets.

No TensorFlow here: the runtime reads these too.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from toolkit.errors import UsageError


@dataclass(frozen=True)
class ModelConfig:
    """The model's sizes (what every exported file of it shares) and its training dropout."""

    vocab_size: int = 65
    embedding_dim: int = 64
    units: int = 512
    layers: int = 1
    dropout: float = 0.0  # between layers and before the output; gone at inference

    def state_shape(self, batch: int) -> tuple[int, int, int]:
        """h and c of the step: [layers, batch, units]."""
        return (self.layers, batch, self.units)

    def sizes(self) -> dict[str, int]:
        """The sizes a manifest records (dropout does not exist at inference)."""
        return {
            "vocab_size": self.vocab_size,
            "embedding_dim": self.embedding_dim,
            "units": self.units,
            "layers": self.layers,
        }


PRECISIONS = ("auto", "bf16", "fp32")


@dataclass(frozen=True)
class TrainConfig:
    preset: str = "default"
    embedding_dim: int = 64
    units: int = 512
    layers: int = 1
    dropout: float = 0.0
    seq_length: int = 100
    batch_size: int = 64
    learning_rate: float = 3e-3
    min_lr_ratio: float = 0.05  # cosine decay ends at learning_rate * min_lr_ratio
    warmup_steps: int = 50
    clip_norm: float = 1.0
    # Decoupled (AdamW-style) weight decay on the kernels and embeddings, scaled by the
    # learning rate; biases are not decayed. A regulariser for small corpora.
    weight_decay: float = 0.0
    # The recurrence's regularisers (AWD-LSTM's; train/regularise.py), all gone at inference:
    # DropConnect on the recurrent kernels (one mask per optimiser step), locked dropout on the
    # first LSTM's input (one mask per stream per window), whole characters dropped from the
    # embedding, and `dropout` with one mask per stream per window instead of per character.
    weight_drop: float = 0.0
    input_dropout: float = 0.0
    embedding_dropout: float = 0.0
    locked_dropout: bool = False
    # An exponential moving average of the weights (0: off), which validation, the best
    # checkpoint's model.keras and so every export use; checkpoints keep both for a resume.
    ema_decay: float = 0.0
    jit_compile: bool = False  # XLA for the training step
    # float32 training runs the hand-written LSTM of train/fused_lstm.py (the same function
    # and gradients, faster on CPU); False: Keras's LSTM loop (bf16 always runs it).
    fused_lstm: bool = True
    stateful: bool = True  # carry LSTM state across consecutive windows (char-rnn style)
    # Probability that a stream's carried state is zeroed at a window border. Carried state
    # alone almost never trains the zero state every generation starts from (train/cold_start.py).
    reset_prob: float = 0.0
    # Compute precision of training: "bf16" (Keras mixed_bfloat16: bf16 math, float32
    # weights), "fp32", or "auto" = bf16 where the CPU has bf16 instructions
    # (benchmarks/reports/train_throughput.md). Validation, export and every runtime stay float32.
    precision: str = "auto"
    epochs: int = 100
    # The run's work: stop after this many optimizer steps (the learning-rate schedule spans
    # them), so that a seed gives the same model on every machine. None: epochs (or minutes).
    max_steps: int | None = None
    # An optional wall-clock cap on the training steps; where it binds first, the schedule
    # follows the clock instead (the model then depends on the machine's speed).
    max_minutes: float | None = None
    val_fraction: float = 0.1
    # Validate on at most this many characters of the validation split (None: all of it).
    # A large corpus's 10% can take longer than the training between two validations.
    val_chars: int | None = None
    seed: int = 1337
    eval_steps: int | None = None  # also validate mid-epoch every this many steps
    eval_minutes: float | None = None  # ... or this often (training time)
    checkpoint_minutes: float = 1.0  # mid-epoch checkpoint interval (Ctrl-C / kill -9 safety)
    sample_every_epoch: bool = True
    sample_length: int = 200
    extra: dict[str, Any] = field(default_factory=dict)

    def model_config(self, vocab_size: int) -> ModelConfig:
        return ModelConfig(
            vocab_size=vocab_size,
            embedding_dim=self.embedding_dim,
            units=self.units,
            layers=self.layers,
            dropout=self.dropout,
        )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def validate(self) -> None:
        checks = [
            (self.embedding_dim >= 1, "embedding_dim must be >= 1"),
            (self.precision in PRECISIONS, "precision must be auto, bf16 or fp32"),
            (0.0 <= self.reset_prob <= 1.0, "reset-prob must be in [0, 1]"),
            (self.units >= 1, "units must be >= 1"),
            (self.layers >= 1, "layers must be >= 1"),
            (0.0 <= self.dropout < 1.0, "dropout must be in [0, 1)"),
            (self.seq_length >= 2, "seq-length must be >= 2"),
            (self.batch_size >= 1, "batch-size must be >= 1"),
            (self.learning_rate > 0, "learning-rate must be > 0"),
            (self.weight_decay >= 0, "weight-decay must be >= 0"),
            (0.0 <= self.weight_drop < 1.0, "weight-drop must be in [0, 1)"),
            (0.0 <= self.input_dropout < 1.0, "input-dropout must be in [0, 1)"),
            (0.0 <= self.embedding_dropout < 1.0, "embedding-dropout must be in [0, 1)"),
            (0.0 <= self.ema_decay < 1.0, "ema-decay must be in [0, 1)"),
            (self.epochs >= 1, "epochs must be >= 1"),
            (self.max_steps is None or self.max_steps >= 1, "max-steps must be >= 1"),
            (self.eval_steps is None or self.eval_steps >= 1, "eval-steps must be >= 1"),
            (self.max_minutes is None or self.max_minutes > 0, "max-minutes must be > 0"),
            (0.0 < self.val_fraction < 0.5, "val-fraction must be in (0, 0.5)"),
            (self.val_chars is None or self.val_chars >= 1000, "val-chars must be >= 1000"),
        ]
        for ok, message in checks:
            if not ok:
                raise UsageError(message)


# Presets. Sizes are chosen for a 2-core CPU; `seed` is the classic TensorFlow tutorial size.
PRESETS: dict[str, TrainConfig] = {
    "tiny": TrainConfig(
        preset="tiny",
        embedding_dim=8,
        units=16,
        layers=1,
        seq_length=32,
        batch_size=16,
        epochs=1,
        warmup_steps=5,
        sample_length=40,
    ),
    # Budgets are steps (the work), so that a seed gives the same model on every machine: the
    # steps of the wall-clock budgets (1, 10, 30 min with bf16) these presets were tuned with,
    # rounded. Validation every few hundred steps and at the end. How each setting was chosen,
    # with the runs that chose it: benchmarks/reports/train_presets_history.md.
    # quick: many small steps with a high peak learning rate and cosine decay to the budget's
    # end; 10% of the streams' state zeroed at each window border, which teaches the zero
    # state every generation starts from (benchmarks/reports/cold_start.md).
    "quick": TrainConfig(
        preset="quick",
        embedding_dim=64,
        units=256,
        layers=1,
        seq_length=32,
        batch_size=64,
        learning_rate=1e-2,
        warmup_steps=20,
        max_steps=1300,
        eval_steps=325,
        reset_prob=0.1,
    ),
    # default: 128 x 50 windows (faster per character than 64 x 100 on 2 cores; the carried
    # state makes 50 steps of back-propagation enough), dropout before the output layer and
    # decoupled weight decay against over-fitting, 10% state resets as quick.
    "default": TrainConfig(
        preset="default",
        batch_size=128,
        seq_length=50,
        dropout=0.2,
        weight_decay=0.1,
        max_steps=2100,
        eval_steps=300,
        reset_prob=0.1,
    ),
    "best": TrainConfig(
        preset="best",
        embedding_dim=64,
        units=512,
        layers=2,
        dropout=0.2,
        weight_decay=0.2,  # more than default's: twice the parameters on the same corpus
        seq_length=50,
        batch_size=128,
        max_steps=2900,
        eval_steps=290,
        reset_prob=0.1,
    ),
    "seed": TrainConfig(
        preset="seed",
        embedding_dim=256,
        units=1024,
        layers=1,
        seq_length=100,
        batch_size=64,
        learning_rate=2e-3,
        epochs=20,
        eval_minutes=1.0,
    ),
}


def resolve_precision(precision: str) -> str:
    from toolkit.machine import cpu_has_bf16

    if precision == "auto":
        return "bf16" if cpu_has_bf16() else "fp32"
    return precision


def preset(name: str) -> TrainConfig:
    try:
        return PRESETS[name]
    except KeyError:
        raise UsageError(f"unknown preset {name!r}; choose one of: {', '.join(PRESETS)}") from None
