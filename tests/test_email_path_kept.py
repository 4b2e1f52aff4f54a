"""What the email path keeps or shortcuts between builds gives what the plain way gives.

The in-page anchor rewrite after inlining tries its pattern only where the pattern can
begin; the check reads each distinct inline style and element once and keeps the
features it found. Each is held here to the plain computation, on hostile text, and
what is kept is bounded.
"""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline import check_rules, check_support, check_tree, inliner, render
from pipeline.check_contrast import parsed

PIECES = ['href="#', 'name="', "xhref=\"#", 'data-name="', "%2F", "%e4%b8%ad", "%zz", "%",
          '"', " ", "a", "é", "中", "<a ", ">", "&amp;", "\n", "=", "#", "href=", "name"]


@settings(max_examples=3000, deadline=None)
@given(st.lists(st.sampled_from(PIECES), max_size=40).map("".join))
def test_anchor_rewrite_is_the_patterns_own_substitution(text):
    assert inliner._unescape_anchors(text) == inliner._IN_PAGE_ANCHOR.sub(
        inliner._unescape_anchor, text)


def test_non_ascii_anchors_are_unescaped_after_inlining():
    document = ('<html><head></head><body><a href="#更新">to</a><a name="更新"></a>'
                '<a href="https://x.example/%E4%B8%AD">out</a></body></html>')
    out = render.inline_css(document, "")
    assert 'href="#更新"' in out and 'name="更新"' in out
    assert 'href="https://x.example/%E4%B8%AD"' in out  # only in-page names change


STYLES = ["color:#999", "COLOR: RED; display:flex", "width:3rem;height:2vh", "", ";;",
          "background:linear-gradient(red,blue)", "color:var(--x) !important",
          "font-family:'中文'; background:rgba(0,0,0,.5)", "position:absolute",
          "display:none;display:grid", "a:b:c", "margin:1ch 2ex 3vmin 4vmax"]


def _plain_features(page: check_rules.Page) -> dict[str, object]:
    """check_support.features as written before anything was kept, for comparison."""
    import re as re_mod

    from pipeline import caniemail

    used: dict[str, object] = {}
    known = caniemail.features()
    for element in page.elements:
        name = element.name
        for slug in (f"html-{name}", "html-h1-h6" if re_mod.fullmatch(r"h[1-6]", name) else "",
                     "html-lists" if name in ("ul", "ol") else ""):
            if slug in known:
                used.setdefault(slug, element)
        for attr in element.attrs:
            slug = {"loading": "html-loading-attribute"}.get(attr, f"html-{attr}")
            if slug in known and slug != "html-style":
                used.setdefault(slug, element)
        if name == "img":
            src = element.get("src", "")
            if src.startswith("data:"):
                used.setdefault("image-base64", element)
            ext = re_mod.search(r"\.(png|jpe?g|gif|webp|avif|svg|bmp)(\?|$)", src.lower())
            if ext:
                used.setdefault({"jpeg": "image-jpg"}.get(ext.group(1),
                                                          f"image-{ext.group(1)}"), element)
        if name == "a" and element.get("href", "").startswith("#"):
            used.setdefault("html-anchor-links", element)
        if name == "a" and element.get("href", "").startswith("mailto:"):
            used.setdefault("html-mailto-links", element)
    for element in page.elements:
        for part in (element.get("style") or "").split(";"):
            if ":" in part:
                prop, _, value = part.partition(":")
                prop, value = prop.strip().lower(), value.strip().lower()
                if f"css-{prop}" in known:
                    used.setdefault(f"css-{prop}", element)
                if prop == "display" and value in ("flex", "grid", "none"):
                    used.setdefault(f"css-display-{value}", element)
                for needle, slug in (("!important", "css-important"), ("rgba(", "css-rgba"),
                                     ("linear-gradient", "css-linear-gradient"),
                                     ("var(--", "css-variables")):
                    if needle in value:
                        used.setdefault(slug, element)
                units = set(re_mod.findall(r"\d(rem|vh|vw|vmin|vmax|ch|ex)\b", value))
                for unit in ("rem", "vh", "vw", "vmin", "vmax", "ch", "ex"):
                    if unit in units:
                        used.setdefault(f"css-unit-{unit}", element)
    return used


