"""How an issue reads in the inbox: the preheader, one headline, the greeting.

Each test builds a real issue file through the whole pipeline and reads the email a
subscriber would get; the hard cases are the openings real posts have (a table of
contents, a banner image, a video, bylines, alerts, unclosed HTML from a blog theme).
"""

from __future__ import annotations

import dataclasses
import email
import re
from email import policy

import pytest
from bs4 import BeautifulSoup
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from pipeline import build, check, preheader
from pipeline.headline import says_the_same
from pipeline.message import MessageTemplate, Recipient
from pipeline.plaintext import display_width
from tests.conftest import write_issue

ARTEFACTS = re.compile(r"={3,}|-{3,}|^#|\*\*|\]\(|\[[^\]]*\]\(|^\s*>|`")
PROSE_EN = ("Open models got smaller, faster and far better at following long prompts, "
            "and the tooling around them changed even more than the models did.")
PROSE_ZH = ("开源图像模型在这一年里变得更小、更快，也更善于理解长提示词；"
            "变化最大的并不是某一个模型，而是围绕模型的工具："
            "只需八步的调度器、十几张图片就能学会风格的适配器。")


def _build(tmp_path, settings, body: str, front: str = "title: Pixels and Prose") -> build.Built:
    path = write_issue(tmp_path, "issue.md", f"---\n{front}\n---\n{body}")
    return build.render_issue(path, settings)


def _soup(built) -> BeautifulSoup:
    return BeautifulSoup(built.html, "html.parser")


def _hidden_preheader(built) -> str:
    first_div = _soup(built).body.find("div")
    assert "display:none" in first_div["style"].replace(" ", "")
    return first_div.get_text().replace("\u200c", "").replace("\xa0", " ").strip()


def _assert_prose(built, expected_start: str) -> None:
    line = built.email.preheader
    assert line.startswith(expected_start), line
    assert not ARTEFACTS.search(line), line
    assert not says_the_same(built.issue.title, line)
    assert 40 <= display_width(line) <= preheader.LIMIT
    assert _hidden_preheader(built).startswith(line)


# the preheader ---------------------------------------------------------------------------
@pytest.mark.parametrize("opening", [
    pytest.param("# Pixels and Prose\n\n## Contents\n\n- [One](#one)\n- [Two](#two)\n\n",
                 id="toc"),
    pytest.param("# Pixels and Prose\n\n![banner](/assets/2025-01/cover.png)\n\n", id="image"),
    pytest.param('<p align="center"><img src="/assets/2025-02/storyboard.png" alt="logo" '
                 'width="250"></p>\n\n# Pixels and Prose\n\n', id="image-before-heading"),
    pytest.param('<video src="https://cdn.example.com/clip.mp4" poster="https://cdn.example.com/'
                 'p.png"></video>\n\n', id="video-card"),
    pytest.param('<iframe src="https://www.youtube.com/embed/aqz-KE-bpKQ"></iframe>\n\n',
                 id="youtube-card"),
    pytest.param('<a target="_blank" href="https://colab.research.google.com/x.ipynb">\n'
                 '    <img src="/assets/2025-01/latent-walk.png" '
                 'alt="Open In Colab"/>\n</a>\n\n', id="badge"),
    pytest.param('<div class="blog-metadata">\n    <small>Published January 24, 2023.</small>\n'
                 '    <a href="https://github.com/x/y.md">Update on GitHub</a>\n</div>\n\n'
                 '<div class="author-card">\n    <a href="/someone">\n        <img src="/assets/'
                 '2025-01/timeline.png">\n        <div class="bfc"><code>someone</code>\n'
                 '<span class="fullname">Some One</span></div>\n    </a>\n\n',
                 id="unclosed-author-card"),
    pytest.param("By Mara Lind and Priya Raman\n\n*Published March 3, 2025*\n\n", id="byline"),
    pytest.param("> [!TIP]\n> Read this on a phone.\n\n", id="alert"),
    pytest.param("```python\nprint('hello')\n```\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\n",
                 id="code-and-table"),
    pytest.param("<!-- {blog_metadata} -->\n<!-- {authors} -->\n\n", id="comments"),
    pytest.param("Pixels and Prose\n================\n\n", id="setext-title"),
])
def test_preheader_is_the_first_prose_whatever_the_issue_opens_with(
        tmp_path, repo_settings, opening):
    built = _build(tmp_path, repo_settings, f"{opening}{PROSE_EN}\n")
    _assert_prose(built, "Open models got smaller")


