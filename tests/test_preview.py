"""`publish preview` in a real headless Chromium: views, dark mode, live reload, screenshots."""

from __future__ import annotations

import os
import shutil
import struct
import time
import urllib.error
import urllib.request

import pytest

from pipeline import preview, settings
from tests.conftest import copy_sample_newsletter

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
EN = "issues/2025-01-ai-art.md"

if CHROMIUM is None and not os.environ.get("CI"):
    pytest.skip("needs Debian's chromium (bash .ci/run installs it)", allow_module_level=True)


@pytest.fixture
def served(tmp_path):
    folder = copy_sample_newsletter(tmp_path / "letter")
    running = preview.start(folder / EN, settings.load(folder, env={}))
    yield folder, running
    running.stop()


@pytest.fixture
def browser():
    from playwright.sync_api import sync_playwright

    assert CHROMIUM, "Chromium is missing: apt-get install chromium"
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield chromium
        chromium.close()


def _email_frame(page, which: str):
    return page.frame_locator(f"#{which} iframe")


def _open(browser, running):
    """The preview page, once the desktop frame shows the email."""
    page = browser.new_page(viewport={"width": 1500, "height": 1000})
    page.goto(running.url)
    frame = _email_frame(page, "desktop")
    frame.locator("h1").wait_for()
    return page, frame


