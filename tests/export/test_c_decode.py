"""The C decoder (char_lstm_decode.c) on the host and in wasm: its text fully matches the
pattern, its integer sampler draws from the model's distribution restricted to the pattern
(chi-square against probabilities computed here from the logits), wasm writes the host's
tokens for the same options and seed, and bad patterns are one clear error."""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import COMMITTED_MODEL
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from toolkit.runtime import load
from toolkit.runtime.backends.c import CBackend
from toolkit.runtime.backends.c_decode import pattern_sources
from toolkit.runtime.pattern import PatternError, compile_choice, compile_regex

NAMES = r"\n(ROMEO|JULIET|[A-Z][a-z]{2,8}):\n"
LINE = r"\n[A-Z][^\n]{0,38}[.!?]"
CASES = [  # (pattern, temperature, top-k, seed)
    (NAMES, 0.0, 0, 0),
    (NAMES, 0.8, 0, 1),
    (LINE, 0.8, 5, 2),
    (LINE, 1.5, 0, 3),
    ("[a-z]{0,200}x", 1.0, 0, 4),
]
PROMPT = "ROMEO:"


@pytest.fixture(scope="module")
def gen():  # type: ignore[no-untyped-def]
    return load(COMMITTED_MODEL, runtime="c")


def backend(gen) -> CBackend:  # type: ignore[no-untyped-def]
    assert isinstance(gen.backend, CBackend)
    return gen.backend


def test_host_text_fully_matches_and_greedy_is_the_runtimes(gen) -> None:  # type: ignore[no-untyped-def]
    c = backend(gen)
    ids = gen.encode(PROMPT, "error")
    # Unconstrained greedy: the C decoder's text is the runtime's greedy text.
    assert (
        gen.decode(c.decode_native(ids, 80))
        == gen.generate(PROMPT, length=80, temperature=0).texts[0]
    )
    for regex, temperature, top_k, seed in CASES:
        p = compile_regex(regex, gen.chars)
        out = c.decode_native(ids, 100, temperature, top_k, seed, p)
        text = gen.decode(out)
        assert re.fullmatch(regex, text), (regex, text)
        assert c.decode_native(ids, 100, temperature, top_k, seed, p) == out  # seeded
    choice = compile_choice(["\nYes.", "\nNo.", "\nAy, my lord."], gen.chars)
    texts = {gen.decode(c.decode_native(ids, 20, 1.0, 0, s, choice)) for s in range(12)}
    assert texts <= {"\nYes.", "\nNo.", "\nAy, my lord."} and len(texts) >= 2
    # Exactly the length: a match that must use every character left.
    exact = compile_regex("[a-z]{7}", gen.chars)
    assert len(c.decode_native(ids, 7, 0.9, 0, 5, exact)) == 7


ATOMS = ["a", "e", "t", " ", r"\n", ".", "[A-Z]", "[^a-z]", "[aeiou]", "(?:)", "Q"]
regexes = st.recursive(
    st.sampled_from(ATOMS),
    lambda inner: st.one_of(
        st.lists(inner, min_size=2, max_size=3).map("".join),
        st.lists(inner, min_size=2, max_size=3).map("|".join).map(lambda s: f"(?:{s})"),
        st.tuples(inner, st.sampled_from(["?", "*", "+", "{2}", "{0,3}", "{1,4}", "{2,}"])).map(
            lambda t: f"(?:{t[0]}){t[1]}"
        ),
    ),
    max_leaves=6,
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    regex=regexes,
    length=st.integers(1, 30),
    temperature=st.sampled_from([0.0, 0.5, 0.8, 1.3]),
    top_k=st.sampled_from([0, 1, 5]),
    seed=st.integers(0, 2**64 - 1),
)
def test_random_patterns_and_options_always_give_a_full_match_in_the_length(
    gen, regex: str, length: int, temperature: float, top_k: int, seed: int
) -> None:  # type: ignore[no-untyped-def]
    try:
        p = compile_regex(regex, gen.chars)
    except PatternError:
        return
    ids = gen.encode(PROMPT, "error")
    if p.distance[0] > length:
        with pytest.raises(PatternError, match="more than the length"):
            backend(gen).decode_native(ids, length, temperature, top_k, seed, p)
        return
    text = gen.decode(backend(gen).decode_native(ids, length, temperature, top_k, seed, p))
    assert len(text) <= length and re.fullmatch(regex, text), (regex, text)


def _chi_square_ok(counts: np.ndarray, probs: np.ndarray) -> float:
    """The Wilson-Hilferty z of the chi-square statistic (cells with >= 5 expected)."""
    n = counts.sum()
    expected = probs * n
    big = expected >= 5
    assert counts[~big].sum() <= 0.01 * n + 10
    stat = float((((counts[big] - expected[big]) ** 2) / expected[big]).sum())
    k = int(big.sum()) - 1
    return ((stat / k) ** (1 / 3) - (1 - 2 / (9 * k))) / math.sqrt(2 / (9 * k))


