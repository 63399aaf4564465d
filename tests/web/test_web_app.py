"""`toolkit web` (the C engine, the default) as a phone uses it: installable by Chromium's own
check, offline after one visit, a new model replacing the cache, a layout that fits 360 px with
touch targets of 44 px, the text kept across a reload, and a surprisal view whose figures are
the Python runtime's log-softmax of the same int8 C logits. One Chromium with a profile on disk
(installing needs one: an ordinary context is incognito) for the whole module.

TOOLKIT_SCREENSHOTS=docs writes the README's phone screenshots (light, dark, surprisal view).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from toolkit.runtime import load
from toolkit.web.pwa import ICONS, SW_FILE, WEB_MANIFEST
from toolkit.web.site import SiteServer, build_site

MODEL = Path(__file__).resolve().parents[2] / "exported" / "shakespeare"
BITS_TOLERANCE = 1e-3  # the bar; measured ~1e-6 (float32 logits, float64 log-softmax)
SCORED = "JULIET:\nO Romeo, Romeo! wherefore art thou Romeo?\nDeny thy father and refuse thy name."
# Measured on the page: what must fit a phone and what a thumb must hit.
LAYOUT = """() => {
  const width = innerWidth, out = [];
  for (const el of document.querySelectorAll("body *")) {
    const r = el.getBoundingClientRect();
    if (r.width && (r.right > width + 0.5 || r.left < -0.5)) out.push("wide: " + (el.id || el.tagName));
  }
  const targets = "button, select, textarea, input:not([type=checkbox]), label:has(input[type=checkbox])";
  for (const el of document.querySelectorAll(targets)) {
    const r = el.getBoundingClientRect();
    if (r.width && (r.width < 44 || r.height < 44)) out.push(`small: ${el.id || el.tagName} ${r.width}x${r.height}`);
    if (el.scrollWidth > el.clientWidth + 1) out.push("clipped: " + (el.id || el.tagName));
  }
  for (const el of document.querySelectorAll("input, textarea, select")) {
    if (parseFloat(getComputedStyle(el).fontSize) < 16) out.push("zooms on focus: " + el.id);
  }
  for (const el of document.querySelectorAll("p, label, pre, button, h1, h2, footer")) {
    if (el.offsetParent && parseFloat(getComputedStyle(el).fontSize) < 14) out.push("tiny text: " + (el.id || el.tagName));
  }
  if (document.documentElement.scrollWidth > width) out.push("scrolls sideways");
  return out;
}"""


def _need_chromium() -> None:
    from toolkit.web.browser import find_chromium

    if find_chromium() is None:
        if os.environ.get("CI"):
            pytest.fail("CI must run the browser tests: chromium is not installed")
        pytest.skip("no Chromium on this machine (apt-get install chromium)")


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("web-app") / "site"
    build_site(MODEL, out, engine="c", log=lambda _: None)
    return out


@pytest.fixture(scope="module")
def server(site: Path) -> Iterator[SiteServer]:
    with SiteServer(site) as srv:
        yield srv


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    _need_chromium()
    from toolkit.web.browser import launch_app

    with launch_app(tmp_path_factory.mktemp("chromium-profile")) as context:
        context.grant_permissions(["clipboard-read", "clipboard-write"])
        yield context


def open_app(app: Any, url: str, viewport: dict[str, int] | None = None) -> Any:
    from toolkit.web.browser import wait_ready

    page = app.new_page()
    page.set_default_timeout(60_000)
    page.errors = []
    page.on("pageerror", lambda exc: page.errors.append(str(exc)))
    page.on("console", lambda msg: page.errors.append(msg.text) if msg.type == "error" else None)
    if viewport:
        page.set_viewport_size(viewport)
    page.goto(url)
    page.info = wait_ready(page)
    return page


def generate_by_touch(page: Any, length: int, temperature: str = "0") -> str:
    page.fill("#length", str(length))
    page.fill("#temperature", temperature)
    page.tap("#generate")
    page.wait_for_function("() => document.getElementById('status').textContent.includes('ms per')")
    text: str = page.text_content("#output")
    return text


def cli_greedy(prompt: str, length: int) -> str:
    """What `toolkit generate --runtime c --temperature 0` writes."""
    proc = subprocess.run(
        [sys.executable, "-m", "toolkit", "generate", str(MODEL), "--runtime", "c",
         "--temperature", "0", "--prompt", prompt, "--length", str(length), "--json"],
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    text: str = json.loads(proc.stdout)["texts"][0]
    return text


def test_the_site_is_an_app(site: Path) -> None:
    manifest = json.loads((site / WEB_MANIFEST).read_text())
    assert (manifest["display"], manifest["start_url"]) == ("standalone", "./")
    sizes = {(i["sizes"], i["purpose"]) for i in manifest["icons"]}
    assert sizes == {("192x192", "any"), ("512x512", "any"), ("512x512", "maskable")}
    for icon in manifest["icons"]:
        data = (site / icon["src"]).read_bytes()
        size = int(icon["sizes"].split("x")[0])
        assert data[:8] == b"\x89PNG\r\n\x1a\n"
        assert int.from_bytes(data[16:20], "big") == int.from_bytes(data[20:24], "big") == size
    worker = (site / SW_FILE).read_text()
    cached = json.loads(worker.split("const FILES = ", 1)[1].split(";\n", 1)[0])
    assert {"./", "index.html", "app.js", "model/char_lstm.wasm", "model/manifest.json"} <= set(
        cached
    )
    assert set(ICONS) <= set(cached) and SW_FILE not in cached
    assert all((site / f).is_file() for f in cached if f != "./")


def test_installable_then_offline_on_a_phone(server: SiteServer, app: Any) -> None:
    from toolkit.web.browser import installability_errors, wait_offline_ready, wait_ready

    page = open_app(app, server.url)
    assert page.info["engine"] == "c"
    assert installability_errors(page) == []
    assert len(wait_offline_ready(page)) == 1
    want = cli_greedy("ROMEO:", 300)
    app.set_offline(True)
    try:
        page.reload()
        assert wait_ready(page)["controlled"]
        assert "char_lstm.wasm 1.2 MB" in page.text_content("#model-info")
        page.fill("#prompt", "ROMEO:")
        assert generate_by_touch(page, 300) == "ROMEO:" + want
        assert (
            page.evaluate(
                "() => window.toolkit.generate({prompt: 'ROMEO:', length: 300, temperature: 0})"
            )
            == want
        )
    finally:
        app.set_offline(False)
    assert page.errors == []
    page.close()


@pytest.mark.parametrize("phone", ["android", "iphone"])
def test_the_layout_fits_a_phone(server: SiteServer, app: Any, phone: str, tmp_path: Path) -> None:
    from toolkit.web.browser import PHONES

    viewport = PHONES[phone]["viewport"]
    page = open_app(app, server.url, viewport)
    page.fill("#prompt", "ROMEO:")
    generate_by_touch(page, 400, "0.8")
    assert page.evaluate(LAYOUT) == []
    # The surprisal view, and a character tapped: what the model expected there.
    page.tap("#shade")
    page.tap("#output span[data-i='12']")
    assert "The model expected" in page.text_content("#expected")
    assert page.evaluate(LAYOUT) == []
    shots = os.environ.get("TOOLKIT_SCREENSHOTS")
    if phone == "android" and shots:
        _screenshots(page, Path(shots))
    # Dark from the system setting: other colours, the same layout.
    light = page.evaluate("() => getComputedStyle(document.body).backgroundColor")
    page.emulate_media(color_scheme="dark")
    assert page.evaluate("() => getComputedStyle(document.body).backgroundColor") != light
    assert page.evaluate(LAYOUT) == []
    # An open keyboard leaves ~300 px: Generate stays on screen while the prompt is edited.
    page.set_viewport_size({"width": viewport["width"], "height": 300})
    page.tap("#prompt")
    box = page.locator("#generate").bounding_box()
    assert box is not None and box["y"] >= 0 and box["y"] + box["height"] <= 300
    assert page.errors == []
    page.close()


def _screenshots(page: Any, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    page.tap("#shade")  # off: the plain text first
    page.evaluate("() => scrollTo(0, 0)")
    page.screenshot(path=str(folder / "web-light.png"))
    page.emulate_media(color_scheme="dark")
    page.screenshot(path=str(folder / "web-dark.png"))
    page.emulate_media(color_scheme="light")
    page.tap("#shade")
    # The most surprising of the last characters tapped, its explanation on screen too.
    pick = page.evaluate("""() => {
      const shade = (el) => parseFloat(el.style.getPropertyValue("--a")) || 0;
      const last = Array.from(document.querySelectorAll("#output span[data-i]")).slice(-150);
      return last.reduce((a, b) => (shade(b) > shade(a) ? b : a)).dataset.i;
    }""")
    page.locator(f"#output span[data-i='{pick}']").tap()
    page.evaluate("() => document.getElementById('expected').scrollIntoView({block: 'end'})")
    page.screenshot(path=str(folder / "web-surprisal.png"))


def test_text_kept_across_a_reload_stop_and_copy(server: SiteServer, app: Any) -> None:
    from toolkit.web.browser import wait_ready

    page = open_app(app, server.url)
    page.fill("#prompt", "JULIET:")
    page.fill("#top-k", "3")
    first = generate_by_touch(page, 120)
    assert first.startswith("JULIET:") and len(first) == len("JULIET:") + 120
    page.reload()
    wait_ready(page)
    assert page.text_content("#output") == first
    assert page.input_value("#top-k") == "3"
    page.tap("#continue")
    page.wait_for_function(
        f"() => document.getElementById('output').textContent.length >= {len(first) + 120}"
        " && !document.getElementById('generate').disabled"
    )
    # Continue went on from the state rebuilt after the reload: what one unbroken run writes.
    text = page.text_content("#output")
    greedy = load(MODEL, runtime="c").generate("JULIET:", length=240, temperature=0).texts[0]
    assert text == "JULIET:" + greedy
    page.tap("#share")
    assert page.evaluate("() => navigator.clipboard.readText()") == text
    # Stop at any time: a long run ends early, keeping what was written.
    page.fill("#length", "100000")
    page.tap("#generate")
    page.wait_for_function("() => document.getElementById('output').textContent.length > 50")
    page.tap("#stop-button")
    page.wait_for_function(
        "() => document.getElementById('status').textContent.includes('stopped')"
    )
    assert len(page.text_content("#output")) < 100000
    assert page.errors == []
    page.close()


def runtime_surprisal(text: str) -> tuple[np.ndarray, list[list[str]]]:
    """Bits of each character after the first, and the top-5 characters before it, from the
    Python runtime's int8 C engine: log-softmax of the dequantized logits."""
    native = load(MODEL, runtime="c")
    session = native.session()
    h, c = session.h, session.c
    bits, top = [], []
    logits = None
    for token in native.encode(text):
        if logits is not None:
            z = logits[0].astype(np.float64)
            log2p = (z - z.max() - np.log(np.exp(z - z.max()).sum())) / np.log(2)
            bits.append(-log2p[token])
            order = np.lexsort((np.arange(len(z)), -log2p))[:5]  # ties: lower index first
            top.append([native.decode([int(i)]) for i in order])
        logits, h, c = native.backend.step(np.array([token], np.int32), h, c)
    return np.array(bits), top


