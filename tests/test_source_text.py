"""No Markdown source reaches a reader unannounced, and nothing the author wrote is lost.

For every real post and sample: the visible text of email.html and all of email.txt hold no
Markdown syntax (`**`, `](`, `[!`, a backtick, a leading `#`) and no `{placeholder}`, unless
the build warned about that very line. Every word of the source's prose comes out once.
"""

from __future__ import annotations

import html
import re
from collections import Counter
from pathlib import Path

import pytest
from bs4 import BeautifulSoup

from pipeline import build, issue, markdown, templates
from tests.conftest import CORPUS, ROOT, SAMPLES

POSTS = sorted(p for p in CORPUS.rglob("*.md") if p.name != "MANIFEST.md")
ISSUES = POSTS + sorted(SAMPLES.values())
SYNTAX = {
    "**": re.compile(r"\*\*"),
    "](": re.compile(r"\]\("),
    "[!": re.compile(r"\[![A-Za-z]"),
    "`": re.compile(r"`"),
    "#": re.compile(r"^[ \t]*#", re.M),
    "{": re.compile(r"\{\{?[ \t]*[A-Za-z_][\w.-]+[ \t]*\}\}?"),
}


def _code_texts(soup) -> list[str]:
    """Text a reader sees as code or TeX: it may hold any characters."""
    return [el.get_text() for el in soup.select("pre, code, div.math")]


def visible_html_text(page: str) -> str:
    soup = BeautifulSoup(page, "html.parser")
    for element in soup.select("head, style, script, pre, code, div.math"):
        element.decompose()
    for element in soup.find_all(style=re.compile(r"display:\s*none")):
        element.decompose()
    return soup.get_text("\n")


def text_part_without_code(text: str, page: str) -> str:
    codes = _code_texts(BeautifulSoup(page, "html.parser"))
    code_lines = {line.strip() for code in codes for line in code.split("\n") if line.strip()}
    inline = sorted({c.strip() for c in codes if c.strip() and "\n" not in c.strip()},
                    key=len, reverse=True)
    kept = []
    for line in text.split("\n"):
        if line.strip() in code_lines:
            continue
        for code in inline:
            line = line.replace(code, " ")
        kept.append(line)
    return "\n".join(kept)


def unannounced(path: Path, shown: str, warnings: list[str]) -> list[str]:
    """Syntax in `shown` that no warning names the source line of."""
    source = path.read_text("utf-8").split("\n")
    warned = {int(m.group(1)) for w in warnings
              for m in [re.match(rf"{re.escape(str(path))}:(\d+):", w)] if m}
    problems = []
    for marker, pattern in SYNTAX.items():
        for match in pattern.finditer(shown):
            window = shown[max(0, match.start() - 40):match.end() + 40]
            words = {w for w in re.findall(r"\w{4,}", window)} or {match.group(0)}
            lines = {n for n, text in enumerate(source, 1)
                     if marker in text and any(w in text for w in words)}
            if not lines & warned:
                problems.append(f"{marker!r} in {' '.join(window.split())!r}")
    return problems


@pytest.mark.skipif(not POSTS, reason="../shared/corpus/ is not present")
@pytest.mark.parametrize("post", ISSUES, ids=lambda p: p.name)
def test_no_markdown_or_placeholder_reaches_the_reader_unannounced(post, repo_settings, tmp_path):
    result = build.build(post, repo_settings, tmp_path / "out")
    page = (tmp_path / "out" / "email.html").read_text("utf-8")
    text = (tmp_path / "out" / "email.txt").read_text("utf-8")
    warnings = result.built.warnings
    assert unannounced(post, visible_html_text(page), warnings) == []
    assert unannounced(post, text_part_without_code(text, page), warnings) == []


# content kept ---------------------------------------------------------------------------
def _words(text: str) -> Counter:
    """Latin words and single CJK characters: how prose is counted in both scripts."""
    return Counter(re.findall(r"[A-Za-z0-9]+|[^\W\d_A-Za-z]", text))


_TAG = re.compile(r"""</?(?![A-Za-z][\w.+-]*:)[A-Za-z][\w-]*"""
                  r"""(?:\s*[^\s"'=<>`,/]+(?:\s*=\s*(?:"[^"]*"|'[^']*'|[^\s"'=<>`]+))?)*\s*/?>"""
                  r"|<![^>]*>")


def _without_code_blocks(body: str) -> str:
    """The body with fenced and indented code blocks blanked (found by plain CommonMark)."""
    from markdown_it import MarkdownIt

    lines = body.split("\n")
    for token in MarkdownIt("commonmark").parse(body):
        if token.type in ("fence", "code_block") and token.map:
            for n in range(*token.map):
                lines[n] = ""
    return "\n".join(lines)


