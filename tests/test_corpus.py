"""Every real post in ../shared/corpus/ builds, without a forbidden tag or a dangling anchor."""

from __future__ import annotations

import re

import pytest
from bs4 import BeautifulSoup

from pipeline import build
from pipeline.embeds import FORBIDDEN_TAGS
from tests.conftest import CORPUS

POSTS = sorted(p for p in CORPUS.rglob("*.md") if p.name != "MANIFEST.md")


@pytest.mark.skipif(not POSTS, reason="../shared/corpus/ is not present")
@pytest.mark.parametrize("post", POSTS, ids=lambda p: p.name)
def test_corpus_post_builds_into_safe_email(post, repo_settings):
    built = build.render_issue(post, repo_settings)
    soup = BeautifulSoup(built.email.html, "html.parser")
    names = {tag.name for tag in soup.find_all(True)}
    assert not names & FORBIDDEN_TAGS
    assert not [n for n in names if "-" in n]
    for link in soup.find_all("a", href=re.compile(r"^#")):
        assert soup.find("a", attrs={"name": link["href"][1:]}) is not None, link["href"]
    for img in soup.find_all("img"):
        assert re.match(r"https://|data:", img["src"]), img["src"]
        assert img.get("alt") is not None
    assert len(built.email.text) > 200


@pytest.mark.skipif(not (CORPUS / "hf-blog" / "zh-moe.md").is_file(), reason="corpus not present")
def test_hand_written_chinese_toc_resolves_every_link(repo_settings):
    built = build.render_issue(CORPUS / "hf-blog" / "zh-moe.md", repo_settings)
    assert not [w for w in built.warnings if "matches no heading" in w]
    soup = BeautifulSoup(built.email.html, "html.parser")
    assert len(soup.find_all("a", href=re.compile(r"^#"))) >= 23
    assert built.email.lang == "zh"
