"""`toolkit web --engine c`: the page on the model's char_lstm.c compiled to wasm (no
onnxruntime-web). In headless Chromium its greedy text equals the native C's; a corrupted
wasm is refused by its checksum. The wasm itself against the native C, bit for bit, is the
node tests' (web/test/char_lstm_wasm.test.mjs, `npm test`)."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import without_c

from toolkit.errors import UsageError, WebError
from toolkit.files import sha256_bytes
from toolkit.runtime import load
from toolkit.web.pwa import ICONS, SW_FILE, WEB_MANIFEST
from toolkit.web.site import PAGE_FILES, REGEXPP, REGEXPP_FILE, WEB_DIR, SiteServer, build_site
from toolkit.web.wasm import wasm_sections

APP_FILES = [*ICONS, SW_FILE, WEB_MANIFEST]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, tiny_export: Path) -> Path:
    out = tmp_path_factory.mktemp("web-c") / "site"
    build_site(tiny_export, out, engine="c", log=lambda _: None)
    return out


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from toolkit.web.browser import find_chromium, launch_browser

    if find_chromium() is None:
        if os.environ.get("CI"):
            pytest.fail("CI must run the browser tests: chromium is not installed")
        pytest.skip("no Chromium on this machine (apt-get install chromium)")
    with launch_browser() as browser:
        yield browser


def test_the_site_carries_the_page_and_the_wasm_and_no_onnxruntime(site: Path) -> None:
    info = json.loads((site / "site.json").read_text())
    assert (info["engine"], info["variants"], info["default_variant"]) == (
        "c", {"int8": "char_lstm.wasm"}, "int8",
    )  # fmt: skip
    wasm = (site / "model" / "char_lstm.wasm").read_bytes()
    entry = info["files"]["char_lstm.wasm"]
    assert entry["sha256"] == sha256_bytes(wasm) and entry["bytes"] == len(wasm)
    assert wasm_sections(wasm)["code"] == entry["code_bytes"] < 16_384
    names = sorted(p.relative_to(site).as_posix() for p in site.rglob("*") if p.is_file())
    assert names == sorted([*PAGE_FILES, "char_lstm_wasm.js", "site.json", "model/char_lstm.wasm",
                            "model/manifest.json", *APP_FILES,
                            *([REGEXPP_FILE] if (WEB_DIR / REGEXPP).exists() else [])])  # fmt: skip
    assert not (site / "ort").exists()


def test_site_errors(site: Path, tiny_export: Path, tmp_path: Path) -> None:
    with pytest.raises(WebError, match="--force"):
        build_site(tiny_export, site, engine="c", log=lambda _: None)
    with pytest.raises(UsageError, match="full-int8 model only"):
        build_site(tiny_export, tmp_path / "a", engine="c", variant="fp32", log=lambda _: None)
    with pytest.raises(UsageError, match="unknown engine"):
        build_site(tiny_export, tmp_path / "b", engine="tvm", log=lambda _: None)
    with pytest.raises(WebError, match=r"has no char_lstm\.c .*--format c"):
        build_site(
            without_c(tiny_export, tmp_path / "no-c"),
            tmp_path / "c",
            engine="c",
            log=lambda _: None,
        )
    assert not (tmp_path / "c").exists()


def test_the_page_writes_the_native_c_greedy_text(
    site: Path, tiny_export: Path, browser: Any
) -> None:
    from toolkit.web.browser import generate_in_page, open_page, wait_ready

    native = load(tiny_export, runtime="c")
    with SiteServer(site) as server, open_page(server.url, browser) as page:
        info = wait_ready(page)
        assert (info["engine"], info["simd"]) == ("c", True)
        for prompt in ("ROMEO:", ""):
            want = native.generate(prompt, length=300, temperature=0).texts[0]
            assert generate_in_page(page, prompt=prompt, length=300, temperature=0) == want
            whole_loop = page.evaluate("(o) => window.toolkit.greedyInWasm(o)",
                                       {"prompt": prompt, "length": 300})  # fmt: skip
            assert whole_loop == want
        a = generate_in_page(page, prompt="ROMEO:", length=60, temperature=0.8, topK=5, seed=3)
        assert a == generate_in_page(
            page, prompt="ROMEO:", length=60, temperature=0.8, topK=5, seed=3
        )
        error = page.evaluate(
            "() => window.toolkit.generate({prompt: 'Ω?', length: 5}).then(() => '', e => e.message)"
        )
        assert "not in the model's vocabulary" in error
        # The controls: generate, then continue from the kept state.
        page.fill("#prompt", "ROMEO:")
        page.fill("#length", "100")
        page.click("#generate")
        page.wait_for_function(
            "() => document.getElementById('status').textContent.includes('ms per')"
        )
        assert len(page.text_content("#output")) == len("ROMEO:") + 100
        page.click("#continue")
        page.wait_for_function("() => document.getElementById('output').textContent.length >= 206"
                               " && !document.getElementById('generate').disabled")  # fmt: skip
        assert "WebAssembly" in page.text_content("footer")
        assert page.errors == []


def test_a_corrupted_wasm_is_refused_by_its_checksum(
    site: Path, browser: Any, tmp_path: Path
) -> None:
    from toolkit.web.browser import open_page, wait_ready

    broken = tmp_path / "site"
    shutil.copytree(site, broken)
    data = bytearray((broken / "model" / "char_lstm.wasm").read_bytes())
    data[-1] ^= 0xFF
    (broken / "model" / "char_lstm.wasm").write_bytes(bytes(data))
    with SiteServer(broken) as server, open_page(server.url, browser) as page:
        with pytest.raises(WebError, match="checksum"):
            wait_ready(page)
        assert "checksum in site.json" in page.text_content("#error")
