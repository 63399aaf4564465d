"""`toolkit web`: an exported model folder as a static site that generates text in the browser.

The site is plain files: the page and its sampler (web/src), the model folder's manifest, and
the engine site.json names. `c` (the CLI's default): the folder's char_lstm.c compiled to
WebAssembly (wasm.py) and its small loader (web/src/char_lstm_wasm.js). `onnx`: onnxruntime-web's
wasm build (web/node_modules, installed with `npm ci` from the pinned lock file) and the folder's
ONNX step graphs. Either way the site is an installable app that works offline (pwa.py: icons,
web app manifest, service worker). Any static file server can host it; `SiteServer` is one on
127.0.0.1 for trying it out and for the tests. No TensorFlow here.
"""

from __future__ import annotations

import functools
import http.server
import json
import os
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from toolkit import __version__
from toolkit.errors import ModelFileError, UsageError, WebError
from toolkit.files import sha256_bytes
from toolkit.runtime.manifest import ARTIFACT_FILES, MANIFEST_NAME, Manifest, read_verified
from toolkit.web.pwa import SW_FILE, add_app_files

# The JS project: page sources, node tests, package.json and its lock file.
WEB_DIR = Path(__file__).resolve().parents[2] / "web"
PAGE_FILES = (
    "index.html", "style.css", "app.js", "generator.js", "sampler.js", "surprisal.js", "pattern.js"
)  # fmt: skip
# The regex parser that pattern.js builds its automaton from (ESLint's regexpp, from `npm ci`):
# loaded only when a pattern is used; a site built without it says so when one is.
REGEXPP = Path("node_modules") / "@eslint-community" / "regexpp" / "index.mjs"
REGEXPP_FILE = "regexpp.mjs"
# The wasm-only build of onnxruntime-web: the 14 MB single-thread-capable SIMD wasm and its
# loader. The default `ort.min.js` would pull the 28 MB WebGPU/JSEP build instead.
ORT_FILES = ("ort.wasm.min.mjs", "ort-wasm-simd-threaded.mjs", "ort-wasm-simd-threaded.wasm")
# Page variant name -> ONNX quantization in the model folder.
SITE_VARIANTS = {"fp32": "none", "int8": "int8"}
SITE_MARKER = "site.json"
ENGINES = ("onnx", "c")
C_PAGE_FILES = ("char_lstm_wasm.js",)  # the C engine's loader, besides PAGE_FILES
WASM_FILE = "char_lstm.wasm"


@dataclass
class Site:
    out_dir: Path
    variants: dict[str, str]  # variant -> model file
    default_variant: str
    ort_version: str  # "" for the C engine
    bytes: int
    engine: str = "onnx"
    version: str = ""  # the service worker's cache version (pwa.py)


