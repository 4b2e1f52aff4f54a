"""The contrast check's simple CSS selectors matched in Python, on an index of the tree.

The check matches each stylesheet selector of the email against its tree. cssselect's
XPath does it in libxml2, but walks the whole tree once per selector and evaluates
string functions for every class test: most of the check's matching time on an email
whose every element is tested against some two dozen selectors. The templates' selectors
are simple (types, classes, ids, attributes, `:not()` of those, joined by descendant and
child combinators); for those the elements come from an index made once per tree, and
each candidate's ancestors are read. Anything else (pseudo-classes, sibling combinators,
namespaces) is left to the XPath, and `matcher` says so by returning None. The result is
the XPath's, element for element, in document order (tests/test_css_match.py compares
them on generated trees and selectors).
"""

from __future__ import annotations

import re
from collections.abc import Callable

_XML_SPACE = re.compile("[ \t\r\n]+")  # what XPath's normalize-space() collapses
_CSS_SPACE = (" ", "\t", "\n", "\r", "\f")  # cssselect never matches a word holding one

Test = Callable[[object], bool]


class Index:
    """A tree's elements in document order, by tag, by class word and by id."""

    def __init__(self, tree):
        self.elements = [e for e in tree.iter() if isinstance(e.tag, str)]
        self.by_tag: dict[str, list] = {}
        self.by_class: dict[str, list] = {}
        self.by_id: dict[str, list] = {}
        self.steps: dict[tuple, list] = {}  # a selector up to a step (its key) -> elements
        for element in self.elements:
            self.by_tag.setdefault(element.tag, []).append(element)
            classes = element.get("class")
            if classes:
                for word in dict.fromkeys(_XML_SPACE.split(classes)):
                    if word:
                        self.by_class.setdefault(word, []).append(element)
            ident = element.get("id")
            if ident is not None:
                self.by_id.setdefault(ident, []).append(element)


class _Unsupported(Exception):
    """A selector this module leaves to the XPath."""


def matcher(selector: str) -> Callable[[Index], list] | None:
    """A function from a tree's Index to the elements `selector` matches, or None when the
    selector is not one of the simple kinds (the caller uses the XPath then)."""
    from cssselect import SelectorError, parse

    try:
        parsed = parse(selector)
    except (SelectorError, ValueError, TypeError):
        return None
    if len(parsed) != 1 or parsed[0].pseudo_element is not None:
        return None
    try:
        steps = _steps(parsed[0].parsed_tree)
    except _Unsupported:
        return None
    return _matching(steps)


def _steps(tree) -> list[tuple[str, Test, tuple, tuple]]:
    """(combinator to the step on the left, test, where candidates come from, the
    selector up to this step as a key), left to right; the first step's combinator is ""."""
    from cssselect.parser import CombinedSelector

    if isinstance(tree, CombinedSelector):
        if tree.combinator not in (" ", ">"):
            raise _Unsupported
        left = _steps(tree.selector)
        test, source = _compound(tree.subselector)
        return [*left, (tree.combinator, test, source, _structure(tree))]
    test, source = _compound(tree)
    return [("", test, source, _structure(tree))]


def _structure(tree) -> tuple:
    """A parsed selector as nested tuples: the key of its elements on the index. (Its repr
    is not one: `.a\\]\\.b.c` and `.a.b\\]\\.c` print alike, their class names unescaped.)"""
    if isinstance(tree, tuple):  # a token (an attribute's value: `x` and `"x"` alike)
        return ("token", tree[1])
    if tree is None or isinstance(tree, str | int):
        return tree
    return (type(tree).__name__, *(_structure(value) for value in vars(tree).values()))