def test_the_integer_sampler_draws_the_restricted_distribution(gen) -> None:  # type: ignore[no-untyped-def]
    c = backend(gen)
    q = c.lib.run(np.array(gen.encode("ROMEO:\nI", "error"), np.int32))["logits"][-1]
    scale, zero = c.codec.params["logits"]
    weights = c.lib.sampler_weights(0.8)
    exact = 65536 * np.exp(-np.arange(256) * scale / 0.8)
    assert np.abs(weights - exact).max() <= 1.0  # fixed point within one unit of 2^16
    real = scale * (q.astype(np.float64) - zero) / 0.8
    vocab = len(gen.chars)
    # No pattern: the model's softmax. A pattern's non-accepting state: renormalised over the
    # allowed characters. An accepting state: the whole softmax, not-allowed mass = END.
    p = compile_regex(r"[ a-z]{1,3}", gen.chars)
    allowed0 = p.allowed(0, 4)
    after = int(p.table[0, gen.chars.index("a")])  # accepting, 2 characters left
    allowed1 = p.allowed(after, 2)
    for pattern, state, allowed, accepting in [
        (None, 0, np.ones(vocab, bool), False),
        (p, 0, allowed0, False),
        (p, after, allowed1, True),
    ]:
        probs = np.exp(real - real.max())
        if not accepting:
            probs = np.where(allowed, probs, 0.0)
        probs /= probs.sum()
        want = np.append(np.where(allowed, probs, 0.0), probs[~allowed].sum())
        counts = c.lib.choose_counts(q, 20_000, 0.8, 0, 7, pattern, state, 4 if state == 0 else 2)
        assert counts[:vocab][~allowed].sum() == 0
        assert _chi_square_ok(counts, want) < 3.5
    # top-k: only the k best candidates (ties kept) ever drawn.
    counts = c.lib.choose_counts(q, 5_000, 2.0, 3, 8)
    kth = np.sort(q)[-3]
    assert set(np.flatnonzero(counts[:vocab])) == set(np.flatnonzero(q >= kth))


