"""Images at their size: widths from the attribute, the local file, or a remote header read
once from a real server on loopback and cached; light/dark pairs; what goes wrong."""

from __future__ import annotations

import http.server
import io
import json
import threading
from dataclasses import replace

import pytest
from bs4 import BeautifulSoup

from pipeline import build, images, settings
from pipeline.tidy import tidy
from pipeline.tokens import packaged_tokens
from tests.conftest import copy_sample_newsletter, write_issue

CONTENT_WIDTH = packaged_tokens().content_width


def png(width: int, height: int, extra: int = 0) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (width, height), (90, 120, 200)).save(out, "PNG")
    return out.getvalue() + b"\0" * extra


class ImageServer:
    """Serves made-up images on 127.0.0.1; records what was asked and how much was sent."""

    def __init__(self, routes: dict[str, tuple[int, bytes]]):
        self.routes = routes
        self.requests: list[str] = []
        self.sent = 0
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                outer.requests.append(self.path)
                status, body = outer.routes.get(self.path, (404, b"not found"))
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                try:
                    for start in range(0, len(body), 16384):
                        self.wfile.write(body[start:start + 16384])
                        outer.sent += len(body[start:start + 16384])
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client had what it needed

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def letter(tmp_path):
    folder = copy_sample_newsletter(tmp_path / "letter")
    (folder / "assets" / "icon16.png").write_bytes(png(16, 16))
    (folder / "assets" / "wide.png").write_bytes(png(1400, 700))
    return folder


def _build(folder, text: str):
    path = write_issue(folder / "issues", "case.md", "---\ntitle: Sizes\n---\n\n" + text)
    return build.render_issue(path, settings.load(folder, env={}))


def _images(built) -> list:
    return BeautifulSoup(built.fragment, "html.parser").find_all("img")


