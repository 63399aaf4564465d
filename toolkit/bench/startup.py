"""Process start-up: a fresh `toolkit generate` process from its start to its first character,
and its peak memory. (Quality from the zero state is another idea: train/cold_start.py.)"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

# Runs `toolkit` like `python -m toolkit` and, at exit, reports the process's own peak RSS
# (VmHWM). The parent's rusage would count the forked copy of this (TensorFlow-sized) process.
_CHILD = """
import atexit, sys
def _peak():
    try:
        for line in open('/proc/self/status'):
            if line.startswith('VmHWM:'):
                sys.stderr.write('PEAK_RSS_KB %s\\n' % line.split()[1])
    except OSError:
        pass
atexit.register(_peak)
sys.argv = ['toolkit'] + sys.argv[1:]
from toolkit.cli import main
main()
"""


def startup(model_arg: Path, runtime: str, variant: str, runs: int) -> dict[str, Any]:
    """Wall time and peak RSS of fresh `toolkit generate` processes (import, load, generate).

    Process start to first character = wall time minus the generation after the first one.
    """
    args = ["generate", str(model_arg), "--runtime", runtime, "--variant", variant,
            "--length", "100", "--temperature", "0", "--json"]  # fmt: skip
    walls, rss, first = [], [], []
    for _ in range(runs):
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-c", _CHILD, *args], capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            return {"error": f"exit {proc.returncode}: {proc.stderr.strip()[-200:]}"}
        result = json.loads(proc.stdout)
        walls.append(wall)
        first.append(wall - (result["elapsed_s"] - result["time_to_first_char_s"]))
        peaks = [int(x.split()[1]) for x in proc.stderr.splitlines() if x.startswith("PEAK_RSS_KB")]
        if peaks:
            rss.append(peaks[-1] / 1024)
    return {
        "wall_s": statistics.median(walls),
        "first_char_s": statistics.median(first),
        "peak_rss_mb": statistics.median(rss) if rss else None,
        "runs": runs,
    }