def test_a_short_first_paragraph_is_joined_by_the_next(tmp_path, repo_settings):
    built = _build(tmp_path, repo_settings, f"Hello again, readers.\n\n{PROSE_EN}\n")
    _assert_prose(built, "Hello again, readers. Open models got")


def test_chinese_preheader_is_cut_at_a_character_and_counted_in_columns(tmp_path, repo_settings):
    body = f"# 像素与文字\n\n## 目录\n\n- [更新](#更新)\n\n## 更新\n\n{PROSE_ZH * 2}\n"
    built = _build(tmp_path, repo_settings, body, "title: 像素与文字")
    line = built.email.preheader
    _assert_prose(built, PROSE_ZH[:20])
    assert line.endswith("…") or line.endswith("。")
    assert display_width(line) <= 140 < len(line) * 2 + 2
    assert (PROSE_ZH * 2).startswith(line.rstrip("…"))


def test_english_preheader_is_cut_between_words(tmp_path, repo_settings):
    words = " ".join(f"word{n}" for n in range(80))
    built = _build(tmp_path, repo_settings, f"{words}\n")
    line = built.email.preheader
    assert line.endswith("…") and display_width(line) <= 140
    kept = line.removesuffix("…")
    assert words.startswith(kept) and words[len(kept)] == " "


def test_an_english_word_inside_chinese_is_not_split(tmp_path, repo_settings):
    prose = "这是一段很长的中文文字，" * 5 + "Transformers" + "库让一切变得简单" * 8
    cut = preheader.cut(prose, 120)
    assert "Transformers" in cut or "Transfor" not in cut
    assert display_width(cut) <= 120


def test_front_matter_preheader_wins(tmp_path, repo_settings):
    front = "title: Pixels and Prose\npreheader: Written by the editor for the inbox, by hand."
    built = _build(tmp_path, repo_settings, f"# Pixels and Prose\n\n{PROSE_EN}\n", front)
    assert built.email.preheader == "Written by the editor for the inbox, by hand."


def test_a_paragraph_repeating_the_title_is_not_the_preheader(tmp_path, repo_settings):
    built = _build(tmp_path, repo_settings, f"**Pixels and Prose**\n\n{PROSE_EN}\n")
    _assert_prose(built, "Open models got smaller")


def test_markdown_left_in_raw_html_does_not_reach_the_inbox(tmp_path, repo_settings):
    body = ("<p>\n  **Note:** read [the guide](https://example.com/guide) before you "
            "start, it explains every `option` we use below in plain words.\n</p>\n")
    built = _build(tmp_path, repo_settings, body)
    line = built.email.preheader
    assert line.startswith("Note: read the guide before you start"), line
    assert not ARTEFACTS.search(line)


def test_an_issue_without_prose_has_no_preheader_and_check_says_so(tmp_path, repo_settings):
    built = _build(tmp_path, repo_settings, "# Pixels and Prose\n\n```\ncode only\n```\n")
    assert built.email.preheader == ""
    assert "preheader" in {finding.rule for finding in built.findings}


def test_lists_are_read_when_the_issue_has_nothing_else(tmp_path, repo_settings):
    body = "## This week\n\n- A new open model that draws hands right, finally\n- Two papers\n"
    built = _build(tmp_path, repo_settings, body)
    assert built.email.preheader.startswith("A new open model that draws hands right")


def test_check_counts_preheader_width_not_code_points():
    html = ('<html><body><a href="https://example.com/unsubscribe">u</a>'
            "<p>12 Harbour Lane</p></body></html>")

    def rules(line: str) -> set[str]:
        return {f.rule for f in check.check_html(html, preheader=line)}

    assert "preheader" not in rules("模" * 25)  # 25 characters, 50 columns
    assert "preheader" in rules("模" * 15)  # 15 characters but only 30 columns
    assert "preheader" in rules("模" * 100)  # 100 code points would pass; 200 columns do not
    assert "preheader" not in rules("a" * 100)


