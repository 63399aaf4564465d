"""What the commands share: options that take one of the library's own values, the command
line as typed, comma-separated integers."""

from __future__ import annotations

import shlex
import sys
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import typer

from toolkit.errors import UsageError


def choice(values: Iterable[str], aliases: Mapping[str, str] | None = None) -> dict[str, Any]:
    """typer.Option arguments for an option that takes one of `values` (the library's list):
    --help shows them, completion offers them, anything else is a one-line usage error.
    `aliases` are older spellings still accepted."""
    allowed = tuple(values)
    renamed = dict(aliases or {})

    def parse(value: str) -> str:
        value = renamed.get(value, value)
        if value not in allowed:
            raise typer.BadParameter(f"{value!r} is not one of {', '.join(map(repr, allowed))}")
        return value

    complete: Callable[[], list[str]] = lambda: list(allowed)  # noqa: E731
    return {"parser": parse, "metavar": "<" + "|".join(allowed) + ">", "autocompletion": complete}


def command_line() -> str:
    """The command as the user typed it (recorded in run.json and manifests)."""
    return "toolkit " + " ".join(shlex.quote(arg) for arg in sys.argv[1:])


def int_list(text: str, what: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise UsageError(f"{what} must be comma-separated integers, got {text!r}") from None


def corpus_name(data: Path) -> str:
    """A run's or prepared folder's default name: the file's stem, or the folder's name."""
    return data.stem if data.suffix else data.name