def source_prose(body: str) -> str:
    """The words a reader should see, read from the source with regular expressions."""
    text = re.sub(r"<!--.*?-->", " ", _without_code_blocks(body), flags=re.S)
    text = re.sub(r"\\\\\(.*?\\\\\)", lambda m: m.group(0).replace("`", ""), text)  # math
    text = re.sub(r"``([^`\s][^`]*?[^`\s]|[^`\s])''(?![`'])", r"“\1”", text)  # TeX quotes
    text = re.sub(r"(?<!`)(`+)(?!`).+?(?<!`)\1(?!`)", " ", text)  # code spans
    text = re.sub(r"<(code|pre)\b.*?</\1>", " ", text, flags=re.S | re.I)
    text = re.sub(r"^[ \t]*\[(?!\^)[^\]\n]+\]:[ \t]*\S+.*$", " ", text, flags=re.M)  # ref defs
    text = re.sub(r"\[\^[^\]\s]+\]:?", " ", text)  # footnote labels become numbers
    text = re.sub(r"^[ \t>]*\d+[.)][ \t]", " ", text, flags=re.M)  # ordered list numbers
    text = re.sub(r"!\[[^\]]*\]\([^)\s]*(?:\s+\"[^\"]*\")?\)", " ", text)  # images
    text = re.sub(r"\]\(\s*\(?[^()\s]*(?:\([^()\s]*\))?[^()\s]*\)?(?:\s+\"[^\"]*\")?\)", "] ", text)
    text = re.sub(r"\]\[[^\]\n]*\]", "] ", text)
    text = re.sub(r"\[!(NOTE|TIP|IMPORTANT|WARNING|CAUTION)\]", " ", text, flags=re.I)
    text = _TAG.sub(" ", text)
    return html.unescape(text)


def fragment_prose(fragment: str) -> str:
    soup = BeautifulSoup(fragment, "html.parser")
    for element in soup.select(".callout-title, pre, code:not(.math), .footnote-ref"):
        element.decompose()
    return soup.get_text(" ")


@pytest.mark.skipif(not POSTS, reason="../shared/corpus/ is not present")
@pytest.mark.parametrize("post", ISSUES, ids=lambda p: p.name)
def test_every_word_of_the_source_comes_out_once(post):
    loaded = issue.load(post)
    rendered = markdown.render(loaded.body)
    dropped = Counter()
    for _line, message in rendered.warnings:
        if "left out" in message:
            dropped += _words(message.split(" left ")[0])
    source = _words(source_prose(loaded.body))
    out = _words(fragment_prose(rendered.html))
    lost = source - out - dropped
    doubled = out - source
    assert not lost, f"lost: {dict(lost)}"
    assert not doubled, f"doubled: {dict(doubled)}"


# hard cases, mechanism by mechanism -------------------------------------------------------
STRINGS_ZH = templates.strings(ROOT / "email_templates", "zh")


def render(source: str, strings=None) -> markdown.Rendered:
    return markdown.render(source, strings)


def soup_of(source: str, strings=None):
    return BeautifulSoup(render(source, strings).html, "html.parser")


@pytest.mark.parametrize("source, bold", [
    ("* **Reproducibility: **we aim to be open", "Reproducibility:"),
    ("**Note: ** read this", "Note:"),
    ("**注意：**这个很重要", "注意："),
    ("这是**“引用”**的例子", "“引用”"),
    ("那是**（括号）**里", "（括号）"),
    ("*Aside: *text", "Aside:"),
])
def test_slipped_emphasis_is_bold_as_meant(source, bold):
    soup = soup_of(source)
    found = soup.find(["strong", "em"])
    assert found is not None and found.get_text().strip() == bold
    assert "*" not in soup.get_text()
    assert render(source).warnings == []


@pytest.mark.parametrize("source", [
    "pass **kwargs and **inputs through",
    "2 ** 3 ** 4 is a power",
    "a `**Label: **x` code span",
    "escaped \\*\\*Label: \\*\\*x",
])
def test_emphasis_that_is_not_a_slip_is_left_alone(source):
    soup = soup_of(source)
    assert soup.find("strong") is None
    warnings = render(source).warnings
    if "`" in source or "\\" in source:
        assert warnings == []  # code and escapes are what the author wrote on purpose


