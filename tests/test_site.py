"""`publish site`: pages of the sent issues, archive, Atom feed, assets; safe to rebuild."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from bs4 import BeautifulSoup

from tests.conftest import CORPUS, run_publish
from tests.test_serve import CHROMIUM, EN, ENV, FLAGS, letter, outbox, send


def site(root: Path, *args: str, env: dict | None = None):
    return run_publish("site", "--json", *args, cwd=root, env={**ENV, **(env or {})})


def test_the_site_has_the_sent_issues_a_valid_full_feed_and_their_assets(tmp_path):
    import feedparser

    root = letter(tmp_path, ["ada@example.org", "bo@example.org"])
    send(root, EN)
    result = site(root)
    assert result.returncode == 0, result.stderr
    made = json.loads(result.stdout)
    assert made["issues"] == ["2025-01-ai-art"], "an issue never sent is not listed"
    page = (root / "site/issues/2025-01-ai-art/index.html").read_text("utf-8")
    soup = BeautifulSoup(page, "html.parser")
    assert soup.html["lang"] == "en"
    assert "token=" not in page and "%%" not in page and "ada@example.org" not in page
    assert soup.find("a", href="../../") is not None, "a bar links back to the archive"
    sent = outbox(root)[0]
    feed = feedparser.parse((root / "site/feed.xml").read_bytes())
    assert not feed.bozo, feed.get("bozo_exception")
    assert [e.title for e in feed.entries] == [str(sent["Subject"])]
    assert feed.entries[0].link == "https://letter.example/issues/2025-01-ai-art/"
    sent_html = sent.get_body(("html",)).get_content()
    body_text = BeautifulSoup(sent_html, "html.parser").get_text(" ", strip=True)
    feed_text = BeautifulSoup(feed.entries[0].content[0].value, "html.parser").get_text(
        " ", strip=True)
    middle = len(body_text) // 2
    assert body_text[middle:middle + 200] in feed_text, "the feed carries the issue's full text"
    # The View-in-browser link of the sent email is this page.
    assert 'href="https://letter.example/issues/2025-01-ai-art/"' in sent_html
    assert soup.find("a", href="https://letter.example/issues/2025-01-ai-art/") is None, \
        "the page itself has no View-in-browser link pointing at itself"
    used = {img["src"].removeprefix("https://letter.example/") for img in soup.find_all("img")
            if img["src"].startswith("https://letter.example/assets/")}
    assert used
    for rel in used:
        assert (root / "site" / rel).read_bytes() == (root / rel).read_bytes()
    # Rebuilding changes nothing; a second issue appears first, in its language.
    again = json.loads(site(root).stdout)
    assert again["written"] == [] and again["rendered"] == 0
    send(root, "issues/2025-02-video-models.md")
    third = json.loads(site(root).stdout)
    assert third["rendered"] == 1
    index = BeautifulSoup((root / "site/index.html").read_text("utf-8"), "html.parser")
    assert [li["lang"] for li in index.select("ul.issues li")] == ["zh", "en"]
    assert (root / "site/lang/zh/index.html").is_file()
    assert len(feedparser.parse((root / "site/feed.xml").read_bytes()).entries) == 2


def test_the_site_never_writes_outside_its_folder_nor_over_what_it_did_not_make(tmp_path):
    root = letter(tmp_path, ["ada@example.org"])
    for bad in (".", "issues", "subscribers", ".publish", "email_templates", "/"):
        result = site(root, env={"PUBLISH_SITE_DIR": bad})
        assert result.returncode == 2, (bad, result.stderr)
        assert "will not write the site here" in result.stderr
    foreign = root / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me", "utf-8")
    assert site(root, env={"PUBLISH_SITE_DIR": "mine"}).returncode == 2
    assert [p.name for p in foreign.iterdir()] == ["notes.txt"]
    # A folder publish made: its own files are replaced, a CNAME put there is kept.
    assert site(root, "--drafts").returncode == 0
    (root / "site/CNAME").write_text("news.example\n", "utf-8")
    assert site(root).returncode == 0
    assert (root / "site/CNAME").read_text("utf-8") == "news.example\n"
    assert not (root / "site/issues/2025-01-ai-art").exists(), "drafts only with --drafts"
    # A symlink planted inside the site to a folder outside is not written through.
    outside = tmp_path / "outside"
    outside.mkdir()
    shutil.rmtree(root / "site/issues", ignore_errors=True)
    (root / "site/issues").symlink_to(outside)
    result = site(root, "--drafts")
    assert result.returncode == 2 and "symlink" in result.stderr
    assert list(outside.iterdir()) == []
    assert "Traceback" not in result.stderr


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium")
def test_corpus_pages_fit_a_phone_and_carry_their_language(tmp_path):
    """Real posts, English and Chinese, as site pages at 375 and 800 px: no sideways scroll."""
    from playwright.sync_api import sync_playwright

    root = letter(tmp_path, ["ada@example.org"])
    for old in (root / "issues").glob("*.md"):
        old.unlink()
    posts = ["Llama2-for-non-engineers.md", "ai-action-wh-2025.md", "zh-StarCoder2.md",
             "zh-audioldm2.md"]
    for name in posts:
        shutil.copy2(CORPUS / "hf-blog" / name, root / "issues" / name)
    result = site(root, "--drafts")
    assert result.returncode == 0, result.stderr
    shots = tmp_path / "screenshots"  # to look at: pytest --basetemp=DIR
    shots.mkdir()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        for name in posts:
            slug = name.removesuffix(".md")
            path = root / "site/issues" / slug / "index.html"
            for width in (375, 800):
                page = browser.new_page(viewport={"width": width, "height": 900})
                page.goto(path.as_uri())
                lang = page.locator("html").get_attribute("lang")
                assert lang == ("zh" if slug.startswith("zh-") else "en"), slug
                overflow = page.evaluate("document.scrollingElement.scrollWidth - innerWidth")
                assert overflow <= 0, (slug, width, overflow)
                page.screenshot(path=str(shots / f"{slug}-{width}.png"))
                page.close()
            dark = browser.new_page(viewport={"width": 375, "height": 900},
                                    color_scheme="dark")
            dark.goto(path.as_uri())
            # The archive's bar follows dark mode like the email below it.
            bar = dark.evaluate("getComputedStyle(document.querySelector("
                                "'.publish-site-bar')).backgroundColor")
            assert bar != "rgb(255, 255, 255)", (slug, bar)
            dark.screenshot(path=str(shots / f"{slug}-375-dark.png"))
            dark.close()
        browser.close()
