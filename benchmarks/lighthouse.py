"""Lighthouse's audit of the app `toolkit web` builds, and its speed on a phone-like CPU.

    python benchmarks/lighthouse.py                  # the committed model
    python benchmarks/lighthouse.py exported/NAME --runs 3 --rounds 5

1. Lighthouse (web/package.json pins it; `npm ci` in web/) with its mobile defaults (a
   mid-range phone: simulated slow 4G, 4x CPU slowdown) against the C engine's site on
   127.0.0.1, `--runs` times; the run with the median Performance score is kept.
2. Milliseconds per character, generating in the page, of the C engine (int8 wasm) and of
   onnxruntime-web (fp32), interleaved rounds in one Chromium, at full speed and with the CPU
   throttled 4x (DevTools' Emulation.setCPUThrottlingRate).
3. The installed app opened offline: after one visit (the service worker has cached the site),
   the network is cut and the page opened again; the time from opening it until the first
   character is written (the model loaded, the prompt read, one character sampled).

Writes benchmarks/reports/lighthouse.{json,md} and lighthouse-lhr.json (Lighthouse's own
report of the kept run, screenshots dropped).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from toolkit.files import atomic_write_text
from toolkit.web.browser import (
    find_chromium,
    launch_app,
    launch_browser,
    wait_offline_ready,
    wait_ready,
)
from toolkit.web.site import WEB_DIR, SiteServer, build_site

REPO = Path(__file__).resolve().parents[1]
LIGHTHOUSE = WEB_DIR / "node_modules" / "lighthouse" / "cli" / "index.js"
CHROME_FLAGS = (
    "--headless=new --no-sandbox --disable-gpu --disable-background-networking "
    "--disable-component-update"
)
CATEGORIES = ("performance", "accessibility", "best-practices", "seo")
METRICS = (
    "first-contentful-paint",
    "largest-contentful-paint",
    "total-blocking-time",
    "cumulative-layout-shift",
    "speed-index",
    "interactive",
)
# Why an audit can stay below full marks on this site (the report says which ones did).
WHY = {
    "first-contentful-paint": "the simulated phone's slow 4G (150 ms round trips, 1.6 Mbit/s) "
    "needs the page and its stylesheet, two round trips, before the first paint",
    "largest-contentful-paint": "as first-contentful-paint: the largest text is in the first paint",
    "speed-index": "follows first-contentful-paint: the page is all there at the first paint",
}
# Screenshots are most of a report's bytes and none of its findings.
DROPPED_AUDITS = ("screenshot-thumbnails", "final-screenshot", "full-page-screenshot")
GENERATE = """async (o) => {
  const t0 = performance.now();
  await window.toolkit.generate(o);
  return performance.now() - t0;
}"""


def run_lighthouse(url: str, out: Path, chromium: str) -> dict[str, Any]:
    if not LIGHTHOUSE.exists():
        sys.exit(f"error: Lighthouse is not installed: npm ci --prefix {WEB_DIR}")
    cmd = ["node", str(LIGHTHOUSE), url, "--output=json", f"--output-path={out}", "--quiet",
           f"--chrome-flags={CHROME_FLAGS}"]  # fmt: skip
    subprocess.run(cmd, check=True, env={**os.environ, "CHROME_PATH": chromium}, timeout=300)
    lhr: dict[str, Any] = json.loads(out.read_text())
    return lhr


def scores(lhr: dict[str, Any]) -> dict[str, int]:
    return {c: round(lhr["categories"][c]["score"] * 100) for c in CATEGORIES}


def below_full_marks(lhr: dict[str, Any]) -> list[dict[str, Any]]:
    """Every scored audit (weight > 0) under 1 in the categories above."""
    found = []
    for category in CATEGORIES:
        for ref in lhr["categories"][category]["auditRefs"]:
            audit = lhr["audits"][ref["id"]]
            if ref["weight"] > 0 and audit["score"] is not None and audit["score"] < 1:
                found.append({"category": category, "id": ref["id"], "score": audit["score"],
                              "value": audit.get("displayValue", ""), "title": audit["title"]})  # fmt: skip
    return found


def throttle(page: Any, rate: float) -> None:
    cdp = page.context.new_cdp_session(page)
    cdp.send("Emulation.setCPUThrottlingRate", {"rate": rate})
    page.throttle_session = cdp  # the setting lasts as long as the session


def ms_per_char(urls: dict[str, str], length: int, rounds: int) -> dict[str, dict[str, Any]]:
    """Median ms per generated character of each site's engine, by CPU slowdown."""
    options = {"prompt": "ROMEO:", "length": length, "temperature": 0.8, "seed": 1}
    result: dict[str, dict[str, Any]] = {}
    with launch_browser() as browser:
        pages = {}
        for engine, url in urls.items():
            page = browser.new_page()
            page.set_default_timeout(600_000)
            page.goto(url)
            wait_ready(page)
            page.evaluate(GENERATE, {**options, "length": 50})  # warm-up (JIT, caches)
            pages[engine] = page
        for rate in (1, 4):
            times: dict[str, list[float]] = {engine: [] for engine in pages}
            for page in pages.values():
                throttle(page, rate)
            for r in range(rounds):
                for engine, page in pages.items():
                    ms = page.evaluate(GENERATE, {**options, "seed": r + 1})
                    times[engine].append(ms / length)
                print(f"{rate}x CPU: round {r + 1}/{rounds}", file=sys.stderr)
            for engine, ms in times.items():
                result.setdefault(engine, {})[f"{rate}x"] = {
                    "ms_per_char": statistics.median(ms), "rounds": ms,
                }  # fmt: skip
        result["user_agent"] = {"value": pages["c"].evaluate("() => navigator.userAgent")}
    return result


