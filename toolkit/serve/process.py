"""`toolkit serve` as a child process: started on a free port, ready when /health says so.
For tests, benchmarks and notebooks that want a real server beside them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path


@dataclass
class ServerProcess:
    proc: subprocess.Popen[str]
    url: str  # http://127.0.0.1:PORT

    @property
    def v1(self) -> str:
        return self.url + "/v1"

    def rss_bytes(self) -> int:
        """The server's resident memory (Linux)."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        return 0

    def stop(self, timeout_s: float = 60) -> int:
        """SIGTERM (a graceful stop), then its exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout_s)


def start_server(model: Path | None, *args: str, timeout_s: float = 60) -> ServerProcess:
    """`toolkit serve MODEL --port 0 ARGS`: waits for the URL it prints, then for /health."""
    command = [sys.executable, "-m", "toolkit", "serve"]
    command += [str(model)] if model is not None else []
    proc = subprocess.Popen(
        [*command, "--port", "0", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.stdout is not None and proc.stderr is not None
    line = proc.stdout.readline()
    if " at http://" not in line:
        proc.kill()
        raise RuntimeError(f"toolkit serve did not start: {line}{proc.stderr.read()}")
    url = line.split(" at ")[-1].strip().removesuffix("/v1")
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(url + "/health", timeout=2) as response:
                if response.status == 200:
                    return ServerProcess(proc, url)
        except (urllib.error.URLError, ConnectionError):
            pass
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.kill()
            raise RuntimeError(f"toolkit serve did not become ready: {proc.stderr.read()}")
        time.sleep(0.1)
