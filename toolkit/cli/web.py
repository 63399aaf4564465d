"""`toolkit web`: the model as a static site that generates text in the browser."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from toolkit.cli.common import choice
from toolkit.errors import UsageError
from toolkit.web.site import ENGINES, SITE_VARIANTS


def web(
    model: Annotated[
        Path | None, typer.Argument(help="export folder (default: the committed model)")
    ] = None,
    out: Annotated[Path, typer.Option(help="site folder to write")] = Path("site"),
    variant: Annotated[
        str,
        typer.Option(
            help="all: every ONNX variant in the folder", **choice(["all", *SITE_VARIANTS])
        ),
    ] = "all",
    engine: Annotated[
        str,
        typer.Option(
            help="c: the exported char_lstm.c as wasm (int8); onnx: onnxruntime-web (fp32)",
            **choice(ENGINES),
        ),
    ] = "c",
    serve: Annotated[bool, typer.Option(help="serve the site on 127.0.0.1 until Ctrl-C")] = False,
    port: Annotated[int, typer.Option(help="port for --serve (0 = any free port)")] = 8000,
    force: Annotated[bool, typer.Option(help="replace an existing site")] = False,
) -> None:
    """Build a static site that generates text in the browser (the C as wasm, or onnxruntime-web)."""
    from toolkit.runtime.generator import default_model_dir
    from toolkit.web.site import SiteServer, build_site

    if not 0 <= port <= 65535:
        raise UsageError(f"port must be in 0..65535, got {port}")
    model_dir = (
        model if model is not None else default_model_dir("onnx" if engine == "onnx" else "c")
    )
    site = build_site(model_dir, out, variant=variant, force=force, log=typer.echo, engine=engine)
    runtime = f"onnxruntime-web {site.ort_version}" if engine == "onnx" else "the C step in wasm"
    typer.echo(
        f"wrote {site.out_dir} ({site.bytes / 1e6:.1f} MB: {', '.join(site.variants.values())}, "
        f"{runtime}); an installable app that works offline after one visit"
    )
    if not serve:
        again = " --engine onnx" if engine == "onnx" else ""
        typer.echo(
            f"serve it with any static file server, or: toolkit web{again} --serve --force --out {out}"
        )
        return
    with SiteServer(site.out_dir, port) as server:
        typer.echo(f"serving {site.out_dir} at {server.url} (Ctrl-C to stop)")
        while True:
            time.sleep(3600)