def test_local_images_get_their_real_width_capped_at_the_column(letter):
    built = _build(letter, "![Icon](/assets/icon16.png)\n\n![Wide](assets/wide.png)\n\n"
                           '<img src="/assets/icon16.png" alt="Asked big" width="300">\n')
    icon, wide, asked = _images(built)
    assert (icon["width"], icon["height"]) == ("16", "16")
    assert (wide["width"], wide["height"]) == (str(CONTENT_WIDTH), str(CONTENT_WIDTH // 2))
    assert asked["width"] == "16"  # never blown up past its own pixels
    assert not [w for w in built.warnings if "size" in w]


def test_style_widths_are_folded_into_the_attribute(letter):
    built = _build(letter, '<img src="/assets/wide.png" alt="a" style="width: 50%; border: 0">'
                           '\n\n<img src="/assets/icon16.png" alt="b" style="width:80%">\n')
    half, icon = _images(built)
    assert half["width"] == str(CONTENT_WIDTH // 2) and "width:50%" not in half["style"]
    assert icon["width"] == "16"


def test_remote_sizes_are_read_once_from_the_header_and_cached(letter):
    avatar = png(200, 200, extra=40_000_000)  # a long tail the build must not download
    with ImageServer({"/avatar.png": (200, avatar), "/badge.png": (200, png(88, 20))}) as site:
        text = (f'<img src="{site.url}/avatar.png" alt="Avatar">\n\n'
                f"![Badge]({site.url}/badge.png)\n")
        built = _build(letter, text)
        assert [img["width"] for img in _images(built)] == ["200", "88"]
        assert site.sent < len(avatar) // 2
        asked = len(site.requests)
        again = _build(letter, text)
        assert len(site.requests) == asked  # the cache answered
    cache = json.loads((letter / ".publish" / images.CACHE_FILE).read_text("utf-8"))
    assert cache[f"{site.url}/avatar.png"][:2] == [200, 200]
    assert [img["width"] for img in _images(again)] == ["200", "88"]


def test_no_network_warns_once_and_leaves_the_width_to_the_image(letter):
    with ImageServer({}) as site:
        closed = site.url
    text = "".join(f"![Pic {i}]({closed}/p{i}.png)\n\n" for i in range(4))
    built = _build(letter, text)
    for img in _images(built):
        assert img.get("width") is None and "max-width:100%" in img["style"]
    warnings = [w for w in built.warnings if "could not read the size" in w]
    assert len(warnings) == 1 and "4 image(s)" in warnings[0] and "unreachable" in warnings[0]


def test_garbage_and_missing_images_fall_back_without_failing(letter):
    with ImageServer({"/page.png": (200, b"<html>not an image</html>" * 50)}) as site:
        built = _build(letter, f"![A]({site.url}/page.png)\n\n![B]({site.url}/gone.png)\n\n"
                               f'<img src="{site.url}/gone.png" alt="C" width="120">\n')
    first, second, declared = _images(built)
    assert first.get("width") is None and second.get("width") is None
    assert declared["width"] == "120"
    assert any("2 image(s)" in w and "did not answer" in w for w in built.warnings)


def test_a_damaged_cache_is_rebuilt(letter):
    state = letter / ".publish"
    state.mkdir()
    (state / images.CACHE_FILE).write_text("{not json", "utf-8")
    with ImageServer({"/a.png": (200, png(40, 30))}) as site:
        built = _build(letter, f"![A]({site.url}/a.png)\n")
    assert _images(built)[0]["width"] == "40"
    assert json.loads((state / images.CACHE_FILE).read_text("utf-8"))


def test_a_url_cannot_reach_outside_the_newsletter_folder(tmp_path):
    root = tmp_path / "letter"
    root.mkdir()
    (tmp_path / "secret.png").write_bytes(png(10, 10))
    sizes = images.ImageSizes(root, "https://letter.example/", network=False)
    for url in ("https://letter.example/%2e%2e/secret.png",
                "https://letter.example/../secret.png",
                "https://letter.example/..%2Fsecret.png"):
        assert sizes.local_path(url) is None
        assert sizes.size(url) is None


def test_light_dark_pairs_keep_the_light_image(letter):
    built = _build(letter, (
        '<img class="block dark:hidden" src="/assets/icon16.png" alt="Light logo">\n'
        '<img class="hidden dark:block" src="/assets/wide.png" alt="Dark logo">\n\n'
        "![Light](/assets/wide.png#gh-light-mode-only)\n"
        "![Dark](/assets/icon16.png#gh-dark-mode-only)\n"))
    alts = [img["alt"] for img in _images(built)]
    assert alts == ["Light logo", "Light"]
    assert "Dark logo" not in built.text and "Dark logo" not in built.html


def test_tidy_without_sizes_keeps_declared_widths():
    fragment = '<img src="a.png" alt="x" width="900"><img src="b.png" alt="y" width="40%">'
    out = tidy(fragment, "https://x.example/", lambda needle, nth: "issue.md:1")
    big, part = BeautifulSoup(out.html, "html.parser").find_all("img")
    assert big["width"] == str(CONTENT_WIDTH)
    assert part["width"] == str(round(CONTENT_WIDTH * 0.4))


def test_image_sizes_are_read_from_any_common_format():
    from PIL import Image

    for fmt in ("PNG", "JPEG", "GIF", "WEBP"):
        out = io.BytesIO()
        Image.new("RGB", (123, 45)).save(out, fmt)
        assert images.size_of_bytes(out.getvalue()[:4096]) == (123, 45), fmt
    assert images.size_of_bytes(b"\x89PNG\r\n\x1a\n" + b"\xff" * 40) is None
    assert images.size_of_bytes(b"") is None


def test_state_dir_setting_moves_the_cache(letter, tmp_path):
    with ImageServer({"/a.png": (200, png(30, 30))}) as site:
        path = write_issue(letter / "issues", "case.md",
                           f"---\ntitle: Sizes\n---\n\n![A]({site.url}/a.png)\n")
        moved = replace(settings.load(letter, env={}), state_dir=str(tmp_path / "elsewhere"))
        build.render_issue(path, moved)
    assert (tmp_path / "elsewhere" / images.CACHE_FILE).is_file()


def test_a_replaced_local_image_is_measured_again(letter):
    """Local sizes are cached by path, modification time and length: a file replaced under
    the same name (even with its old modification time) is read again."""
    import os

    text = "![Icon](/assets/icon16.png)\n"
    assert _images(_build(letter, text))[0]["width"] == "16"
    cache = json.loads((letter / ".publish" / images.CACHE_FILE).read_text("utf-8"))
    assert any(key.startswith("file:") for key in cache)
    icon = letter / "assets" / "icon16.png"
    old = icon.stat()
    icon.write_bytes(png(40, 20))
    os.utime(icon, ns=(old.st_atime_ns, old.st_mtime_ns))  # same mtime, new length
    assert _images(_build(letter, text))[0]["width"] == "40"
    icon.write_bytes(png(30, 20, extra=len(png(40, 20)) - len(png(30, 20))))
    assert icon.stat().st_size == len(png(40, 20))  # same length, new mtime
    assert _images(_build(letter, text))[0]["width"] == "30"


def test_a_preview_does_not_ask_again_for_an_image_that_just_failed(letter):
    """Builds in one process (a preview rebuilding on each save) ask a failing image, or
    an unreachable host, once a minute at most."""
    with ImageServer({"/page.png": (200, b"not an image")}) as site:
        text = f"![A]({site.url}/page.png)\n\n![B]({site.url}/gone.png)\n"
        first = _build(letter, text)
        asked = len(site.requests)
        assert asked == 2
        for _ in range(3):
            again = _build(letter, text)
        assert len(site.requests) == asked
        assert again.html == first.html
    with ImageServer({}) as closed:
        gone = closed.url
    text = f"![C]({gone}/c.png)\n"
    first = _build(letter, text)
    assert any("unreachable" in w for w in first.warnings)
    again = _build(letter, text)  # not asked: still says why
    assert any("unreachable" in w for w in again.warnings)
