"""One parsed tree of the email's fragment, handed from pass to pass instead of re-parsed.

The HTML passes (embeds, tidy, headline; then the plain text and the preheader read the
result) each take the fragment as text and return it as text, so each can be used and
tested alone. Parsing is most of each pass's time, and each would parse the text the pass
before it had just written. `serialize` remembers the tree behind the text it returns;
`parse` of exactly that text hands the tree over instead of parsing again. A pass that
changes the tree takes it; one that only reads it (`read_only=True`) leaves it for the
next. The tree is first made what parsing its text would give (neighbouring strings
joined; a string of only spaces and line breaks outside `<pre>` and `<textarea>` cut to
one line break or one space, as BeautifulSoup does when it parses; strings inside <rt>,
<rp> and the like of the class it gives them), so a pass sees the
tree it would have parsed; tests/test_htmltree.py holds it to that.

The tree is remembered per thread: builds running in other threads never share one.
"""

from __future__ import annotations

import threading
from collections.abc import Collection

_LAST = threading.local()  # .text: the last serialized text; .tree: the tree behind it


_ELEMENT = None


def bs4_element():
    """bs4.element, imported on first use (not by every command) and then kept: an import
    statement in a function walked per node costs more than the work it does there."""
    global _ELEMENT
    if _ELEMENT is None:
        from bs4 import element

        _ELEMENT = element
    return _ELEMENT


def parse(fragment: str, *, read_only: bool = False):
    """The BeautifulSoup tree (html.parser) of `fragment`: the remembered one when
    `fragment` is the text `serialize` last returned in this thread, else a new parse
    (htmltree_parse: the parts unchanged since an earlier parse copied from kept trees)."""
    tree = getattr(_LAST, "tree", None)
    if tree is not None and _LAST.text == fragment:
        if not read_only:
            forget()  # a pass that fails half-way must not leave a half-changed tree
        return tree
    from . import htmltree_parse

    return htmltree_parse.parse(fragment)


_SPACES = "\x20\x0a\x09\x0c\x0d"  # what BeautifulSoup counts as whitespace


def _as_parsed(tree) -> None:
    """The tree made what parsing its text gives, in one walk (or, for a tree too deep to
    walk by recursion, by BeautifulSoup's own walks)."""
    from bs4.element import NavigableString

    builder = tree.builder
    containers = builder.string_containers or {}
    try:
        _as_parsed_under(tree, NavigableString, False,
                         frozenset(builder.preserve_whitespace_tags or ()),
                         builder.cdata_list_attributes or {}, containers,
                         frozenset((NavigableString, *containers.values())))
    except RecursionError:
        _as_parsed_by_walks(tree)


def _as_parsed_under(node, kind: type, kept: bool, keep: frozenset, lists: dict,
                     containers: dict, plain: frozenset) -> None:
    """_as_parsed for `node`'s children: `kind` is the class parsing gives its strings,
    `kept` whether it is inside a tag that keeps whitespace (<pre>, <textarea>)."""
    element = bs4_element()
    NavigableString, PreformattedString, Tag = (element.NavigableString,
                                                element.PreformattedString, element.Tag)
    contents = node.contents
    after_string = False
    for child in contents:  # neighbouring strings: joined as BeautifulSoup's smooth() does
        joinable = isinstance(child, NavigableString) and \
            not isinstance(child, PreformattedString)
        if joinable and after_string:
            node.smooth()
            break
        after_string = joinable
    for child in list(contents):
        if isinstance(child, Tag):
            if child.attrs:
                _attributes_as_parsed(child, lists)
            if child.contents:
                _as_parsed_under(child, containers.get(child.name, kind),
                                 kept or child.name in keep, keep, lists, containers, plain)
            continue
        if type(child) not in plain:
            continue  # comments, CDATA and the like stay as they are
        if not child:
            child.extract()  # parsing makes no empty strings
        elif not kept and not child.strip(_SPACES) and child not in ("\n", " "):
            child.replace_with(kind("\n" if "\n" in child else " "))
        elif type(child) is not kind:
            child.replace_with(kind(child))


def _as_parsed_by_walks(tree) -> None:
    from bs4.element import NavigableString, Tag

    tree.smooth()  # joins neighbours into plain strings, even inside <rt> or <rp>
    keep = list(tree.builder.preserve_whitespace_tags or ())
    lists = tree.builder.cdata_list_attributes or {}
    kinds = _string_kinds(tree)
    plain = {NavigableString, *(tree.builder.string_containers or {}).values()}
    for node in list(tree.descendants):
        if isinstance(node, Tag):
            _attributes_as_parsed(node, lists)
            continue
        if type(node) not in plain:
            continue  # comments, CDATA and the like stay as they are
        kind = kinds.get(id(node), NavigableString)
        if not node:
            node.extract()  # parsing makes no empty strings
        elif not node.strip(_SPACES) and node not in ("\n", " ") and \
                not (keep and node.find_parent(keep)):
            node.replace_with(kind("\n" if "\n" in node else " "))
        elif type(node) is not kind:
            node.replace_with(kind(node))