def offline_first_char(url: str, profile: Path, opens: int) -> dict[str, Any]:
    """Open the installed app with the network off: ms until it is ready and until its
    first character (model loaded and checked, prompt read, one character sampled)."""
    first = {"prompt": "ROMEO:", "length": 1, "temperature": 0}
    result: dict[str, Any] = {}
    with launch_app(profile) as app:
        page = app.new_page()
        page.goto(url)
        wait_ready(page)
        wait_offline_ready(page)
        page.close()
        app.set_offline(True)
        for rate in (1, 4):
            ready, first_char = [], []
            for _ in range(opens):
                page = app.new_page()
                throttle(page, rate)
                page.goto(url)
                info = wait_ready(page)
                assert info["controlled"], "the page was not served by the service worker"
                ready.append(info["readyMs"])
                first_char.append(info["readyMs"] + page.evaluate(GENERATE, first))
                page.close()
            result[f"{rate}x"] = {
                "ready_ms": statistics.median(ready),
                "first_char_ms": statistics.median(first_char),
                "first_char_rounds_ms": first_char,
            }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_dir", type=Path, nargs="?", default=REPO / "exported/shakespeare")
    parser.add_argument("--runs", type=int, default=3, help="Lighthouse runs")
    parser.add_argument("--rounds", type=int, default=5, help="timed generations per engine")
    parser.add_argument("--length", type=int, default=300, help="characters per generation")
    parser.add_argument("--opens", type=int, default=5, help="offline openings timed")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks/reports/lighthouse")
    args = parser.parse_args()
    chromium = find_chromium()
    if chromium is None:
        sys.exit("error: no Chromium found (apt-get install chromium)")
    load_before = os.getloadavg()[0]

    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        c_site = build_site(args.model_dir, tmp / "c", engine="c", log=lambda _: None)
        onnx_site = build_site(args.model_dir, tmp / "onnx", variant="fp32", log=lambda _: None)
        with SiteServer(c_site.out_dir) as c_server, SiteServer(onnx_site.out_dir) as onnx_server:
            runs = []
            for i in range(args.runs):
                runs.append(run_lighthouse(c_server.url, tmp / f"lhr-{i}.json", chromium))
                print(f"lighthouse run {i + 1}/{args.runs}: {scores(runs[-1])}", file=sys.stderr)
            speed = ms_per_char(
                {"c": c_server.url, "onnx": onnx_server.url}, args.length, args.rounds
            )
            offline = offline_first_char(c_server.url, tmp / "profile", args.opens)

    runs.sort(key=lambda lhr: lhr["categories"]["performance"]["score"])
    kept = runs[len(runs) // 2]
    user_agent = speed.pop("user_agent")["value"]
    report: dict[str, Any] = {
        "command": " ".join(["python benchmarks/lighthouse.py", *sys.argv[1:]]),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "model_dir": str(args.model_dir),
        "sites": {
            "c": {"bytes": c_site.bytes, "engine": "char_lstm.c as wasm, int8"},
            "onnx": {
                "bytes": onnx_site.bytes,
                "engine": f"onnxruntime-web {onnx_site.ort_version}, fp32",
            },
        },
        "lighthouse": {
            "version": kept["lighthouseVersion"],
            "form_factor": kept["configSettings"]["formFactor"],
            "throttling_method": kept["configSettings"]["throttlingMethod"],
            "throttling": kept["configSettings"]["throttling"],
            "runs": [scores(lhr) for lhr in runs],
            "kept": scores(kept),
            "metrics": {m: kept["audits"][m]["displayValue"] for m in METRICS},
            "below_full_marks": below_full_marks(kept),
        },
        "ms_per_char": speed,
        "offline_open": offline,
        "length": args.length,
        "rounds": args.rounds,
        "browser": user_agent,
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(),
            # Other work on the machine slows both engines alike; the ratio is the figure.
            "load_average_1min": [load_before, os.getloadavg()[0]],
        },
    }
    for audit in DROPPED_AUDITS:
        kept["audits"].pop(audit, None)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out.with_name(args.out.name + "-lhr.json"), json.dumps(kept) + "\n")
    atomic_write_text(args.out.with_suffix(".json"), json.dumps(report, indent=2) + "\n")
    atomic_write_text(args.out.with_suffix(".md"), markdown(report))
    print(markdown(report))


