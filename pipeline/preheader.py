"""The inbox line after the subject: the first real prose of the issue, cut to fit.

Read from the email's HTML fragment, so it is what the reader will see first: headings,
tables of contents, images, embed cards, code, tables, bylines, "Published …" lines and
alert boxes are passed over. Lengths are display widths (a CJK character is two columns),
which is how an inbox row fills up.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator

from . import htmltree
from .headline import says_the_same
from .plaintext import display_width

LIMIT = 140  # columns, the most inboxes show
MINIMUM = 40  # a shorter first paragraph is joined by the next one
ELLIPSIS = "…"

# Containers whose text is not the article's prose.
_SKIP_TAGS = {"h1", "h2", "h3", "h4", "h5", "h6", "pre", "code", "table", "figure",
              "figcaption", "nav", "header", "footer", "aside", "small", "summary",
              "details", "script", "style", "button", "form", "math", "kbd", "samp"}
_SKIP_CLASSES = re.compile(r"toc|table-of-contents|card|badge|caption|alert|callout|"
                           r"admonition|note|warning|footnote", re.I)
# Blog scaffolding: its own words are not prose, but web posts often leave these <div>s
# unclosed, so the paragraphs after them end up inside and must still be read.
_QUIET_CLASSES = re.compile(r"author|byline|metadata|avatar|banner|date|share", re.I)
# A block tag whose own text forms paragraphs; the walk goes into the others.
_PARAGRAPHS = {"p", "dd", "address"}
_CONTAINERS = {"div", "section", "article", "main", "center", "blockquote", "ul", "ol",
               "li", "dl", "dt"}
# Blocks that end a paragraph and hold none.
_BLOCKS = {"hr", "picture", "iframe", "video", "audio", "tr", "td", "th"}
# Lines a blog theme or a cross-post adds around an article: never its first prose. Only
# short paragraphs are judged by these (see SCAFFOLDING_WIDTH).
_SCAFFOLDING = re.compile(
    r"^(published\b|posted\b|updated?\b|update on github|last updated|by\s+(?-i:(?=[A-Z@]))|"
    r"written by|authors?\s*[:：]|translat(ed|ors?)\b|proofread|reading time|"
    r"\d+\s*min(ute)?s?\s+read|(photo|image|illustration|cover)( credit)?\s*(by\b|:)|"
    r"originally (published|posted)|also available in|read (this|it) in|"
    r"this (post|article|piece) (was|is) (also |first |originally )?"
    r"(available|published|posted|cross-posted)|"
    r"作者|译者|譯者|翻译|翻譯|校对|校對|审校|審校|發布|发布于|发表于|發表於|原文|英文原文|"
    r"本文(也|亦)?(提供|首发|首發|转载|轉載|原载|原載|翻译自|翻譯自|译自|譯自|同步)|"
    r"阅读时间|閱讀時間|图片来源|圖片來源|tl;dr:?$|目录|目錄|contents?$|table of contents)",
    re.I,
)
SCAFFOLDING_WIDTH = 100
# Template placeholders left in the text: `{authors}`, Liquid/Jinja `{{ x }}`, `{% x %}`.
_PLACEHOLDER = re.compile(r"\{[\w.-]+\}|\{\{.*?\}\}|\{%.*?%\}")
# Link text stops at a bracket and the address is bounded, so a run of 50,000 `[` or `](`
# costs each start position a short scan, not the rest of the paragraph.
_MARKDOWN_LINK = re.compile(r"!?\[([^\[\]]{0,2000})\]\((?:[^()]|\([^)]*\)){0,2000}\)")
_EMPHASIS = re.compile(r"(\*\*|__|~~|`)")
_ALERT = re.compile(r"^\s*>?\s*\[!(note|tip|important|warning|caution)\]\s*", re.I)
_HEADING_MARK = re.compile(r"^\s*#{1,6}\s+")
_RULE = re.compile(r"^[\s=\-_*#~`]+$")
_CJK = re.compile(r"[\u2e80-\u9fff\uac00-\ud7af\uf900-\ufaff\uff00-\uffef\U00020000-\U0002fa1f]")
# Where a cut may fall: before and after each wide character, and at spaces.
_PIECES = re.compile(
    r"\s+|[\u2e80-\u9fff\uac00-\ud7af\uf900-\ufaff\uff00-\uffef\U00020000-\U0002fa1f]|"
    r"[^\s\u2e80-\u9fff\uac00-\ud7af\uf900-\ufaff\uff00-\uffef\U00020000-\U0002fa1f]+"
)
# A sentence ends at 。！？ or at . ! ? after a lower-case word ("Mr." and "e.g." do not).
_SENTENCE_END = re.compile(r"(?:(?<=[a-z0-9]{2}[.!?])|(?<=[。！？]))[\"'”’」』）)]?")
_TRAILING = " \t,;:、，；：—–-(（[「『“‘/\\"


def _words(text: str) -> int:
    return len(re.findall(r"[^\W\d_]+", _CJK.sub(" ", text))) + len(_CJK.findall(text))


def clean(text: str) -> str:
    """The words of a paragraph as an inbox shows them: one line, no Markdown syntax left
    by an author's raw HTML (`[text](url)`, `**`, a `> [!TIP]` marker, `#`)."""
    text = " ".join(text.split())
    text = _ALERT.sub("", text)
    text = _HEADING_MARK.sub("", text)
    text = _MARKDOWN_LINK.sub(lambda m: m.group(1), text)
    text = _EMPHASIS.sub("", text)
    return " ".join(text.split())