element_html = st.tuples(
    st.sampled_from(["p", "img", "a", "h2", "ul", "div", "span", "video", "td"]),
    st.sampled_from([*STYLES, None]),
    st.sampled_from(["", ' src="x.PNG"', ' src="data:image/gif;base64,AA"', ' href="#top"',
                     ' href="mailto:a@b.example"', ' loading="lazy"', ' class="a  b"',
                     ' bgcolor="#fff"', ' src="https://x.example/a.jpeg?x=1"']),
).map(lambda t: f"<{t[0]}{t[2]}" + (f' style="{t[1]}"' if t[1] is not None else "")
      + f">x</{t[0]}>")


@settings(max_examples=300, deadline=None)
@given(st.lists(element_html, max_size=25), st.lists(element_html, max_size=25))
def test_kept_features_are_the_plain_ones_save_after_save(first, second):
    """Two emails one after the other (the second meets what the first kept): each one's
    features, and the element each names, are what the plain reading finds."""
    for elements in (first, second, first):
        html = f"<html><head></head><body>{''.join(elements)}</body></html>"
        tree = parsed(html)
        found = check_support.features(check_rules.Page(html, tree))
        plain = _plain_features(check_rules.Page(html, tree))
        plain.update({k: v for k, v in found.items() if v is None})  # the <style> rows
        assert [(k, getattr(v, "node", None)) for k, v in found.items()] == [
            (k, getattr(v, "node", None)) for k, v in plain.items()]


def test_what_the_check_keeps_is_bounded():
    for n in range(5000):
        check_rules.style_declarations(f"color:#{n:06x}")
        check_support._style_features(f"color:#{n:06x}", ())
        check_support._element_features("a", ("href",), "", f"#{n}")
    for kept in (check_rules.style_declarations, check_support._style_features_kept,
                 check_support._element_features):
        assert kept.cache_info().currsize <= 4096
    huge = "background:url(data:image/png;base64," + "A" * 50_000 + ")"
    before = check_rules.style_declarations.cache_info().currsize
    assert check_rules.style_declarations(huge)[0][0] == "background"
    assert check_rules.style_declarations.cache_info().currsize == before


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(["<p>a</p>", " ", "\n", "<pre> x \n</pre>", "<b>b</b>",
                                 "<style>p{}</style>", "<ruby>字<rt>zì</rt></ruby>", "中",
                                 "<textarea>  </textarea>", "<!-- c -->t", "<div>\n</div>"]),
                max_size=20).map("".join))
def test_one_walk_gives_each_text_as_its_own_walk(body):
    html = f"<html><head><title>T</title></head><body>{body}</body></html>"
    tree = parsed(html)
    inner = check_tree.body(tree)
    assert check_tree.texts(tree, inner) == (check_tree.text_of(tree, " "),
                                             check_tree.text_of(inner, " "))
    page = check_rules.Page(html, tree)
    assert re.sub(r"\s+", " ", page.body_text) == re.sub(
        r"\s+", " ", check_tree.text_of(inner, " "))


# premailer, with its merged styles and basic attributes kept --------------------------------
STOCK = (
    "import json, sys, premailer\n"
    "documents = json.loads(sys.stdin.read())\n"
    "print(json.dumps([premailer.Premailer(d, css_text=c, allow_network=False, "
    "strip_important=False, keep_style_tags=True, remove_classes=False, "
    "disable_validation=True, disable_leftover_css=True, "
    "disable_basic_attributes=['width', 'height']).transform(pretty_print=False) "
    "for d, c in documents]))\n")


