"""The rules `publish check` applies to a finished email, one small function each.

A rule is a row of `RULES`: its id (what `check_accept` names to accept a warning), its
severity, its message and hint, and a function that reads the parsed email (`Page`) and
yields one `Hit` per place the rule is broken. A message may name the hit's `fields`
(`{tag}`); the hit's element, when it has one, is shown as a snippet. To add a rule:
write the function, add its row, add a test that breaks it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from functools import cached_property

from . import check_tree
from .keep import kept_while_short
from .plaintext import display_width

GMAIL_CLIP = 102 * 1024
SIZE_WARNING = 90 * 1024
STYLE_LIMIT = 16 * 1024
FORBIDDEN = ("video", "audio", "iframe", "script", "object", "embed", "form", "svg", "picture")
VAGUE_LINK_TEXT = {"click here", "here", "this link", "link", "点击这里", "这里"}
SUBJECT_LIMIT = 78


@dataclass
class Page:
    """A finished email as the rules read it: parsed once, each derived view made once.

    Its elements are shown as BeautifulSoup shows them (check_tree): a `name`, `attrs`
    with `class` and the like as word lists, `get`, `has_attr` and `get_text`.
    """

    html: str
    tree: object  # the lxml tree of `html` (check_contrast reads the same), None if empty
    text: str = ""
    subject: str = ""
    preheader: str = ""
    postal_address: str = ""

    @cached_property
    def elements(self) -> list:
        return check_tree.elements(self.tree)

    @cached_property
    def images(self) -> list:
        return [element for element in self.elements if element.name == "img"]

    @cached_property
    def anchors(self) -> list:
        return [element for element in self.elements if element.name == "a"]

    @cached_property
    def style_text(self) -> str:
        return "\n".join(style.get_text() for style in self.elements if style.name == "style")

    @cached_property
    def _texts(self) -> tuple[str, str]:
        """The text of the whole page and of its first <body> (the whole page's when there
        is none), both spaced, read in one walk of the tree."""
        return check_tree.texts(self.tree, check_tree.body(self.tree))

    @cached_property
    def body_text(self) -> str:
        """The text of the first <body> (of the whole page when there is none), spaced."""
        return self._texts[1]

    @cached_property
    def all_text(self) -> str:
        """The text of the whole page, spaced. The tree leaves out what the parser saw
        outside the <html> element (only spaces and line breaks, which matter only to a
        search that begins or ends with them): `soup_text` has those too."""
        return self._texts[0]

    @cached_property
    def soup_text(self) -> str:
        from bs4 import BeautifulSoup

        return BeautifulSoup(self.html, "lxml").get_text(" ")

    @cached_property
    def styled(self) -> list[tuple[object, str, tuple[tuple[str, str], ...]]]:
        """(element, its style attribute, that style's (property, value) pairs) for every
        element with a style, in document order."""
        return [(element, style, style_declarations(style)) for element in self.elements
                if (style := element.get("style")) is not None]

    @cached_property
    def sheet_declarations(self) -> tuple[tuple[str, str], ...]:
        """(property, value) for every declaration of the <style> blocks."""
        return tuple(pair for block in re.findall(r"\{([^{}]*)\}", self.style_text)
                     for pair in _declarations(block))

    @cached_property
    def declarations(self) -> list[tuple[object, str, str]]:
        """(element or None, property, value) for every inline and <style> declaration."""
        found = [(element, prop, value) for element, _style, pairs in self.styled
                 for prop, value in pairs]
        found += [(None, prop, value) for prop, value in self.sheet_declarations]
        return found

    @cached_property
    def size(self) -> int:
        return len(self.html.encode("utf-8"))


KEEP_LIMIT = 1024  # a longer style (a data: URI in it) is read each time, never kept


@kept_while_short(4096, KEEP_LIMIT)
def style_declarations(style: str) -> tuple[tuple[str, str], ...]:
    """(property, value) for each declaration of an inline style, lower-cased; kept, since
    an email repeats a few dozen styles hundreds of times and a save repeats the email's."""
    return _declarations(style)


def _declarations(text: str) -> tuple[tuple[str, str], ...]:
    found = []
    for part in text.split(";"):
        if ":" in part:
            prop, _, value = part.partition(":")
            found.append((prop.strip().lower(), value.strip().lower()))
    return tuple(found)


@dataclass(frozen=True)
class Hit:
    """A place a rule found: the element (None for the page) and what its message names."""

    element: object = None
    fields: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Rule:
    """One check of a finished email: an id, a severity, its words, and how it finds hits."""

    id: str
    severity: str  # error | warning
    message: str  # may name the hit's fields: "<{tag}> does not work in email"
    hint: str
    find: Callable[[Page], Iterable[Hit]]


# what email cannot show ------------------------------------------------------------------
def forbidden_tags(page: Page) -> Iterator[Hit]:
    for element in page.elements:
        if element.name in FORBIDDEN:
            yield Hit(element, {"tag": element.name})


def custom_elements(page: Page) -> Iterator[Hit]:
    for element in page.elements:
        if "-" in element.name and element.name not in FORBIDDEN:
            yield Hit(element, {"tag": element.name})


def srcsets(page: Page) -> Iterator[Hit]:
    for element in page.elements:
        if element.get("srcset") is not None:
            yield Hit(element)


def linked_stylesheets(page: Page) -> Iterator[Hit]:
    for element in page.elements:
        if element.name == "link" and "stylesheet" in (element.get("rel") or []):
            yield Hit(element)


def css_imports(page: Page) -> Iterator[Hit]:
    if "@import" in page.style_text:
        yield Hit()


def layout_css(page: Page) -> Iterator[Hit]:
    for element, prop, value in page.declarations:
        if (prop == "position" and value not in ("static", "")) or (
                prop == "display" and re.search(r"\b(inline-)?(flex|grid)\b", value)):
            yield Hit(element, {"prop": prop, "value": value})


# size and characters ---------------------------------------------------------------------
def clipped(page: Page) -> Iterator[Hit]:
    if page.size > GMAIL_CLIP:
        yield Hit(fields={"kb": f"{page.size / 1024:.1f}"})


def nearly_clipped(page: Page) -> Iterator[Hit]:
    if SIZE_WARNING < page.size <= GMAIL_CLIP:
        yield Hit(fields={"kb": f"{page.size / 1024:.1f}"})


def big_style(page: Page) -> Iterator[Hit]:
    size = len(page.style_text.encode("utf-8"))
    if size > STYLE_LIMIT:
        yield Hit(fields={"kb": f"{size / 1024:.1f}"})


def c1_controls(page: Page) -> Iterator[Hit]:
    if re.search("[\u0080-\u009f]", page.html):
        yield Hit()


# images ----------------------------------------------------------------------------------
def _images(page: Page, test: Callable[[object, str], bool]) -> Iterator[Hit]:
    for img in page.images:
        if test(img, (img.get("src") or "").strip()):
            yield Hit(img)


def images_without_alt(page: Page) -> Iterator[Hit]:
    return _images(page, lambda img, src: img.get("alt") is None)


def images_without_width(page: Page) -> Iterator[Hit]:
    return _images(page, lambda img, src: not img.get("width"))


def data_uri_images(page: Page) -> Iterator[Hit]:
    return _images(page, lambda img, src: src.startswith("data:"))


def http_images(page: Page) -> Iterator[Hit]:
    return _images(page, lambda img, src: src.startswith("http://"))


def relative_images(page: Page) -> Iterator[Hit]:
    return _images(page, lambda img, src: not src.startswith(("data:", "http://", "https://")))


# links -----------------------------------------------------------------------------------
def _links(page: Page) -> Iterator[tuple[object, str]]:
    for link in page.anchors:
        if link.has_attr("href"):
            yield link, link["href"].strip()


def empty_links(page: Page) -> Iterator[Hit]:
    return (Hit(link) for link, href in _links(page) if not href)


def missing_anchors(page: Page) -> Iterator[Hit]:
    targets = {el["id"] for el in page.elements if el.get("id") is not None} | {
        el["name"] for el in page.anchors if el.get("name") is not None}
    for link, href in _links(page):
        if href.startswith("#") and href[1:] not in targets:
            yield Hit(link, {"href": href})


def http_links(page: Page) -> Iterator[Hit]:
    return (Hit(link) for link, href in _links(page) if href.startswith("http://"))


def relative_links(page: Page) -> Iterator[Hit]:
    for link, href in _links(page):
        if (href and not href.startswith(("#", "http://")) and "%%" not in href
                and not re.match(r"(https|mailto|tel):", href)):
            yield Hit(link, {"href": repr(href)})


def vague_link_text(page: Page) -> Iterator[Hit]:
    for link, _href in _links(page):
        label = " ".join(link.get_text(" ").split()).lower()
        if label in VAGUE_LINK_TEXT:
            yield Hit(link, {"label": repr(label)})


def leftover_tk(page: Page) -> Iterator[Hit]:
    if re.search(r"\bTK\b", page.body_text + " " + page.text):
        yield Hit()


# inbox and footer ------------------------------------------------------------------------
_MARKUP_IN_TEXT = re.compile(r"={3,}|\*\*|__|\]\(|^#{1,6}\s|\[!(NOTE|TIP|WARNING)\]", re.I)


def no_preheader(page: Page) -> Iterator[Hit]:
    if not page.preheader:
        yield Hit()


def preheader_width(page: Page) -> Iterator[Hit]:
    width = display_width(page.preheader)
    if page.preheader and not 40 <= width <= 140:
        yield Hit(fields={"width": width})


def preheader_repeats_subject(page: Page) -> Iterator[Hit]:
    from .headline import normalise

    subject = normalise(page.subject) if page.subject else ""
    if page.preheader and subject and normalise(page.preheader).startswith(subject):
        yield Hit()


def preheader_markup(page: Page) -> Iterator[Hit]:
    if page.preheader and _MARKUP_IN_TEXT.search(page.preheader):
        yield Hit()


def long_subject(page: Page) -> Iterator[Hit]:
    if len(page.subject) > SUBJECT_LIMIT:
        yield Hit(fields={"length": len(page.subject)})


def no_unsubscribe(page: Page) -> Iterator[Hit]:
    hrefs = " ".join(a.get("href", "") for a in page.anchors).lower()
    if "unsubscribe" not in hrefs and "%%unsubscribe_url%%" not in hrefs:
        yield Hit()


def no_postal_address(page: Page) -> Iterator[Hit]:
    address = page.postal_address
    text = page.all_text if address.strip() == address else page.soup_text
    if address and address not in text:
        yield Hit()


RULES: tuple[Rule, ...] = (
    Rule("forbidden-tag", "error", "<{tag}> does not work in email",
         "replace it with an image or a link (publish build swaps embeds for cards)",
         forbidden_tags),
    Rule("custom-element", "error", "custom element <{tag}> is not shown by mail clients",
         "remove it or replace it with plain HTML", custom_elements),
    Rule("srcset", "error", "srcset is ignored by most mail clients",
         "use one image with a width attribute", srcsets),
    Rule("external-css", "error", "linked stylesheets are dropped by Gmail and Yahoo",
         "inline the CSS (email.css)", linked_stylesheets),
    Rule("external-css", "error", "@import is dropped by Gmail and Yahoo",
         "inline the CSS instead of importing it", css_imports),
    Rule("layout-css", "error", "CSS {prop}: {value} for layout breaks in Outlook and Gmail",
         "lay out with tables (MJML sections and columns)", layout_css),
    Rule("gmail-clip", "error", "the HTML is {kb} KB; Gmail clips over 102 KB and hides the "
         "rest, unsubscribe link included", "shorten the issue or split it", clipped),
    Rule("size", "warning", "the HTML is {kb} KB, close to Gmail's 102 KB clip",
         "shorten the issue", nearly_clipped),
    Rule("style-size", "warning", "<style> holds {kb} KB; Gmail drops style blocks over 16 KB",
         "move rules into email.css so they are inlined", big_style),
    Rule("c1-control", "error", "C1 control characters (U+0080–U+009F) make Gmail clip",
         "remove them (often pasted from Windows-1252 text)", c1_controls),
    Rule("img-alt", "error", "image without alt text",
         "add alt text (alt=\"\" for decoration)", images_without_alt),
    Rule("img-width", "warning", "image without a width attribute; Outlook shows it at full "
         "size", "set width", images_without_width),
    Rule("img-data-uri", "warning", "data: image URI; Gmail does not show them",
         "host the image and link it", data_uri_images),
    Rule("img-http", "warning", "image over http:", "use https", http_images),
    Rule("img-relative", "error", "image URL is not absolute", "set base_url", relative_images),
    Rule("link-empty", "error", "link with an empty href", "give it a URL", empty_links),
    Rule("anchor-missing", "error", "link to {href} matches no element",
         "fix the table of contents link or the heading", missing_anchors),
    Rule("link-http", "warning", "link over http:", "use https", http_links),
    Rule("link-relative", "error", "link {href} is not absolute", "set base_url",
         relative_links),
    Rule("link-text", "warning", "link text {label} says nothing about where it goes",
         "describe the destination", vague_link_text),
    Rule("placeholder", "error", "leftover TK placeholder", "write the missing part",
         leftover_tk),
    Rule("preheader", "warning", "no preheader; inboxes show the first text instead",
         "set preheader in the front matter", no_preheader),
    Rule("preheader", "warning", "preheader is {width} columns wide (a CJK character counts "
         "as two)", "keep it between 40 and 140 columns (20 to 70 Chinese characters)",
         preheader_width),
    Rule("preheader", "warning", "the preheader repeats the subject, which the inbox already "
         "shows beside it", "start it with what the issue says next",
         preheader_repeats_subject),
    Rule("preheader", "warning", "the preheader shows Markdown syntax as text",
         "write it as plain text", preheader_markup),
    Rule("subject-length", "warning", "subject is {length} characters; inboxes cut it",
         "keep it under 78 characters", long_subject),
    Rule("unsubscribe", "error", "no unsubscribe link", "keep the template's footer link",
         no_unsubscribe),
    Rule("postal-address", "error", "no postal address in the footer",
         "set postal_address in publish.toml", no_postal_address),
)
