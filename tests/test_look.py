"""The email's look lives in email_templates/: tokens.toml and the card and callout partials.

An editor changes a token or a partial in the newsletter's own folder and the built email
follows; a wider body widens the content (images and cards still fit, nothing scrolls
sideways in Chromium); a folder from before tokens still builds with the packaged look;
a token the email cannot use stops the build with one line naming the file and the line.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from bs4 import BeautifulSoup

from pipeline import build, colours, markdown, scaffold, settings
from pipeline.errors import InputError
from pipeline.tokens import SCHEMA, load_tokens, packaged_folder, packaged_tokens
from tests.browser_audit import CHROMIUM, Auditor, png_bytes
from tests.conftest import ROOT, SAMPLES, copy_sample_newsletter, run_publish, write_issue

LOOK_ISSUE = """---
title: Every part of the look
lang: en
---

An opening paragraph, so the email has prose before the parts that carry the look.

<iframe src="https://www.youtube.com/embed/dQw4w9WgXcQ" title="A talk"></iframe>

<video src="https://media.example/clip.mp4" title="A clip without a picture"></video>

<iframe src="https://letter.substack.com/embed"></iframe>

> [!TIP]
> Callouts take their colour from the tokens.

```python
print("code blocks too")
```

![A wide figure](/assets/wide.png)

<img src="/assets/wide.png" width="50%" alt="A figure at half the width">

