"""Smoke test of the benchmark harness: schema and coverage, no speed assertions."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest

from toolkit.bench.generation import GENERATION_PAIRS
from toolkit.bench.harness import BenchConfig, run_bench
from toolkit.bench.targets import RUNTIMES
from toolkit.errors import UsageError


def test_bench_smoke(tiny_run: Path, tiny_export: Path, tmp_path: Path) -> None:
    config = BenchConfig(
        batches=[1, 4],
        threads=[1, 2],
        steps=10,
        rounds=2,
        warmup=2,
        prompt_chars=50,
        startup_runs=1,
        generation_steps=100,
        name="smoke",
    )
    report = run_bench(tiny_run, tiny_export, config, tmp_path, log=lambda _: None)
    saved = json.loads((tmp_path / "smoke.json").read_text())
    assert saved["name"] == "smoke"
    assert (tmp_path / "smoke.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = (tmp_path / "smoke.md").read_text()
    for runtime in RUNTIMES:
        assert f"| {runtime} |" in md
        rows = [r for r in report["latency"] if r["runtime"] == runtime]
        # A microcontroller model has batch 1; every other runtime runs both sizes.
        batches = {1} if "full-int8" in runtime else {1, 4}
        assert {r["batch"] for r in rows} == batches
        for r in rows:
            assert r["p50_us"] > 0 and r["p50_us"] <= r["p99_us"]
            assert r["speedup_vs_predict"] > 0 and r["speedup_vs_call"] > 0
        assert report["runtimes"][runtime]["bytes"] > 0
    # Thread counts apply to onnx, tflite and numpy (BLAS); they are measured for each count.
    assert {r["threads"] for r in report["latency"] if r["runtime"] == "onnx-fp32"} == {1, 2}
    assert {r["threads"] for r in report["latency"] if r["runtime"] == "numpy"} == {1, 2}
    assert {r["threads"] for r in report["latency"] if r["runtime"] == "keras-call"} == {None}
    assert set(report["floors"]) == {"1", "2"}
    assert all("floor_ratio" in r for r in report["latency"] if r["batch"] == 1)
    started = report["runtimes"]["onnx-fp32"]["startup"]
    assert started["wall_s"] >= started["first_char_s"] > 0
    # The child's own peak, not the forked copy of this TensorFlow-sized test process.
    assert 10 < started["peak_rss_mb"] < 400
    assert report["runtimes"]["onnx-int8"]["val_bpc"] > 0
    for runtime in RUNTIMES:  # every runtime but predict times a prompt warm-up
        ttfc = report["runtimes"][runtime]["ttfc_1000_s"]
        assert (ttfc is None) == (runtime == "keras-predict"), runtime
    # End-to-end generation beside the step alone, for every exported runtime and batch.
    generation = {(r["runtime"], r["batch"]): r for r in report["generation"]}
    assert ("onnx-fp32", 1) in generation and ("tflite-int8", 4) in generation
    assert ("tflm-full-int8", 4) not in generation and ("keras-call", 1) not in generation
    # The compiled C, from the target description alone: batch 1, its own file and start-up.
    assert ("c-full-int8", 1) in generation and ("c-full-int8", 4) not in generation
    assert report["runtimes"]["c-full-int8"]["file"] == "char_lstm.c"
    assert report["runtimes"]["c-full-int8"]["startup"]["first_char_s"] > 0
    for r in generation.values():
        assert r["step_chars_per_sec"] > 0 and r["generate_chars_per_sec"] > 0
        # The median of each pair's own generate/step (the two timed back to back).
        assert len(r["pair_ratios"]) == config.rounds * GENERATION_PAIRS
        assert r["ratio"] == pytest.approx(statistics.median(r["pair_ratios"]), abs=1e-4)
    assert "## End-to-end generation against the step alone" in md
    assert report["targets"]["generate_over_step_min"]["ratio"] > 0
    assert report["machine"]["cores"] >= 1
    assert report["targets"]["best_exported_batch1"] in RUNTIMES


def test_bench_rejects_unknown_runtime() -> None:
    with pytest.raises(UsageError, match="unknown runtime"):
        BenchConfig(runtimes=["onnx-fp32", "pytorch"]).validate()
