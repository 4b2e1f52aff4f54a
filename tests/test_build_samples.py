"""Golden checks on the sample issues: structure and promises, not byte snapshots."""

from __future__ import annotations

import email
import re
from email import policy

from bs4 import BeautifulSoup

from pipeline.check import GMAIL_CLIP
from pipeline.embeds import FORBIDDEN_TAGS
from pipeline.headline import says_the_same
from pipeline.plaintext import display_width
from pipeline.tokens import packaged_tokens

CONTENT_WIDTH = packaged_tokens().content_width


def _html(sample) -> str:
    return sample.files["email.html"].read_text("utf-8")


def _text(sample) -> str:
    return sample.files["email.txt"].read_text("utf-8")


def _soup(sample) -> BeautifulSoup:
    return BeautifulSoup(_html(sample), "html.parser")


def _norm(text: str) -> str:
    return " ".join(text.split())


def test_builds_three_files_and_no_warnings(sample):
    assert set(sample.files) == {"email.html", "email.txt", "email.eml"}
    for path in sample.files.values():
        assert path.stat().st_size > 500
    assert sample.built.warnings == []
    assert sample.built.findings == []  # the sample issues pass `publish check` clean


def test_no_tag_that_email_cannot_show_survives(sample):
    soup = _soup(sample)
    names = {tag.name for tag in soup.find_all(True)}
    assert not names & FORBIDDEN_TAGS
    assert not [name for name in names if "-" in name], "custom elements must not survive"
    assert not soup.find_all(srcset=True)
    assert not soup.body.find_all(["style", "link", "meta"])


def test_every_in_page_link_resolves_to_an_anchor_with_id_and_name(sample):
    soup = _soup(sample)
    links = soup.find_all("a", href=re.compile(r"^#"))
    assert len(links) >= 5
    for link in links:
        target = link["href"][1:]
        anchor = soup.find("a", attrs={"name": target})
        assert anchor is not None, f"no <a name> for {link['href']}"
        assert anchor.get("id") == target


def test_author_toc_links_match_headings_whatever_their_case_and_punctuation(sample):
    soup = _soup(sample)
    hrefs = {a["href"] for a in soup.find_all("a", href=re.compile(r"^#"))}
    if sample.built.email.lang == "zh":
        assert "#更新-2024-年-12-月的新模型" in hrefs
        assert "#faq--常见问题" in hrefs
    else:
        # Written by the author as #Studio-Visit-Okafor--Daughters
        assert "#studio-visit-okafor--daughters" in hrefs


def test_each_embed_kind_becomes_a_linked_card(sample):
    kinds = sample.summary()["embeds_swapped"]
    html = _html(sample)
    text = _text(sample)
    if sample.built.email.lang == "en":
        assert kinds == {"video": 2, "youtube": 1, "audio": 1, "demo": 1, "subscribe": 1}
        for url in (
            "https://www.youtube.com/watch?v=aqz-KE-bpKQ",
            "https://i.ytimg.com/vi/aqz-KE-bpKQ/hqdefault.jpg",
            "https://cdn.pixels-and-prose.example/2025-01/okafor%20interview.mp3",
            "https://huggingface.co/spaces/pixels-and-prose/sketch-to-picture",
            "https://letterforms.substack.com/subscribe",
            # the poster, then the front matter's media_thumbnails entry
            "https://pixels-and-prose.example/assets/2025-01/okafor-poster.png",
            "https://pixels-and-prose.example/assets/2025-01/latent-walk.png",
        ):
            assert url in html
        assert "▶ A latent walk between two prompts, eight steps per frame: https://" in text
        assert "▶ Tobias explains his workflow in three minutes: https://" in text
    else:
        assert kinds == {"video": 1, "demo": 1, "audio": 1}
        encoded = "%E7%81%AF%E5%A1%94%20%E6%B0%B4%E5%A2%A8.mp4"
        assert f"https://cdn.pixels-and-prose.example/2025-02/{encoded}" in html
        assert "https://pixels-and-prose-video-demo.hf.space" in html
        assert "▶ 水墨风格的灯塔，32 帧: https://" in text


def test_images_are_absolute_with_alt_and_never_wider_than_the_column(sample):
    images = _soup(sample).find_all("img")
    assert len(images) >= 3
    for img in images:
        assert img["src"].startswith("https://"), img["src"]
        assert img.get("alt") is not None
        assert int(img["width"]) <= CONTENT_WIDTH
        assert img.get("height") != "auto"
        assert "height:auto" in img["style"].replace(" ", "")