Read [the link](https://example.com/) for more.
"""


def _letter(tmp_path: Path, tokens: str | None = None) -> Path:
    """A copy of the sample newsletter with the look issue, a wide local image and, when
    given, its own tokens file."""
    folder = copy_sample_newsletter(tmp_path / "letter")
    (folder / "assets" / "wide.png").write_bytes(png_bytes(1400, 700))
    write_issue(folder / "issues", "look.md", LOOK_ISSUE)
    if tokens is not None:
        (folder / "email_templates" / "tokens.toml").write_text(tokens, "utf-8")
    return folder


def _build(folder: Path, issue: str = "issues/look.md") -> build.Built:
    return build.render_issue(folder / issue, settings.load(folder, env={}))


@pytest.fixture(scope="module")
def default_built(tmp_path_factory) -> build.Built:
    return _build(_letter(tmp_path_factory.mktemp("default")))


def _dark_rules(html: str) -> str:
    return html[html.index("@media (prefers-color-scheme: dark)"):]


# a token changed in the newsletter's own file changes the email -------------------------
def test_changed_colours_fonts_and_code_reach_the_email(tmp_path, default_built):
    built = _build(_letter(tmp_path, """
[colours]
accent = "#123456"
heading = "#3a0b3c"
callout_tip = "#0ba045"
link = { dark = "#aabbcc" }
text = { light = "#20211f" }

[fonts]
latin = "Georgia, 'Times New Roman'"
generic = "serif"

[code]
background = "#fdf6e3"
text = "#222222"
"""))
    soup = BeautifulSoup(built.html, "html.parser")
    button = soup.select_one("table.card-subscribe td.button")
    assert button["bgcolor"] == "#123456" and "#c2410c" not in built.html
    assert "color:#3a0b3c" in soup.find("h1")["style"].replace(" ", "")
    assert "#0ba045" in soup.select_one("blockquote.callout")["style"]
    dark = _dark_rules(built.html)
    assert "#aabbcc" in dark and "#7cb7ff" not in dark
    # the light link colour was not touched, the light text colour was
    assert "#0b62c4" in soup.find("a", string="the link")["style"]
    assert "#20211f" in built.html and "#1f2328" not in built.html
    assert "Georgia, 'Times New Roman'" in built.html.replace("&#39;", "'")
    assert "serif" in built.html and "sans-serif" not in built.html
    pre = soup.find("pre")
    assert "#fdf6e3" in pre["style"]
    # the palette is worked out again for the light background: every colour stays legible
    background = colours.parse("#fdf6e3")[0]
    for span in pre.find_all("span", style=True):
        colour = re.search(r"color:\s*(#[0-9a-fA-F]{6})", span["style"])
        if colour:
            assert colours.contrast(colours.parse(colour.group(1))[0], background) >= 4.5
    assert built.html != default_built.html


def test_a_pair_given_one_side_keeps_the_other(tmp_path):
    look = load_tokens(_letter(tmp_path, '[colours]\nlink = { dark = "#aabbcc" }\n')
                       / "email_templates")
    assert look.dark["link"] == "#aabbcc"
    assert look.light["link"] == packaged_tokens().light["link"]


def test_content_width_follows_the_body_width_and_gutter(tmp_path):
    look = load_tokens(_letter(tmp_path, "[layout]\nbody_width = 640\ngutter = 40\n")
                       / "email_templates")
    assert look.content_width == 640 - 2 * 40
    packaged = packaged_tokens()
    assert packaged.content_width == packaged.layout["body_width"] - 2 * packaged.layout[
        "gutter"]


@pytest.fixture(scope="module")
def wide_built(tmp_path_factory) -> build.Built:
    return _build(_letter(tmp_path_factory.mktemp("wide"), "[layout]\nbody_width = 640\n"))


def test_a_wider_body_widens_images_and_cards_in_the_html(wide_built, default_built):
    content = 640 - 2 * packaged_tokens().layout["gutter"]
    soup = BeautifulSoup(wide_built.html, "html.parser")
    assert "max-width:640px" in wide_built.html.replace(" ", "")
    card_image = soup.select_one("table.card img")
    assert card_image["width"] == str(content)
    assert f"max-width:{content}px" in card_image["style"].replace(" ", "")
    assert soup.find("img", alt="A wide figure")["width"] == str(content)
    assert soup.find("img", alt="A figure at half the width")["width"] == str(content // 2)
    narrow = BeautifulSoup(default_built.html, "html.parser")
    assert narrow.find("img", alt="A wide figure")["width"] == str(
        packaged_tokens().content_width)


MEASURE_JS = """() => {
  const box = (el) => el.getBoundingClientRect();
  const papers = [...document.querySelectorAll('.paper')].map(box);
  const column = papers.reduce((a, b) => (b.width > a.width ? b : a));
  const within = (el) => { const r = box(el);
    return {w: Math.round(r.width), left: Math.round(r.left - column.left),
            right: Math.round(column.right - r.right)}; };
  return {column: Math.round(column.width),
          cards: [...document.querySelectorAll('table.card')].map(within),
          images: [...document.querySelectorAll('.paper img')].map(within),
          scroll: document.documentElement.scrollWidth,
          link: getComputedStyle([...document.querySelectorAll('.paper a')]
                  .find((a) => a.textContent === 'the link')).color};
}"""


@pytest.fixture(scope="module")
def auditor():
    if CHROMIUM is None:
        pytest.skip("needs Debian's chromium")
    auditor = Auditor((375, 800), image_for=lambda url: png_bytes(1400, 700))
    yield auditor
    auditor.close()


def _measure(auditor: Auditor, html: str, width: int, scheme: str = "light") -> dict:
    page = auditor.pages[width]
    page.emulate_media(color_scheme=scheme)
    page.set_content(html, wait_until="load")
    return page.evaluate(MEASURE_JS)


@pytest.mark.parametrize("body_width", [600, 640])
def test_the_column_and_everything_in_it_fit_in_chromium(body_width, auditor, wide_built,
                                                         default_built):
    built = wide_built if body_width == 640 else default_built
    gutter = packaged_tokens().layout["gutter"]
    for report in auditor.audit(built.html, f"body {body_width}", modes=("light",)):
        assert not report.scrolls_sideways, (report.width, report.scroll_width)
        assert not report.oversized_images
    wide = _measure(auditor, built.html, 800)
    assert wide["column"] == body_width and wide["scroll"] <= 800
    assert len(wide["cards"]) == 3 and len(wide["images"]) >= 3
    for part in wide["cards"] + wide["images"]:
        assert part["w"] <= body_width - 2 * gutter and part["left"] >= gutter - 1
        assert part["right"] >= gutter - 1, part
    media_card = wide["cards"][0]
    assert media_card["w"] == body_width - 2 * gutter  # the card uses the whole content
    phone = _measure(auditor, built.html, 375)
    assert phone["scroll"] <= 375
    for part in phone["cards"] + phone["images"]:
        assert part["left"] >= 0 and part["right"] >= 0, part


def test_a_dark_link_colour_shows_in_chromium_dark_mode(tmp_path, auditor):
    built = _build(_letter(tmp_path, '[colours]\nlink = { dark = "#aabbcc" }\n'))
    assert _measure(auditor, built.html, 375, "dark")["link"] == "rgb(170, 187, 204)"
    assert _measure(auditor, built.html, 375, "light")["link"] == "rgb(11, 98, 196)"


# the newsletter's own partials ----------------------------------------------------------
def test_own_partials_replace_the_packaged_ones(tmp_path, default_built):
    folder = _letter(tmp_path)
    cards = folder / "email_templates" / "cards"
    (cards / "youtube.html.j2").write_text(
        '<table class="card my-youtube" role="presentation">\n  <tr><td>\n'
        '    <a href="{{ url }}">{{ action }} — {{ caption }}</a>\n  </td></tr>\n</table>\n',
        "utf-8")
    (folder / "email_templates" / "callout.html.j2").write_text(
        '<div class="callout my-{{ kind }}" style="border-top:2px solid '
        '{{ light.accent }}"><b>{{ label }}</b>{{ content }}</div>\n', "utf-8")
    built = _build(folder)
    soup = BeautifulSoup(built.fragment, "html.parser")
    mine = soup.select_one("table.my-youtube")
    assert mine is not None and mine.a["href"] == "https://www.youtube.com/watch?v=dQw4w9WgXcQ"
    assert "A talk" in mine.get_text()
    # the other kinds keep the packaged shapes
    assert soup.select_one("table.card-text") is not None
    assert soup.select_one("table.card-subscribe") is not None
    callout = soup.select_one("div.callout.my-tip")
    assert "Callouts take their colour" in callout.get_text()
    assert "blockquote" not in str(callout)
    # the text part still finds the card
    assert "https://www.youtube.com/watch?v=dQw4w9WgXcQ" in built.text


@pytest.mark.parametrize(("name", "text", "expected"), [
    ("cards/media.html.j2", "<table class='card'>{% if %}</table>", r"cards/media\.html\.j2:1: "),
    ("cards/text.html.j2", "<table class='card'>{{ nonsense }}</table>",
     r"cards/text\.html\.j2: template error: 'nonsense' is undefined"),
    ("cards/subscribe.html.j2", "<div>{{ label }}</div>",
     r'cards/subscribe\.html\.j2: a card must be a <table class="card">'),
    ("callout.html.j2", "<div>{{ label }}</div>",
     r"callout\.html\.j2: the callout template must show \{\{ content \}\} exactly once"),
])
def test_a_broken_partial_is_named(tmp_path, name, text, expected):
    folder = _letter(tmp_path)
    (folder / "email_templates" / name).write_text(text, "utf-8")
    with pytest.raises(InputError) as caught:
        _build(folder)
    assert re.search(expected, str(caught.value)), str(caught.value)


# folders from before tokens, and new ones ----------------------------------------------
BEFORE_TOKENS = Path(__file__).with_name("data") / "templates_before_tokens"


@pytest.mark.parametrize("sample", sorted(SAMPLES), ids=str)
def test_a_folder_from_before_tokens_builds_the_same_email(tmp_path, sample):
    """Its own issue.mjml.j2 and plain email.css, no tokens, no partials: the packaged
    tokens and partials fill in, and the email is the one the packaged look makes."""
    folder = copy_sample_newsletter(tmp_path / "old")
    templates = folder / "email_templates"
    for path in [*templates.iterdir()]:
        if path.name != "strings":
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    for path in BEFORE_TOKENS.iterdir():
        shutil.copy2(path, templates / path.name)
    issue = SAMPLES[sample].relative_to(ROOT)
    old = build.render_issue(folder / issue, settings.load(folder, env={}))
    new = build.render_issue(SAMPLES[sample], settings.load(ROOT, env={}))
    assert old.html == new.html and old.text == new.text
    assert 'class="card' in old.html


def test_a_folder_missing_some_partials_uses_the_packaged_ones(tmp_path, default_built):
    folder = _letter(tmp_path)
    shutil.rmtree(folder / "email_templates" / "cards")
    (folder / "email_templates" / "callout.html.j2").unlink()
    (folder / "email_templates" / "tokens.toml").unlink()
    assert _build(folder).html == default_built.html


def test_a_folder_with_only_a_tokens_file_gets_the_packaged_layout(tmp_path):
    folder = copy_sample_newsletter(tmp_path / "letter")
    shutil.rmtree(folder / "email_templates")
    (folder / "email_templates").mkdir()
    (folder / "email_templates" / "tokens.toml").write_text(
        '[colours]\naccent = "#123456"\n', "utf-8")
    built = build.render_issue(folder / SAMPLES["en"].relative_to(ROOT),
                               settings.load(folder, env={}))
    assert 'bgcolor="#123456"' in built.html and "#c2410c" not in built.html


def test_init_copies_the_tokens_and_partials_and_they_work(tmp_path):
    folder = tmp_path / "new-letter"
    scaffold.init(folder, "New Letter")
    templates = folder / "email_templates"
    packaged = packaged_folder()
    for path in packaged.rglob("*"):
        if path.is_file():
            copied = templates / path.relative_to(packaged)
            assert copied.read_bytes() == path.read_bytes(), copied
    for name in ("tokens.toml", "email.css.j2", "callout.html.j2", "cards/media.html.j2",
                 "cards/text.html.j2", "cards/subscribe.html.j2"):
        assert (templates / name).is_file(), name
    tokens_file = templates / "tokens.toml"
    tokens_file.write_text(tokens_file.read_text("utf-8").replace(
        'body_width = 600', 'body_width = 700'), "utf-8")
    built = build.render_issue(folder / "issues" / scaffold.SAMPLE_ISSUE,
                               settings.load(folder, env={}))
    assert "max-width:700px" in built.html.replace(" ", "")


def test_every_token_of_the_schema_is_in_the_packaged_file():
    text = (packaged_folder() / "tokens.toml").read_text("utf-8")
    for table, keys in SCHEMA.items():
        assert f"[{table}]" in text
        for key in keys:
            assert re.search(rf"^{key}\s*=", text, re.M), f"{table}.{key}"


# a token the email cannot use ------------------------------------------------------------
BAD_TOKENS = [
    ('[layout]\nbody_width = "600px"\n', 2, "layout.body_width must be a whole number of "
                                           "pixels from 320 to 1200, not '600px'"),
    ("[layout]\nbody_width = true\n", 2, "layout.body_width must be a whole number"),
    ("[layout]\nbody_width = 10000\n", 2, "layout.body_width must be from 320 to 1200"),
    ("[layout]\nbody_width = 600.5\n", 2, "layout.body_width must be a whole number"),
    ("# a comment\n[layout]\n# width\nbody_width = 320\n\ngutter = 60  # too wide\n", 6,
     "leaves 200 px for images and text; it needs at least 240"),
    ('[colours]\naccent = "orange"\n', 2, 'colours.accent must be a colour like "#c2410c"'),
    ('[colours]\naccent = "#12345"\n', 2, "colours.accent must be a colour"),
    ('[colours]\naccent = "#fff\\" onclick=\\"x"\n', 2, "colours.accent must be a colour"),
    ('[colours]\nlink = "#0b62c4"\n', 2, "colours.link takes a light and a dark colour"),
    ('[colours]\n\nlink = { light = "#fff", dark = "blue" }\n', 3,
     "colours.link dark must be a colour"),
    ('[colours]\nlink = { light = "#fff", dim = "#000" }\n', 2,
     "colours.link has a light and a dark colour, not 'dim'"),
    ('[colours]\nheading = { light = "#000" }\n', 2,
     "colours.heading takes one colour, not a table (dark mode shows it as colours.text's"),
    ('[colours]\npage = {}\n', 2, "colours.page takes a light and a dark colour"),
    ('[colours]\nacent = "#c2410c"\n', 2, "unknown token colours.acent (did you mean accent?)"),
    ('[colour]\naccent = "#c2410c"\n', 1, "unknown table [colour] (did you mean colours?)"),
    ('colours = 3\n', 1, "colours must be a table"),
    ('[colours.accent]\nlight = "#000"\n', 1, "colours.accent takes one colour"),
    ('[fonts]\nlatin = "Arial; } body { display:none"\n', 2, "fonts.latin must be a CSS font"),
    ('[fonts]\nlatin = "Arial</style><script>x</script>"\n', 2, "fonts.latin must be"),
    ('[fonts]\nlatin = "\\"Segoe UI\\", Arial"\n', 2, "in single quotes"),
    ('[fonts]\ncode = ", ,"\n', 2, "fonts.code must be a CSS font list"),
    ('[code]\npalette = "no-such-style"\n', 2, "code.palette must be the name of a Pygments"),
    ('[code]\npadding = "12px; color: red"\n', 2, "code.padding must be one to four lengths"),
    ('[code]\nline_height = "tall"\n', 2, "code.line_height must be a number"),
    ("[layout]\nbody_width = \n", 2, "not valid TOML"),
    ("[layout]\nbody_width = 600\nbody_width = 640\n", 3, "not valid TOML"),
    ('layout.body_width = "wide"\n', 1, "layout.body_width must be a whole number"),
    ('[colours]\n"accent" = "red"\n', 2, "colours.accent must be a colour"),
    ('[code]\nbackground = """\n#00"""\n[colours]\naccent = "red"\n', 2,
     "code.background must be a colour"),
    ('[fonts]\ncode = """\nMenlo"""\n[colours]\naccent = "red"\n', 5,
     "colours.accent must be a colour"),
    ('[code]\nnote = """\n[colours]\naccent = 1"""\n', 2, "unknown token code.note"),
]