def _stock_premailer(pairs: list[tuple[str, str]]) -> list[str]:
    """What premailer alone makes of each (document, css), in a process that never
    imported our code, finished as inline_css finishes its own."""
    import json
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", STOCK], input=json.dumps(pairs), text=True,
                          capture_output=True, check=True)
    return [inliner._finished(out) for out in json.loads(done.stdout)]


def _rendered_emails(monkeypatch, tmp_path, posts: list) -> list[tuple[str, str]]:
    """(MJML's HTML, the CSS) that inline_css is given for each post, recorded on the way."""
    from pipeline import build
    from pipeline import settings as settings_mod
    from tests.conftest import copy_sample_newsletter

    given: list[tuple[str, str]] = []
    real = render.inline_css

    def recording(document, css):
        given.append((document, css))
        return real(document, css)

    monkeypatch.setattr(render, "inline_css", recording)
    folder = copy_sample_newsletter(tmp_path / "letter")
    config = settings_mod.load(folder, env={"PUBLISH_IMAGE_SIZES": "local"})
    for post in posts:
        build.render_issue(post, config)
    monkeypatch.undo()
    return given


def test_inlining_equals_stock_premailer_on_corpus_emails(monkeypatch, tmp_path):
    """Every sample and corpus post's email, inlined twice in this process (the second
    time from what the first kept), is byte for byte what premailer alone makes of it;
    and styles nobody saw before (colours, alignments, short colours, pseudo-classes in
    the stylesheet) too."""
    from tests.conftest import CORPUS, SAMPLES

    posts = [*SAMPLES.values(), *sorted((CORPUS / "hf-blog").glob("*.md"))[:12]]
    posts = [p for p in posts if p.name != "MANIFEST.md"]
    emails = _rendered_emails(monkeypatch, tmp_path, posts)
    assert len(emails) == len(posts)
    odd_css = (".x { text-align: center; background-color: #abc } td:hover { color: red } "
               "a:visited { color: #123 } .y { vertical-align: top; height: 10px; "
               "background-color: transparent } p:first-child { width: 3px }")
    odd = ('<html><head><style data-premailer="ignore">p{}</style></head><body>'
           '<p class="x y" style="color:#000;text-align:left">a</p><p class="x">b</p>'
           '<td class="y" style="background-color: #fff ; width:2px">c</td>'
           '<a href="#中" class="x" style="">d</a><p style="}{">e</p></body></html>')
    cases = [(d.replace("<style", '<style data-premailer="ignore"'), c) for d, c in emails]
    expected = _stock_premailer([*cases, (odd, odd_css)])
    for _round in range(2):
        got = [render.inline_css(d, c) for d, c in emails]
        got.append(inliner._finished(inliner._inliner_class()(
            odd, css_text=odd_css, allow_network=False, strip_important=False,
            keep_style_tags=True, remove_classes=False, disable_validation=True,
            disable_leftover_css=True, disable_basic_attributes=["width", "height"],
        ).transform(pretty_print=False)))
        assert got == expected


def test_what_inlining_keeps_is_bounded():
    inliner._inliner_class()  # premailer's names pointed at the kept ones
    from premailer import premailer as premailer_module

    merge = premailer_module.merge_styles
    assert merge.kept
    for n in range(5000):
        style = f"color:#{n:06x}"
        rules = [[("margin", f"{n}px")], [("color", "red")]]
        assert merge(style, rules, ["", ":hover"]) == merge.original(style, rules,
                                                                     ["", ":hover"])
        inliner._basic_attributes(f"text-align:left; width:{n}px")
    assert merge.cache.cache_info().currsize <= 4096
    assert inliner._basic_attributes.cache_info().currsize <= 4096
    huge = "color:red;background:url(data:image/png;base64," + "A" * 20_000 + ")"
    before = merge.cache.cache_info().currsize
    assert merge(huge, [[("margin", "0")]], [""]).startswith("margin:0")
    assert merge.cache.cache_info().currsize == before