def ort_dist(
    web_dir: Path = WEB_DIR, install: bool = True, log: Callable[[str], None] = print
) -> Path:
    """onnxruntime-web's dist folder, running `npm ci` in web/ first if it is not installed."""
    dist = web_dir / "node_modules" / "onnxruntime-web" / "dist"
    if all((dist / f).exists() for f in ORT_FILES):
        return dist
    if not (web_dir / "package-lock.json").exists():
        raise WebError(
            f"{web_dir} is missing: `toolkit web` needs the repository's web/ folder "
            "(run it from a clone of char-lstm-toolkit)"
        )
    npm = shutil.which("npm")
    if not install or npm is None:
        raise WebError(
            f"onnxruntime-web is not installed; run: npm ci --prefix {web_dir} (needs Node.js and npm)"
        )
    log(f"installing onnxruntime-web into {web_dir / 'node_modules'} (npm ci) ...")
    proc = subprocess.run(
        [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
        cwd=web_dir,
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0 or not all((dist / f).exists() for f in ORT_FILES):
        said = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise WebError(f"npm ci failed in {web_dir}: {said}")
    return dist


def site_variants(manifest: Manifest, variant: str) -> dict[str, str]:
    """The page variants to include: every ONNX variant present for 'all', else the one named."""
    present = {
        name: ARTIFACT_FILES[("onnx", quant)]
        for name, quant in SITE_VARIANTS.items()
        if manifest.has("onnx", quant)
    }
    if variant == "all":
        if not present:
            raise WebError(
                "this model folder has no ONNX model; create one with: "
                "toolkit export RUN_DIR --format onnx"
            )
        return present
    if variant not in SITE_VARIANTS:
        raise UsageError(
            f"unknown variant {variant!r}; choose from all, {', '.join(SITE_VARIANTS)}"
        )
    if variant not in present:
        quant = SITE_VARIANTS[variant]
        raise WebError(
            f"this model folder has no {ARTIFACT_FILES[('onnx', quant)]}; create it with: "
            f"toolkit export RUN_DIR --format onnx --quantize {quant}"
        )
    return {variant: present[variant]}


def build_site(
    model_dir: Path,
    out_dir: Path,
    variant: str = "all",
    force: bool = False,
    web_dir: Path = WEB_DIR,
    log: Callable[[str], None] = print,
    engine: str = "onnx",
) -> Site:
    """Write the static site for `model_dir` into `out_dir` (built aside, then moved in place)."""
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    if engine not in ENGINES:
        raise UsageError(f"unknown engine {engine!r}; choose from {', '.join(ENGINES)}")
    manifest = Manifest.read(model_dir)
    if engine == "onnx":
        variants = site_variants(manifest, variant)
    elif variant not in ("all", "int8"):
        raise UsageError(
            f"the C engine runs the full-int8 model only (--variant int8), not {variant!r}"
        )
    _check_out_dir(out_dir, force)
    if engine == "c":
        return _build_c_site(model_dir, manifest, out_dir, web_dir, log)
    dist = ort_dist(web_dir, log=log)
    ort_version = json.loads((dist.parent / "package.json").read_text())["version"]

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}-", dir=out_dir.parent))
    try:
        staging.chmod(0o755)  # mkdtemp makes 0700; a site is for web servers to read
        for name in PAGE_FILES:
            shutil.copy2(web_dir / "src" / name, staging / name)
        _copy_regexpp(web_dir, staging, log)
        (staging / "ort").mkdir()
        for name in ORT_FILES:
            shutil.copy2(dist / name, staging / "ort" / name)
        (staging / "model").mkdir()
        for file in variants.values():
            data = read_verified(model_dir, manifest.artifacts[file])
            (staging / "model" / file).write_bytes(data)
        # The page reads the whole manifest; it lists only the files that the site carries.
        site_manifest = manifest.with_artifacts(
            {f: manifest.artifacts[f] for f in variants.values()}
        )
        (staging / "model" / MANIFEST_NAME).write_text(site_manifest.to_json(), encoding="utf-8")
        default = "fp32" if "fp32" in variants else next(iter(variants))
        site_info = {
            "name": manifest.name,
            "variants": variants,
            "default_variant": default,
            "onnxruntime_web": ort_version,
            "runtime_bytes": sum((staging / "ort" / name).stat().st_size for name in ORT_FILES),
            "built_by": f"char-lstm-toolkit {__version__}",
        }
        (staging / SITE_MARKER).write_text(json.dumps(site_info, indent=2) + "\n")
        version = add_app_files(staging, manifest.name, web_dir)
        total = sum(p.stat().st_size for p in staging.rglob("*") if p.is_file())
        _swap_into_place(staging, out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return Site(out_dir, variants, default, ort_version, total, version=version)


def _check_out_dir(out_dir: Path, force: bool) -> None:
    if out_dir.exists() and any(out_dir.iterdir()):
        if not (out_dir / SITE_MARKER).exists():
            raise WebError(
                f"{out_dir} exists and is not a site built by toolkit web; use another --out"
            )
        if not force:
            raise WebError(f"{out_dir} already holds a site; use --force to replace it")


def _build_c_site(
    model_dir: Path, manifest: Manifest, out_dir: Path, web_dir: Path, log: Callable[[str], None]
) -> Site:
    """The page on the C engine: char_lstm.c as wasm (checked by its sha256 in site.json)."""
    from toolkit.runtime.backends.c import SOURCE, read_c_files
    from toolkit.web.wasm import build_wasm, wasm_sections

    try:
        files = read_c_files(model_dir, manifest)
    except ModelFileError as exc:
        raise WebError(str(exc)) from None
    if not all((web_dir / "src" / name).exists() for name in (*PAGE_FILES, *C_PAGE_FILES, SW_FILE)):
        raise WebError(
            f"{web_dir / 'src'} is missing the page: `toolkit web` needs the repository's web/ "
            "folder (run it from a clone of char-lstm-toolkit)"
        )
    log(f"compiling {model_dir / SOURCE} to wasm (cached once built) ...")
    wasm = build_wasm(files).read_bytes()
    sections = wasm_sections(wasm)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}-", dir=out_dir.parent))
    try:
        staging.chmod(0o755)  # mkdtemp makes 0700; a site is for web servers to read
        for name in (*PAGE_FILES, *C_PAGE_FILES):
            shutil.copy2(web_dir / "src" / name, staging / name)
        _copy_regexpp(web_dir, staging, log)
        (staging / "model").mkdir()
        (staging / "model" / WASM_FILE).write_bytes(wasm)
        # The page reads the model's name, shape and vocabulary here; the wasm is site.json's.
        (staging / "model" / MANIFEST_NAME).write_text(
            manifest.with_artifacts({}).to_json(), encoding="utf-8"
        )
        site_info = {
            "name": manifest.name,
            "engine": "c",
            "variants": {"int8": WASM_FILE},
            "default_variant": "int8",
            "files": {
                WASM_FILE: {
                    "sha256": sha256_bytes(wasm),
                    "bytes": len(wasm),
                    "code_bytes": sections.get("code", 0),
                    "data_bytes": sections.get("data", 0),
                    "simd": True,
                    "built_from": {SOURCE: sha256_bytes(files[SOURCE])},
                }
            },
            "built_by": f"char-lstm-toolkit {__version__}",
        }
        (staging / SITE_MARKER).write_text(json.dumps(site_info, indent=2) + "\n")
        version = add_app_files(staging, manifest.name, web_dir)
        total = sum(p.stat().st_size for p in staging.rglob("*") if p.is_file())
        _swap_into_place(staging, out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return Site(out_dir, {"int8": WASM_FILE}, "int8", "", total, engine="c", version=version)


def _copy_regexpp(web_dir: Path, staging: Path, log: Callable[[str], None]) -> None:
    if (web_dir / REGEXPP).exists():
        shutil.copy2(web_dir / REGEXPP, staging / REGEXPP_FILE)
    else:
        log(f"no Pattern field on this page: run npm ci --prefix {web_dir} for the regex parser")


def _swap_into_place(staging: Path, out_dir: Path) -> None:
    """Replace out_dir by staging; the old site is removed only once the new one is in place."""
    if not out_dir.exists():
        os.replace(staging, out_dir)
        return
    old = out_dir.with_name(f".{out_dir.name}-old-{os.getpid()}")
    os.replace(out_dir, old)
    try:
        os.replace(staging, out_dir)
    except BaseException:
        os.replace(old, out_dir)
        raise
    shutil.rmtree(old, ignore_errors=True)


class _SiteHandler(http.server.SimpleHTTPRequestHandler):
    # Module scripts need a JavaScript MIME type and wasm streaming compilation needs
    # application/wasm; Python's table lacks .mjs before 3.12.
    extensions_map = {  # noqa: RUF012  (the base class declares it as a plain dict)
        **http.server.SimpleHTTPRequestHandler.extensions_map,
        ".js": "text/javascript",
        ".mjs": "text/javascript",
        ".wasm": "application/wasm",
        ".onnx": "application/octet-stream",
        ".json": "application/json",
        ".webmanifest": "application/manifest+json",
    }

    def log_message(self, format: str, *args: object) -> None:
        pass  # quiet: one line per file would drown the URL that `--serve` prints


class SiteServer:
    """A static file server for `site_dir` on 127.0.0.1 in a background thread."""

    def __init__(self, site_dir: Path, port: int = 0, host: str = "127.0.0.1") -> None:
        if not (Path(site_dir) / SITE_MARKER).exists():
            raise WebError(f"{site_dir} is not a site built by toolkit web (no {SITE_MARKER})")
        handler = functools.partial(_SiteHandler, directory=str(site_dir))
        try:
            self.httpd = http.server.ThreadingHTTPServer((host, port), handler)
        except OSError as exc:
            raise WebError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host!s}:{port}/"

    def __enter__(self) -> SiteServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)
