"""The layout: packages by stage, imports flowing one way, no import circle, and a runtime
that loads nothing of TensorFlow or of training, export and benchmarks.

Imports are read from the source (module level and inside functions alike), so a circle
that only a rarely called function closes is found too.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "toolkit"
# Each stage may import the stages before it, never one after it:
# core <- runtime <- data <- train <- export <- bench, web, serve <- cli.
RANKS = {
    "runtime": 1,
    "data": 2,
    "train": 3,
    "export": 4,
    "bench": 5,
    "web": 5,
    "serve": 5,
    "firmware": 5,
    "cli": 6,
}
STAGES = ("data", "train", "export", "runtime", "bench", "web", "serve", "firmware", "cli")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in PACKAGE.rglob("*.py")}


def imports_of(path: Path, known: dict[str, Path], name: str | None = None) -> set[str]:
    """Every toolkit module that `path` (module `name`) imports, anywhere in it."""
    name = name or module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolved against this module's package
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                child = f"{base}.{alias.name}"
                found.add(child if child in known else base)
    return {m for m in found if m in known and m != name}


def import_graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports_of(path, known) for name, path in known.items()}


def stage(module: str) -> str | None:
    """The stage package a module is in; None for the core modules (toolkit/*.py)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in RANKS else None


def test_stages_are_packages() -> None:
    for name in STAGES:
        assert (PACKAGE / name / "__init__.py").is_file(), name
    # Every package is a stage with a rank: none escapes the checks below.
    packages = {p.parent.name for p in PACKAGE.glob("*/__init__.py")}
    assert packages == set(STAGES) == set(RANKS)


def test_no_import_circle_inside_toolkit() -> None:
    graph = import_graph()
    # Tarjan's strongly connected components: a component of two or more modules is a circle.
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    circles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    sys.setrecursionlimit(10_000)
    for node in sorted(graph):
        if node not in index:
            visit(node)
    assert circles == []


def test_imports_flow_one_way() -> None:
    wrong = []
    for module, imported in import_graph().items():
        if module == "toolkit.__main__":
            continue  # `python -m toolkit`: the command line
        here = stage(module)
        for other in imported:
            there = stage(other)
            if there != here and RANKS.get(there or "", 0) >= RANKS.get(here or "", 0):
                wrong.append(f"{module} imports {other}")
    assert wrong == []


def test_the_graph_sees_imports_inside_functions(tmp_path: Path) -> None:
    """The checks above would miss nothing: a function-level import is an edge too."""
    known = modules()
    graph = import_graph()
    assert (
        "toolkit.runtime.backends.onnx" in graph["toolkit.runtime.backends.numpy"]
    )  # in a function
    assert "toolkit.train.loop" in graph["toolkit.cli.train"]  # in a function
    fake = tmp_path / "x.py"
    fake.write_text("def f():\n    from toolkit.train import loop\n")
    assert imports_of(fake, known, "toolkit.x") == {"toolkit.train.loop"}


def loaded_after_import(module: str) -> list[str]:
    probe = f"import json, sys; import {module}; print(json.dumps(sorted(sys.modules)))"
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    loaded: list[str] = json.loads(proc.stdout)
    return loaded


HEAVY = ("tensorflow", "keras", "tf2onnx", "onnx", "matplotlib", "tflite_micro")


@pytest.mark.parametrize("module", ["toolkit.runtime", "toolkit.runtime.backends.keras"])
def test_the_runtime_loads_no_tensorflow_and_no_later_stage(module: str) -> None:
    loaded = loaded_after_import(module)
    assert [m for m in loaded if m.split(".")[0] in HEAVY] == []
    later = ("toolkit.data", "toolkit.train", "toolkit.export", "toolkit.bench", "toolkit.cli")
    assert [m for m in loaded if m.startswith(later)] == []


def test_the_command_line_loads_no_tensorflow() -> None:
    """Every command module is imported to build the app: none may import TensorFlow."""
    loaded = loaded_after_import("toolkit.cli")
    assert [m for m in loaded if m.split(".")[0] in HEAVY] == []
    assert not [m for m in loaded if m.startswith(("toolkit.train", "toolkit.export."))]
