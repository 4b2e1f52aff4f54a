"""Swap what email cannot play (video, audio, iframes, scripts, custom elements) for link cards.

Each playable embed becomes a card: a thumbnail with a play mark linked to the media, or a
neat text card when no thumbnail is known. Thumbnails are taken, in order, from the
element's `poster`, a known provider (YouTube), the front matter's `media_thumbnails`
mapping (media URL -> image) or `embed_thumbnail`, else none.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlsplit

from . import htmltree
from .handover import Fragment
from .tokens import Tokens, packaged_tokens
from .urls import absolute, host

# Removed with their content: nothing in them is meant for a reader of an email.
DROP_TAGS = {
    "script", "noscript", "style", "link", "meta", "title", "base", "template",
    "svg", "canvas", "form", "input", "button", "select", "textarea", "dialog", "head",
}
# Removed, their content kept.
UNWRAP_TAGS = {"html", "body", "picture", "details", "label", "fieldset", "main", "article"}
PLAYABLE_TAGS = {"video", "audio", "iframe", "object", "embed", "gradio-app"}
# Never in an email's body; <style> and <link> are allowed in the head only.
FORBIDDEN_TAGS = PLAYABLE_TAGS | DROP_TAGS - {"head", "title", "meta", "style", "link", "base"}
_YOUTUBE_ID = re.compile(r"^[\w-]{6,}$")
_IMAGE_EXT = re.compile(r"\.(png|jpe?g|gif|webp|avif)(\?|#|$)", re.I)


@dataclass(frozen=True)
class Card:
    """An embed as the email shows it: a linked card of a kind, with a caption."""

    kind: str  # video | audio | youtube | demo | page | subscribe
    url: str
    caption: str
    thumbnail: str = ""


class Swapped(Fragment):
    """The fragment with its embeds swapped for cards (its tree handed on: handover)."""

    def __init__(self, html: str | None = None, cards: list[Card] | None = None,
                 warnings: list[str] | None = None):
        super().__init__(html)
        self.cards: list[Card] = cards if cards is not None else []
        self.warnings: list[str] = warnings if warnings is not None else []

    def __repr__(self) -> str:
        return f"Swapped(cards={self.cards!r}, warnings={self.warnings!r})"


@dataclass(frozen=True)
class EmbedContext:
    """What the swap needs to know about the issue: where it lives, its source, its settings."""

    base_url: str
    strings: dict[str, str]
    where: Callable[[str, int], str]  # (text, nth occurrence) -> "path:line"
    source: str = ""  # the issue file, for findings without a line
    media_thumbnails: dict[str, str] = field(default_factory=dict)
    embed_thumbnail: str = ""
    look: Tokens | None = None  # the newsletter's tokens and partials; publish's by default


def youtube_id(url: str) -> str:
    parts = urlsplit(url)
    hostname = (parts.hostname or "").lower().removeprefix("www.").removeprefix("m.")
    candidate = ""
    if hostname == "youtu.be":
        candidate = parts.path.strip("/").split("/")[0]
    elif hostname in {"youtube.com", "youtube-nocookie.com"}:
        segments = [s for s in parts.path.split("/") if s]
        if segments[:1] in (["embed"], ["shorts"], ["v"], ["live"]) and len(segments) > 1:
            candidate = segments[1]
        elif segments[:1] == ["watch"]:
            candidate = parse_qs(parts.query).get("v", [""])[0]
    return candidate if _YOUTUBE_ID.match(candidate or "") else ""


def _caption(element, figure) -> str:
    if figure is not None:
        caption = figure.find("figcaption")
        if caption is not None and caption.get_text(strip=True):
            return " ".join(caption.get_text(" ", strip=True).split())
    for attr in ("alt", "title", "aria-label"):
        value = (element.get(attr) or "").strip()
        if value:
            return " ".join(value.split())
    return ""


def _media_src(element) -> str:
    for attr in ("src", "data-src", "data"):
        if (element.get(attr) or "").strip():
            return element[attr].strip()
    source = element.find("source", src=True)
    return source["src"].strip() if source is not None and source["src"].strip() else ""


def _page_url(src: str) -> str:
    """The page to open for an embed URL: drop an `/embed` path segment where there is one."""
    parts = urlsplit(src)
    path = re.sub(r"/embed(?=/|$)", "", parts.path)
    return parts._replace(path=path or "/").geturl()


def space_page(url: str) -> str:
    """The Space's page for a legacy `hf.space/embed/OWNER/NAME/+` or a Space `…/embed` URL.

    Those addresses show a bare app, or nothing, outside an iframe; the page on
    huggingface.co works in every browser. Other URLs come back unchanged.
    """
    parts = urlsplit(url)
    hostname = (parts.hostname or "").lower().removeprefix("www.")
    segments = [s for s in parts.path.split("/") if s]
    if hostname == "hf.space":
        segments = [s for s in segments if s not in ("embed", "+")]
        if len(segments) >= 2:
            return f"https://huggingface.co/spaces/{segments[0]}/{segments[1]}"
    if hostname == "huggingface.co" and segments[:1] == ["spaces"] and len(segments) >= 3 \
            and (segments[3:4] in (["embed"], ["+"]) or "embed" in parse_qs(parts.query)):
        return f"https://huggingface.co/spaces/{segments[1]}/{segments[2]}"
    return url


def _describe(element, ctx: EmbedContext) -> tuple[str, str, str] | None:
    """(kind, url, thumbnail) for a playable element, or None when it points nowhere."""
    tag = element.name
    if tag == "gradio-app":
        space = (element.get("space") or "").strip()
        src = (element.get("src") or "").strip()
        if space:
            return "demo", f"https://huggingface.co/spaces/{space}", ""
        return ("demo", absolute(src, ctx.base_url), "") if src else None
    src = _media_src(element)
    if not src:
        return None
    url = absolute(src, ctx.base_url)
    poster = (element.get("poster") or "").strip()
    thumbnail = absolute(poster, ctx.base_url) if poster else ""
    if tag in {"video", "audio"}:
        return tag, url, thumbnail
    video_id = youtube_id(url)
    if video_id:
        return (
            "youtube",
            f"https://www.youtube.com/watch?v={video_id}",
            thumbnail or f"https://i.ytimg.com/vi/{video_id}/hqdefault.jpg",
        )
    parts = urlsplit(url)
    if host(url).endswith("substack.com") and parts.path.rstrip("/").endswith("/embed"):
        return "subscribe", f"{parts.scheme}://{parts.netloc}/subscribe", ""
    if host(url).endswith(".hf.space"):
        return "demo", url, thumbnail
    if space_page(url) != url:
        return "demo", space_page(url), thumbnail
    return "page", _page_url(url), thumbnail


# How the text part, Substack drafts and the layout rules find a card in the HTML.
_CARD_TABLE = re.compile(r"""<table\b[^>]*\bclass\s*=\s*["']?(?:[^"'>]*\s)?card[\s"'>]""", re.I)


def card_html(card: Card, strings: dict[str, str], look: Tokens | None = None) -> str:
    """The card's partial (email_templates/cards/): a table that renders the same in
    Outlook, Gmail and Apple Mail."""
    look = look or packaged_tokens()
    if card.kind == "subscribe":
        names = ["cards/subscribe.html.j2"]
        markup = look.partial(names, compact=True, kind=card.kind, url=card.url,
                              label=strings["subscribe_button"])
    else:
        action = strings[f"card_{card.kind}"]
        shape = "cards/media.html.j2" if card.thumbnail else "cards/text.html.j2"
        names = [f"cards/{card.kind}.html.j2", shape]
        markup = look.partial(
            names, compact=True, kind=card.kind, url=card.url, thumbnail=card.thumbnail,
            alt=f"{action}: {card.caption}".rstrip(": "), action=action,
            caption=card.caption, host=host(card.url))
    if not _CARD_TABLE.search(markup):
        from .errors import InputError

        raise InputError('a card must be a <table class="card"> (the text part and drafts '
                         "find cards by it)", look.partial_file(names))
    return markup


def _line_needle(element) -> str:
    for attr in ("src", "space", "data", "poster"):
        if element.get(attr):
            return element[attr]
    source = element.find("source", src=True)
    return source["src"] if source is not None else f"<{element.name}"


_CARD_TREES: dict[str, object] = {}  # a card's markup -> its parsed tree, never changed


def _replace_with_html(element, markup: str) -> None:
    """Put a copy of the parsed `markup` in `element`'s place. The same cards come back
    save after save in the preview, so each markup is parsed once; the tree kept is only
    ever copied (keyed by the whole markup, so an edited card is parsed anew)."""
    from .htmltree_parse import copy_children

    tree = _CARD_TREES.get(markup)
    if tree is None:
        from bs4 import BeautifulSoup

        tree = BeautifulSoup(markup, "html.parser")
        if len(_CARD_TREES) >= 256:
            _CARD_TREES.clear()
        _CARD_TREES[markup] = tree
    holder = element.__class__(name="card-copy")  # copies are made in it, then moved
    copy_children(tree, holder)
    copies = list(holder.contents)
    if copies:
        element.replace_with(*copies)
    else:
        element.extract()


MAX_DEPTH = 48


def flatten_deep(soup, max_depth: int = MAX_DEPTH) -> int:
    """Unwrap elements nested deeper than `max_depth`, keeping their text.

    Hand-written HTML or runs of `*` can nest thousands deep; mail clients give up long
    before, and so would every recursive walk after this one. Returns how many were unwrapped.
    """
    from bs4 import NavigableString, Tag

    depth = {id(soup): 0}
    at_limit = []  # elements at max_depth with elements inside them
    removed = 0
    for element in soup.descendants:
        if isinstance(element, Tag):
            level = depth[id(element.parent)] + 1
            depth[id(element)] = level
            if level > max_depth:
                removed += 1
            elif level == max_depth and element.find(True) is not None:
                at_limit.append(element)
    # Unwrapping one element at a time walks the whole chain below it each time (minutes
    # for 50,000 nested tags); replacing each subtree by its strings at once is linear.
    for element in at_limit:
        texts = [type(node)(str(node)) for node in element.descendants
                 if isinstance(node, NavigableString)]
        element.clear()
        for text in texts:
            element.append(text)
    return removed


def _gone(element) -> bool:
    """Whether `element` was decomposed (with an element around it).

    BeautifulSoup's own `decomposed` property asks `getattr(tag, "_decomposed")`, which on
    a live tag falls through to a search of its whole subtree for a `<_decomposed>` tag:
    asked of every element, minutes for a big table. The flag is in the element's dict.
    """
    return bool(vars(element).get("_decomposed", False))


def swap(fragment: str, ctx: EmbedContext) -> Swapped:
    """Replace every embed in an HTML fragment by an email-safe card; drop what cannot show."""
    soup = htmltree.parse(fragment)
    result = Swapped()
    nth: dict[str, int] = {}
    from bs4.element import CData, Comment, Declaration, Doctype, ProcessingInstruction

    # Authors' comments are notes to themselves; CDATA and declarations break MJML's parser.
    for node in [n for n in soup.descendants if isinstance(
            n, CData | Comment | Declaration | Doctype | ProcessingInstruction)]:
        node.extract()
    flattened = flatten_deep(soup)
    if flattened:
        result.warnings.append(f"{ctx.source}: HTML nested more than "
                               f"{MAX_DEPTH} levels deep; {flattened} inner element(s) "
                               "flattened")

    for element in htmltree.tags(soup, DROP_TAGS):
        if not _gone(element):
            element.decompose()
    for element in htmltree.tags(soup, UNWRAP_TAGS):
        element.unwrap()
    for summary in htmltree.tags(soup, {"summary"}):
        summary.name = "p"
        summary.wrap(soup.new_tag("strong"))

    for element in htmltree.tags(soup):
        if _gone(element) or element.parent is None:
            continue
        tag = element.name
        if tag not in PLAYABLE_TAGS and "-" not in tag:
            continue
        needle = _line_needle(element)
        count = nth.get(needle, 0)
        nth[needle] = count + 1
        where = ctx.where(needle, count)
        if tag not in PLAYABLE_TAGS:
            src = (element.get("src") or "").strip()
            if src and _IMAGE_EXT.search(src):
                image = soup.new_tag("img", src=src, alt=(element.get("alt") or "").strip())
                element.replace_with(image)
            else:
                element.unwrap()
            continue
        figure = element.find_parent("figure")
        described = _describe(element, ctx)
        if described is None:
            result.warnings.append(f"{where}: <{tag}> has no source; left out of the email")
            element.decompose()
            continue
        kind, url, thumbnail = described
        if urlsplit(url).scheme not in {"http", "https"}:
            from .errors import InputError

            shown = url if len(url) <= 60 else url[:57] + "…"
            raise InputError(f"<{tag}> source {shown!r} is not a web address; an email can "
                             "only link to media at an http(s) URL", where)
        thumbnail = (
            thumbnail
            or ctx.media_thumbnails.get(url)
            or ctx.media_thumbnails.get(_media_src(element))
            or ctx.embed_thumbnail
        )
        if thumbnail:
            thumbnail = absolute(thumbnail, ctx.base_url)
            if urlsplit(thumbnail).scheme not in {"http", "https"}:
                result.warnings.append(f"{where}: thumbnail {thumbnail[:60]!r} for <{tag}> is "
                                       "not a web address; a text card is shown instead")
                thumbnail = ""
        card = Card(kind, url, _caption(element, figure), thumbnail)
        result.cards.append(card)
        markup = card_html(card, ctx.strings, ctx.look)
        target = element
        if figure is not None and not figure.find_all(["img", *PLAYABLE_TAGS - {tag}]):
            target = figure
        _replace_with_html(target, markup)

    for element in htmltree.tags(soup, {"source", "track"}):  # left over from <picture>
        element.decompose()
    for element in htmltree.tags(soup):
        for attr in list(element.attrs):
            if attr in {"srcset", "sizes", "contenteditable"} or attr.lower().startswith("on"):
                del element[attr]
    result.keep_tree(soup)  # written as text only when asked for (Swapped.html)
    return result
