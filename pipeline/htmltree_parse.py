"""BeautifulSoup's html.parser tree of a fragment, with the unchanged parts of it kept.

The preview rebuilds the email at every save, and a save changes a few lines of a long
post: parsing the whole fragment again (pure Python) was the largest part of a rebuild.
The fragment is cut where a line ends right after a tag (`>` then a line break). From the
start, the parser reads one piece after another; when, at the end of a piece, it has
nothing left over (no half-read tag, comment or entity, not inside <script> or <style>),
no element is open and no text is waiting to be joined with what follows, the parser is
exactly as it was before the first piece: what it read since the last such point (a
group of pieces) parses the same alone as inside the whole. Each group's tree is kept,
keyed by its exact text (and whether it ends the fragment, where the parser finishes what
is left over); a later parse copies the kept trees of unchanged groups and parses only
the rest. Line numbers (`sourceline`) are moved by the lines before the group.

Two things reach past such a point, and a fragment holding either is parsed whole, as
before: void elements opened without `/>` (a `<br>`) are remembered so that a later
`</br>` is ignored; and an `&#` that starts no character reference stops the parser's
first pass (the rest is read by its closing pass, which turns all that follows its own
next stop into text). Anything unexpected while parsing in
groups also falls back to parsing the whole fragment, which raises what it raises.
tests/test_htmltree_parse.py compares the result with `BeautifulSoup(x, "html.parser")`.
"""

from __future__ import annotations

import re
import threading

from .htmltree import bs4_element

# What is kept: at most this many characters of group text, the oldest dropped first (the
# trees take about 200 bytes a character: ~50 MB at most; a long post and the versions
# of its edited parts fit); a group longer than KEEP_GROUP is parsed each time.
KEEP_CHARS = 256 * 1024
KEEP_GROUP = 64 * 1024
MIN_CHARS = 256  # a shorter fragment is parsed whole: nothing worth keeping
# Only a process that parses the same fragment again and again (the preview server, which
# sets this) keeps groups: a one-off build would pay for parsing in groups (about half as
# much again as one parse) and never use what it kept.
WARM = False

_KEPT: dict[tuple[str, bool], tuple] = {}  # (group text, ends the fragment) -> (soup, lines)
_FIRST: dict[str, list[tuple[tuple[str, ...], str]]] = {}  # first piece -> (pieces, text)
_kept_chars = 0
_LOCK = threading.Lock()

_VOID_END: re.Pattern | None = None
# `&#` that starts no character reference: html.parser stops reading there and reads the
# rest in its closing pass, where the next such stop makes all that follows text.
_STRAY_CHARREF = re.compile(r"&#(?![0-9]+[^0-9a-fA-F]|[xX][0-9a-fA-F]+[^0-9a-fA-F])")


def _void_end_tag() -> re.Pattern:
    global _VOID_END
    if _VOID_END is None:
        from bs4.builder import HTMLParserTreeBuilder

        void = HTMLParserTreeBuilder().empty_element_tags
        names = "|".join(sorted(void, key=len, reverse=True))
        _VOID_END = re.compile(rf"</\s*(?:{names})", re.I)
    return _VOID_END


def pieces(fragment: str) -> list[str]:
    """The fragment cut after each `>` that ends a line; joined, they are the fragment."""
    parts = fragment.split(">\n")
    if len(parts) == 1:
        return parts
    return [parts[0] + ">", *("\n" + part + ">" for part in parts[1:-1]), "\n" + parts[-1]]


def parse(fragment: str):
    """`BeautifulSoup(fragment, "html.parser")`, with the kept trees of unchanged groups."""
    from bs4 import BeautifulSoup

    if not WARM or len(fragment) < MIN_CHARS or _void_end_tag().search(fragment) or \
            _STRAY_CHARREF.search(fragment):
        return BeautifulSoup(fragment, "html.parser")
    try:
        return _parse_in_groups(pieces(fragment))
    except Exception:  # the whole parse raises what it raises
        return BeautifulSoup(fragment, "html.parser")


def _parse_in_groups(parts: list[str]):
    from bs4 import BeautifulSoup

    soup = BeautifulSoup("", "html.parser")
    last = soup  # the element before the next one, in document order
    at, lines = 0, 0
    while at < len(parts):
        found = _kept_group(parts, at)
        if found is None:
            found = _parse_group(parts, at)
        group, template, group_lines = found
        last = _copy_children(template, soup, last, lines)
        at += len(group)
        lines += group_lines
    soup._most_recent_element = last if last is not soup else None
    return soup


