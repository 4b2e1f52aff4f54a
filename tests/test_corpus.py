"""Every real post in ../shared/corpus/ builds, without a forbidden tag or a dangling anchor."""

from __future__ import annotations

import re

import pytest
from bs4 import BeautifulSoup

from pipeline import build
from tests.conftest import CORPUS, assert_email_promises

POSTS = sorted(p for p in CORPUS.rglob("*.md") if p.name != "MANIFEST.md")


@pytest.mark.skipif(not POSTS, reason="../shared/corpus/ is not present")
@pytest.mark.parametrize("post", POSTS, ids=lambda p: p.name)
def test_corpus_post_builds_into_safe_email(post, repo_settings):
    built = build.render_issue(post, repo_settings)
    assert_email_promises(built)
    assert len(built.text) > 200


@pytest.mark.skipif(not (CORPUS / "hf-blog" / "zh-moe.md").is_file(), reason="corpus not present")
def test_hand_written_chinese_toc_resolves_every_link(repo_settings):
    built = build.render_issue(CORPUS / "hf-blog" / "zh-moe.md", repo_settings)
    assert not [w for w in built.warnings if "matches no heading" in w]
    soup = BeautifulSoup(built.email.html, "html.parser")
    assert len(soup.find_all("a", href=re.compile(r"^#"))) >= 23
    assert built.email.lang == "zh"
