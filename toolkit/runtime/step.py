"""The step, (token, h, c) -> (logits, h', c'), as every backend offers it, and steppers: the
step in a loop with the state carried by the stepper.

`token` is int32 [batch]; `h`, `c` and the new state are float32 [layers, batch, units];
`logits` float32 [batch, vocab].
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

StepOutput = tuple[np.ndarray, np.ndarray, np.ndarray]


class StepBackend(Protocol):
    name: str

    def step(self, token: np.ndarray, h: np.ndarray, c: np.ndarray) -> StepOutput: ...


class Stepper(Protocol):
    """Steps in a loop, the state carried from one step to the next by the stepper."""

    def advance(self, token: np.ndarray) -> np.ndarray:
        """One step; the logits, which the next call may overwrite."""
        ...

    def advance_one(self, token: int) -> np.ndarray:
        """`advance` at batch 1, the token as a Python int."""
        ...

    def state(self) -> tuple[np.ndarray, np.ndarray]:
        """The current h and c (arrays the stepper no longer writes)."""
        ...


class ArrayStepper:
    """Any backend's `step` in a loop: the state goes in and comes back as arrays."""

    def __init__(self, backend: StepBackend, h: np.ndarray, c: np.ndarray) -> None:
        self._step = backend.step
        self.h, self.c = h, c
        self._ids: list[np.ndarray] = []  # advance_one's input arrays, one per token id

    def advance(self, token: np.ndarray) -> np.ndarray:
        logits, self.h, self.c = self._step(token, self.h, self.c)
        return logits

    def advance_one(self, token: int) -> np.ndarray:
        # One ready array per token id: cheaper than writing the id into an array.
        while token >= len(self._ids):
            self._ids.append(np.array([len(self._ids)], dtype=np.int32))
        logits, self.h, self.c = self._step(self._ids[token], self.h, self.c)
        return logits

    def state(self) -> tuple[np.ndarray, np.ndarray]:
        return self.h, self.c


def make_stepper(backend: StepBackend, logits: np.ndarray, h: np.ndarray, c: np.ndarray) -> Stepper:
    """The backend's own stepper if it has one (ONNX: state kept in bound buffers), else
    `ArrayStepper`. `logits` gives the logits' shape; h and c are the state to start from."""
    own = getattr(backend, "stepper", None)
    stepper: Stepper = own(logits, h, c) if own is not None else ArrayStepper(backend, h, c)
    return stepper


def batch_invariant(backend: StepBackend, state_shape: tuple[int, int], vocab: int) -> bool:
    """Whether each row of a batched step is bitwise the row stepped alone (probed on random
    tokens and states, batch 8 against 1): what makes a seeded text independent of the
    traffic. ONNX fp32 and TFLite int8/fp16 are; ONNX dynamic int8 is not (one activation
    scale over the whole batch)."""
    layers, units = state_shape
    rng = np.random.default_rng(0)
    token = rng.integers(0, vocab, 8).astype(np.int32)
    h = rng.uniform(-1, 1, (layers, 8, units)).astype(np.float32)
    c = rng.uniform(-2, 2, (layers, 8, units)).astype(np.float32)
    together = backend.step(token, h, c)
    for row in range(8):
        alone = backend.step(
            token[row : row + 1], h[:, row : row + 1].copy(), c[:, row : row + 1].copy()
        )
        if not np.array_equal(alone[0][0], together[0][row]):
            return False
        if not all(
            np.array_equal(a[:, 0], t[:, row]) for a, t in zip(alone[1:], together[1:], strict=True)
        ):
            return False
    return True
