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
from difflib import SequenceMatcher

# How alike two normalised headlines must be to count as the same (difflib's ratio).
NEAR_MATCH = 0.8
# A shorter headline that begins the longer one must cover this much of it.
PREFIX_COVERAGE = 0.6
_SILENT = ("img", "br", "hr", "picture", "source")


@dataclass(frozen=True)
class Opening:
    """The headline to print and the body without the heading that repeated it."""

    headline: str
    fragment: str
    dropped: str = ""  # the text of the heading that was dropped, if any


def normalise(text: str) -> str:
    """Letters and digits only, case-folded and in their compatibility forms (（ → ()."""
    text = unicodedata.normalize("NFKC", text).casefold()
    return "".join(c for c in text if unicodedata.category(c)[0] in "LN")


def _numbers(text: str) -> list[str]:
    return re.findall(r"\d+", unicodedata.normalize("NFKC", text))


def says_the_same(title: str, heading: str, *, loose: bool = True) -> bool:
    """Whether `heading` repeats `title`: equal once normalised, or (when `loose`) a close
    variant with the same numbers, or one a prefix covering most of the other."""
    a, b = normalise(title), normalise(heading)
    if not a or not b:
        return False
    if a == b:
        return True
    if not loose:
        return False
    (shorter, short_text), (longer, long_text) = sorted(((a, title), (b, heading)),
                                                         key=lambda pair: len(pair[0]))
    if longer.startswith(shorter):
        few, more = _numbers(short_text), _numbers(long_text)
        return more[: len(few)] == few and len(shorter) / len(longer) >= PREFIX_COVERAGE
    if _numbers(title) != _numbers(heading) or len(shorter) < 8:
        return False  # "Gradio 4" is not "Gradio 5"; very short words match too easily
    return SequenceMatcher(None, a, b, autojunk=False).ratio() >= NEAR_MATCH


def _first_with_words(soup):
    """The first element of the body a reader sees words in (images and comments skipped)."""
    from bs4 import NavigableString, Tag
    from bs4.element import Comment

    for node in soup.children:
        if isinstance(node, Comment):
            continue
        if isinstance(node, NavigableString):
            if node.strip():
                return None  # loose text comes first
            continue
        if isinstance(node, Tag):
            if node.name in _SILENT or not node.get_text(strip=True):
                continue
            return node
    return None


def split(title: str, fragment: str) -> Opening:
    """Drop the body's opening heading when it repeats `title`; return what to print.

    The headline is the title, or the heading's own words when the title only begins it
    (the author's fuller version). Headings other than the top level must match exactly.
    """
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(fragment, "html.parser")
    first = _first_with_words(soup)
    if first is None or not re.fullmatch(r"h[1-6]", first.name):
        return Opening(title, fragment)
    text = " ".join(first.get_text(" ").split())
    if not says_the_same(title, text, loose=first.name == "h1"):
        return Opening(title, fragment)
    headline = title
    if len(normalise(text)) > len(normalise(title)) and normalise(text).startswith(
            normalise(title)):
        headline = text
    anchors = [a.extract() for a in first.find_all("a", attrs={"name": True})
               if not a.get_text(strip=True)]
    for anchor in reversed(anchors):
        first.insert_before(anchor)
    first.decompose()
    return Opening(headline, str(soup), dropped=text)