def markdown(report: dict[str, Any]) -> str:
    lh = report["lighthouse"]
    chrome = report["browser"].split("Chrome/")[-1].split()[0]
    runs = ", ".join("/".join(str(r[c]) for c in CATEGORIES) for r in lh["runs"])
    lines = [
        "# The page as a phone app: Lighthouse, speed, offline start",
        "",
        f"`{report['command']}` on {report['date'][:10]}, headless Chromium {chrome}, "
        f"{report['machine']['cores']} cores ({report['machine']['cpu']}), load average "
        + " → ".join(f"{x:.1f}" for x in report["machine"]["load_average_1min"])
        + " (start → end: other work on the machine slows every figure).",
        "",
        f"## Lighthouse {lh['version']} ({lh['form_factor']}, {lh['throttling_method']} "
        "throttling: its default phone)",
        "",
        f"The C engine's site ({report['sites']['c']['bytes'] / 1e6:.1f} MB) on 127.0.0.1; "
        f"the run with the median Performance of {len(lh['runs'])} is kept "
        "([its report](lighthouse-lhr.json)). Targets: Performance ≥ 95, Accessibility 100, "
        "Best Practices 100.",
        "",
        "| Performance | Accessibility | Best Practices | SEO |",
        "|---:|---:|---:|---:|",
        "| " + " | ".join(str(lh["kept"][c]) for c in CATEGORIES) + " |",
        "",
        f"All runs (Performance/Accessibility/Best Practices/SEO): {runs}.",
        "",
        "| metric | value |",
        "|---|---:|",
        *(f"| {m} | {v} |" for m, v in lh["metrics"].items()),
        "",
    ]
    below = lh["below_full_marks"]
    if below:
        lines += ["Scored audits below full marks:", "",
                  "| category | audit | score | value | why |", "|---|---|---:|---|---|"]  # fmt: skip
        lines += [f"| {b['category']} | {b['title']} | {b['score']:.2f} | {b['value']} "
                  f"| {WHY.get(b['id'], '')} |" for b in below]  # fmt: skip
    else:
        lines.append("No scored audit is below full marks.")
    speed = report["ms_per_char"]
    lines += [
        "",
        "## Milliseconds per character in the page",
        "",
        f"Median of {report['rounds']} interleaved generations of {report['length']} characters "
        "(temperature 0.8) per engine, in one Chromium; 4x: the CPU throttled 4 times "
        "(`Emulation.setCPUThrottlingRate`), about a mid-range phone.",
        "",
        "| engine | site | ms/char, full speed | ms/char, 4x CPU throttle |",
        "|---|---:|---:|---:|",
    ]
    for engine in ("c", "onnx"):
        s = speed[engine]
        lines.append(
            f"| {report['sites'][engine]['engine']} | {report['sites'][engine]['bytes'] / 1e6:.1f} MB "
            f"| {s['1x']['ms_per_char']:.3f} | {s['4x']['ms_per_char']:.3f} |"
        )
    ratio = speed["onnx"]["4x"]["ms_per_char"] / speed["c"]["4x"]["ms_per_char"]
    off = report["offline_open"]
    lines += [
        "",
        f"At 4x throttling onnxruntime-web fp32 takes {ratio:.1f}× the C engine's time per "
        "character.",
        "",
        "## Opening the installed app offline",
        "",
        "After one visit the network is cut and the app opened again, each time in a new tab; "
        "median time from opening it until it is ready (model loaded and checked) and until its "
        "first character (prompt read, one character sampled). Target: first character "
        "within 1.5 s.",
        "",
        "| CPU | ready | first character |",
        "|---|---:|---:|",
        *(
            f"| {rate} | {v['ready_ms']:.0f} ms | {v['first_char_ms']:.0f} ms |"
            for rate, v in off.items()
        ),
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
