"""The contrast check's Python matching of simple selectors finds exactly the elements
cssselect's XPath finds: on generated trees and selectors, and on every post's email."""

from __future__ import annotations

import lxml.html
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from lxml.etree import XPath

from pipeline import build, check_contrast, css_match
from tests.conftest import CORPUS, SAMPLES

WORDS = ["a", "b", "paper", "email-bg", "muted", "x-y", "Ünï", "中文", "", "A", "X-y", "É"]
SPACES = [" ", "  ", "\t", "\n", "\f", "\x0b", "\u00a0"]
TAGS = ["div", "p", "a", "td", "span", "table", "pre", "o:p", "my-el"]


@st.composite
def trees(draw) -> str:
    def element(depth: int) -> str:
        tag = draw(st.sampled_from(TAGS))
        attrs = []
        for name in draw(st.lists(st.sampled_from(
                ["class", "id", "style", "role", "bgcolor", "data-ogsc", "lang", "href"]),
                max_size=3, unique=True)):
            words = draw(st.lists(st.sampled_from(WORDS), max_size=3))
            gap = draw(st.sampled_from(SPACES))
            value = draw(st.sampled_from(SPACES[:2])) * draw(st.booleans()) + gap.join(words)
            if name == "style":
                value = draw(st.sampled_from(["background:#fff", "color:red", "", "x-",
                                              "Color:RED", "BACKGROUND:#FFF"]))
            attrs.append(f'{name}="{value}"')
        inner = "".join(element(depth + 1) for _ in range(draw(st.integers(0, 3 if depth < 4
                                                                          else 0))))
        text = draw(st.sampled_from(["", "t", "<!-- c -->"]))
        return f"<{tag} {' '.join(attrs)}>{text}{inner}</{tag}>"

    return "<html><body>" + "".join(element(0) for _ in range(draw(st.integers(1, 3)))) + \
        "</body></html>"


# The `i` flag: attribute values compared in ASCII lower case (cssselect's translate()).
CASELESS = ['[lang="X" i]', '[lang|="X" i]', '[class~="A" i]', '[class!="A" i]',
            '[style^="COLOR" i]', '[style$="FFF" i]', '[style*="BACK" i]', "[id='Ünï' i]",
            '[lang="x" s]', '[id="ünï" i]', '[class~="é" i]']
SIMPLE = st.one_of(
    st.sampled_from(["*", *TAGS[:6], "P", "body", "html"]),
    st.sampled_from([*WORDS, "a b", "a\\ b"]).map(lambda w: f".{w}" if w else "*"),
    st.sampled_from(["#a", "#b", "#中文", "[role]", "[data-ogsc]", "[ROLE]",
                     '[style*="background"]', '[style^="color"]', '[style$="fff"]',
                     '[style*=""]', '[lang|="x"]', '[lang|=""]', '[class~="a"]',
                     '[class~=""]', '[class="a"]', '[class!="a"]', '[class!=""]',
                     '[id="a"]', ":not([role])", ":not(.a)", ":not(p)", ":not(*)",
                     ":first-child", "::first-line", ":hover", "[href^=\"#\"]",
                     *CASELESS]))
COMPOUND = st.lists(SIMPLE, min_size=1, max_size=3).map(
    lambda parts: parts[0] + "".join(p for p in parts[1:] if p[0] in ".#[:"))
SELECTOR = st.lists(COMPOUND, min_size=1, max_size=4).flatmap(
    lambda parts: st.lists(st.sampled_from([" ", " > ", " + ", " ~ "]),
                           min_size=len(parts) - 1, max_size=len(parts) - 1).map(
        lambda joins: parts[0] + "".join(j + p for j, p in zip(joins, parts[1:], strict=True))))


def through_xpath(selector: str, tree) -> list | None:
    xpath = check_contrast._xpath_of(selector)
    if xpath is None:
        return None
    try:
        return XPath(xpath)(tree)
    except Exception:  # the check leaves such selectors out
        return None


