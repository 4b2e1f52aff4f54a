"""Make a fragment's images, links and in-page anchors behave in every mail client.

Images get absolute URLs, an `alt`, and a `width` from their attribute or style, else their
real size, never wider than the content column or than the image itself; of a light/dark
pair written for the web, the light one is kept. Wide content never widens the email:
tables scroll inside a box of their own (their words are never split), raw `<pre>` blocks
wrap like code blocks, and fixed widths wider than the column become 100%.
Links become absolute. Every `href="#…"` ends up pointing at an `<a id name>` (Gmail
follows only `name`), matched to the author's table of contents even when case or
punctuation differ; a link that resolves to nothing is unlinked with a warning.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from urllib.parse import unquote

from . import htmltree
from .handover import Fragment
from .images import ImageSizes
from .tokens import Tokens, packaged_tokens
from .urls import absolute

_LAYOUT_CSS = re.compile(
    r"(?:^|;)\s*(?:position|display\s*:\s*(?:inline-)?(?:flex|grid)|flex[\w-]*|grid[\w-]*|gap|"
    r"justify-[\w-]+|align-(?:items|content|self))\s*(?::[^;]*)?(?=;|$)",
    re.I,
)


class Tidied(Fragment):
    """The fragment made email-safe, with its image count and warnings (its tree handed
    on: handover)."""

    def __init__(self, html: str | None = None, images: int = 0,
                 warnings: list[str] | None = None):
        super().__init__(html)
        self.images = images
        self.warnings: list[str] = warnings if warnings is not None else []

    def __repr__(self) -> str:
        return f"Tidied(images={self.images!r}, warnings={self.warnings!r})"


def slugify(text: str) -> str:
    """GitHub-style heading id: lower case, punctuation dropped, spaces to hyphens.

    `更新: 2024 年 12 月的新模型` -> `更新-2024-年-12-月的新模型`.
    """
    text = text.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def _anchor_key(text: str) -> str:
    """A forgiving form of an anchor for matching a TOC link to a heading.

    Authors' hand-written links differ from heading ids in case, punctuation, and spaces
    between Chinese and Latin words (`#让moe起飞` for `## 让 MoE 起飞`): all are dropped.
    """
    return re.sub(r"[-_\s]+", "", slugify(unquote(text)))


def _width(value: str | None, content_width: int) -> int | None:
    """Pixels of a width attribute or property; a percentage is of the content width."""
    if not value:
        return None
    value = value.strip().lower()
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*(px)?", value)
    if match:
        return int(float(match.group(1)))
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*%", value)
    if match:
        return round(content_width * min(float(match.group(1)), 100) / 100)
    return None


def _strip_layout_css(style: str) -> str:
    cleaned = _LAYOUT_CSS.sub("", style)
    return ";".join(part.strip() for part in cleaned.split(";") if part.strip())


# A table that scrolls on its own: `width:0` keeps it out of the column's width, and
# `min-width:100%` gives it the column back (Outlook on Windows ignores both on a div).
SCROLL_BOX = "width:0;min-width:100%;overflow-x:auto;margin:0 0 16px"
_DARK_ONLY = re.compile(r"^dark:(?:block|inline|inline-block|flex|grid|table|contents)$")


def _dark_only(img) -> bool:
    """An image written to show only in a web page's dark theme (Tailwind or GitHub style)."""
    classes = img.get("class") or []
    src = img.get("src") or ""
    return ("hidden" in classes and any(_DARK_ONLY.match(c) for c in classes)) or \
        src.endswith("#gh-dark-mode-only")


def _style_parts(style: str) -> list[tuple[str, str]]:
    parts = []
    for part in style.split(";"):
        name, colon, value = part.partition(":")
        if colon and name.strip():
            parts.append((name.strip().lower(), value.strip()))
    return parts


def _size_image(img, src: str, sizes: ImageSizes | None, content_width: int) -> None:
    """Width (and height) attributes from the author's width, else the real size."""
    parts = _style_parts(img.get("style") or "")
    styled = next((v for k, v in parts if k == "width"), None)
    declared = _width(styled, content_width) if styled else None
    declared = declared or _width(img.get("width"), content_width)
    real = sizes.size(src) if sizes is not None and not src.startswith("data:") else None
    width = declared or (real[0] if real else None)
    if width is not None and real and real[0] > 0:
        width = min(width, real[0])
    keep = [(k, v) for k, v in parts
            if k not in ("width", "height", "max-width", "min-width")]
    style = ";".join(f"{k}:{v}" for k, v in keep)
    extra = "max-width:100%;height:auto;border:0"
    img["style"] = f"{style};{extra}" if style else extra
    img.attrs.pop("height", None)
    if width is None:
        img.attrs.pop("width", None)
        if sizes is not None:
            sizes.unknown.append(src)
        return
    width = max(1, min(width, content_width))
    img["width"] = str(width)
    # A percentage width keeps an image out of a table's minimum width even while it is
    # blocked or broken (Outlook blocks images by default); max-width stops at its size.
    sized = f"width:100%;max-width:{width}px;height:auto;border:0"
    img["style"] = f"{style};{sized}" if style else sized
    if real and real[0] > 0:
        img["height"] = str(max(1, round(width * real[1] / real[0])))