def test_unpaired_bold_markers_are_warned_with_their_line():
    warnings = render("Intro.\n\nSecond paragraph\nhas **kwargs and **inputs here.").warnings
    assert [line for line, _ in warnings] == [4]
    assert "'**' shown as text" in warnings[0][1]


def test_markdown_inside_html_blocks_is_rendered():
    source = ("<details>\n  <summary>Unfamiliar?</summary>\n  <p>\n"
              "    [Data](https://x.example/d) is `code` and **bold**.\n  </p>\n</details>\n\n"
              '<figure>\n  <img src="a.png" alt="A">\n'
              "  <figcaption>[Paper](https://x.example/p) 论文中的图</figcaption>\n</figure>\n\n"
              '<p align="left">\n  <em>Tuning `meta-llama/Llama-3.2-3B`and more</em>\n</p>\n')
    soup = soup_of(source)
    assert [a["href"] for a in soup.find_all("a")] == ["https://x.example/d",
                                                      "https://x.example/p"]
    assert [c.get_text() for c in soup.find_all("code")] == ["code", "meta-llama/Llama-3.2-3B"]
    assert soup.find("strong").get_text() == "bold"
    assert soup.find("summary").get_text() == "Unfamiliar?"
    assert soup.find("figcaption").get_text() == "Paper 论文中的图"
    assert soup.find("p", align="left").find("em") is not None
    assert "](" not in soup.get_text() and "`" not in soup.get_text()


@pytest.mark.parametrize("source", [
    '<div class="x" title="[a](b) **c**">\n  plain words & more\n</div>\n',
    "<div>\n<pre>[a](b) **x** `y`</pre>\n</div>\n",
    "<p>\n<code>**kw</code> and <kbd>`</kbd>\n</p>\n",
    "<table>\n<tr><td>1 * 2</td><td>3 * 4</td></tr>\n</table>\n",
])
def test_html_without_markdown_prose_is_kept_byte_for_byte(source):
    assert render(source).html == source


def test_html_block_prose_warnings_carry_the_line():
    warnings = render("Text.\n\n<div>\n  <p>\n  Dear {first_name}, see [x]((https://x.example/a)\n"
                      "  </p>\n</div>\n").warnings
    lines = sorted({line for line, _ in warnings})
    assert lines == [5]
    assert any("{first_name}" in message for _, message in warnings)


@pytest.mark.parametrize("kind, label_en, label_zh", [
    ("NOTE", "Note", "注意"), ("TIP", "Tip", "提示"), ("IMPORTANT", "Important", "重要"),
    ("WARNING", "Warning", "警告"), ("CAUTION", "Caution", "小心"),
])
def test_github_alerts_are_callouts_labelled_in_the_issue_language(kind, label_en, label_zh):
    source = f"> [!{kind}]\n> Keep **this** [link](https://x.example/).\n"
    english = soup_of(source, templates.strings(ROOT / "email_templates", "en"))
    chinese = soup_of(source, STRINGS_ZH)
    for soup, label in ((english, label_en), (chinese, label_zh)):
        quote = soup.find("blockquote")
        assert f"callout-{kind.lower()}" in quote["class"]
        assert "border-left" in quote["style"]
        assert quote.find(class_="callout-title").get_text() == label
        assert "[!" not in soup.get_text() and quote.find("a")["href"] == "https://x.example/"


def test_alert_shapes_authors_write():
    same_line = soup_of("> [!note] Read the docs first.\n")
    assert same_line.find(class_="callout-title").get_text() == "Note"
    assert "Read the docs first." in same_line.get_text()
    only_marker = soup_of("> [!TIP]\n")
    assert only_marker.find(class_="callout-title") is not None
    in_list = soup_of("- item\n\n  > [!WARNING]\n  > Careful.\n")
    assert in_list.find("li").find(class_="callout-title").get_text() == "Warning"
    unknown = render("> [!FOO]\n> Something.\n")
    assert "[!FOO]" in BeautifulSoup(unknown.html, "html.parser").get_text()
    assert unknown.warnings and unknown.warnings[0][0] == 1
    plain = soup_of("> Just a [quote](https://x.example/).\n")
    assert plain.find("blockquote").get("class") is None


@pytest.mark.parametrize("source, href", [
    ("[a]((https://allenai.org/blog/olmo2-32B)), are", "https://allenai.org/blog/olmo2-32B"),
    ("嵌入 [Phoenix 应用]((https://phoenixframework.org/)，作为", "https://phoenixframework.org/"),
    ("[wiki]((https://en.wikipedia.org/wiki/A_(b)))", "https://en.wikipedia.org/wiki/A_(b)"),
])
def test_doubled_parenthesis_links_go_where_meant_with_a_warning(source, href):
    result = render(source)
    soup = BeautifulSoup(result.html, "html.parser")
    assert soup.find("a")["href"] == href
    assert "(" not in soup.find("a").get_text() and "](" not in soup.get_text()
    assert result.warnings and result.warnings[0][0] == 1
    assert "malformed link" in result.warnings[0][1]


