"""The finished email as `publish check`'s rules read it: the lxml tree the contrast pass
reads too, each element shown as BeautifulSoup's lxml builder shows it.

The rules were written against BeautifulSoup (names, attributes with `class` and the
like as word lists, `get_text`); building its tree of a whole email is the most costly
part of a check, and the contrast pass parses the same text with lxml anyway. This view
reads that one tree the way the soup would have: multi-valued attributes split at
whitespace, a string of only spaces cut to one line break or one space outside <pre> and
<textarea>, text inside <style>, <script>, <template>, <rt> and <rp> left out of an
element's text (only a <style> element's own text is its text). tests/test_check_tree.py
holds every finding to what the soup gives, on every post and on generated pages.
"""

from __future__ import annotations

import re
from functools import lru_cache

_WORDS = re.compile(r"\S+")
_ASCII_SPACES = "\x20\x0a\x09\x0c\x0d"


# As BeautifulSoup's HTML builders have them (tests/test_check_tree.py compares): attributes
# holding a list of words, by tag ("*": every tag); tags inside which strings of only
# spaces are kept; tags whose strings are of their own kind (not an element's text).
LIST_ATTRIBUTES = {
    "*": {"class", "accesskey", "dropzone"}, "a": {"rel", "rev"}, "link": {"rel", "rev"},
    "td": {"headers"}, "th": {"headers"}, "form": {"accept-charset"}, "object": {"archive"},
    "area": {"rel"}, "icon": {"sizes"}, "iframe": {"sandbox"}, "output": {"for"}}
KEEP_SPACES = frozenset({"pre", "textarea"})
STRING_BOXES = frozenset({"rt", "rp", "style", "script", "template"})


def _rules() -> tuple[dict, frozenset, frozenset]:
    return LIST_ATTRIBUTES, KEEP_SPACES, STRING_BOXES


@lru_cache(maxsize=256)
def _split_attributes(tag: str) -> frozenset:
    """The attributes of `tag` that the soup holds as word lists."""
    lists, _, _ = _rules()
    return frozenset(lists.get("*", set()) | lists.get(tag, set()))


class Element:
    """An element of the email: its tag `name` and `attrs`, as the soup has them."""

    __slots__ = ("attrs", "name", "node")

    def __init__(self, node):
        self.node = node
        self.name = node.tag
        attrs = dict(node.attrib)
        if attrs:
            for key in _split_attributes(self.name.lower()) & attrs.keys():
                attrs[key] = _WORDS.findall(attrs[key])
        self.attrs = attrs

    def get(self, key: str, default=None):
        return self.attrs.get(key, default)

    def __getitem__(self, key: str):
        return self.attrs[key]

    def has_attr(self, key: str) -> bool:
        return key in self.attrs

    def get_text(self, separator: str = "") -> str:
        return text_of(self.node, separator)


def elements(tree) -> list[Element]:
    """Every element of the tree (None: an empty document), in document order."""
    if tree is None:
        return []
    return [Element(node) for node in tree.iter() if isinstance(node.tag, str)]


def body(tree):
    """The first <body>, or None."""
    return next(tree.iter("body"), None) if tree is not None else None


def text_of(node, separator: str = "") -> str:
    """`get_text(separator)` of the soup's element for `node`: its strings joined."""
    if node is None:
        return ""
    _, keep, boxes = _rules()
    box, pre = None, False
    for element in (node, *node.iterancestors()):
        if box is None and element.tag in boxes:
            box = element.tag  # the innermost box types the strings inside it
        pre = pre or element.tag in keep
    # a box's own text is its text (a <style>'s CSS); other elements show no box's text
    wanted = node.tag if node.tag in boxes else None
    found: list[str] = []
    _strings(node, box, pre, wanted, keep, boxes, found, None, [])
    return separator.join(found)


def texts(tree, inner) -> tuple[str, str]:
    """`text_of(tree, " ")` and `text_of(inner, " ")` (`inner` an element of `tree`) in one
    walk of the tree: the inner element's strings are a run of the tree's."""
    if tree is None:
        return "", ""
    _, keep, boxes = _rules()
    if inner is None or tree.tag in boxes or inner.tag in boxes:
        whole = text_of(tree, " ")
        return whole, (text_of(inner, " ") if inner is not None else whole)
    box, pre = None, False
    for element in (tree, *tree.iterancestors()):
        if box is None and element.tag in boxes:
            box = element.tag
        pre = pre or element.tag in keep
    found: list[str] = []
    span: list[int] = []
    _strings(tree, box, pre, None, keep, boxes, found, inner, span)
    whole = " ".join(found)
    if len(span) != 2:  # not inside the tree
        return whole, text_of(inner, " ")
    return whole, " ".join(found[span[0]:span[1]])


def _strings(node, box, pre: bool, wanted, keep, boxes, found: list, marked, span: list):
    """Append the soup's strings of `node` to `found` (with `span` the start and end of
    `marked`'s strings when the walk meets it)."""
    if node is marked:
        span.append(len(found))
    if node.text and box == wanted:
        found.append(_as_parsed(node.text, pre))
    for child in node:
        tag = child.tag
        if isinstance(tag, str):
            inner_box = tag if tag in boxes else box
            _strings(child, inner_box, pre or tag in keep, wanted, keep, boxes, found, marked,
                     span)
        if child.tail and box == wanted:
            found.append(_as_parsed(child.tail, pre))
    if node is marked:
        span.append(len(found))


def _as_parsed(text: str, pre: bool) -> str:
    """A string as the soup keeps it: only spaces become one line break or one space."""
    if pre or text.strip(_ASCII_SPACES):
        return text
    return "\n" if "\n" in text else " "
