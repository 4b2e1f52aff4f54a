"""The email's language: judged on visible prose, said in the summary, spoken by its strings."""

from __future__ import annotations

import dataclasses
import json
import tomllib

import pytest
from bs4 import BeautifulSoup

from pipeline import build, language
from pipeline.errors import InputError
from tests.conftest import ROOT, run_publish, write_issue

STRINGS = ROOT / "email_templates" / "strings"
ZH_PROSE = ("我们很高兴在此发布这个通用的多模态模型，它接受任意文本序列和图像序列作为输入，"
            "并据此生成文本。它可用于回答图像相关的问题、描述视觉内容、基于多幅图像创作故事。")
EN_PROSE = ("We are happy to release a general multimodal model that takes any sequence of "
            "text and images as input and writes text in answer. ")
CODE = ("```python\nfrom transformers import AutoProcessor, AutoModelForVision2Seq\n"
        "processor = AutoProcessor.from_pretrained('HuggingFaceM4/idefics2-8b')\n"
        "model = AutoModelForVision2Seq.from_pretrained('HuggingFaceM4/idefics2-8b')\n"
        "inputs = processor(text=prompt, images=[image1, image2], return_tensors='pt')\n"
        "generated_ids = model.generate(**inputs, max_new_tokens=500)\n```\n\n")
HTML_NOISE = ('<p align="center"><img src="https://huggingface.co/datasets/huggingface/'
              'documentation-images/resolve/main/blog/idefics2/Idefics2_eval_barchart.png" '
              'alt="The Cauldron evaluation bar chart" width="900"/></p>\n\n')
LINKS = ("[Idefics2](https://huggingface.co/HuggingFaceM4/idefics2-8b/resolve/main/README.md)"
         "、[LLaVa-NeXT](https://huggingface.co/liuhaotian/llava-v1.6-mistral-7b)。\n\n")


def _build(tmp_path, settings, body: str, front: str = "title: 模型简介") -> build.Built:
    return build.render_issue(write_issue(tmp_path, "issue.md", f"---\n{front}\n---\n{body}"),
                              settings)


def _html_lang(built) -> str:
    return BeautifulSoup(built.html, "html.parser").html["lang"]


def test_chinese_with_far_more_code_urls_and_html_than_prose_is_chinese(tmp_path, repo_settings):
    body = ZH_PROSE + "\n\n" + (HTML_NOISE + CODE + LINKS) * 6 + ZH_PROSE + "\n"
    built = _build(tmp_path, repo_settings, body)
    assert built.email.lang == "zh" and _html_lang(built) == "zh"
    assert built.lang_reason.startswith("detected: ") and "Chinese" in built.lang_reason
    assert "退订" in built.text and "Unsubscribe" not in built.text
    assert not [w for w in built.warnings if "close call" in w]


def test_english_with_chinese_code_comments_and_urls_is_english(tmp_path, repo_settings):
    chinese_code = "```python\n# 加载模型，生成文本，" + "中文注释" * 50 + "\nrun()\n```\n\n"
    url = "https://example.com/" + "中文路径" * 20
    body = EN_PROSE * 3 + "\n\n" + chinese_code + f"See <{url}> and `{'代码' * 40}`.\n"
    settings = dataclasses.replace(repo_settings, language="zh")
    built = _build(tmp_path, settings, body, "title: Models")
    assert built.email.lang == "en", built.lang_reason


@pytest.mark.parametrize(("english_sentences", "expected"), [(1, "zh"), (9, "en")])
def test_mixed_prose_weighs_a_chinese_character_like_a_word(
        tmp_path, repo_settings, english_sentences, expected):
    # ~90 Chinese characters against 21 or 189 English words.
    built = _build(tmp_path, repo_settings, ZH_PROSE + "\n\n" + EN_PROSE * english_sentences)
    assert built.email.lang == expected, built.lang_reason


def test_a_close_call_is_reported_with_the_front_matter_fix(tmp_path, repo_settings):
    built = _build(tmp_path, repo_settings, ZH_PROSE + "\n\n" + EN_PROSE * 4)
    close = [w for w in built.warnings if "close call" in w]
    assert close and "lang:" in close[0] and str(built.issue.path) in close[0]


