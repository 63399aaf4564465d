"""What makes a built site an installable app that works offline: icons drawn here with
Pillow, a web app manifest, and the service worker (web/src/sw.js) with the site's file list
and version written in.

    add_app_files(site_dir, name, web_dir) -> version

The version is the sha256 of every precached file (the model's manifest and the engine among
them), so a new model, or a new page, gives a new service worker whose cache replaces the old
one in one step. Any other change leaves sw.js byte for byte the same: browsers do nothing.
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

from toolkit.errors import WebError

SW_FILE = "sw.js"
WEB_MANIFEST = "manifest.webmanifest"
ICONS = {
    "icon-192.png": (192, False),
    "icon-512.png": (512, False),
    "icon-maskable.png": (512, True),
}
# Light theme first; the page's CSS and the manifest use the same colours.
THEME = {"light": "#8b3a3a", "dark": "#1b1b1f"}
BACKGROUND = "#fffaf5"
# Bar heights of the icon's glyph: a row of characters shaded by surprisal, the page's view.
GLYPH = (0.35, 0.8, 0.5, 1.0, 0.6)


def draw_icon(size: int, maskable: bool) -> bytes:
    """A PNG: bars of varying height and shade on the theme colour. The maskable icon fills
    the square, its glyph inside the central 80% circle that every mask keeps."""
    try:
        from PIL import Image, ImageDraw
    except ImportError:
        raise WebError(
            'drawing the app\'s icons needs Pillow: pip install "char-lstm-toolkit[web]"'
        ) from None
    scale = 4  # drawn large and scaled down: smooth edges without anti-aliased primitives
    big = size * scale
    image = Image.new("RGBA", (big, big), (0, 0, 0, 0))
    draw = ImageDraw.Draw(image)
    if maskable:
        draw.rectangle((0, 0, big, big), fill=THEME["light"])
        box = big * 0.26  # glyph within the safe zone (radius 0.4)
    else:
        draw.rounded_rectangle((0, 0, big - 1, big - 1), radius=big * 0.18, fill=THEME["light"])
        box = big * 0.2
    width = (big - 2 * box) / len(GLYPH)
    floor = big - box
    for i, height in enumerate(GLYPH):
        left = box + i * width + width * 0.12
        top = floor - height * (big - 2 * box)
        shade = int(255 - 90 * (1 - height))  # taller bars (more surprise) are brighter
        draw.rounded_rectangle(
            (left, top, left + width * 0.76, floor), radius=width * 0.2, fill=(255, shade, 200)
        )
    out = io.BytesIO()
    image.resize((size, size), Image.Resampling.LANCZOS).save(out, "PNG", optimize=True)
    return out.getvalue()


def web_manifest(name: str) -> dict[str, object]:
    icons = [
        {"src": f, "sizes": f"{s}x{s}", "type": "image/png", "purpose": "maskable" if m else "any"}
        for f, (s, m) in ICONS.items()
    ]
    return {
        "id": "./",
        "name": f"char-lstm · {name}",
        "short_name": "char-lstm",
        "description": "A character-level LSTM that writes text on this device, offline.",
        "start_url": "./",
        "scope": "./",
        "display": "standalone",
        "orientation": "any",
        "theme_color": THEME["light"],
        "background_color": BACKGROUND,
        "icons": icons,
    }


def site_version(site_dir: Path, files: list[str]) -> str:
    digest = hashlib.sha256()
    for name in sorted(files):
        digest.update(name.encode() + b"\0")
        digest.update(hashlib.sha256((site_dir / name).read_bytes()).digest())
    return digest.hexdigest()


def add_app_files(site_dir: Path, name: str, web_dir: Path) -> str:
    """Write the icons, the web app manifest and sw.js into site_dir; returns the version."""
    for file, (size, maskable) in ICONS.items():
        (site_dir / file).write_bytes(draw_icon(size, maskable))
    (site_dir / WEB_MANIFEST).write_text(
        json.dumps(web_manifest(name), indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    files = sorted(
        p.relative_to(site_dir).as_posix()
        for p in site_dir.rglob("*")
        if p.is_file() and p.name != SW_FILE
    )
    version = site_version(site_dir, files)
    template = (web_dir / "src" / SW_FILE).read_text(encoding="utf-8")
    # "./" is the page as a folder URL: what start_url and a bare visit ask for.
    lines = {
        'const VERSION = "dev";': f"const VERSION = {json.dumps(version)};",
        "const FILES = [];": f"const FILES = {json.dumps(['./', *files])};",
    }
    for old, new in lines.items():
        if old not in template:
            raise WebError(f"{web_dir / 'src' / SW_FILE} has no line {old!r} to fill in")
        template = template.replace(old, new)
    (site_dir / SW_FILE).write_text(template, encoding="utf-8")
    return version