def _built(tmp_path, body: str, settings):
    path = tmp_path / "issue.md"
    path.write_text(f"---\ntitle: Links\n---\n\n{body}", "utf-8")
    return build.render_issue(path, settings), path


def test_malformed_links_are_never_resolved_against_the_base_url(tmp_path, repo_settings):
    built, path = _built(tmp_path, "Intro.\n\n[a](www.example.com/x) and [b](https:/bad.example/y)"
                                   " and [c](<(https://c.example/z)>) and [d](docs/page.html)\n",
                         repo_settings)
    soup = BeautifulSoup(built.fragment, "html.parser")
    hrefs = {a.get_text(): a.get("href") for a in soup.find_all("a")}
    assert hrefs["a"] == "https://www.example.com/x"
    assert "b" not in hrefs  # nothing to guess: left as text, warned
    assert hrefs["c"] == "https://c.example/z"
    assert hrefs["d"].startswith(repo_settings.base_url.rstrip("/"))
    malformed = [w for w in built.warnings if "malformed link" in w]
    assert len(malformed) == 3 and all(w.startswith(f"{path}:7:") for w in malformed)


def test_placeholders_are_left_out_or_warned_with_their_line(tmp_path, repo_settings):
    built, path = _built(tmp_path, "{authors}\n\nHello {first_name}, welcome.\n\n"
                                   "Code `{kept}` and\n\n```\n{also_kept}\n```\n\n"
                                   "Jinja {{ title }} too.\n", repo_settings)
    text = visible_html_text(built.html)
    assert "{authors}" not in text and "{first_name}" in text
    assert f"{path}:5: template placeholder {{authors}} left in the text; left out" in \
        "\n".join(built.warnings)
    assert any(w.startswith(f"{path}:7:") and "{first_name}" in w for w in built.warnings)
    assert any(w.startswith(f"{path}:15:") and "{{ title }}" in w for w in built.warnings)
    assert not [w for w in built.warnings if "kept" in w]


def test_web_page_scaffolding_is_left_out_with_a_warning():
    source = ('<div class="blog-metadata">\n    <small>Published December 09, 2022.</small>\n'
              '    <a target="_blank" href="https://github.com/x/blog/blob/main/a.md">\n'
              "        Update on GitHub\n    </a>\n</div>\n\nThe post.\n\n"
              "<p>Published in Nature 2020.</p>\n")
    result = render(source)
    assert "Update on GitHub" not in result.html and "The post." in result.html
    assert "Published in Nature 2020." in result.html
    assert result.warnings == [(1, "web-page scaffolding 'Published December 09, 2022. "
                                   "Update on GitHub' left out of the email")]


@pytest.mark.parametrize("source, math", [
    ("given $\\boldsymbol{x}$，使用", "$\\boldsymbol{x}$"),
    ("and \\\\(W_0\\\\) being", "$W_0$"),
    ("level \\\\( i \\\\).", "$i$"),
    ("single \\(w_i\\) too", "$w_i$"),
    ("display \\\\[ \\frac{a}{b} \\\\] inline", "$$\\frac{a}{b}$$"),
    ("quoted \\\\(\\text{``The''}\\\\) word", "$\\text{``The''}$"),
])
def test_inline_math_reads_as_code(source, math):
    soup = soup_of(source)
    code = soup.find("code", class_="math")
    assert code is not None and code.get_text() == math
    assert "\\(" not in soup.get_text()


@pytest.mark.parametrize("source, shown", [
    ("costs $10 and $20 each", "costs $10 and $20 each"),
    ("see \\(sic\\) here", "see (sic) here"),
    ("cite \\[1\\] here", "cite [1] here"),
])
def test_dollars_and_escaped_brackets_are_not_math(source, shown):
    soup = soup_of(source)
    assert soup.find("code") is None and soup.get_text().strip() == shown


@pytest.mark.parametrize("source, shown, code", [
    ("the word ``nice'' and ``dog'' here", "the word “nice” and “dog” here", []),
    ("run ``echo ''`` now", "run echo '' now", ["echo ''"]),
    ("a ``b`` code span", "a b code span", ["b"]),
])
def test_tex_quotes_are_quotations_not_code(source, shown, code):
    soup = soup_of(source)
    assert soup.get_text().strip() == shown
    assert [c.get_text() for c in soup.find_all("code")] == code


