"""Running the API: uvicorn on a socket bound here (so the URL printed is the one listening,
port 0 included), the model loaded on a thread meanwhile, and a graceful stop on SIGINT or
SIGTERM: no new requests, open streams finish for --shutdown-timeout seconds, the rest end
with finish_reason "abort", exit 0. A second signal stops at once.
"""

from __future__ import annotations

import asyncio
import socket
import sys
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from types import FrameType
from typing import Any

from toolkit.errors import ModelFileError, UsageError
from toolkit.serve.api import Server, create_app
from toolkit.serve.chat import add_routes as add_chat_routes
from toolkit.serve.model import ServedModel, ServeLimits


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def serve(
    model: ServedModel,
    limits: ServeLimits,
    host: str = "127.0.0.1",
    port: int = 8000,
    shutdown_timeout_s: float = 30.0,
) -> None:
    """Serve until SIGINT/SIGTERM. Prints the URL when listening and a line when ready."""
    import uvicorn

    # The engine thread needs the GIL back after each step, while the HTTP side may hold it:
    # Python's default 5 ms before handing it over is longer than a step.
    sys.setswitchinterval(0.001)
    server = Server(model, limits)
    failed: list[str] = []

    def load_failed(message: str) -> None:
        failed.append(message)
        web.should_exit = True

    @asynccontextmanager
    async def lifespan(app: object) -> AsyncIterator[None]:
        server.load(on_error=load_failed, loop=asyncio.get_running_loop())
        yield
        server.close()

    app = create_app(server)
    add_chat_routes(app, server)
    app.router.lifespan_context = lifespan
    sock = bind(host, port)
    host_shown = f"[{host}]" if ":" in host else host
    url = f"http://{host_shown}:{sock.getsockname()[1]}"
    config = uvicorn.Config(
        app,
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=int(shutdown_timeout_s) + 5,
        lifespan="on",
    )
    web = _graceful(config, server, shutdown_timeout_s)
    print(
        f"serving {model.dir} ({model.runtime} {model.variant}, {model.threads} thread"
        f"{'s' if model.threads > 1 else ''}, batch <= {limits.max_batch}) at {url}/v1",
        flush=True,
    )
    _announce_when_ready(server, url)
    web.run(sockets=[sock])
    if failed:
        raise ModelFileError(failed[0])


def _announce_when_ready(server: Server, url: str) -> None:
    def wait() -> None:
        server.loaded.wait()
        if server.status == "ok":
            invariant = "yes" if server.model.batch_invariant else "no (see docs/serving.md)"
            print(
                f"ready: {url}/v1/completions (model {server.model.name!r}; rows batch-invariant:"
                f" {invariant}); Ctrl-C stops",
                flush=True,
            )

    threading.Thread(target=wait, daemon=True).start()


def _graceful(config: Any, server: Server, timeout_s: float) -> Any:
    """uvicorn.Server whose first signal drains (see the module's docstring) and second forces;
    the signal is not raised again afterwards, so the process exits 0."""
    import uvicorn

    class Graceful(uvicorn.Server):
        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            if self.should_exit:
                self.force_exit = True
                return
            print(f"stopping: open streams may finish within {timeout_s:g} s", file=sys.stderr)
            server.begin_shutdown(timeout_s)
            self.should_exit = True

    return Graceful(config)