def test_html_is_inlined_and_keeps_what_mail_clients_need(sample):
    html = _html(sample)
    assert html.startswith("<!doctype html>")
    assert f'<html lang="{sample.built.email.lang}"' in html
    h2 = _soup(sample).find("h2")
    assert "font-size" in h2["style"]
    assert "<!--[if mso" in html
    media = re.findall(r"@media[^{]*\{[^@]*", html)
    assert any("!important" in block for block in media)
    assert "prefers-color-scheme: dark" in html
    assert 'name="color-scheme"' in html
    assert "googleapis" not in html and "@import" not in html
    assert sample.built.html_bytes < GMAIL_CLIP


def test_code_is_coloured_with_inline_styles_and_math_stays_readable(sample):
    soup = _soup(sample)
    pre = soup.find("pre")
    assert pre.find("span", style=re.compile("color"))
    assert "$$" in soup.get_text() and "\\frac" in soup.get_text()
    assert "\\frac" in _text(sample)


def test_every_paragraph_appears_exactly_once_in_html_and_text(sample):
    soup = _soup(sample)
    body_text = _norm(soup.body.get_text())
    text = _norm(_text(sample))
    paragraphs = [
        _norm(p.get_text()) for p in soup.find_all("p") if len(p.get_text(strip=True)) > 30
    ]
    assert len(paragraphs) >= 6
    for paragraph in paragraphs:
        probe = paragraph[:40]
        assert body_text.count(probe) == 1, probe
        assert text.count(probe) == 1, probe


def test_preheader_is_hidden_first_and_appears_once(sample):
    preheader = sample.built.email.preheader
    assert 40 <= display_width(preheader) <= 140  # columns: a CJK character counts two
    assert not re.search(r"={2,}|\*\*|\]\(|^#", preheader)
    assert not says_the_same(sample.built.issue.title, preheader)
    soup = _soup(sample)
    first_div = soup.body.find("div")
    assert "display:none" in first_div["style"].replace(" ", "")
    assert first_div.get_text().strip().startswith(preheader)
    assert _html(sample).count(preheader) == 1


def test_text_part_has_every_heading_list_item_and_footer(sample):
    soup = _soup(sample)
    for backref in soup.select("a.footnote-backref"):  # a link back up, not content
        backref.decompose()
    text = _text(sample)
    for heading in soup.find_all(["h2", "h3"]):
        assert _norm(heading.get_text(" ")) in text
    for item in soup.find_all("li"):
        words = _norm(item.get_text(" "))[:25].rstrip()
        assert _norm(words) in _norm(text)
    assert "unsubscribe" in text.lower() or "退订" in text
    assert "12 Harbour Lane" in text
    assert "<" not in text.replace("<a", "")  # no markup leaked
    assert "{" not in text.split("$$")[0]  # no CSS or template leftovers before any math


def test_eml_is_a_complete_multipart_alternative_message(sample):
    raw = sample.files["email.eml"].read_bytes()
    msg = email.message_from_bytes(raw, policy=policy.default)
    assert msg.get_content_type() == "multipart/alternative"
    assert str(msg["Subject"]) == sample.built.issue.title
    assert msg["From"].addresses[0].addr_spec == "letters@pixels-and-prose.example"
    assert msg["Date"] and msg["Message-ID"].startswith("<")
    assert msg["List-Unsubscribe"] == "<https://pixels-and-prose.example/unsubscribe?token=preview>"
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert msg["List-Id"]
    text_part, html_part = msg.iter_parts()
    assert text_part.get_content_type() == "text/plain"
    assert html_part.get_content_type() == "text/html"
    assert text_part.get_content_charset() == "utf-8"
    assert text_part.get_content().replace("\r\n", "\n") == _text(sample)
    assert html_part.get_content().replace("\r\n", "\n").rstrip("\n") == _html(sample)
    assert max(len(line) for line in raw.split(b"\r\n")) <= 998


def test_template_strings_follow_the_issue_language(sample):
    # The Chinese sample has no `lang` in its front matter: the language is detected.
    words = {"zh": ["退订", "作者：", "译者：", "审校：", "在浏览器中查看"],
             "en": ["Unsubscribe", "By ", "View in browser"]}[sample.built.email.lang]
    text = _text(sample)
    for word in words:
        assert word in text


def test_one_headline_and_no_greeting_unless_the_newsletter_asks(sample):
    soup = _soup(sample)
    title = sample.built.issue.title
    headings = [h.get_text(" ", strip=True) for h in soup.find_all(re.compile(r"^h[1-6]$"))]
    assert headings[0] == title
    assert not [h for h in headings[1:] if says_the_same(title, h)]
    assert not soup.find(class_="greeting")
    assert "Hi there" not in _text(sample) and "朋友，你好" not in _text(sample)


def test_summary_says_why_the_language_was_chosen(sample):
    reason = sample.summary()["lang_reason"]
    if sample.built.issue.lang:
        assert reason == "front matter"
    else:  # the Chinese sample has no `lang`
        assert re.fullmatch(r"detected: \d+% of prose words are Chinese", reason), reason