def _string_kinds(tree) -> dict[int, type]:
    """The class parsing gives each string inside a tag whose strings BeautifulSoup types
    (<rt>, <rp>, <style>, <script>, <template>): that of the nearest such tag."""
    from bs4.element import NavigableString

    containers = tree.builder.string_containers or {}
    kinds: dict[int, type] = {}
    for box in tags(tree, containers):  # document order: an inner box overrides
        for node in box.descendants:
            if isinstance(node, NavigableString):
                kinds[id(node)] = containers[box.name]
    return kinds


def _attributes_as_parsed(tag, lists: dict) -> None:
    """Attributes in the order they are written (by name), values as text, and
    `class="a b"` set as one string as the list parsing makes of it."""
    attrs = tag.attrs
    if not attrs:
        return
    if list(attrs) != sorted(attrs):
        tag.attrs = attrs = dict(sorted(attrs.items()))
    for name, value in attrs.items():
        if not isinstance(value, str | list):
            attrs[name] = "" if value is None else str(value)
    for name in (*lists.get("*", ()), *lists.get(tag.name, ())):
        value = attrs.get(name)
        if isinstance(value, str):
            attrs[name] = value.split()


def as_parsed(tree):
    """`tree` made what parsing its serialized text would give, without writing the text:
    for handing a tree straight to the next pass that changes it."""
    _as_parsed(tree)
    return tree


def serialize(tree) -> str:
    """`str(tree)`, remembering the tree for the next `parse` of that text."""
    _as_parsed(tree)
    text = write(tree)
    _LAST.text, _LAST.tree = text, tree
    return text


def tags(tree, names: Collection[str] | None = None) -> list:
    """Every element under `tree` (only those named in `names`, if given), in document
    order: BeautifulSoup's `find_all` does the same through its general filters, several
    times slower on a whole email."""
    Tag = bs4_element().Tag
    found: list = []
    try:
        _collect(tree, names, found, Tag)
    except RecursionError:  # a tree too deep to walk by recursion: its document order
        return [node for node in tree.descendants
                if isinstance(node, Tag) and (names is None or node.name in names)]
    return found


def _collect(node, names, found: list, Tag: type) -> None:
    for child in node.contents:
        if isinstance(child, Tag):
            if names is None or child.name in names:
                found.append(child)
            if child.contents:
                _collect(child, names, found, Tag)


def forget() -> None:
    _LAST.text = _LAST.tree = None


class _Unusual(Exception):
    """A node the lean writer does not know: BeautifulSoup writes the tree instead."""


def write(tree) -> str:
    """`str(tree)` (BeautifulSoup's "minimal" formatter: `&`, `<`, `>` escaped, attributes
    sorted by name, void elements as `<br/>`), written by a direct walk: BeautifulSoup's own
    writer goes through an event stream and a formatter object per node, several times
    slower. A node of a kind it does not know has BeautifulSoup write the whole tree;
    tests/test_htmltree.py compares the two over generated and corpus fragments."""
    out: list[str] = []
    try:
        _write_children(tree, out)
    except (_Unusual, RecursionError):
        return str(tree)
    return "".join(out)


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _attribute(name: str, value) -> str:
    AttributeValueList = bs4_element().AttributeValueList
    if value is None:
        return " " + name
    if type(value) is AttributeValueList or type(value) is list:
        if any(type(part) is not str for part in value):
            raise _Unusual
        value = " ".join(value)
    elif type(value) is not str:
        raise _Unusual
    value = _escape(value)
    quote = '"'
    if '"' in value:
        if "'" in value:
            value = value.replace('"', "&quot;")
        else:
            quote = "'"
    return f" {name}={quote}{value}{quote}"


_RAW_TEXT = frozenset(("script", "style"))  # strings written as they are (the formatter's)


def _write_children(node, out: list[str]) -> None:
    element = bs4_element()
    NavigableString, PreformattedString, Tag = (element.NavigableString,
                                                element.PreformattedString, element.Tag)
    raw = node.name in _RAW_TEXT
    for child in node.contents:
        kind = type(child)
        if kind is Tag:
            if child.hidden:
                _write_children(child, out)
                continue
            name = f"{child.prefix}:{child.name}" if child.prefix else child.name
            attrs = child.attrs
            opening = "<" + name
            if attrs:
                if type(name) is not str or any(type(key) is not str for key in attrs):
                    raise _Unusual
                opening += "".join(_attribute(key, attrs[key]) for key in sorted(attrs))
            if not child.contents and child.can_be_empty_element:
                out.append(opening + "/>")
                continue
            out.append(opening + ">")
            _write_children(child, out)
            out.append("</" + name + ">")
        elif kind is NavigableString or (isinstance(child, NavigableString)
                                         and not isinstance(child, PreformattedString)
                                         and not kind.PREFIX and not kind.SUFFIX):
            out.append(str.__str__(child) if raw else _escape(child))
        elif isinstance(child, PreformattedString):
            out.append(kind.PREFIX + str.__str__(child) + kind.SUFFIX)
        else:
            raise _Unusual