@hypothesis_settings(deadline=None)
@given(st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), max_size=400),
       st.integers(min_value=10, max_value=200))
def test_cut_never_exceeds_the_width_and_keeps_the_start(text, limit):
    text = " ".join(text.split())
    line = preheader.cut(text, limit)
    assert display_width(line) <= limit
    assert text.startswith(line.removesuffix("…").rstrip(preheader._TRAILING))


# one headline ----------------------------------------------------------------------------
def _headings_saying(built, title: str) -> list[str]:
    return [h.get_text(" ", strip=True) for h in _soup(built).find_all(re.compile("^h[1-6]$"))
            if says_the_same(title, h.get_text(" ", strip=True))]


@pytest.mark.parametrize(("title", "heading"), [
    ("混合专家模型（MoE）详解", "# 混合专家模型 (MoE) 详解"),
    ("AMD Pervasive AI Developer Contest!", "# AMD Pervasive AI Developer Contest"),
    ("The Hugging Face Community Releases an Open Dataset",
     "# Hugging Face Community Releases an Open Dataset"),
    ("huggingface_hub v1.0：开源机器学习基础五周年回顾",
     "# huggingface_hub 1.0 正式版现已发布：开源机器学习基础五周年回顾"),
    ("Notes & Sketches", '<h1 class="no-top-margin">\n    Notes &amp; Sketches\n</h1>'),
    ("Notes & Sketches", "![banner](/assets/2025-01/cover.png)\n\n# NOTES AND SKETCHES"),
    ("Notes & Sketches", "<!-- {blog_metadata} -->\n\n## Notes, Sketches"),
])
def test_the_body_heading_that_repeats_the_title_is_shown_once(
        tmp_path, repo_settings, title, heading):
    built = _build(tmp_path, repo_settings, f"{heading}\n\n{PROSE_EN}\n", f"title: '{title}'")
    soup = _soup(built)
    assert len(soup.find_all("h1")) == 1
    assert len(_headings_saying(built, title)) == 1
    assert built.text.count(PROSE_EN[:30]) == 1
    text_headings = [line for line in built.text.split("\n")
                     if line.strip() and says_the_same(title, line)]
    assert len(text_headings) == 1, text_headings


def test_a_heading_that_says_something_else_stays(tmp_path, repo_settings):
    built = _build(tmp_path, repo_settings, f"# Gradio 4\n\n{PROSE_EN}\n", "title: Gradio 5")
    assert [h.get_text() for h in _soup(built).find_all("h1")] == ["Gradio 5", "Gradio 4"]


def test_a_section_heading_is_not_taken_for_the_title(tmp_path, repo_settings):
    body = f"{PROSE_EN}\n\n# Pixels and Prose\n\nMore.\n"
    built = _build(tmp_path, repo_settings, body)
    assert len(_soup(built).find_all("h1")) == 2  # not at the opening: the author's section


def test_a_fuller_heading_becomes_the_headline(tmp_path, repo_settings):
    body = f"# Gradio 5: production-ready machine learning apps\n\n{PROSE_EN}\n"
    built = _build(tmp_path, repo_settings, body, "title: Gradio 5")
    assert [h.get_text() for h in _soup(built).find_all("h1")] == [
        "Gradio 5: production-ready machine learning apps"]
    assert built.email.subject == "Gradio 5"


def test_a_link_to_the_dropped_heading_still_lands(tmp_path, repo_settings):
    body = f"# Pixels and Prose\n\n{PROSE_EN}\n\n[Back to the top](#pixels-and-prose)\n"
    built = _build(tmp_path, repo_settings, body)
    soup = _soup(built)
    assert len(soup.find_all("h1")) == 1
    link = soup.find("a", href="#pixels-and-prose")
    assert link is not None
    assert soup.find("a", attrs={"name": "pixels-and-prose", "id": "pixels-and-prose"})
    assert not [w for w in built.warnings if "matches no heading" in w]


# the greeting ----------------------------------------------------------------------------
def test_no_greeting_unless_the_newsletter_asks(tmp_path, repo_settings):
    built = _build(tmp_path, repo_settings, f"{PROSE_EN}\n")
    assert not _soup(built).find(class_="greeting")
    assert "Hi there" not in built.text and "Hi there" not in built.html