def test_japanese_is_not_taken_for_chinese(tmp_path, repo_settings):
    body = "これは日本語の文章です。ひらがなとカタカナと漢字を使って書かれています。" * 4
    built = _build(tmp_path, repo_settings, body, "title: 日本語")
    assert built.email.lang == "en" and "Japanese" in built.lang_reason


def test_front_matter_lang_wins_and_says_so(tmp_path, repo_settings):
    built = _build(tmp_path, repo_settings, EN_PROSE, "title: x\nlang: zh")
    assert built.email.lang == "zh" and built.lang_reason == "front matter"


def test_build_summary_says_which_language_and_why(tmp_path):
    path = write_issue(tmp_path, "issue.md", f"---\ntitle: 模型简介\n---\n{CODE * 5}{ZH_PROSE}\n")
    result = run_publish("build", str(path), "--out", str(tmp_path / "out"), "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["lang"] == "zh"
    assert summary["lang_reason"].startswith("detected: ")
    plain = run_publish("build", str(path), "--out", str(tmp_path / "out"))
    assert "zh (detected: " in plain.stdout and "% of prose words are Chinese)" in plain.stdout


@pytest.mark.parametrize("tag", ["zh-TW", "zh-Hant", "zh-HK", "zh-hant-tw", "zh-MO"])
def test_traditional_chinese_tags_get_traditional_strings(tmp_path, repo_settings, tag):
    built = _build(tmp_path, repo_settings, ZH_PROSE, f"title: 模型簡介\nlang: {tag}")
    assert _html_lang(built) == tag
    assert "取消訂閱" in built.text and "退订" not in built.text
    assert not built.warnings


@pytest.mark.parametrize("tag", ["zh-CN", "zh-Hans", "zh-SG", "zh"])
def test_simplified_chinese_tags_get_simplified_strings(tmp_path, repo_settings, tag):
    built = _build(tmp_path, repo_settings, ZH_PROSE, f"title: 模型简介\nlang: {tag}")
    assert "退订" in built.text and not built.warnings


def test_an_unknown_regional_tag_falls_back_to_its_language_with_a_warning(
        tmp_path, repo_settings):
    built = _build(tmp_path, repo_settings, EN_PROSE, "title: x\nlang: en-GB")
    assert built.email.lang == "en-GB" and "Unsubscribe" in built.text
    warning = [w for w in built.warnings if "en-GB" in w]
    assert warning and "issue.md:3" in warning[0] and "using 'en'" in warning[0]


def test_a_language_without_strings_is_one_clear_error(tmp_path, repo_settings):
    with pytest.raises(InputError) as caught:
        _build(tmp_path, repo_settings, EN_PROSE, "title: x\nlang: pt-BR")
    assert "pt-BR" in caught.value.message and caught.value.line == 3


def test_a_traditional_tag_without_traditional_strings_says_so(tmp_path):
    name, warning = language.strings_name("zh-TW", ["en", "zh"])
    assert name == "zh" and "Traditional" in warning


def _strings(name: str) -> dict[str, str]:
    return tomllib.loads((STRINGS / f"{name}.toml").read_text("utf-8"))


def test_traditional_strings_are_complete_and_traditional():
    import hanzidentifier

    simplified, traditional = _strings("zh"), _strings("zh-Hant")
    assert set(simplified) <= set(traditional), set(simplified) - set(traditional)
    for key, value in traditional.items():
        assert hanzidentifier.identify(value) in (
            hanzidentifier.TRADITIONAL, hanzidentifier.BOTH, hanzidentifier.UNKNOWN), (key, value)
    assert hanzidentifier.is_traditional("".join(traditional.values()))
    assert hanzidentifier.is_simplified("".join(simplified.values()))
    for key in ("unsubscribe", "card_video", "view_in_browser", "why_received"):
        assert traditional[key] != simplified[key]


def test_prose_leaves_out_what_the_reader_does_not_read():
    body = ('<div class="author-card"><a href="https://例子.com/路径">中文</a></div>\n\n'
            "Words here `代码代码` and $数学$ <https://example.com/中文>\n\n"
            "<!-- 注释注释注释 -->\n\n    缩进的代码块\n\n```\n代码块\n```\n")
    text = language.prose(body)
    for hidden in ("代码", "数学", "路径", "注释", "缩进", "href"):
        assert hidden not in text, hidden
    assert "中文" in text and "Words here" in text


TRADITIONAL_PROSE = ("我們很高興在此發布這個通用的多模態模型，"
                     "它接受任意文字序列和圖像序列作為輸入，並據此產生文字。它可用於回答與圖像相關的問題、描述視覺內容、根據多幅圖像創作故事。")


def test_traditional_prose_without_lang_gets_traditional_strings_and_fonts(
        tmp_path, repo_settings):
    built = _build(tmp_path, repo_settings, TRADITIONAL_PROSE * 2, "title: 模型簡介")
    assert built.email.lang == "zh-Hant" and "Traditional" in built.lang_reason
    assert "取消訂閱" in built.text and "退订" not in built.text
    assert "PingFang TC" in built.html
    simplified = _build(tmp_path, repo_settings, ZH_PROSE * 2)
    assert simplified.email.lang == "zh" and "PingFang TC" not in simplified.html


def test_script_hints_are_one_script_each():
    import hanzidentifier

    assert len(language._SIMPLIFIED) == len(language._TRADITIONAL) >= 40
    for char in language._SIMPLIFIED:
        assert hanzidentifier.identify(char) == hanzidentifier.SIMPLIFIED, char
    for char in language._TRADITIONAL:
        assert hanzidentifier.identify(char) == hanzidentifier.TRADITIONAL, char


def test_a_newsletter_without_traditional_strings_warns_instead_of_silently_simplifying(
        tmp_path):
    from pipeline import settings as settings_mod
    from tests.conftest import copy_sample_newsletter

    folder = copy_sample_newsletter(tmp_path / "letter")
    (folder / "email_templates" / "strings" / "zh-Hant.toml").unlink()
    built = _build(tmp_path, settings_mod.load(folder, env={}), TRADITIONAL_PROSE,
                   "title: 模型簡介\nlang: zh-TW")
    assert _html_lang(built) == "zh-TW"
    warning = [w for w in built.warnings if "Traditional" in w]
    assert warning and "issue.md:3" in warning[0] and "zh-Hant.toml" in warning[0]


def test_too_little_prose_keeps_the_setting(tmp_path, repo_settings):
    settings = dataclasses.replace(repo_settings, language="zh")
    built = _build(tmp_path, settings, CODE * 3 + "中文\n", "title: x")
    assert built.email.lang == "zh" and "too little prose" in built.lang_reason


def test_inline_html_code_is_not_prose():
    text = language.prose(
        "Read <code>代码代码</code> and <kbd>键盘</kbd>, then <b>加粗</b> words.\n")
    assert "代码" not in text and "键盘" not in text
    assert "加粗" in text and "words" in text


def test_the_body_parsed_for_its_language_is_rendered_without_a_second_parse_only_if_same():
    """`markdown.render` renders the tokens `markdown.parse` just made of the same body
    (detection runs first); for any other body it parses, and the result never differs."""
    from pipeline import markdown

    body = ("Intro with a [reference][r] and a footnote[^1].\n\n[r]: https://example.org/\n\n"
            "[^1]: The note.\n\n> [!TIP]\n> Tip text\n\n<div>Some **bold** in HTML</div>\n")
    fresh = markdown.render(body, {"alert_tip": "Tip"})
    markdown.parse("A different body with [a link](https://example.org/x).")
    assert markdown.render(body, {"alert_tip": "Tip"}) == fresh
    markdown.parse(body)
    reused = markdown.render(body, {"alert_tip": "Tip"})
    assert reused == fresh and "https://example.org/" in reused.html
    assert markdown.render(body, {"alert_tip": "Tip"}) == fresh  # taken once, then parsed