@settings(max_examples=400, deadline=None)
@given(trees(), st.lists(SELECTOR, min_size=1, max_size=6))
def test_python_matching_finds_what_the_xpath_finds(html, selectors):
    tree = lxml.html.document_fromstring(html)
    index = css_match.Index(tree)  # one index for all selectors, as the check uses it
    for selector in selectors:
        expected = through_xpath(selector, tree)
        simple = css_match.matcher(selector)
        if simple is None:
            continue  # left to the XPath
        assert expected is not None, selector
        assert simple(index) == expected, (selector, html)


ODD_VALUES = ["a", " a ", "a\x0bb", "a\fb", "a\u00a0b", "a\tb\nc", "x-y", "x", "xx-y", "",
              "background:#fff", "color:red;background:none", "中文 a", "A", "X-Y", "X",
              "COLOR:#FFF", "ünï", "Ünï", "É"]
SIMPLES = ["*", "p", "P", "div", ".a", ".b", ".x-y", ".中文", ".A", "#a", "#x", "[role]",
           "[ROLE]", '[class~="a"]', '[class~="b"]', '[class~=""]', '[lang|="x"]',
           '[lang|=""]', '[lang="x-y"]', '[class!="a"]', '[class!=""]', '[style^="color"]',
           '[style$="fff"]', '[style*="background"]', '[style*=""]', '[style^=""]',
           ":not([role])", ":not(.a)", ":not(p)", ":not(*)", "p.a", "div#x[role]",
           'p:not([class~="a"])', *CASELESS, ':not([lang|="x" i])']


def odd_document() -> str:
    """Every odd attribute value on p and div elements, nested three deep."""
    parts = []
    for n, value in enumerate(ODD_VALUES):
        attrs = {"class": value, "id": value, "lang": value, "style": value}
        if n % 2:
            attrs["role"] = value
        inner = "".join(f'<{tag} {name}="{value}">t</{tag}>'
                        for tag in ("p", "div") for name, value in attrs.items())
        parts.append(f'<div class="{value}"><p role="{value}">{inner}</p>{inner}</div>')
    return "<html><body>" + "".join(parts) + "</body></html>"


def test_every_simple_selector_and_pair_finds_what_the_xpath_finds():
    tree = lxml.html.document_fromstring(odd_document())
    index = css_match.Index(tree)
    checked = 0
    for left in SIMPLES:
        for join in ("", " ", " > "):
            for right in SIMPLES if join else [""]:
                selector = left + join + right
                simple = css_match.matcher(selector)
                assert simple is not None, selector
                expected = through_xpath(selector, tree)
                assert simple(index) == expected, selector
                checked += bool(expected)
    assert checked > 500  # most of them match something


def test_selectors_that_print_alike_keep_their_own_elements():
    """The index keeps the elements of each selector's first steps for the others; two
    selectors whose class names hold `].` print alike but are not the same selector."""
    tree = lxml.html.document_fromstring(
        '<html><body><p class="a].b c">1</p><p class="a b].c">2</p></body></html>')
    index = css_match.Index(tree)
    for selector in (".a\\]\\.b.c", ".a.b\\]\\.c", ".a.b\\]\\.c", ".a\\]\\.b.c"):
        assert css_match.matcher(selector)(index) == through_xpath(selector, tree), selector


POSTS = sorted(p for p in CORPUS.rglob("*.md") if p.name != "MANIFEST.md")


@pytest.mark.skipif(not POSTS, reason="corpus not present")
@pytest.mark.parametrize("source", [*SAMPLES.values(), *POSTS[:12]], ids=lambda p: p.stem)
def test_every_template_selector_matches_as_the_xpath_does(source, repo_settings):
    html = build.render_issue(source, repo_settings).html
    tree = check_contrast._tree(html)
    index = css_match.Index(tree)
    rules = check_contrast._stylesheet_rules(tree)
    assert rules
    for rule in rules:
        simple = css_match.matcher(rule.selector)
        assert simple is not None, rule.selector  # the templates' selectors are all simple
        assert simple(index) == through_xpath(rule.selector, tree), rule.selector
