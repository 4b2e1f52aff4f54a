"""Every real post in ../shared/corpus/ reads right in the inbox: its language, a prose
preheader that is not the title, and one headline."""

from __future__ import annotations

import re

import pytest
from bs4 import BeautifulSoup

from pipeline import build
from pipeline.headline import says_the_same
from pipeline.plaintext import display_width
from tests.conftest import CORPUS

POSTS = sorted(p for p in (CORPUS / "hf-blog").glob("*.md") if p.name != "MANIFEST.md") if (
    CORPUS / "hf-blog").is_dir() else []
ARTEFACTS = re.compile(r"={2,}|#|\*|\[|\]\(|`|\{[\w.-]+\}|<|>")
pytestmark = pytest.mark.skipif(not POSTS, reason="../shared/corpus/ is not present")


@pytest.fixture(scope="module")
def built_posts(repo_settings):
    cache: dict = {}

    def get(post):
        if post not in cache:
            cache[post] = build.render_issue(post, repo_settings)
        return cache[post]

    return get


@pytest.mark.parametrize("post", POSTS, ids=lambda p: p.stem)
def test_corpus_post_is_in_its_language(post, built_posts):
    built = built_posts(post)
    expected = "zh" if post.stem.startswith("zh-") else "en"
    assert built.email.lang == expected, built.lang_reason
    soup = BeautifulSoup(built.html, "html.parser")
    assert soup.html["lang"] == expected
    unsubscribe = {"zh": "退订", "en": "Unsubscribe"}[expected]
    assert unsubscribe in soup.get_text()
    if expected == "zh":
        for english in ("View in browser", "Subscribe", "Watch the video", "Translated by"):
            assert english not in soup.get_text(), english


@pytest.mark.parametrize("post", POSTS, ids=lambda p: p.stem)
def test_corpus_post_preheader_is_prose_not_the_title(post, built_posts):
    built = built_posts(post)
    line = built.email.preheader
    assert 40 <= display_width(line) <= 140, line
    assert not ARTEFACTS.search(line), line
    assert not says_the_same(built.issue.title, line[: len(built.issue.title) + 5]), line
    assert not line.lower().startswith(("published", "by ", "update on github")), line
    # It is words the reader will find in the email's body, not made-up or hidden text.
    body = " ".join(BeautifulSoup(built.fragment, "html.parser").get_text(" ").split())
    words = re.findall(r"[^\W\d_]{4,}|[\u4e00-\u9fff]{2,}", line)
    assert words and all(word in body for word in words), line


@pytest.mark.parametrize("post", POSTS, ids=lambda p: p.stem)
def test_corpus_post_has_one_headline(post, built_posts):
    built = built_posts(post)
    soup = BeautifulSoup(built.html, "html.parser")
    title = built.issue.title
    headings = [h.get_text(" ", strip=True) for h in soup.find_all(re.compile(r"^h[1-6]$"))]
    assert says_the_same(title, headings[0])  # the header's headline comes first
    assert not [h for h in headings[1:] if says_the_same(title, h, loose=False)], headings[:3]
    text_lines = [line for line in built.text.split("\n")
                  if says_the_same(title, line, loose=False)]
    assert len(text_lines) == 1, text_lines