def _compound(selector) -> tuple[Test, tuple]:
    """The test for one compound selector and the narrowest index that holds its matches."""
    from cssselect.parser import Attrib, Class, Element, Hash, Negation

    if isinstance(selector, Element):
        if selector.namespace is not None:
            raise _Unsupported
        name = selector.element
        if not name or name == "*":
            return (lambda element: True), ("all",)
        return (lambda element: element.tag == name), ("tag", name)
    if isinstance(selector, Class):
        inner, source = _compound(selector.selector)
        word = selector.class_name
        if not word or any(c in word for c in _CSS_SPACE):
            return (lambda element: False), ("none",)
        return _both(inner, lambda element: _has_word(element.get("class"), word)), \
            ("class", word)
    if isinstance(selector, Hash):
        inner, source = _compound(selector.selector)
        ident = selector.id
        return _both(inner, lambda element: element.get("id") == ident), ("id", ident)
    if isinstance(selector, Attrib):
        inner, source = _compound(selector.selector)
        if selector.namespace is not None:
            raise _Unsupported
        return _both(inner, _attribute_test(selector)), source
    if isinstance(selector, Negation):
        inner, source = _compound(selector.selector)
        try:
            negated, _ = _compound(selector.subselector)
        except _Unsupported:
            raise
        return _both(inner, lambda element: not negated(element)), source
    raise _Unsupported


def _both(first: Test, second: Test) -> Test:
    return lambda element: first(element) and second(element)


def _has_word(value: str | None, word: str) -> bool:
    """`[attr~=word]` as cssselect's XPath reads it (words split at XML whitespace)."""
    return value is not None and word in _XML_SPACE.split(value)


def _attribute_test(selector) -> Test:
    name, operator = selector.attrib, selector.operator
    if operator == "exists":
        return lambda element: element.get(name) is not None
    value = selector.value.value if hasattr(selector.value, "value") else selector.value
    if not isinstance(value, str):
        raise _Unsupported
    if getattr(selector, "flag", None) == "i" and value:  # `[lang="en" i]`: ASCII case only
        return _attribute_test_of(operator, lambda element: _ascii_lower(element.get(name)),
                                  value.translate(_ASCII_LOWER))
    return _attribute_test_of(operator, lambda element: element.get(name), value)


_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def _ascii_lower(value: str | None) -> str | None:
    """What XPath's translate() to lower case, as cssselect writes the `i` flag, makes."""
    return value.translate(_ASCII_LOWER) if value is not None else None


def _attribute_test_of(operator: str, got: Callable[[object], str | None], value: str) -> Test:
    """The test of `[name <operator> value]`, `got(element)` reading the attribute."""
    if operator == "=":
        return lambda element: got(element) == value
    if operator == "!=":
        if value:
            return lambda element: got(element) != value
        return lambda element: got(element) not in (None, "")
    if operator == "~=":
        if not value or any(c in value for c in _CSS_SPACE):
            return lambda element: False
        return lambda element: _has_word(got(element), value)
    if operator == "|=":
        return lambda element: (lambda seen: seen is not None and (
            seen == value or seen.startswith(value + "-")))(got(element))
    if not value and operator in ("^=", "$=", "*="):
        return lambda element: False
    if operator == "^=":
        return lambda element: (got(element) or "").startswith(value)
    if operator == "$=":
        return lambda element: (got(element) or "").endswith(value)
    if operator == "*=":
        return lambda element: value in (got(element) or "")
    raise _Unsupported


def _matching(steps: list[tuple[str, Test, tuple, tuple]]) -> Callable[[Index], list]:
    """Left to right: the elements each step matches, among the descendants (or children)
    of the step before's. Selectors share their first steps (`.paper …`), so each step's
    elements are kept on the index for the others."""

    def match(index: Index) -> list:
        found: list = []
        for n, (combinator, test, source, key) in enumerate(steps):
            kept = index.steps.get(key)
            if kept is not None:
                found = kept
                continue
            candidates = _candidates(index, source)
            if n == 0:
                found = [element for element in candidates if test(element)]
            else:
                if combinator == ">":
                    scope = {id(child) for element in found for child in element
                             if isinstance(child.tag, str)}
                else:
                    scope = {id(inner) for element in found
                             for inner in element.iterdescendants()}
                found = [element for element in candidates
                         if id(element) in scope and test(element)]
            index.steps[key] = found
        return list(found)

    return match


def _candidates(index: Index, source: tuple) -> list:
    kind = source[0]
    if kind == "tag":
        return index.by_tag.get(source[1], [])
    if kind == "class":
        return index.by_class.get(source[1], [])
    if kind == "id":
        return index.by_id.get(source[1], [])
    if kind == "none":
        return []
    return index.elements