@pytest.mark.parametrize(("text", "line", "message"), BAD_TOKENS,
                         ids=[message[:40] for _t, _l, message in BAD_TOKENS])
def test_a_bad_token_names_the_file_and_line(tmp_path, text, line, message):
    folder = _letter(tmp_path, text)
    path = folder / "email_templates" / "tokens.toml"
    with pytest.raises(InputError) as caught:
        _build(folder)
    assert str(caught.value).startswith(f"{path}:{line}: "), str(caught.value)
    assert message in str(caught.value)


@pytest.mark.parametrize("kind", ["not utf-8", "a folder", "a fifo", "too large"])
def test_a_tokens_file_that_cannot_be_read_is_refused(tmp_path, kind):
    folder = _letter(tmp_path)
    path = folder / "email_templates" / "tokens.toml"
    path.unlink()
    if kind == "not utf-8":
        path.write_bytes(b'[colours]\naccent = "\xff"\n')
    elif kind == "a folder":
        path.mkdir()
    elif kind == "a fifo":
        import os

        os.mkfifo(path)  # reading it would wait for a writer forever
    else:
        path.write_text("# padding\n" * 40000, "utf-8")
    with pytest.raises(InputError) as caught:
        _build(folder)
    assert str(caught.value).startswith(f"{path}: ")


