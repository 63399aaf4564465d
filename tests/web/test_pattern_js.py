"""The page's pattern automaton (web/src/pattern.js) and the Python one
(toolkit/runtime/pattern.py) accept the same texts: the same table drives every surface."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from toolkit.runtime import load
from toolkit.runtime.pattern import compile_regex

REPO = Path(__file__).resolve().parents[2]
WEB = REPO / "web"
PATTERNS = [
    # The page's own examples and the README's.
    r"R[^\n]{3,40}\nO[^\n]{3,40}\nM[^\n]{3,40}\nE[^\n]{3,40}\nO[^\n]{3,40}\n",
    r"([A-Z][a-z]{2,9}\n){3}",
    r"[^\n]{0,40}\n",
    r"(ROMEO|JULIET|[A-Z][a-z]{2,8}):\n[A-Z][^\n]{5,40}[.!?]\n",
    r"(a|bc)*d?[x-z]{2,3}",
    r".{0,5}(the|and)+",
]


def equivalent(a: tuple, b: tuple) -> bool:
    """Two automata (table [states, vocab] with -1 dead, accepting, start 0) accept the same
    language: every pair of states reachable together agrees on acceptance."""
    table_a, accept_a = a
    table_b, accept_b = b
    seen, todo = {(0, 0)}, [(0, 0)]
    while todo:
        x, y = todo.pop()
        ok_x = x >= 0 and accept_a[x]
        ok_y = y >= 0 and accept_b[y]
        if ok_x != ok_y:
            return False
        for c in range(table_a.shape[1]):
            pair = (table_a[x, c] if x >= 0 else -1, table_b[y, c] if y >= 0 else -1)
            if pair != (-1, -1) and pair not in seen:
                seen.add(pair)
                todo.append(pair)
    return True


def test_the_page_and_python_build_the_same_language() -> None:
    node = shutil.which("node")
    if node is None or not (WEB / "node_modules" / "@eslint-community" / "regexpp").exists():
        pytest.fail("needs node and `npm ci` in web/ (make test runs it first)")
    chars = list(load(REPO / "exported" / "shakespeare").chars)
    arg = json.dumps({"chars": chars, "patterns": PATTERNS})
    proc = subprocess.run(
        [node, "tools/pattern_dump.mjs", arg], cwd=WEB, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    for source, page in zip(PATTERNS, json.loads(proc.stdout), strict=True):
        ours = compile_regex(source, chars)
        theirs = np.array(page["table"]).reshape(-1, len(chars))
        assert equivalent((ours.table, ours.accepting), (theirs, page["accepting"])), source
        assert page["distance"][0] == ours.distance[ours.start], source
