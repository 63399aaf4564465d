"""`toolkit prepare` and `toolkit download`: the corpus, before training."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from toolkit.cli.common import corpus_name


def prepare(
    source: Annotated[
        Path | None,
        typer.Argument(help="UTF-8 file, or folder of .txt / .txt.gz (default: bundled)"),
    ] = None,
    out: Annotated[Path | None, typer.Option(help="prepared folder (default data/<name>)")] = None,
    val_fraction: Annotated[float, typer.Option(help="held-out share, at the end")] = 0.1,
    force: Annotated[bool, typer.Option(help="replace an existing prepared folder")] = False,
    progress: Annotated[bool, typer.Option(help="show a progress bar")] = True,
) -> None:
    """Turn a corpus of any size into token ids on disk, for `train --data` (memory-mapped)."""
    from toolkit.data.prepare import prepare as prepare_corpus
    from toolkit.data.prepare import source_files

    name = "shakespeare" if source is None else corpus_name(source).removesuffix(".txt")
    out = out or Path("data") / name
    total = sum(p.stat().st_size for p in source_files(source)) if source else 0
    if progress and sys.stderr.isatty() and total:
        from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn

        # Two passes over the source: the bar covers both.
        with Progress(TextColumn("prepare"), BarColumn(), DownloadColumn(), transient=True) as bar:
            task = bar.add_task("prepare", total=2 * total)
            prepare_corpus(
                source,
                out,
                val_fraction,
                force,
                progress=lambda n: bar.update(task, advance=n),
                log=typer.echo,
            )
    else:
        prepare_corpus(source, out, val_fraction, force, log=typer.echo)
    typer.echo(f"train on it with: toolkit train --data {out}")


def download(
    url: Annotated[str | None, typer.Option(help="source URL")] = None,
    sha256: Annotated[
        str | None, typer.Option(help="expected checksum ('none' to skip the check)")
    ] = None,
    dest: Annotated[Path | None, typer.Option(help="target file")] = None,
) -> None:
    """Fetch the public TensorFlow copy of shakespeare.txt into the user cache (verified)."""
    from toolkit.data.corpus import SHAKESPEARE_SHA256, SHAKESPEARE_URL, download_corpus

    checksum = None if sha256 == "none" else (sha256 or SHAKESPEARE_SHA256)
    path = download_corpus(url or SHAKESPEARE_URL, checksum, dest)
    typer.echo(str(path))