def test_bad_patterns_are_one_line_errors(gen, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    c = backend(gen)
    ids = gen.encode(PROMPT, "error")
    with pytest.raises(PatternError, match=r"needs at least 12 characters, more than the length 5"):
        c.decode_native(ids, 5, pattern=compile_regex("[a-z]{12}", gen.chars))
    with pytest.raises(PatternError, match="compiled for 5 characters, the model has"):
        c.decode_native(ids, 5, pattern=compile_regex("a", ["a", "b", "c", "d", "e"]))
    proc = subprocess.run(
        [sys.executable, "-m", "toolkit", "generate", "--runtime", "c", "--native-sampler",
         "--regex", "(a|b)*a(a|b){20}", "--length", "40"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.strip().splitlines() == [
        "error: pattern '(a|b)*a(a|b){20}' needs more than 10,000 states; simplify it"
    ]
    # The generated C refuses a model of another vocabulary size at compile time.
    files = pattern_sources(compile_regex("a", ["a", "b"]), 2)
    assert "CHAR_LSTM_VOCAB_SIZE == 2 ? 1 : -1" in files["char_lstm_pattern.c"].decode()


def test_cli_native_sampler(gen) -> None:  # type: ignore[no-untyped-def]
    proc = subprocess.run(
        [sys.executable, "-m", "toolkit", "generate", "--runtime", "c", "--native-sampler",
         "--prompt", PROMPT, "--regex", NAMES, "--length", "30", "--seed", "1"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout[len(PROMPT) : -1]
    assert proc.stdout.startswith(PROMPT) and re.fullmatch(NAMES, text)
    ids = gen.encode(PROMPT, "error")
    p = compile_regex(NAMES, gen.chars)
    assert text == gen.decode(backend(gen).decode_native(ids, 30, 0.8, 0, 1, p))
    bad = subprocess.run(
        [sys.executable, "-m", "toolkit", "generate", "--native-sampler", "--length", "5"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert bad.returncode == 2 and "--native-sampler needs --runtime c" in bad.stderr


NODE_SCRIPT = r"""
const fs = require("fs");
const [wasmPath, jobPath] = process.argv.slice(2);
const job = JSON.parse(fs.readFileSync(jobPath, "utf8"));
WebAssembly.instantiate(fs.readFileSync(wasmPath)).then(({instance}) => {
  const x = instance.exports;
  const results = [];
  for (const c of job.cases) {
    let withPattern = 0;
    if (c.pattern) {
      const {states, start, next, distance, accepting} = c.pattern;
      if (!x.pattern_alloc(states, start)) throw new Error("pattern_alloc");
      new Int16Array(x.memory.buffer, x.pattern_next(), next.length).set(next);
      new Int16Array(x.memory.buffer, x.pattern_distance(), states).set(distance);
      new Uint8Array(x.memory.buffer, x.pattern_accepting(), states).set(accepting);
      withPattern = 1;
    }
    const s = x.state_new();
    const buf = x.scratch();
    const words = new Int32Array(x.memory.buffer, buf, c.prompt.length + c.length);
    words.set(c.prompt);
    const out = buf + 4 * c.prompt.length;
    const n = x.decode(s, buf, c.prompt.length, out, c.length, c.temperature_milli, c.top_k,
                       c.seed >>> 0, 0, withPattern);
    results.push(Array.from(new Int32Array(x.memory.buffer, out, Math.max(n, 0))));
    x.state_free(s);
  }
  console.log(JSON.stringify(results));
});
"""


def test_wasm_decodes_the_hosts_tokens(gen, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from toolkit.runtime.backends.c import read_c_files
    from toolkit.runtime.manifest import Manifest
    from toolkit.web.wasm import build_wasm

    node = shutil.which("node")
    if node is None:
        pytest.skip("no node on this machine")
    wasm = build_wasm(read_c_files(COMMITTED_MODEL, Manifest.read(COMMITTED_MODEL)))
    c = backend(gen)
    ids = gen.encode(PROMPT, "error")
    cases, want = [], []
    for regex, temperature, top_k, seed in [*CASES, (None, 0.8, 0, 9)]:
        p = compile_regex(regex, gen.chars) if regex else None
        case = {"prompt": ids, "length": 100, "temperature_milli": round(temperature * 1000),
                "top_k": top_k, "seed": seed, "pattern": None}  # fmt: skip
        if p is not None:
            case["pattern"] = {
                "states": p.states, "start": p.start, "next": p.table.reshape(-1).tolist(),
                "distance": p.distance.tolist(), "accepting": p.accepting.astype(int).tolist(),
            }  # fmt: skip
        cases.append(case)
        want.append(c.decode_native(ids, 100, temperature, top_k, seed, p))
    (tmp_path / "job.json").write_text(json.dumps({"cases": cases}))
    (tmp_path / "run.cjs").write_text(NODE_SCRIPT)
    proc = subprocess.run(
        [node, str(tmp_path / "run.cjs"), str(wasm), str(tmp_path / "job.json")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout)
    assert got == want
    for (regex, *_), tokens in zip(CASES, got, strict=False):
        assert re.fullmatch(regex, gen.decode(tokens))


@pytest.mark.parametrize(
    "cc,flags",
    [
        ("gcc", ["-O2", "-pedantic"]),
        ("clang", ["-O2", "-pedantic"]),
        ("arm-none-eabi-gcc", ["-O2", "-mcpu=cortex-m4", "-mthumb", "-mfloat-abi=soft"]),
        ("arm-none-eabi-gcc", ["-O2", "-mcpu=cortex-m0", "-mthumb", "-mfloat-abi=soft"]),
        ("clang", ["-O2", "--target=wasm32", "-msimd128", "-ffreestanding", "-nostdlib"]),
    ],
)
def test_the_decoder_and_a_pattern_compile_cleanly_without_floats(
    gen, tmp_path: Path, cc: str, flags: list[str]
) -> None:  # type: ignore[no-untyped-def]
    from toolkit.runtime.backends.c import HEADER, read_c_files
    from toolkit.runtime.backends.c_decode import decoder_sources
    from toolkit.runtime.manifest import Manifest

    if shutil.which(cc) is None:
        pytest.skip(f"no {cc}")
    files = {
        HEADER: read_c_files(COMMITTED_MODEL, Manifest.read(COMMITTED_MODEL))[HEADER],
        **decoder_sources(),
        **pattern_sources(compile_regex(NAMES, gen.chars), len(gen.chars)),
    }
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    code = re.sub(r"/\*.*?\*/", "", files["char_lstm_decode.c"].decode(), flags=re.S)
    assert not re.search(r"\b(float|double)\b", code) and "malloc" not in code
    for source in ("char_lstm_decode.c", "char_lstm_pattern.c"):
        obj = source.replace(".c", ".o")
        cmd = [cc, "-std=c99", "-Wall", "-Wextra", "-Werror", *flags, "-c", source, "-o", obj]
        proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
        if cc.startswith("arm"):  # integer code: libgcc's 64-bit helpers, no soft-float
            nm = subprocess.run(["arm-none-eabi-nm", "-u", obj], cwd=tmp_path,
                                capture_output=True, text=True, check=True)  # fmt: skip
            assert set(nm.stdout.split()) - {"U"} <= {
                "memset",
                "__aeabi_lmul",
                "__aeabi_uldivmod",
                "__aeabi_ldivmod",
                "char_lstm_step",
            }, nm.stdout