def _images(soup, base_url: str, where: Callable[[str, int], str], out: Tidied,
            sizes: ImageSizes | None, content_width: int) -> None:
    seen: dict[str, int] = {}
    found = []
    for img in htmltree.tags(soup, {"img"}):
        src = (img.get("src") or "").strip()
        needle = src or (img.get("alt") or "").strip() or "<img"
        nth = seen.get(needle, 0)
        seen[needle] = nth + 1
        if src and _dark_only(img):
            img.decompose()
            continue
        found.append((img, src, needle, nth))
    if sizes is not None:
        sizes.prefetch(absolute(src, base_url) for _img, src, _n, _i in found
                       if src and not src.startswith("data:"))
    for img, src, needle, nth in found:
        if not src:
            out.warnings.append(f"{where(needle, nth)}: image has no src; left out")
            img.decompose()
            continue
        if not src.startswith("data:"):
            img["src"] = absolute(src, base_url)
        alt = img.get("alt")
        if alt is None or not alt.strip():
            out.warnings.append(f"{where(src, nth)}: image has no alt text: {src}")
        img["alt"] = " ".join((alt or "").split())
        img["style"] = _strip_layout_css(img.get("style") or "")
        _size_image(img, img["src"], sizes, content_width)
        out.images += 1


_BARE_HOST = re.compile(
    r"(?:www\.|[a-z0-9-]+(?:\.[a-z0-9-]+)*\.(?:com|org|net|io|ai|co|dev|edu|gov|app|me|info)"
    r"(?=[/:?#]|$))", re.I)
_BROKEN_SCHEME = re.compile(r"(?:https?:/(?!/)|https?//|htt?ps?:///|ttps?://)", re.I)


def _malformed(href: str) -> tuple[str, str] | None:
    """(what is wrong, the URL the author obviously meant or '') for a malformed href."""
    if href[:1] in "([<\"'":
        inner = href.strip("()[]<>\"' ")
        meant = inner if re.match(r"(https?|mailto):", inner) else ""
        return "wrapped in brackets or quotes", meant
    if _BROKEN_SCHEME.match(href):
        return "broken scheme", ""
    if re.search(r"\s", href):
        return "contains spaces", ""
    if _BARE_HOST.match(href):
        return "no https://", "https://" + href
    return None


def _links(soup, base_url: str, where: Callable[[str, int], str], out: Tidied) -> None:
    """Make links absolute; a malformed link is reported, never turned into a made-up URL."""
    seen: dict[str, int] = {}
    for link in [a for a in htmltree.tags(soup, {"a"}) if a.get("href") is not None]:
        href = link["href"].strip()
        if href.startswith("#"):
            continue
        if not href or href.lower().startswith(("javascript:", "vbscript:", "data:")):
            del link["href"]
            continue
        if href.lower().startswith(("mailto:", "tel:")):
            continue
        nth = seen.get(href, 0)
        seen[href] = nth + 1
        problem = _malformed(href)
        if problem:
            what, meant = problem
            if meant:
                out.warnings.append(f"{where(href, nth)}: malformed link {href!r} ({what}); "
                                    f"linked to {meant}")
                link["href"] = meant
            else:
                out.warnings.append(f"{where(href, nth)}: malformed link {href!r} ({what}); "
                                    "left as text")
                link.unwrap()
            continue
        link["href"] = absolute(href, base_url)


_HEADINGS = {"h1", "h2", "h3", "h4", "h5", "h6"}
_SAME_PAGE = re.compile(r"^\s*#")