def _kept_group(parts: list[str], at: int):
    with _LOCK:
        for group, text in _FIRST.get(parts[at], ()):
            n = len(group)
            if n > 1 and tuple(parts[at:at + n]) != group:
                continue
            ends = at + n == len(parts)
            kept = _KEPT.get((text, False)) or (_KEPT.get((text, True)) if ends else None)
            if kept is not None:
                return group, kept[0], kept[1]
    return None


def _parse_group(parts: list[str], at: int):
    """Parse pieces from `at` until the parser is back where it began (or the end)."""
    from bs4 import BeautifulSoup
    from bs4.builder._htmlparser import BeautifulSoupHTMLParser

    soup = BeautifulSoup("", "html.parser")
    soup.builder.reset()
    args, kwargs = soup.builder.parser_args
    parser = BeautifulSoupHTMLParser(soup, *args, **kwargs)
    end = at
    clean = False
    while end < len(parts):
        parser.feed(parts[end])
        end += 1
        clean = (not parser.rawdata and parser.cdata_elem is None and not soup.current_data
                 and soup.currentTag is soup and len(soup.tagStack) == 1)
        if clean:
            break
    ends = end == len(parts)
    if not clean:  # the fragment's end: finish it as BeautifulSoup does
        parser.close()
        soup.endData()
        while soup.currentTag is not None and soup.currentTag.name != soup.ROOT_TAG_NAME:
            soup.popTag()
    group = tuple(parts[at:end])
    text = "".join(group)
    lines = text.count("\n")
    if len(text) <= KEEP_GROUP:
        _keep(group, text, not clean and ends, soup, lines)
    return group, soup, lines


def _keep(group: tuple[str, ...], text: str, final: bool, soup, lines: int) -> None:
    global _kept_chars
    with _LOCK:
        key = (text, final)
        if key in _KEPT:
            return
        while _KEPT and _kept_chars + len(text) > KEEP_CHARS:
            (old_text, old_final), _ = next(iter(_KEPT.items()))
            _forget(old_text, old_final)
        _KEPT[key] = (soup, lines)
        _FIRST.setdefault(group[0], []).append((group, text))
        _kept_chars += len(text)


def _forget(text: str, final: bool) -> None:
    global _kept_chars
    del _KEPT[(text, final)]
    _kept_chars -= len(text)
    if (text, not final) in _KEPT:
        return
    for first, groups in list(_FIRST.items()):
        groups[:] = [(g, t) for g, t in groups if t != text]
        if not groups:
            del _FIRST[first]


def kept_size() -> tuple[int, int]:
    """(groups kept, characters of their text)."""
    with _LOCK:
        return len(_KEPT), _kept_chars


def clear() -> None:
    global _kept_chars
    with _LOCK:
        _KEPT.clear()
        _FIRST.clear()
        _kept_chars = 0


def copy_children(template, parent) -> None:
    """Copies of `template`'s children (a tree never changed) appended to the empty
    element `parent`: BeautifulSoup's own copy is several times slower."""
    _copy_children(template, parent, parent, 0)


def _copy_children(template, parent, last, lines: int):
    """Copies of `template`'s children appended to `parent`, linked in document order after
    `last`; each element's line moved by `lines`. Returns the last element copied."""
    element = bs4_element()
    AttributeValueList, Tag = element.AttributeValueList, element.Tag
    root = parent if parent.parent is None else None  # parsing links none back to it
    new = object.__new__
    previous_sibling = parent.contents[-1] if parent.contents else None
    for node in template.contents:
        fields = dict(node.__dict__)
        if isinstance(node, Tag):
            copy = new(Tag)
            attrs = fields["attrs"]
            if attrs:
                fields["attrs"] = {name: AttributeValueList(value)
                                   if isinstance(value, AttributeValueList) else value
                                   for name, value in attrs.items()}
            else:
                fields["attrs"] = {}
            fields["_namespaces"] = dict(fields["_namespaces"])
            fields["contents"] = []
            if fields.get("sourceline") is not None:
                fields["sourceline"] += lines
        else:
            copy = str.__new__(type(node), node)
        fields["parent"] = parent
        fields["previous_element"] = None if last is root else last
        fields["next_element"] = None
        fields["previous_sibling"] = previous_sibling
        fields["next_sibling"] = None
        copy.__dict__ = fields
        if last is not root:
            last.next_element = copy
        if previous_sibling is not None:
            previous_sibling.next_sibling = copy
        parent.contents.append(copy)
        previous_sibling = copy
        last = copy
        if isinstance(copy, Tag) and node.contents:
            last = _copy_children(node, copy, copy, lines)
    return last