def _png_size(path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


def test_preview_page_shows_the_email_on_desktop_and_mobile(served, browser, tmp_path):
    _folder, running = served
    page, desktop = _open(browser, running)
    assert "What image models learned" in desktop.locator("h1").inner_text()
    assert page.locator("#subject").inner_text().startswith("Pixels & Prose #1")
    assert "Twelve months" in page.locator("#preheader").inner_text()
    assert "KB of Gmail's 102 KB" in page.locator("#size").inner_text()
    assert page.locator("#findings-title").inner_text() == "Check: clean"

    page.click("#view-mobile")
    assert page.locator("#desktop").is_hidden()
    mobile = page.locator("#mobile iframe")
    assert mobile.bounding_box()["width"] == 375
    frame = page.frame_locator("#mobile iframe")
    frame.locator("h1").wait_for()
    widths = frame.locator("html").evaluate(
        "el => [el.scrollWidth, el.clientWidth, document.compatMode]")
    assert widths[0] <= widths[1] == 375, widths  # no horizontal scroll at 375 px
    assert widths[2] == "CSS1Compat"  # standards mode: the doctype survived inlining
    mobile_png = tmp_path / "mobile.png"
    mobile.screenshot(path=str(mobile_png))
    assert abs(_png_size(mobile_png)[0] - 375) <= 1

    page.click("#view-desktop")
    desktop_png = tmp_path / "desktop.png"
    page.locator("#desktop iframe").screenshot(path=str(desktop_png))
    assert abs(_png_size(desktop_png)[0] - 800) <= 1

    page.click("#tab-text")
    assert "The year in one paragraph" in page.locator("#text").inner_text()
    page.click("#tab-headers")
    assert "List-Unsubscribe-Post: List-Unsubscribe=One-Click" in \
        page.locator("#headers").inner_text()


def test_dark_mode_shows_the_emails_own_dark_rules_and_inverted_is_a_second_view(
        served, browser):
    _folder, running = served
    page, frame = _open(browser, running)
    colour = "el => getComputedStyle(el).color"
    background = "el => getComputedStyle(el).backgroundColor"
    light_h1 = frame.locator("h1").evaluate(colour)
    page.click("#dark")  # what Apple Mail shows: the email's prefers-color-scheme rules
    assert page.locator("#dark").get_attribute("aria-pressed") == "true"
    assert frame.locator("h1").evaluate(colour) == "rgb(230, 232, 235)" != light_h1
    assert frame.locator(".paper").first.evaluate(background) == "rgb(27, 31, 36)"
    assert frame.locator("html").evaluate("el => getComputedStyle(el).filter") == "none"
    page.click("#inverted")  # what Gmail's apps show: everything inverted but the images
    assert page.locator("#dark").get_attribute("aria-pressed") == "false"
    html_filter = frame.locator("html").evaluate("el => getComputedStyle(el).filter")
    img_filter = frame.locator("img").first.evaluate("el => getComputedStyle(el).filter")
    assert "invert(1)" in html_filter and "invert(1)" in img_filter
    assert frame.locator("h1").evaluate(colour) == light_h1
    page.click("#scheme-light")
    assert frame.locator("html").evaluate("el => getComputedStyle(el).filter") == "none"
    assert frame.locator("h1").evaluate(colour) == light_h1


def test_the_light_view_stays_light_when_the_system_is_dark(served, browser):
    _folder, running = served
    page = browser.new_page(viewport={"width": 1500, "height": 1000}, color_scheme="dark")
    page.goto(running.url)
    frame = _email_frame(page, "desktop")
    frame.locator("h1").wait_for()
    frame.locator("html[data-publish-scheme=light]").wait_for()
    assert frame.locator(".paper").first.evaluate(
        "el => getComputedStyle(el).backgroundColor") == "rgb(255, 255, 255)"


def test_saving_the_issue_reloads_the_page_and_errors_show_without_stopping(served, browser):
    folder, running = served
    page, frame = _open(browser, running)
    issue = folder / EN
    original = issue.read_text("utf-8")
    issue.write_text(original.replace("Welcome to the first issue",
                                      "Welcome, live reader, to the first issue"), "utf-8")
    frame.locator("text=Welcome, live reader").wait_for(timeout=10_000)

    issue.write_text("---\ntitle: [broken\n---\n", "utf-8")
    # The watcher may catch the file half-written (empty) first; the error then follows it.
    page.locator("#error", has_text="2025-01-ai-art.md:2:").wait_for(timeout=10_000)
    assert "Build failed" in page.locator("#error").inner_text()
    frame.locator("text=Welcome, live reader").wait_for(timeout=10_000)  # last good build stays

    issue.write_text(original, "utf-8")
    page.locator("#error").wait_for(state="hidden", timeout=10_000)
    frame.locator("text=Welcome to the first issue").wait_for(timeout=10_000)


def test_serves_only_its_own_routes_on_loopback(served):
    _folder, running = served
    assert running.server.server_address[0] == "127.0.0.1"
    for path in ("/../publish.toml", "/%2e%2e/%2e%2e/etc/passwd", "/issues/2025-01-ai-art.md",
                 "/email.html/../../publish.toml"):
        with pytest.raises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(running.url.rstrip("/") + path, timeout=5)
        assert caught.value.code == 404
    eml = urllib.request.urlopen(running.url + "email.eml", timeout=5)
    assert eml.headers["Content-Disposition"].startswith("attachment")
    assert eml.read().startswith(b"From: ")


def test_saving_rebuilds_in_the_background(served):
    """The server side of live reload, without a browser: a save makes a new build."""
    folder, running = served
    issue = folder / EN
    before = running.preview.snapshot.version
    issue.write_text(issue.read_text("utf-8").replace("Lagos", "Lagos and Accra"), "utf-8")
    deadline = time.monotonic() + 10
    while running.preview.snapshot.version == before and time.monotonic() < deadline:
        time.sleep(0.01)
    assert running.preview.snapshot.version > before
    assert "Lagos and Accra" in running.preview.snapshot.html


def test_send_test_from_the_preview_uses_the_send_path(served, monkeypatch):
    import email
    import json
    import mailbox
    from email import policy
    from urllib.parse import urlencode

    folder, running = served
    monkeypatch.setenv("PUBLISH_UNSUBSCRIBE_SECRET", "preview-test-secret-0123456789")
    token = {"X-Preview-Token": running.token}
    request = urllib.request.Request(running.url + "send-test", headers=token,
                                     data=urlencode({"address": "editor@example.org"}).encode())
    answer = json.loads(urllib.request.urlopen(request, timeout=30).read())
    assert answer["ok"], answer
    box = mailbox.Maildir(folder / "outbox", create=False)
    [key] = list(box.iterkeys())
    message = email.message_from_bytes(box.get_bytes(key), policy=policy.default)
    assert str(message["Subject"]).startswith("[TEST] ")
    assert message["To"].addresses[0].addr_spec == "editor@example.org"
    bad = urllib.request.Request(running.url + "send-test", headers=token,
                                 data=urlencode({"address": "not an address"}).encode())
    refused = json.loads(urllib.request.urlopen(bad, timeout=30).read())
    assert not refused["ok"] and "not an address" in refused["message"]
