"""Several workers: the cluster from TF_CONFIG, the strategy, and a local launcher.

Training on N workers is tf.distribute.MultiWorkerMirroredStrategy around the same custom
loop as one process (Keras 3's `model.fit` under this strategy is broken: keras#20585). Each
worker reads its own contiguous block of the batch's streams, so the carried LSTM state of a
stream always stays on one worker; the gradients are summed across workers every step.

    TF_CONFIG='{"cluster": {"worker": ["host0:port", "host1:port"]},
                "task": {"type": "worker", "index": 0}}' toolkit train ...

on every machine (index 0 is the chief: it alone writes the run directory, which must be on
storage every worker can read, for --resume). `toolkit train --workers N` starts N local
workers on 127.0.0.1 for a big machine and for tests. See docs/distributed.md.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from toolkit.errors import UsageError, WorkerLostError

# A lost worker is noticed by the strategy's health check, which runs a small collective
# on every worker this often and aborts the pending ones when a peer does not answer. (A
# timeout on each collective would do it too, but TensorFlow starts a thread per collective
# that sleeps for the whole timeout: thousands of threads after a minute of training.)
HEALTH_CHECK_INTERVAL_S = float(os.environ.get("TOOLKIT_HEALTH_CHECK_S", "15"))


@dataclass(frozen=True)
class Cluster:
    workers: tuple[str, ...] = ()  # host:port of every worker, in task-index order
    index: int = 0

    @property
    def size(self) -> int:
        return max(1, len(self.workers))

    @property
    def is_chief(self) -> bool:
        return self.index == 0

    @classmethod
    def from_environment(cls) -> Cluster:
        raw = os.environ.get("TF_CONFIG")
        if not raw:
            return cls()
        try:
            config = json.loads(raw)
            cluster = config.get("cluster", {})
            workers = list(cluster.get("chief", [])) + list(cluster.get("worker", []))
            task = config["task"]
            index = int(task.get("index", 0))
            if task.get("type") == "worker" and cluster.get("chief"):
                index += 1  # the chief is task 0 of the whole cluster
        except (ValueError, KeyError, TypeError, AttributeError):
            raise UsageError(
                "TF_CONFIG is not valid: expected cluster.worker and task.index"
            ) from None
        if not 0 <= index < max(1, len(workers)):
            raise UsageError(f"TF_CONFIG task index {index} is not among {len(workers)} workers")
        return cls(tuple(workers), index)

    def strategy(self) -> Any:
        """MultiWorkerMirroredStrategy whose health check notices a lost worker quickly."""
        import tensorflow as tf

        options = tf.distribute.experimental.CommunicationOptions(
            implementation=tf.distribute.experimental.CommunicationImplementation.RING,
        )
        # Private knobs of the strategy's health check (TF 2.21: every 30 s, 10 s to answer),
        # set before the strategy starts its checking thread.
        from tensorflow.python.distribute import collective_all_reduce_strategy as impl

        extended = impl.CollectiveAllReduceExtended
        if hasattr(extended, "_check_health_interval"):
            extended._check_health_interval = HEALTH_CHECK_INTERVAL_S
            extended._check_health_timeout = 10
        return tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)

    def unreachable(self) -> list[int]:
        """Indexes of the other workers whose port no longer answers."""
        lost = []
        for i, address in enumerate(self.workers):
            if i == self.index:
                continue
            host, _, port = address.rpartition(":")
            try:
                socket.create_connection((host, int(port)), timeout=2).close()
            except OSError:
                lost.append(i)
        return lost

    def lost_worker_error(self, exc: BaseException) -> WorkerLostError:
        lost = self.unreachable()
        who = (
            ", ".join(f"worker {i} ({self.workers[i]})" for i in lost) if lost else "another worker"
        )
        # TensorFlow's first line is often just "Graph execution error:"; the kind says more.
        detail = type(exc).__name__
        return WorkerLostError(
            f"lost {who}: training stopped on worker {self.index} ({detail}); "
            "continue with: toolkit train --resume RUN_DIR (same workers)"
        )


def is_collective_failure(exc: BaseException) -> bool:
    """A TensorFlow error of the kind a dead peer causes (timeout, unavailable, aborted)."""
    try:
        import tensorflow as tf
    except ImportError:
        return False
    kinds = (
        tf.errors.UnavailableError,
        tf.errors.DeadlineExceededError,
        tf.errors.AbortedError,
        tf.errors.CancelledError,
        tf.errors.InternalError,
        tf.errors.UnknownError,
    )
    return isinstance(exc, kinds)


# --------------------------------------------------------------------------- local launcher


def free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def launch_local_workers(
    n: int,
    args: Sequence[str],
    echo: Callable[[str], None] = print,
    grace_s: float = 90.0,
) -> int:
    """Run `toolkit <args>` as N worker processes on 127.0.0.1; their output, prefixed.

    Returns the first non-zero exit code (0 if all succeeded). Ctrl-C stops every worker; a
    worker that fails gives the others `grace_s` to stop on their own (they detect the lost
    peer at their next collective), then they are killed.
    """
    ports = free_ports(n)
    workers = [f"127.0.0.1:{p}" for p in ports]
    procs: list[subprocess.Popen[str]] = []
    lock = threading.Lock()

    def pump(index: int, stream: Any) -> None:
        for line in stream:
            with lock:
                echo(f"[worker {index}] {line.rstrip()}")

    threads = []
    for i in range(n):
        env = {
            **os.environ,
            "TF_CONFIG": json.dumps(
                {"cluster": {"worker": workers}, "task": {"type": "worker", "index": i}}
            ),
        }
        proc = subprocess.Popen(
            [sys.executable, "-m", "toolkit", *args],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
            start_new_session=True,  # Ctrl-C reaches the workers through us, once
        )
        procs.append(proc)
        thread = threading.Thread(target=pump, args=(i, proc.stdout), daemon=True)
        thread.start()
        threads.append(thread)
    code = 0
    try:
        deadline = None
        while any(p.poll() is None for p in procs):
            failed = [p.returncode for p in procs if p.returncode not in (None, 0)]
            if failed and code == 0:
                code = failed[0]
                deadline = time.monotonic() + grace_s
            if deadline is not None and time.monotonic() > deadline:
                for p in procs:
                    if p.poll() is None:
                        p.kill()
            time.sleep(0.2)
    except KeyboardInterrupt:
        # The chief alone: it saves the run, and its peers keep answering the collective it
        # may be blocked in, so it reaches Python and stops cleanly. A peer interrupted at the
        # same time could leave it blocked there until killed, with run.json still "training".
        # The others write nothing, so they need no grace once it is gone.
        chief, others = procs[0], procs[1:]
        if chief.poll() is None:
            chief.send_signal(signal.SIGINT)
            try:
                chief.wait(timeout=60)
            except subprocess.TimeoutExpired:
                chief.kill()
        for p in others:
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
        for p in others:
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                p.kill()
        code = 130
    for thread in threads:
        thread.join(timeout=5)
    if code == 0:
        code = next((p.returncode for p in procs if p.returncode), 0)
    return code