def test_surprisal_equals_the_runtime_log_softmax(server: SiteServer, app: Any) -> None:
    page = open_app(app, server.url)
    page.fill("#score-text", SCORED)
    page.tap("#score-button")
    page.wait_for_function("() => document.getElementById('score-bits').textContent !== ''")
    got = page.evaluate("(text) => window.toolkit.score({text})", SCORED)
    want, want_top = runtime_surprisal(SCORED)
    assert got["bits"][0] is None
    bits = np.array(got["bits"][1:], dtype=np.float64)
    assert bits.shape == want.shape
    assert np.abs(bits - want).max() < BITS_TOLERANCE
    assert abs(got["bitsPerChar"] - want.mean()) < BITS_TOLERANCE
    shown = float(page.text_content("#score-bits").split(" bits per character")[0])
    assert abs(shown - want.mean()) < BITS_TOLERANCE
    assert [[ch for ch, _ in row] for row in got["top"][1:]] == want_top
    # The output's view scores what the model read with the same record: prompt + greedy.
    page.fill("#prompt", "ROMEO:")
    text = generate_by_touch(page, 200)
    want, _ = runtime_surprisal(text)
    shown = float(page.text_content("#bits").split(" bits per character")[0])
    assert abs(shown - want.mean()) < BITS_TOLERANCE
    assert page.errors == []
    page.close()


