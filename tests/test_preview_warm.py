"""The preview's rebuild on save, with what it keeps warm between saves, writes exactly what
a cold `publish build` of the same text writes.

A running preview keeps state from save to save (the rules premailer read from the
templates' stylesheet, compiled templates and patterns, the check's parsed colour rules,
its compiled selectors and its contrast verdict per colour pair and font, what it read of
each inline style, background and font size, each code block's colours).
Sequences of edits to real posts (hypothesis picks them, among them colours, embeds and
repeated headings, which those caches key on) are saved one after another into one
preview; after each save its email and text must equal, byte for byte, those of a fresh
process building the same file, its findings must be the same, and an edit that breaks
the build must break both.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline import preview
from pipeline import settings as settings_mod
from tests.conftest import CORPUS, SAMPLES, copy_sample_newsletter, run_publish

POSTS = sorted([p for p in (CORPUS / "hf-blog").glob("*.md") if p.name != "MANIFEST.md"]
               or SAMPLES.values())
PIECES = ["", "word", "Ünïcødé 中文字 テスト", "**bold** and _it_", "[a link](https://x.example/)",
          "`code`", "\n\n## A heading\n\n", "\n\n- one\n- two\n\n", "<b>raw</b>", "&amp; &lt;",
          "\n\n```python\nprint('hi')\n```\n\n", "![img](https://x.example/a.png)", "> quote",
          # what the check's contrast verdicts and the embed cards depend on
          '<span style="color:#999">faint</span>', '<p style="color:#fff;background:#eee">pale</p>',
          '<font color="#aaaaaa">old</font>', '<h2 style="font-size:30px;color:#888">big</h2>',
          '<div style="background-color:#111">dark <a href="https://x.example/">link</a></div>',
          '\n\n<iframe src="https://www.youtube.com/embed/abcdefgh" title="A talk"></iframe>\n\n',
          '\n\n<video src="https://x.example/v.mp4" poster="/p.png"></video>\n\n',
          '\n\n<figure><iframe src="https://x.hf.space"></iframe><figcaption>Démo 中文'
          '</figcaption></figure>\n\n',
          "\n\n## Same heading\n\n## Same heading\n\n",
          # what the kept code colours, style readings and selector matches key on
          "\n\n```js\nlet x = 1;\n```\n\n", "\n\n```python\nprint('hi')  # 中文\n```\n\n",
          "\n\n    indented = True\n\n", '<td bgcolor="#eeeeee">cell</td>',
          '<div class="muted  card-caption" style="background:#f0f0f0">grey</div>',
          '<span style="font-size:2em;font-weight:700;color:#aaa">big</span>',
          '<p style="color:rgba(0,0,0,.4)">alpha</p>', "<pre>  kept   spaces\n\n</pre>",
          "<ruby>字<rt>zì</rt></ruby> TK", '<a href="#nowhere">here</a>',
          '<div style="display:none">hidden</div>', '<p role="x" style="background:#333">'
          'dark</p>',
          # raw HTML an editor leaves half-written, which the kept parse trees key on
          "\n\n<div align=\"center\">\n\n", "\n\n</div>\n\n", "<!-- open", "&#;", "&#x",
          "</br>", "<br>", "\n\n<script>let a = '</p>'\n", '<a href="x', "<b>unclosed"]

edit = st.tuples(st.sampled_from(["insert", "delete", "duplicate", "replace"]),
                 st.integers(0, 10_000), st.one_of(st.sampled_from(PIECES), st.text(max_size=30)))


def apply(text: str, change: tuple[str, int, str]) -> str:
    """One edit to the body (the front matter stays as it is)."""
    kind, at, piece = change
    head, sep, body = text.partition("\n---\n")
    blocks = body.split("\n\n")
    n = at % len(blocks)
    if kind == "insert":
        blocks.insert(n, piece)
    elif kind == "delete" and len(blocks) > 1:
        del blocks[n]
    elif kind == "duplicate":
        blocks.insert(n, blocks[n])
    else:
        words = blocks[n].split(" ")
        words[at % len(words)] = piece
        blocks[n] = " ".join(words)
    return head + sep + "\n\n".join(blocks)


def cold(folder: Path, issue: Path) -> tuple[bytes, bytes, list] | None:
    out = folder.parent / "cold-out"
    if out.exists():
        shutil.rmtree(out)
    done = run_publish("--root", str(folder), "build", str(issue), "--out", str(out), "--json")
    if done.returncode != 0:
        assert done.returncode == 2, done.stderr  # bad input, never a crash
        return None
    findings = json.loads(done.stdout)["findings"]
    return (out / "email.html").read_bytes(), (out / "email.txt").read_bytes(), findings


@settings(max_examples=8, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(post=st.sampled_from(POSTS), edits=st.lists(edit, min_size=1, max_size=3))
def test_rebuilds_on_save_equal_cold_builds(tmp_path_factory, post, edits):
    folder = copy_sample_newsletter(tmp_path_factory.mktemp("warm") / "letter")
    issue = folder / "issues" / "edited.md"
    text = post.read_text("utf-8")
    issue.write_text(text, "utf-8")
    # a preview that has already built another issue: its caches are warm
    preview.Preview(folder / "issues" / SAMPLES["zh"].name, settings_mod.load(folder, env={}))
    watched = preview.Preview(issue, settings_mod.load(folder, env={}))
    for change in edits:
        text = apply(text, change)
        issue.write_text(text, "utf-8")
        watched.rebuild()
        expected = cold(folder, issue)
        if expected is None:
            assert watched.snapshot.error
            continue
        assert not watched.snapshot.error, watched.snapshot.error
        assert (watched.snapshot.html.encode("utf-8"), watched.snapshot.text.encode("utf-8"),
                watched.snapshot.summary["findings"]) == expected


def test_saves_that_change_an_embed_a_colour_or_the_language_equal_cold_builds(tmp_path):
    """Each kept result is keyed by all it depends on: a card whose caption, thumbnail or
    language changes, or text whose colour changes, is never shown as it was before."""
    folder = copy_sample_newsletter(tmp_path / "letter")
    issue = folder / "issues" / "edited.md"
    head = "---\ntitle: Kept between saves\n{lang}---\n\n"
    body = ('Some words in a paragraph for the reader.\n\n'
            '<iframe src="https://www.youtube.com/embed/abcdefgh" title="{caption}"></iframe>'
            '\n\n<video src="https://x.example/v.mp4" poster="{poster}"></video>\n\n'
            '<p><span style="color:{colour}">Text in a colour of its own.</span></p>\n')
    saves = [dict(lang="", caption="A talk", poster="/p.png", colour="#999"),
             dict(lang="", caption="Another talk", poster="/p.png", colour="#999"),
             dict(lang="", caption="Another talk", poster="/q.png", colour="#111"),
             dict(lang="lang: zh\n", caption="演讲", poster="/q.png", colour="#111"),
             dict(lang="", caption="A talk", poster="/p.png", colour="#999")]
    issue.write_text((head + body).format(**saves[0]), "utf-8")
    watched = preview.Preview(issue, settings_mod.load(folder, env={}))
    seen = set()
    for save in saves:
        issue.write_text((head + body).format(**save), "utf-8")
        watched.rebuild()
        assert not watched.snapshot.error, watched.snapshot.error
        expected = cold(folder, issue)
        assert (watched.snapshot.html.encode("utf-8"), watched.snapshot.text.encode("utf-8"),
                watched.snapshot.summary["findings"]) == expected
        seen.add(watched.snapshot.html)
    assert len(seen) == 4  # each change showed (the last save is the first again)


def test_what_a_long_preview_session_keeps_is_bounded(tmp_path):
    """Saves that bring new code blocks, styles and colours each time never grow what the
    running preview keeps past its bounds, and a huge value is never kept at all."""
    from pipeline import markdown

    folder = copy_sample_newsletter(tmp_path / "letter")
    issue = folder / "issues" / "edited.md"
    head = "---\ntitle: A long session\n---\n\nOpening words for the reader.\n\n"
    issue.write_text(head, "utf-8")
    watched = preview.Preview(issue, settings_mod.load(folder, env={}))
    for save in range(3):  # each save: 100 new code blocks and 20 new styles
        blocks = "".join(f"```python\nx = {save * 1000 + n}\n```\n\n" for n in range(100))
        spans = "".join(f'<span style="color:#{save:02x}{n:04x}">w</span>' for n in range(20))
        issue.write_text(head + blocks + f"<p>{spans}</p>\n", "utf-8")
        watched.rebuild()
        assert not watched.snapshot.error, watched.snapshot.error
        for cache in KEPT():
            info = cache.cache_info()
            assert info.currsize <= info.maxsize, cache
    assert markdown._highlighted.cache_info().currsize == 256  # full, and no further
    # a value over the size bound is worked out at each save, never kept
    huge_code = "x = 1\n" * 3_000  # over the 16 KB bound
    huge_style = "color:#777;font-family:" + ",".join(f"Font{n}" for n in range(3000))
    for n in range(2):
        issue.write_text(head + f"```python\n{huge_code}# {n}\n```\n\n"
                         f'<p>a <span style="{huge_style},Last{n}">pale</span></p>\n', "utf-8")
        watched.rebuild()
        assert not watched.snapshot.error, watched.snapshot.error
        assert "pale" in watched.snapshot.text and f"# {n}" in watched.snapshot.text
    strings = list(_kept_strings())
    assert any("x = 2099" in text for text in strings)  # the reading sees the kept keys
    assert max(len(text) for text in strings) <= 16 * 1024  # neither huge value is kept


def test_the_contrast_pass_keeps_a_bounded_number_of_styles():
    from pipeline import check_contrast, contrast_values

    for page in range(3):
        spans = "".join(f'<span style="color:#{page:02x}{n:04x};background:#{n:04x}{page:02x};'
                        f'font-size:{n % 40 + 1}.{page}px">w</span>' for n in range(2000))
        check_contrast.problems(f"<html><body><p>{spans}</p></body></html>")
        for cache in KEPT():
            info = cache.cache_info()
            assert info.currsize <= info.maxsize, cache
    assert contrast_values.inline_style.cache_info().currsize == 4096


def test_saves_around_half_written_html_equal_cold_builds(tmp_path):
    """The parse of the fragment keeps the trees of unchanged parts between saves: an
    unclosed tag, comment or script opened above or below the edit, a stray `&#` or a
    `</br>` (which make html.parser read all that follows differently) never leave a
    part parsed as it was before."""
    from pipeline import htmltree_parse

    folder = copy_sample_newsletter(tmp_path / "letter")
    issue = folder / "issues" / "edited.md"
    head = "---\ntitle: Half-written HTML\n---\n\n"
    paragraphs = [f"Paragraph {n} of the post, with **bold** words and a [link](/p{n})."
                  for n in range(30)]
    edits = ["", "<div>\n\n", "<!-- a note left open", "&#; stray", "</br> stray",
             "<script>let x = '</div>'", '<span title="a>\nb">q</span>', "<b>open", ""]
    watched = preview.Preview(issue, settings_mod.load(folder, env={}))
    for n, inserted in enumerate(edits):
        blocks = [*paragraphs]
        blocks.insert(5 + n, inserted)  # the edit moves down the post, save after save
        blocks[20] = f"Edited {n} times."
        issue.write_text(head + "\n\n".join(blocks) + "\n", "utf-8")
        watched.rebuild()
        assert not watched.snapshot.error, watched.snapshot.error
        expected = cold(folder, issue)
        assert (watched.snapshot.html.encode("utf-8"), watched.snapshot.text.encode("utf-8"),
                watched.snapshot.summary["findings"]) == expected
    assert htmltree_parse.kept_size()[1] <= htmltree_parse.KEEP_CHARS


def KEPT():
    """The caches a running preview keeps between saves (those keyed by text first)."""
    from pipeline import (
        check_contrast,
        check_rules,
        check_support,
        contrast_values,
        inliner,
        language,
        markdown,
    )

    return (markdown._highlighted, contrast_values.inline_style,
            contrast_values.background_colour, contrast_values.font_px,
            language._html_text, check_rules.style_declarations,
            check_support._style_features_kept, check_support._element_features,
            check_support._declaration_features, inliner._basic_attributes,
            _merged_styles(), contrast_values.over, check_contrast._verdict)


TEXT_KEYED = 11


def _merged_styles():
    from premailer import premailer as premailer_module

    from pipeline import inliner

    inliner._inliner_class()  # premailer's names pointed at the kept ones
    return premailer_module.merge_styles.cache


def _kept_strings():
    """Every string the bounded caches hold in their keys, read through gc."""
    import gc

    for cache in KEPT()[:TEXT_KEYED]:
        for referent in gc.get_referents(cache):
            if isinstance(referent, dict):
                for key in referent:
                    parts = key if isinstance(key, tuple | list) else (key,)
                    yield from (part for part in parts if isinstance(part, str))


def _same_tick_edit(path: Path, old: str, new: str) -> None:
    """Replace `old` by `new` (as long) in the file and put its times back: an edit within
    the same tick of its modification time, as a fast editor or a coarse clock makes."""
    import os

    assert len(old.encode("utf-8")) == len(new.encode("utf-8"))
    before = path.stat()
    text = path.read_text("utf-8")
    assert old in text
    path.write_text(text.replace(old, new), "utf-8")
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert (path.stat().st_mtime_ns, path.stat().st_size) == (before.st_mtime_ns,
                                                              before.st_size)


def test_settings_strings_and_tokens_changed_in_the_same_tick_are_seen(tmp_path):
    """What each save reads again (publish.toml, the template strings, tokens.toml) is kept
    by its text, not its time stamp: an edit that leaves the file's modification time and
    size as they were still shows at the next save, and equals a cold build."""
    folder = copy_sample_newsletter(tmp_path / "letter")
    issue = folder / "issues" / "edited.md"
    issue.write_text("---\ntitle: Same tick\n---\n\nA paragraph for the reader.\n", "utf-8")
    watched = preview.Preview(issue, settings_mod.load(folder, env={}))
    assert not watched.snapshot.error, watched.snapshot.error
    edits = [
        (folder / "publish.toml", 'name = "Pixels & Prose"', 'name = "Pixels & ProsZ"'),
        (folder / "email_templates" / "strings" / "en.toml", '"View in browser"',
         '"Read on the web"'),
        (folder / "email_templates" / "tokens.toml", 'heading = "#111418"',
         'heading = "#181411"'),
    ]
    seen = {watched.snapshot.html}
    for path, old, new in edits:
        _same_tick_edit(path, old, new)
        watched.rebuild()
        assert not watched.snapshot.error, watched.snapshot.error
        expected = cold(folder, issue)
        assert (watched.snapshot.html.encode("utf-8"), watched.snapshot.text.encode("utf-8"),
                watched.snapshot.summary["findings"]) == expected
        seen.add(watched.snapshot.html + watched.snapshot.text)
    assert "Pixels & ProsZ" in watched.snapshot.text
    assert "Read on the web" in watched.snapshot.text
    assert len(seen) == 4  # every edit showed
    # a file broken in the same tick is an error at the next save, not the kept reading
    _same_tick_edit(folder / "email_templates" / "strings" / "en.toml", '"Read on the web"',
                    '"Read on the webX')
    watched.rebuild()
    assert "en.toml" in watched.snapshot.error