def _send_one(built, settings, recipient: Recipient) -> tuple[str, str]:
    template = MessageTemplate(built.email, sender=settings.sender, list_name=settings.name,
                               name_fallback=built.preview_values["name"])
    raw = template.render(recipient, "https://example.com/u?t=1")
    msg = email.message_from_bytes(raw, policy=policy.default)
    text_part, html_part = msg.iter_parts()
    return text_part.get_content(), html_part.get_content()


def test_greeting_setting_is_filled_per_recipient_and_escaped(tmp_path, repo_settings):
    settings = dataclasses.replace(repo_settings, greeting="Hello %%name%% <%%email%%>,")
    built = _build(tmp_path, settings, f"{PROSE_EN}\n")
    text, html = _send_one(built, settings, Recipient("ann@example.com", "Ann <b>&</b> Bo"))
    assert "Hello Ann <b>&</b> Bo <ann@example.com>," in text
    assert "Hello Ann &lt;b&gt;&amp;&lt;/b&gt; Bo &lt;ann@example.com&gt;," in html
    assert html.index("Hello Ann") < html.rindex("Open models got smaller")
    text, _html = _send_one(built, settings, Recipient("bo@example.com"))
    assert "Hello there <bo@example.com>," in text


def test_front_matter_greeting_overrides_the_setting(tmp_path, repo_settings):
    settings = dataclasses.replace(repo_settings, greeting="Hi %%name%%,")
    off = _build(tmp_path, settings, f"{PROSE_EN}\n", "title: Pixels and Prose\ngreeting: false")
    assert not _soup(off).find(class_="greeting") and "Hi there" not in off.text
    own = _build(tmp_path, settings, f"{PROSE_EN}\n",
                 "title: Pixels and Prose\ngreeting: 'Dear %%name%%,'")
    assert _soup(own).find(class_="greeting").get_text() == "Dear there,"
    auto = _build(tmp_path, repo_settings, f"{PROSE_ZH}\n", "title: 像素与文字\ngreeting: true")
    assert _soup(auto).find(class_="greeting").get_text() == "朋友，你好！"


def test_greeting_with_an_unknown_merge_tag_warns(tmp_path, repo_settings):
    built = _build(tmp_path, repo_settings, f"{PROSE_EN}\n",
                   "title: Pixels and Prose\ngreeting: 'Hi %%first_name%%,'")
    warning = [w for w in built.warnings if "%%first_name%%" in w]
    assert warning and "issue.md:3" in warning[0] and "%%name%%" in warning[0]


def test_greeting_of_the_wrong_type_is_one_clear_error(tmp_path, repo_settings):
    from pipeline.errors import InputError

    with pytest.raises(InputError) as caught:
        _build(tmp_path, repo_settings, f"{PROSE_EN}\n",
               "title: Pixels and Prose\ngreeting:\n  - Hi")
    assert "greeting" in caught.value.message and caught.value.line == 3


def test_greeting_setting_from_publish_toml(tmp_path):
    from pipeline import settings as settings_mod
    from tests.conftest import copy_sample_newsletter

    folder = copy_sample_newsletter(tmp_path / "letter")
    toml = folder / "publish.toml"
    toml.write_text(toml.read_text("utf-8") + "\ngreeting = true\n", "utf-8")
    loaded = settings_mod.load(folder, env={})
    assert loaded.greeting == "auto"
    built = build.render_issue(folder / "issues" / "2025-02-video-models.md", loaded)
    assert "朋友，你好！" in built.text


def test_a_heading_inside_a_centred_wrapper_with_a_logo_keeps_the_logo(tmp_path, repo_settings):
    body = ('<div align="center">\n<h1><a href="https://example.com/"><img src="/assets/'
            '2025-02/storyboard.png" alt="Logo" width="80"></a><br>Pixels and Prose</h1>\n'
            '<p>A newsletter about images</p>\n</div>\n\n' + PROSE_EN + "\n")
    built = _build(tmp_path, repo_settings, body)
    soup = _soup(built)
    assert len(soup.find_all("h1")) == 1
    logo = soup.find("img", alt="Logo")
    assert logo is not None and logo.parent.name == "a"
    assert "A newsletter about images" in soup.get_text()


