"""What another Python thread costs the server's draw: the decoder's plain draw for 64 rows
(`Float64Draw`, nine numpy calls on [64, 65] arrays, each of which releases the GIL inside its
loop), alone and beside a thread that runs Python without pause, at Python's default switch
interval (5 ms) and at the server's (1 ms). Between draws the thread sleeps 0.5 ms with the
GIL released, as the engine does in the model's step.

    python benchmarks/gil_handoff.py

In `toolkit serve` the other thread is the HTTP side (the event loop formatting and sending
the streamed chunks); benchmarks/reports/serve.md quotes this script's output.
"""

from __future__ import annotations

import statistics
import sys
import threading
import time

import numpy as np

from toolkit.runtime.sampling import Float64Draw, overflow_detected

ROWS, VOCAB = 64, 65


def median_us(draw: Float64Draw, logits: np.ndarray, u: np.ndarray, n: int = 2000) -> float:
    out = np.zeros(ROWS, np.int32)
    times = []
    with overflow_detected():
        for _ in range(n):
            start = time.perf_counter()
            draw(logits, u, out)
            times.append(time.perf_counter() - start)
            time.sleep(0.0005)  # the model's step: the GIL is free meanwhile
    return statistics.median(times) * 1e6


def main() -> None:
    rng = np.random.default_rng(0)
    logits = (rng.standard_normal((ROWS, VOCAB)) * 3).astype(np.float32)
    u = rng.random(ROWS)
    draw = Float64Draw(ROWS, VOCAB, 0.8)
    print(f"draw for {ROWS} rows, median of 2,000 (us):")
    print(f"  alone: {median_us(draw, logits, u):.0f}")
    running = True

    def busy() -> None:
        x = 0
        while running:
            x += 1

    thread = threading.Thread(target=busy, daemon=True)
    thread.start()
    try:
        for interval in (0.005, 0.001):
            sys.setswitchinterval(interval)
            us = median_us(draw, logits, u)
            print(f"  beside a busy Python thread, switch interval {interval * 1e3:g} ms: {us:.0f}")
    finally:
        running = False
        thread.join()


if __name__ == "__main__":
    main()
