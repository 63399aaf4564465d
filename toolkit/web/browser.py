"""Headless Chromium driving a built site: for the browser tests and the browser benchmark.

Uses Playwright's Python package with the system's Chromium (Debian's `chromium`): Playwright's
own browser download is not needed. Development-only: `pip install -e ".[dev]"`.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from toolkit.errors import WebError

# Headless, and no calls home: on a machine without internet Chromium would otherwise keep
# trying Google's services (sync, component updates, QUIC probes) in the background.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
# Phones as the tests and benchmarks emulate them: a small Android phone (Galaxy S5-sized,
# 360 px wide: the narrowest common width) and an iPhone-sized viewport, both touch screens.
PHONES: dict[str, dict[str, Any]] = {
    "android": {
        "viewport": {"width": 360, "height": 640},
        "device_scale_factor": 3,
        "user_agent": (
            "Mozilla/5.0 (Linux; Android 13; SM-G900P) AppleWebKit/537.36 (KHTML, like Gecko) "
            "Chrome/130.0.0.0 Mobile Safari/537.36"
        ),
    },
    "iphone": {"viewport": {"width": 390, "height": 844}, "device_scale_factor": 3},
}


def find_chromium() -> str | None:
    """$TOOLKIT_CHROMIUM, else the first Chromium on PATH."""
    explicit = os.environ.get("TOOLKIT_CHROMIUM")
    if explicit:
        return explicit
    for name in CHROMIUM_NAMES:
        path = shutil.which(name)
        if path:
            return path
    return None


@contextmanager
def launch_browser() -> Iterator[Any]:
    """Headless Chromium (a Playwright Browser); one per process at a time."""
    chromium = find_chromium()
    if chromium is None:
        raise WebError("no Chromium found: apt-get install chromium (or set TOOLKIT_CHROMIUM)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        raise WebError("playwright is not installed: pip install -e '.[dev]'") from None
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS, headless=True)
        try:
            yield browser
        finally:
            browser.close()


@contextmanager
def launch_app(user_data_dir: Path, phone: str = "android") -> Iterator[Any]:
    """Headless Chromium with a profile on disk (a Playwright BrowserContext) emulating a
    phone with touch: what installing an app needs (an ordinary context is incognito, and
    Chromium calls no incognito page installable) and where service workers keep a cache."""
    chromium = find_chromium()
    if chromium is None:
        raise WebError("no Chromium found: apt-get install chromium (or set TOOLKIT_CHROMIUM)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        raise WebError("playwright is not installed: pip install -e '.[dev]'") from None
    with sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(user_data_dir),
            executable_path=chromium,
            args=CHROMIUM_ARGS,
            headless=True,
            is_mobile=True,
            has_touch=True,
            **PHONES[phone],
        )
        try:
            yield context
        finally:
            context.close()


def installability_errors(page: Any) -> list[str]:
    """Chromium's own check (DevTools' Page.getInstallabilityErrors): [] when installable."""
    cdp = page.context.new_cdp_session(page)
    try:
        found = cdp.send("Page.getInstallabilityErrors")["installabilityErrors"]
    finally:
        cdp.detach()
    return [e["errorId"] for e in found]


def wait_offline_ready(page: Any) -> list[str]:
    """Wait until the service worker controls the page and has cached the site; the cache
    names of the page's origin."""
    page.wait_for_function("() => navigator.serviceWorker.controller !== null")
    names: list[str] = page.evaluate("() => caches.keys()")
    return names


@contextmanager
def open_page(url: str, browser: Any = None, timeout_s: float = 120.0) -> Iterator[Any]:
    """A page at `url` (in `browser`, or in a browser of its own); console errors are kept
    on page.errors."""
    if browser is None:
        with launch_browser() as own, open_page(url, own, timeout_s) as page:
            yield page
        return
    page = browser.new_page(viewport={"width": 1000, "height": 760})
    try:
        page.set_default_timeout(timeout_s * 1000)
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
        page.errors = errors
        page.goto(url)
        yield page
    finally:
        page.close()


def wait_ready(page: Any) -> dict[str, Any]:
    """Wait for window.toolkit.ready; the page's own error message if loading failed."""
    page.wait_for_function("() => window.toolkit !== undefined")
    result: dict[str, Any] = page.evaluate(
        """async () => {
            try { return { ok: true, info: await window.toolkit.ready }; }
            catch (err) { return { ok: false, error: String(err && err.message || err) }; }
        }"""
    )
    if not result["ok"]:
        raise WebError(f"the page did not load its model: {result['error']}")
    info: dict[str, Any] = result["info"]
    return info


def generate_in_page(page: Any, **options: Any) -> str:
    """window.toolkit.generate(options) in the page; options use the JS names (topK, topP)."""
    text: str = page.evaluate("(options) => window.toolkit.generate(options)", options)
    return text


def logits_in_page(page: Any, text: str) -> np.ndarray:
    """window.toolkit.logits: [len(text), vocab] float32, the state carried from zeros."""
    rows = page.evaluate("(text) => window.toolkit.logits({text})", text)
    return np.asarray(rows, dtype=np.float32).reshape(len(rows), -1)
