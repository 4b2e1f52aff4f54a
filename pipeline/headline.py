"""One headline per email: the template's title, or the post's own opening heading, not both.

Posts written for the web usually open with `# Their title`, which the email's header
already shows from the front matter. When the first thing with words in the body is a
heading that says what the title says (the same words give or take punctuation, case,
spacing, full-width forms, or a title that is a close variant or a prefix of it), that
heading is dropped. Anchors a table of contents points at are kept in its place.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from . import htmltree

# How alike two normalised headlines must be to count as the same (difflib's ratio).
NEAR_MATCH = 0.8
# A shorter headline that begins the longer one must cover this much of it.
PREFIX_COVERAGE = 0.6
_SILENT = ("img", "br", "hr", "picture", "source")
_WRAPPERS = ("div", "center", "header", "section", "article", "hgroup", "main")


@dataclass(frozen=True)
class Opening:
    """The headline to print and the body without the heading that repeated it."""

    headline: str
    fragment: str
    dropped: str = ""  # the text of the heading that was dropped, if any


def _words(text: str) -> list[str]:
    """Case-folded words in compatibility forms (（ → (); each CJK character is a word."""
    text = unicodedata.normalize("NFKC", text).casefold()
    return re.findall(r"[^\W_]+?(?=[\u2e80-\u9fff\uac00-\ud7af\U00020000-\U0002fa1f]|[\W_]|$)|"
                      r"[\u2e80-\u9fff\uac00-\ud7af\U00020000-\U0002fa1f]", text)


def normalise(text: str) -> str:
    """Letters and digits only: what is left when punctuation, case and spacing go."""
    return "".join(_words(text))


def _numbers(text: str) -> list[str]:
    return re.findall(r"\d+", unicodedata.normalize("NFKC", text))


def says_the_same(title: str, heading: str, *, loose: bool = True) -> bool:
    """Whether `heading` repeats `title`: the same words once punctuation, case and spacing
    are set aside; or, when `loose`, the heading starts with the title's words, or is a
    beginning of the title covering most of it, or a close variant with the same numbers
    ("The X" for "X", "v1.0" for "1.0")."""
    title_words, heading_words = _words(title), _words(heading)
    a, b = "".join(title_words), "".join(heading_words)
    if not a or not b:
        return False
    if a == b:
        return True
    if not loose:
        return False
    if heading_words[: len(title_words)] == title_words:
        return True
    if title_words[: len(heading_words)] == heading_words:
        return len(b) / len(a) >= PREFIX_COVERAGE
    if _numbers(title) != _numbers(heading) or min(len(a), len(b)) < 8:
        return False  # "Gradio 4" is not "Gradio 5"; very short words match too easily
    from difflib import SequenceMatcher  # rarely reached: not loaded with every build

    return SequenceMatcher(None, a, b, autojunk=False).ratio() >= NEAR_MATCH


def _first_with_words(container):
    """The first element a reader sees words in (images and comments skipped), looking
    inside wrappers such as `<div align="center">` that hold it."""
    from bs4 import NavigableString, Tag
    from bs4.element import Comment

    for node in container.children:
        if isinstance(node, Comment):
            continue
        if isinstance(node, NavigableString):
            if node.strip():
                return None  # loose text comes first
            continue
        if isinstance(node, Tag):
            if node.name in _SILENT or not node.get_text(strip=True):
                continue
            if node.name in _WRAPPERS:
                return _first_with_words(node)
            return node
    return None


def _keep_from(heading) -> list:
    """What a dropped heading holds that is not its words: the anchors links point at, and
    images (a logo beside the title), with a link around them when they have one."""
    kept = []
    for anchor in heading.find_all("a", attrs={"name": True}):
        if not anchor.get_text(strip=True):
            kept.append(anchor)
    for image in heading.find_all("img"):
        parent = image.parent
        linked = parent.name == "a" and parent.get("href") and not parent.get_text(strip=True)
        kept.append(parent if linked else image)
    return [element.extract() for element in kept]


def split(title: str, fragment: str) -> Opening:
    """Drop the body's opening heading when it repeats `title`; return what to print.

    The headline is the title, or the heading's own words when the title only begins it
    (the author's fuller version). Headings other than the top level must match exactly.
    """
    soup = htmltree.parse(fragment, read_only=True)
    first = _first_with_words(soup)
    if first is None or not re.fullmatch(r"h[1-6]", first.name):
        return Opening(title, fragment)
    text = " ".join(first.get_text(" ").split())
    if not says_the_same(title, text, loose=first.name == "h1"):
        return Opening(title, fragment)
    headline = title
    words, title_words = _words(text), _words(title)
    if len(words) > len(title_words) and words[: len(title_words)] == title_words:
        headline = text  # the title only begins it
    htmltree.forget()  # the tree changes below
    for element in _keep_from(first):
        first.insert_before(element)
    first.decompose()
    return Opening(headline, htmltree.serialize(soup), dropped=text)