def test_hidden_text_and_placeholders_are_not_the_preheader(tmp_path, repo_settings):
    body = ('<p style="display: none">Secret words meant for nobody at all to read here.</p>\n\n'
            "{authors}\n\n" + PROSE_EN + "\n")
    built = _build(tmp_path, repo_settings, body)
    assert built.email.preheader.startswith("Open models got smaller")


def test_preheader_text_is_escaped_in_the_html(tmp_path, repo_settings):
    body = "When a < b & c > d, the model says <not a tag> out loud, which we kept as is.\n"
    built = _build(tmp_path, repo_settings, body)
    assert built.email.preheader.startswith("When a < b & c > d")
    assert _hidden_preheader(built).startswith("When a < b & c > d")


@pytest.mark.parametrize("notice", [
    "*This post was originally published on the Studio blog.*",
    "本文也提供英文版本 [English](https://example.com/en)。",
    "本文首发于微信公众号，转载请注明出处。",
    "5 min read · Photo by Jo Doe on Unsplash",
    "{{ page.author }} · {% include date.html %}",
    "[TOC]",
])
def test_cross_post_notices_and_theme_lines_are_passed_over(tmp_path, repo_settings, notice):
    built = _build(tmp_path, repo_settings, f"{notice}\n\n{PROSE_EN}\n")
    _assert_prose(built, "Open models got smaller")


def test_prose_that_merely_starts_like_a_byline_is_kept(tmp_path, repo_settings):
    for opening in ("By 2030, most email will be read on phones, and most of it in the dark.",
                    "By the end of the year we had shipped a model that draws hands right."):
        built = _build(tmp_path, repo_settings, f"{opening}\n")
        assert built.email.preheader == opening


# Blocks real posts open with, in any order; the generated issue always has one paragraph of
# prose somewhere, which must be what the inbox shows.
_OPENING_BLOCKS = st.sampled_from([
    "# Pixels and Prose", "## Contents\n\n- [One](#one)\n- [Two](#two)",
    "![banner](/assets/2025-01/cover.png)", "<!-- {authors} -->",
    '<div class="author-card"><a href="/x"><img src="/assets/2025-01/timeline.png"></a>',
    "<small>Published May 1, 2025.</small>", "> [!NOTE]\n> Read on a phone.",
    "```\n**not** [markdown](here)\n```", "| a | b |\n|---|---|\n| 1 | 2 |",
    '<video src="https://example.com/v.mp4"></video>', "---", "By Mara Lind",
    "[![Open In Colab](/assets/2025-01/latent-walk.png)](https://x.y/z)",
    "<h1 align=\"center\">Pixels and Prose</h1>", "Pixels and Prose\n=====",
])


@hypothesis_settings(deadline=None)  # each example is a whole build, on a shared machine
@given(st.lists(_OPENING_BLOCKS, max_size=6), st.sampled_from([PROSE_EN, PROSE_ZH * 2]))
def test_generated_openings_never_reach_the_inbox(tmp_path_factory, repo_settings, blocks,
                                                   prose):
    folder = tmp_path_factory.mktemp("gen")
    built = _build(folder, repo_settings, "\n\n".join([*blocks, prose]) + "\n")
    line = built.email.preheader
    assert prose.startswith(line.removesuffix("…")), line
    assert 40 <= display_width(line) <= preheader.LIMIT
    assert not ARTEFACTS.search(line), line


def test_check_warns_when_the_preheader_repeats_the_subject_or_shows_markdown():
    html = ('<html><body><a href="https://example.com/unsubscribe">u</a>'
            "<p>12 Harbour Lane</p></body></html>")

    def messages(line: str, subject: str = "混合专家模型（MoE）详解") -> list[str]:
        return [f.message for f in check.check_html(html, preheader=line, subject=subject)
                if f.rule == "preheader"]

    assert messages("随着 Mixtral 8x7B 的推出，一种称为混合专家模型的模型引起了关注。") == []
    assert any("repeats the subject" in m for m in messages(
        "混合专家模型 (MoE) 详解 =======================，随着 Mixtral 的推出"))
    assert any("Markdown" in m for m in messages(
        "随着 Mixtral 8x7B ([announcement](https://mistral.ai/news)) 的推出，我们来谈谈它"))
    assert any("Markdown" in m for m in messages("A **bold** claim about models that is long."))