def _skipped(element) -> bool:
    if element.name in _SKIP_TAGS:
        return True
    if element.get("hidden") is not None or element.get("aria-hidden") == "true":
        return True
    style = (element.get("style") or "").replace(" ", "").lower()
    if "display:none" in style or "visibility:hidden" in style:
        return True
    classes = " ".join(element.get("class") or [])
    return bool(classes and _SKIP_CLASSES.search(classes) and not _quiet(element))


def _quiet(element) -> bool:
    classes = " ".join(element.get("class") or [])
    return bool(classes and _QUIET_CLASSES.search(classes))


def _is_toc(element) -> bool:
    """A list whose links mostly point inside the issue: a table of contents."""
    links = element.find_all("a", href=True)
    inner = [a for a in links if a["href"].startswith("#")]
    return len(inner) >= 2 and len(inner) * 2 >= len(element.find_all("li"))


def _passed_over(container, strict: bool) -> bool:
    """Lists and quotes are read only when the issue has no plain paragraph; a table of
    contents never is."""
    if container.name in ("ul", "ol"):
        return strict or _is_toc(container)
    return container.name == "blockquote" and strict


def _visible(node) -> str:
    """The words a reader sees in a node, unflattened: skipped parts, images and line
    breaks become spaces."""
    from bs4 import NavigableString, Tag

    if isinstance(node, NavigableString):
        return str(node) if type(node) is NavigableString else ""
    if not isinstance(node, Tag):
        return ""
    if node.name in ("br", "img"):
        return " "
    if _skipped(node) and node.name != "code":
        return " "
    return "".join(_visible(child) for child in node.children)


def _linked(nodes) -> str:
    from bs4 import Tag

    texts = []
    for node in nodes:
        if isinstance(node, Tag):
            links = [node] if node.name == "a" else node.find_all("a")
            texts += [_visible(a) for a in links]
    return clean(" ".join(texts))


def _is_prose(text: str, linked: str, title: str) -> bool:
    if not text or _RULE.match(text) or _words(text) < 3:
        return False
    short = display_width(text) <= SCAFFOLDING_WIDTH
    if (short and _SCAFFOLDING.match(text)) or _PLACEHOLDER.search(text):
        return False
    if len(linked) > 0.8 * len(text):  # a row of badges, "Open in Colab", a link list
        return False
    return not says_the_same(title, text, loose=False)


def paragraphs(soup, title: str = "", *, strict: bool = True) -> Iterator[str]:
    """The prose paragraphs of a parsed fragment in reading order, read lazily (strict: not
    in lists or quotes)."""
    from bs4 import NavigableString, Tag

    def consider(nodes) -> Iterator[str]:
        text = clean("".join(_visible(node) for node in nodes))
        if _is_prose(text, _linked(nodes), title):
            yield text

    def visit(container, quiet: bool = False) -> Iterator[str]:
        run: list = []
        for node in container.children:
            if isinstance(node, NavigableString):
                run.append(node)
                continue
            if not isinstance(node, Tag):
                continue
            is_block = (node.name in _PARAGRAPHS or node.name in _CONTAINERS
                        or node.name in _BLOCKS or _skipped(node))
            if not is_block:
                run.append(node)
                continue
            if not quiet:
                yield from consider(run)
            run = []
            if _skipped(node) or node.name in _BLOCKS:
                continue
            if node.name in _PARAGRAPHS:
                yield from consider([node])
            elif not _passed_over(node, strict):
                yield from visit(node, quiet or _quiet(node))
        if not quiet:
            yield from consider(run)

    return visit(soup)


def cut(text: str, limit: int = LIMIT) -> str:
    """`text` in at most `limit` columns, cut between words (or CJK characters) with `…`.

    A sentence that ends late enough is a better place to stop than mid-clause, and then
    needs no ellipsis.
    """
    if display_width(text) <= limit:
        return text
    pieces = _PIECES.findall(text)
    kept, width = [], 0
    for piece in pieces:
        piece_width = display_width(piece)
        if width + piece_width > limit - display_width(ELLIPSIS):
            break
        kept.append(piece)
        width += piece_width
    head = "".join(kept)
    if not head.strip():  # one word longer than the limit: cut inside it
        head = ""
        for char in text:
            if display_width(head + char) > limit - 1:
                break
            head += char
    ends = [m.end() for m in _SENTENCE_END.finditer(head)]
    if ends and display_width(head[: ends[-1]]) >= limit * 0.6:
        return head[: ends[-1]].rstrip()
    return head.rstrip().rstrip(_TRAILING).rstrip() + ELLIPSIS


def derive(fragment: str, title: str = "", limit: int = LIMIT) -> str:
    """The first prose of the issue, joined by the next paragraphs while it is short."""
    soup = htmltree.parse(fragment, read_only=True)
    found = paragraphs(soup, title, strict=True)
    first = next(found, None)
    if first is None:  # no plain paragraph: lists and quotes will do
        found = paragraphs(soup, title, strict=False)
    else:
        found = itertools.chain([first], found)
    text = ""
    for paragraph in found:
        cjk_end = _CJK.match(text[-1:]) and (_CJK.match(paragraph[:1]) or text[-1] in "。！？")
        glue = "" if cjk_end else " "
        text = f"{text}{glue}{paragraph}".strip()
        if display_width(text) >= MINIMUM:
            break
    return cut(text, limit) if text else ""