def test_the_cli_prints_one_line_and_exits_2_writing_nothing(tmp_path):
    folder = _letter(tmp_path, "[layout]\ngutter = 24\nbody_width = \"wide\"\n")
    out = tmp_path / "out"
    result = run_publish("build", "issues/look.md", "--out", str(out), cwd=folder)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr
    assert lines[0].endswith("email_templates/tokens.toml:3: layout.body_width must be a "
                             "whole number of pixels from 320 to 1200, not 'wide'")
    assert not out.exists()


def test_code_block_style_comes_from_the_tokens():
    look = packaged_tokens()
    style = markdown.code_block_style(look)
    assert look.code["background"] in style and f"{look.code['font_size']}px" in style
    assert "pre-wrap" in style  # long lines wrap whatever the tokens say


# attacks on the partials ------------------------------------------------------------------
NESTED = """---
title: Quotes in quotes
lang: en
---

Prose before the quotes.

> [!NOTE]
> Outer note.
>
> > A plain quote in the note.
> >
> > > [!WARNING]
> > > A warning in the plain quote.
>
> Back in the note.

> A plain quote.
>
> > [!TIP]
> > A tip in it.

- A list item
  > [!CAUTION]
  > A callout in a list.
"""


def test_callouts_close_where_their_quote_closes_however_deep(tmp_path):
    """With a callout that is not a blockquote, each callout's end must still be its own."""
    folder = _letter(tmp_path)
    (folder / "email_templates" / "callout.html.j2").write_text(
        '<div class="callout callout-{{ kind }}">{{ content }}</div>\n', "utf-8")
    write_issue(folder / "issues", "nested.md", NESTED)
    soup = BeautifulSoup(_build(folder, "issues/nested.md").fragment, "html.parser")
    note = soup.select_one("div.callout-note")
    plain = note.find("blockquote")
    warning = plain.select_one("div.callout-warning")
    assert "A warning in the plain quote." in warning.get_text()
    assert "Back in the note." in note.get_text() and "Back in the note." not in plain.get_text()
    tip = soup.select_one("blockquote > div.callout-tip")
    assert tip.get_text(" ", strip=True) == "A tip in it."
    assert "A callout in a list." in soup.select_one("li div.callout-caution").get_text()
    assert len(soup.select("div.callout")) == 4


