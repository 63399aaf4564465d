"""The `toolkit` app, assembled from one module per command group; `main` is the one place
where errors become a one-line message and an exit code."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from toolkit import __version__
from toolkit.cli.bench import bench
from toolkit.cli.data import download, prepare
from toolkit.cli.export import export
from toolkit.cli.firmware import firmware
from toolkit.cli.generate import generate
from toolkit.cli.score import score
from toolkit.cli.serve import serve
from toolkit.cli.train import train
from toolkit.cli.web import web
from toolkit.errors import ToolkitError, storage_error

app = typer.Typer(add_completion=True, no_args_is_help=True, pretty_exceptions_enable=False)
for command in (train, prepare, download, export, generate, serve, web, firmware, bench):
    app.command()(command)
app.command()(score)


def _version(show: bool) -> None:
    if show:
        typer.echo(f"char-lstm-toolkit {__version__}")
        raise typer.Exit()


@app.callback()
def _options(
    verbose: Annotated[
        bool,
        typer.Option(
            "--verbose", "-v", help="show TensorFlow, LiteRT and onnxruntime messages too"
        ),
    ] = False,
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="print the version"),
    ] = False,
) -> None:
    """Train a character-level LSTM, export it to TFLite/ONNX with explicit state, generate
    text and benchmark every runtime."""
    from toolkit.logs import set_verbose

    set_verbose(verbose)


def _err(message: str) -> None:
    typer.echo(message, err=True)


def main() -> None:
    """Console entry point: the one place errors become messages and exit codes.

    Everything the toolkit raises on purpose is a ToolkitError with its own exit code; the
    command-line parser's usage errors (bad option, value not among the choices) become one
    line and exit 2 as well, instead of a usage box.
    """
    try:
        code = app(standalone_mode=False)
    except ToolkitError as exc:
        _err(f"error: {exc}")
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        _err("interrupted")
        sys.exit(130)
    except OSError as exc:  # disk full, read-only, permissions: what the system said, in a line
        error = storage_error(exc, exc.filename or "a file")
        _err(f"error: {error}")
        sys.exit(error.exit_code)
    except Exception as exc:
        if not _is_usage_error(exc):
            raise
        if type(exc).__name__ == "NoArgsIsHelpError":  # plain `toolkit`: the help
            typer.echo(exc.format_message())  # type: ignore[attr-defined]
            sys.exit(0)
        ctx = getattr(exc, "ctx", None)
        hint = f" (see: {ctx.command_path} --help)" if ctx is not None else ""
        message = " ".join(exc.format_message().split())  # type: ignore[attr-defined]
        _err(f"error: {message}{hint}")
        sys.exit(int(getattr(exc, "exit_code", 2)))
    if isinstance(code, int) and code != 0:
        sys.exit(code)


def _is_usage_error(exc: BaseException) -> bool:
    """Click's UsageError family (Typer vendors Click, so matched by shape, not by class)."""
    return hasattr(exc, "format_message") and getattr(exc, "exit_code", None) == 2


if __name__ == "__main__":
    main()
