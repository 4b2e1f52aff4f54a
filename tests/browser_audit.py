"""What a reader sees of a built email in Chromium: sideways scroll, contrast, image sizes.

Shared by tests/test_layout.py and by anyone auditing a folder of built emails by hand:

    python -m tests.browser_audit build/*/email.html

Three colour modes are judged: `light`; `dark`, the email's own `prefers-color-scheme: dark`
rules as Apple Mail applies them; and `inverted`, a full inversion as Gmail on iOS does it
(`invert(1) hue-rotate(180deg)` on the page, images turned back), computed on the colours.
"""

from __future__ import annotations

import hashlib
import io
import shutil
import sys
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
MODES = ("light", "dark", "inverted")

AUDIT_JS = Path(__file__).with_name("browser_audit.js").read_text("utf-8")

INVERT_CSS = ("html{filter:invert(1) hue-rotate(180deg)}"
              "img,video,picture{filter:invert(1) hue-rotate(180deg)}")


@dataclass
class Report:
    """What one email looks like at one width in one colour mode."""

    name: str
    width: int
    mode: str
    scroll_width: int = 0
    low_contrast: list[dict] = field(default_factory=list)
    oversized_images: list[dict] = field(default_factory=list)
    split_words: list[str] = field(default_factory=list)

    @property
    def scrolls_sideways(self) -> bool:
        return self.scroll_width > self.width


def image_size_for(url: str) -> tuple[int, int]:
    """A stable pretend size for a remote image, from tiny icons to wide figures."""
    sizes = [(16, 16), (88, 20), (200, 200), (400, 300), (552, 300), (1200, 675), (1600, 900)]
    return sizes[int(hashlib.sha256(url.encode()).hexdigest(), 16) % len(sizes)]


@lru_cache(maxsize=64)
def png_bytes(width: int, height: int, dark: bool = False) -> bytes:
    from PIL import Image

    image = Image.new("RGB", (width, height), (40, 44, 52) if dark else (200, 210, 230))
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


class Auditor:
    """One browser and one page per width, reused for every email."""

    def __init__(self, widths=(320, 375), image_for=None):
        from playwright.sync_api import sync_playwright

        self._playwright = sync_playwright().start()
        self.browser = self._playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        self.context = self.browser.new_context()
        self.image_for = image_for or (lambda url: png_bytes(*image_size_for(url)))
        self.context.route("**/*", self._route)
        self.pages = {w: self._page(w) for w in widths}

    def _page(self, width: int):
        page = self.context.new_page()
        page.set_viewport_size({"width": width, "height": 800})
        return page

    def _route(self, route) -> None:
        """Nothing leaves the machine: images are made up, everything else is refused."""
        request = route.request
        if request.url.startswith(("file:", "data:", "about:")):
            return route.continue_()
        if request.resource_type == "image":
            body = self.image_for(request.url)
            if body is not None:
                return route.fulfill(status=200, content_type="image/png", body=body)
        return route.abort()

    def audit(self, html: str, name: str = "", modes=MODES) -> list[Report]:
        reports = []
        for width, page in self.pages.items():
            page.emulate_media(color_scheme="light")
            page.set_content(html, wait_until="load")
            for mode in modes:
                page.emulate_media(color_scheme="dark" if mode == "dark" else "light")
                result = page.evaluate(AUDIT_JS, mode)
                reports.append(Report(name, width, mode, result["scrollWidth"], result["low"],
                                      result["images"], result["split"]))
        return reports

    def screenshot(self, html: str, path: Path, width: int = 375, mode: str = "light") -> None:
        page = self.pages.get(width) or self._page(width)
        page.emulate_media(color_scheme="dark" if mode == "dark" else "light")
        page.set_content(html, wait_until="load")
        if mode == "inverted":
            page.add_style_tag(content=INVERT_CSS)
        page.screenshot(path=str(path), full_page=True)

    def close(self) -> None:
        self.context.close()
        self.browser.close()
        self._playwright.stop()


def main(paths: list[str]) -> int:
    auditor = Auditor()
    bad = 0
    try:
        for path in paths:
            html = Path(path).read_text("utf-8")
            for report in auditor.audit(html, path):
                problems = []
                if report.scrolls_sideways:
                    problems.append(f"scrolls sideways: {report.scroll_width}px")
                if report.low_contrast:
                    worst = min(report.low_contrast, key=lambda x: x["ratio"])
                    problems.append(f"{len(report.low_contrast)} low-contrast, worst "
                                    f"{worst['ratio']}:1 {worst['where']}")
                if report.oversized_images:
                    problems.append(f"{len(report.oversized_images)} upscaled image(s)")
                if report.split_words:
                    problems.append(f"split words {report.split_words[:5]}")
                if problems:
                    bad += 1
                    print(f"{path} @{report.width} {report.mode}: " + "; ".join(problems))
    finally:
        auditor.close()
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