def test_a_thousand_callouts_build_quickly(tmp_path):
    folder = _letter(tmp_path)
    body = "\n".join(f"> [!TIP]\n> Tip {n}.\n" for n in range(1000))
    write_issue(folder / "issues", "many.md", f"---\ntitle: Many tips\nlang: en\n---\n\n{body}")
    built = _build(folder, "issues/many.md")
    assert built.fragment.count('class="callout callout-tip"') == 1000
    assert built.fragment.count("<blockquote") == built.fragment.count("</blockquote>")


def test_a_partial_edited_between_builds_is_read_again(tmp_path):
    """`publish preview` rebuilds in one process: an edited partial must show at once."""
    folder = _letter(tmp_path)
    subscribe = folder / "email_templates" / "cards" / "subscribe.html.j2"
    first = _build(folder)
    subscribe.write_text('<table class="card card-subscribe edited"><tr><td>'
                         '<a href="{{ url }}">{{ label }}</a></td></tr></table>', "utf-8")
    second = _build(folder)
    assert "edited" not in first.html and 'card-subscribe edited' in second.html


def test_a_tokens_file_edited_between_builds_is_read_again(tmp_path):
    folder = _letter(tmp_path, '[colours]\naccent = "#123456"\n')
    first = _build(folder)
    (folder / "email_templates" / "tokens.toml").write_text(
        '[colours]\naccent = "#654321"  # warmer\n', "utf-8")
    second = _build(folder)
    assert 'bgcolor="#123456"' in first.html and 'bgcolor="#654321"' in second.html
    (folder / "email_templates" / "tokens.toml").write_text('[colours]\naccent = 7\n', "utf-8")
    with pytest.raises(InputError):
        _build(folder)


def test_an_illegible_dark_colour_is_caught_by_check(tmp_path):
    """Tokens are checked for what they are; whether they read well is `publish check`'s
    work, on the email they make."""
    built = _build(_letter(tmp_path, '[colours]\ntext = { dark = "#22262b" }\n'))
    assert [f for f in built.findings if f.rule == "dark-mode-contrast"]
