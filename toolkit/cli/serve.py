"""`toolkit serve`: the model behind an OpenAI-compatible HTTP API (toolkit/serve)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from toolkit.cli.common import choice
from toolkit.errors import UsageError
from toolkit.runtime.manifest import VARIANTS
from toolkit.runtime.targets import SERVE_RUNTIMES
from toolkit.serve.model import ServedModel, ServeLimits


def serve(
    model: Annotated[
        Path | None, typer.Argument(help="export folder (default: the committed model)")
    ] = None,
    runtime: Annotated[str, typer.Option(**choice(SERVE_RUNTIMES))] = "onnx",
    variant: Annotated[
        str,
        typer.Option(help="auto: the most precise variant present", **choice(["auto", *VARIANTS])),
    ] = "auto",
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port (0: any free port)")] = 8000,
    threads: Annotated[int, typer.Option(help="runtime threads for the batched step")] = 1,
    max_batch: Annotated[int, typer.Option(help="streams advanced in one step")] = 64,
    max_queue: Annotated[int, typer.Option(help="requests waiting to join; then 429")] = 256,
    max_prompt_chars: Annotated[int, typer.Option(help="longest prompt accepted")] = 100_000,
    max_tokens: Annotated[int, typer.Option(help="most characters one choice may ask for")] = (
        100_000
    ),
    max_n: Annotated[int, typer.Option(help="most choices (n) in one request")] = 16,
    cache_mb: Annotated[float, typer.Option(help="prefix cache size (0: off)")] = 64.0,
    request_timeout: Annotated[
        float, typer.Option(help="seconds a request may take; then finish_reason 'timeout'")
    ] = 600.0,
    shutdown_timeout: Annotated[
        float, typer.Option(help="seconds open streams may finish after SIGINT/SIGTERM")
    ] = 30.0,
    api_key: Annotated[
        str | None,
        typer.Option(help="require 'Authorization: Bearer KEY' (or set TOOLKIT_API_KEY)"),
    ] = None,
    state_secret: Annotated[
        str | None,
        typer.Option(help="signs state tokens; the same on every replica (TOOLKIT_STATE_SECRET)"),
    ] = None,
    model_name: Annotated[
        str | None, typer.Option(help="the model's id in the API (default: the manifest's name)")
    ] = None,
    chat_format: Annotated[
        Path | None,
        typer.Option(help="JSON turn format for /v1/chat/completions (default: the manifest's)"),
    ] = None,
) -> None:
    """Serve the model over HTTP (OpenAI completions API), batching every open stream."""
    if not 0 <= port <= 65535:
        raise UsageError(f"--port must be in 0..65535, got {port}")
    if shutdown_timeout < 0:
        raise UsageError("--shutdown-timeout must be >= 0")
    try:
        from toolkit.serve.server import serve as run_server
    except ImportError as exc:
        raise UsageError(
            f"serve needs the serve extra ({exc.name} is missing): "
            "pip install 'char-lstm-toolkit[serve]'"
        ) from None
    limits = ServeLimits(
        max_batch=max_batch,
        max_queue=max_queue,
        cache_mb=cache_mb,
        max_prompt_chars=max_prompt_chars,
        max_tokens=max_tokens,
        max_n=max_n,
        request_timeout_s=request_timeout,
        api_key=api_key or os.environ.get("TOOLKIT_API_KEY") or None,
        state_secret=state_secret or os.environ.get("TOOLKIT_STATE_SECRET") or None,
    )
    served = ServedModel(
        model, runtime, variant, threads, model_name, limits.state_secret, chat_format
    )
    run_server(served, limits, host, port, shutdown_timeout)