def test_unclosed_backticks_and_hash_without_space_are_warned():
    result = render("Title.\n\nGive ```slider`` a step.\n\n#Heading without space\n")
    assert {line for line, _ in result.warnings} == {3, 5}


# attacks --------------------------------------------------------------------------------
@pytest.mark.parametrize("source", [
    "<div>\n" + "<code>x " * 2000 + "\n</div>\n",            # unclosed opaque elements
    "<div>\n" + "<!-- x " * 2000 + "\n</div>\n",              # unclosed comments
    "a " + "\\\\( x " * 2000, "a " + "\\( x_1 " * 2000,      # unclosed math
    "a " + "``x " * 2000, "a " + "[x]((" * 2000,              # unclosed quotes and links
    "**a: **" * 2000, "**注意：**这" * 2000, "](" * 2000,
])
def test_hostile_runs_render_completely(source):
    result = render(source)
    text = BeautifulSoup(result.html, "html.parser").get_text()
    assert _words(text) >= _words(source_prose(source)) - Counter(a=1)
    assert len(result.warnings) <= 40  # a flood of warnings is summarised


def test_a_thousand_placeholders_give_a_short_list_of_warnings():
    result = render("Hi {name}.\n" * 1000)
    assert len(result.warnings) == 11
    assert result.warnings[-1] == (None, "template placeholder shown as text: "
                                         "990 more like this")


@pytest.mark.parametrize("source", [
    "[a]((javascript:alert(1)))", "<p>\n[a](javascript:alert(1)) **b**\n</p>",
    "[a]((data:text/html;base64,PHNjcmlwdD4=))", "> [!TIP]\n> <script>alert(1)</script>",
])
def test_no_repair_makes_a_script_link(source, tmp_path, repo_settings):
    built, _ = _built(tmp_path, source + "\n", repo_settings)
    soup = BeautifulSoup(built.fragment, "html.parser")
    assert soup.find("script") is None
    for link in soup.find_all("a", href=True):
        assert not re.match(r"\W*(javascript|data|vbscript):", link["href"], re.I)


@pytest.mark.parametrize("source, bold", [
    ("__Note: __text", "Note:"), ("**Done. **Next", "Done."), ("*Aside: *text", "Aside:"),
])
def test_more_slipped_label_shapes(source, bold):
    assert soup_of(source).find(["strong", "em"]).get_text().strip() == bold


@pytest.mark.parametrize("source", ["f(*a, *b) and g(*args, **kwargs)", "**a, **b",
                                    "snake_case_name and a_b_c: __x"])
def test_code_like_prose_does_not_turn_emphatic(source):
    soup = soup_of(source)
    assert soup.find("em") is None and soup.find("strong") is None
    assert soup.get_text().strip() == source


def test_a_space_between_bracket_and_parenthesis_links_with_a_warning():
    result = render("Intro.\n\nSee [the docs] (https://x.example/a) and [1] (see above).\n\n"
                    "[ref] (https://x.example/b)\n\n[ref]: https://y.example/\n")
    soup = BeautifulSoup(result.html, "html.parser")
    assert [a["href"] for a in soup.find_all("a")] == ["https://x.example/a",
                                                      "https://y.example/"]
    assert "[1] (see above)" in soup.get_text()
    assert [line for line, _ in result.warnings] == [3]


def test_prose_indented_into_a_code_block_inside_html_is_warned():
    result = render('<div align="center">\n\n    **Bold** and [a](https://x.example/)\n\n</div>\n'
                    '\n<div class="output">\n\n    Output: I enjoy walking\n\n</div>\n')
    assert result.warnings == [(3, "text indented 4 spaces inside <div> is shown as code; "
                                   "remove the indentation if it is prose")]


@pytest.mark.parametrize("source, inner", [
    ("使用**`transformers`**库", "code"), ("见**[文档](https://x.example/)**。", "a"),
    ("模型**$x$**的", "code"),
])
def test_cjk_bold_around_code_links_and_math(source, inner):
    strong = soup_of(source).find("strong")
    assert strong is not None and strong.find(inner) is not None
    assert "*" not in soup_of(source).get_text()


def test_a_hash_inside_a_heading_is_not_a_missing_space():
    assert render("## #hashtags in titles\n\n#Heading\n").warnings == [
        (3, "'#Heading' at the start of a paragraph is shown as text; put a space after the "
            "'#' for a heading")]