def test_a_pattern_shapes_the_text(server: SiteServer, app: Any) -> None:
    page = open_app(app, server.url)
    # The acrostic example, sampled, through the page's controls.
    page.select_option("#pattern-example", index=1)
    source = page.input_value("#pattern")
    assert source.startswith("R[^\\n]")
    page.fill("#prompt", "ROMEO:")
    text = generate_by_touch(page, 300, "0.8")[len("ROMEO:") :]
    assert re.fullmatch(source, text), text
    # Greedy through the API: a full match, complete within the length.
    for pattern, length in [("[^\\n]{1,40}", 60), ("([A-Z][a-z]{2,9}\\n){5}", 60)]:
        text = page.evaluate(
            "(o) => window.toolkit.generate(o)",
            {"prompt": "ROMEO:", "length": length, "temperature": 0, "pattern": pattern},
        )
        assert re.fullmatch(pattern, text) and len(text) <= length, (pattern, text)
    page.fill("#pattern", "(a)\\1")
    page.tap("#generate")
    page.wait_for_selector("#error", state="visible")
    assert (
        page.text_content("#error")
        == "Pattern: \\1: back-references are not supported in a pattern"
    )
    page.fill("#pattern", "")
    assert page.errors == []
    page.close()


def test_a_new_model_replaces_the_cache(site: Path, app: Any, tmp_path: Path) -> None:
    from toolkit.web.browser import wait_offline_ready, wait_ready

    own = tmp_path / "site"
    shutil.copytree(site, own)
    renamed = tmp_path / "model"
    shutil.copytree(MODEL, renamed)
    manifest = json.loads((renamed / "manifest.json").read_text())
    manifest["name"] = "shakespeare-retrained"
    (renamed / "manifest.json").write_text(json.dumps(manifest))
    with SiteServer(own) as server:
        page = open_app(app, server.url)
        [old] = wait_offline_ready(page)
        new = build_site(renamed, own, engine="c", force=True, log=lambda _: None)
        assert new.version not in old
        page.reload()
        page.wait_for_selector("#update", state="visible")
        assert "Updated" in page.text_content("#update")
        assert page.evaluate("() => caches.keys()") == [f"char-lstm-toolkit-{new.version}"]
        page.tap("#reload")
        wait_ready(page)
        assert "shakespeare-retrained" in page.text_content("#model-info")
        page.reload()  # said once
        wait_ready(page)
        assert page.is_hidden("#update")
        assert page.errors == []
        page.close()