def _anchors(soup, where: Callable[[str, int], str], out: Tidied) -> None:
    used = {el["id"] for el in htmltree.tags(soup) if el.get("id") is not None}
    for heading in htmltree.tags(soup, _HEADINGS):
        if heading.get("id"):
            continue
        base = slugify(heading.get_text(" ", strip=True)) or "section"
        slug, n = base, 0
        while slug in used:
            n += 1
            slug = f"{base}-{n}"
        heading["id"] = slug
        used.add(slug)

    elements = htmltree.tags(soup)
    targets = {el["id"]: el for el in elements if el.get("id") is not None}
    for el in [a for a in elements if a.name == "a" and a.get("name") is not None]:
        targets.setdefault(el["name"], el)
    loose = {}
    for key in targets:
        loose.setdefault(key.lower(), key)
        loose.setdefault(_anchor_key(key), key)

    seen: dict[str, int] = {}
    for link in [a for a in elements
                 if a.name == "a" and _SAME_PAGE.search(a.get("href") or "\0")]:
        wanted = unquote(link["href"].strip()[1:])
        nth = seen.get(wanted, 0)
        seen[wanted] = nth + 1
        name = (
            wanted if wanted in targets
            else loose.get(wanted.lower()) or loose.get(_anchor_key(wanted))
        )
        if name is None:
            out.warnings.append(
                f"{where('#' + wanted, nth)}: link to #{wanted} matches no heading; unlinked"
            )
            link.unwrap()
            continue
        link["href"] = f"#{name}"
        target = targets[name]
        if target.name == "a":
            target["id"] = target["name"] = name
        elif not (target.contents and getattr(target.contents[0], "name", None) == "a"
                  and target.contents[0].get("name") == name):
            del target["id"]
            target.insert(0, soup.new_tag("a", attrs={"id": name, "name": name}))


def _fit_wide(soup, look: Tokens) -> None:
    """Nothing but a table's own scroll box may be wider than the column."""
    from .markdown import code_block_style

    content_width = look.content_width
    for pre in htmltree.tags(soup, {"pre"}):
        if "background-color" not in (pre.get("style") or ""):
            pre["style"] = code_block_style(look)
    for element in htmltree.tags(soup):
        if element.name == "img":
            continue
        width = _width(element.get("width"), content_width)
        if width and width > content_width:
            element["width"] = "100%"
        if element.get("style"):
            parts = []
            for name, value in _style_parts(element["style"]):
                px = _width(value, content_width) if name in ("width", "min-width") else None
                if px is not None and px > content_width and not value.strip().endswith("%"):
                    value = "100%" if name == "width" else "0"
                parts.append(f"{name}:{value}")
            element["style"] = ";".join(parts)
    for table in htmltree.tags(soup, {"table"}):
        classes = table.get("class") or []
        if "card" in classes:
            continue
        if "md-table" not in classes:
            table["class"] = [*classes, "md-table"]
        if table.find_parent("table") is None and not (
                table.parent is not None and "table-scroll" in (table.parent.get("class") or [])):
            box = soup.new_tag("div", attrs={"class": "table-scroll", "style": SCROLL_BOX})
            table.wrap(box)


# What an attribute's name may be in an email: a tag left unclosed in the source (`<div <p>`)
# makes names like `<p` that MJML cannot parse, and the build would fail on them.
_ATTRIBUTE_NAME = re.compile(r"[A-Za-z_:][-A-Za-z0-9_:.]*")


def _drop_broken_attributes(element, where: Callable[[str, int], str], out: Tidied) -> None:
    for name in [n for n in element.attrs if not _ATTRIBUTE_NAME.fullmatch(n)]:
        del element.attrs[name]
        out.warnings.append(f"{where(name, 0)}: dropped `{name}` from a <{element.name}> "
                            "tag; is a tag before it left unclosed?")


def tidy(fragment: str | Fragment, base_url: str, where: Callable[[str, int], str],
         sizes: ImageSizes | None = None, look: Tokens | None = None) -> Tidied:
    """Fix images, links, anchors and wide content in an HTML fragment for email; `look`
    gives the content width (publish's own tokens by default). The fragment is text, or
    the embeds pass's result, whose tree is taken as it is instead of written and parsed."""
    look = look or packaged_tokens()
    soup = fragment.take_tree() if isinstance(fragment, Fragment) else htmltree.parse(fragment)
    out = Tidied()
    _images(soup, base_url, where, out, sizes, look.content_width)
    _links(soup, base_url, where, out)
    _anchors(soup, where, out)
    for element in htmltree.tags(soup):
        _drop_broken_attributes(element, where, out)
        if element.get("style") is not None and element.name != "img":
            element["style"] = _strip_layout_css(element["style"])
    _fit_wide(soup, look)
    out.keep_tree(soup)  # written as text only when asked for (Tidied.html)
    return out
