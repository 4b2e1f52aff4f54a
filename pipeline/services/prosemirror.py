"""Convert the email-safe HTML fragment into Substack's ProseMirror document.

Node shapes follow what public Substack clients send (see the Substack reference notes).
What Substack cannot show — tables and math — is kept visibly as a code block and listed
as a warning, never dropped silently.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from ..embeds import youtube_id

BLOCK_TAGS = {
    "p", "div", "section", "article", "figure", "blockquote", "pre", "table", "ul", "ol",
    "h1", "h2", "h3", "h4", "h5", "h6", "hr", "center", "header", "footer", "aside", "dl",
}
MARKS = {
    "strong": "strong", "b": "strong", "em": "em", "i": "em", "code": "code", "kbd": "code",
    "s": "strikethrough", "del": "strikethrough", "strike": "strikethrough",
    "sup": "superscript", "sub": "subscript",
}


@dataclass(frozen=True)
class Image:
    """An image as the service holds it after upload."""

    url: str
    width: int | None = None
    height: int | None = None
    bytes: int | None = None
    content_type: str | None = None


@dataclass
class Converted:
    doc: dict
    warnings: list[str] = field(default_factory=list)


def _text(text: str, marks: list[dict]) -> dict:
    node: dict = {"type": "text", "text": text}
    if marks:
        node["marks"] = [dict(m) for m in marks]
    return node


def _merge(nodes: list[dict]) -> list[dict]:
    """Join neighbouring text with the same marks; trim the ends; drop what is empty."""
    merged: list[dict] = []
    for node in nodes:
        if (node["type"] == "text" and merged and merged[-1]["type"] == "text"
                and merged[-1].get("marks") == node.get("marks")):
            merged[-1]["text"] += node["text"]
        else:
            merged.append(node)
    for node in merged:
        if node["type"] == "text":
            node["text"] = re.sub(r"[ \t\r\n\f]+", " ", node["text"])
    while merged and merged[0]["type"] == "text" and not merged[0]["text"].strip():
        merged.pop(0)
    while merged and merged[-1]["type"] == "text" and not merged[-1]["text"].strip():
        merged.pop()
    if merged and merged[0]["type"] == "text":
        merged[0]["text"] = merged[0]["text"].lstrip()
    if merged and merged[-1]["type"] == "text":
        merged[-1]["text"] = merged[-1]["text"].rstrip()
    return [n for n in merged if n["type"] != "text" or n["text"]]


class _Converter:
    def __init__(self, upload: Callable[[str], Image], subscribe_text: str, lang: str,
                 where: str):
        self.upload = upload
        self.subscribe_text = subscribe_text
        self.lang = lang
        self.where = where
        self.warnings: list[str] = []
        self.footnotes: list[dict] = []
        self.code_blocks = 0

    # inline content -------------------------------------------------------------
    def inline(self, nodes, marks: list[dict] | None = None) -> list[dict]:
        from bs4 import NavigableString, Tag
        from bs4.element import Comment

        marks = marks or []
        out: list[dict] = []
        for node in nodes:
            if isinstance(node, Comment):
                continue
            if isinstance(node, NavigableString):
                if str(node):
                    out.append(_text(str(node), marks))
                continue
            if not isinstance(node, Tag):
                continue
            name = node.name
            if name == "br":
                out.append({"type": "hard_break"})
            elif name == "img":
                alt = (node.get("alt") or "").strip()
                if alt:
                    out.append(_text(alt, marks))
            elif name == "sup" and "footnote-ref" in (node.get("class") or []):
                number = re.sub(r"\D", "", node.get_text())
                if number:
                    out.append({"type": "footnoteAnchor", "attrs": {"number": int(number)}})
            elif name == "a":
                href = (node.get("href") or "").strip()
                if "footnote-backref" in (node.get("class") or []):
                    continue
                if href and not href.startswith("#"):
                    link = {"type": "link", "attrs": {"href": href}}
                    out.extend(self.inline(node.children, [*marks, link]))
                else:
                    out.extend(self.inline(node.children, marks))
            elif name in MARKS:
                mark = {"type": MARKS[name]}
                inner = marks if mark in marks else [*marks, mark]
                out.extend(self.inline(node.children, inner))
            else:
                out.extend(self.inline(node.children, marks))
        return out

    def paragraph(self, nodes) -> list[dict]:
        content = _merge(self.inline(nodes))
        return [{"type": "paragraph", "content": content}] if content else []

    # blocks -------------------------------------------------------------------
    def blocks(self, container) -> list[dict]:
        from bs4 import Tag

        out: list[dict] = []
        run: list = []
        for child in list(container.children):
            is_block = isinstance(child, Tag) and (
                child.name in BLOCK_TAGS or (child.name == "img" and not run_has_text(run))
            )
            if is_block:
                out.extend(self.paragraph(run))
                run = []
                out.extend(self.block(child))
            else:
                run.append(child)
        out.extend(self.paragraph(run))
        return out

    def block(self, el) -> list[dict]:
        name = el.name
        classes = el.get("class") or []
        if name == "table" and "card" in classes:
            return self.card(el)
        if name == "section" and "footnotes" in classes:
            self.collect_footnotes(el)
            return []
        if name == "hr":
            return [] if "footnotes-sep" in classes else [{"type": "horizontal_rule"}]
        if re.fullmatch(r"h[1-6]", name):
            content = _merge(self.inline(el.children))
            if not content:
                return []
            return [{"type": "heading", "attrs": {"level": int(name[1])}, "content": content}]
        if name == "img":
            return self.image(el, caption="", href=None)
        if name == "p" and self.only_image(el) is not None:
            img, href = self.only_image(el)
            return self.image(img, caption="", href=href)
        if name == "figure":
            img = el.find("img")
            caption = el.find("figcaption")
            if img is not None:
                text = " ".join(caption.get_text(" ").split()) if caption else ""
                link = img.find_parent("a")
                return self.image(img, caption=text, href=link.get("href") if link else None)
            return self.blocks(el)
        if name in {"ul", "ol"}:
            return self.list_block(el)
        if name == "blockquote":
            content = self.blocks(el)
            return [{"type": "blockquote", "content": content}] if content else []
        if name == "pre":
            code = el.find("code")
            language = ""
            for cls in (code.get("class") or []) if code else []:
                if cls.startswith("language-"):
                    language = cls.removeprefix("language-")
            return self.code_block(el.get_text().rstrip("\n"), language)
        if name == "div" and "math" in classes:
            self.warnings.append(
                f"{self.where}: Substack has no math block; math is sent as its TeX source")
            return self.code_block(el.get_text().strip(), "latex")
        if name == "table":
            self.warnings.append(
                f"{self.where}: Substack has no tables; a table is sent as preformatted text")
            rows = []
            for tr in el.find_all("tr"):
                cells = [" ".join(c.get_text(" ").split()) for c in tr.find_all(["td", "th"])]
                rows.append(" | ".join(cells))
            return self.code_block("\n".join(rows), "")
        return self.blocks(el)

    def code_block(self, code: str, language: str) -> list[dict]:
        # The same issue must give the same document, so ids derive from content and place.
        self.code_blocks += 1
        node_id = uuid.uuid5(uuid.NAMESPACE_URL, f"code:{self.code_blocks}:{code}")
        node: dict = {
            "type": "highlighted_code_block",
            "attrs": {"language": language or None, "nodeId": str(node_id)},
        }
        if code:
            node["content"] = [{"type": "text", "text": code}]
        return [node]

    def list_block(self, el) -> list[dict]:
        items = []
        for li in el.find_all("li", recursive=False):
            content = self.blocks(li)
            if content:
                items.append({"type": "list_item", "content": content})
        if not items:
            return []
        if el.name == "ol":
            start = int(el.get("start") or 1) if str(el.get("start") or "1").isdigit() else 1
            return [{"type": "ordered_list", "attrs": {"start": start}, "content": items}]
        return [{"type": "bullet_list", "content": items}]

    @staticmethod
    def only_image(p):
        """(img, link href) when a paragraph holds one image and nothing else."""
        from bs4 import NavigableString

        meaningful = [c for c in p.children
                      if not (isinstance(c, NavigableString) and not str(c).strip())]
        if len(meaningful) != 1:
            return None
        child = meaningful[0]
        if getattr(child, "name", None) == "img":
            return child, None
        if getattr(child, "name", None) == "a" and child.find("img") is not None \
                and not child.get_text(strip=True):
            return child.find("img"), child.get("href")
        return None

    def image(self, img, caption: str, href: str | None) -> list[dict]:
        src = (img.get("src") or "").strip()
        if not src:
            return []
        uploaded = self.upload(src)
        attrs = {
            "src": uploaded.url, "srcNoWatermark": None, "fullscreen": False,
            "imageSize": "normal", "height": uploaded.height, "width": uploaded.width,
            "resizeWidth": min(uploaded.width or 728, 728), "bytes": uploaded.bytes,
            "alt": (img.get("alt") or "").strip() or None, "title": None,
            "type": uploaded.content_type, "href": href, "belowTheFold": False,
            "topImage": False, "internalRedirect": None, "isProcessing": False,
            "align": None, "offset": False,
        }
        content: list[dict] = [{"type": "image2", "attrs": attrs}]
        if caption:
            content.append({"type": "caption", "content": [_text(caption, [])]})
        return [{"type": "captionedImage", "content": content}]

    def card(self, table) -> list[dict]:
        links = table.find_all("a", href=True)
        url = links[0]["href"] if links else ""
        if "card-subscribe" in (table.get("class") or []):
            text = links[0].get_text(" ", strip=True) if links else self.subscribe_text
            return [{
                "type": "subscribeWidget",
                "attrs": {"url": "%%checkout_url%%", "text": text, "language": self.lang},
                "content": [{"type": "ctaCaption", "content": [_text(text, [])]}],
            }]
        video_id = youtube_id(url)
        if video_id:
            return [{"type": "youtube2", "attrs": {"videoId": video_id}}]
        action = links[-1].get_text(" ", strip=True) if links else ""
        caption_el = table.find(class_="card-caption")
        caption = caption_el.get_text(" ", strip=True) if caption_el else ""
        label = f"▶ {action}" + (f": {caption}" if caption else "")
        img = table.find("img")
        if img is not None:
            return self.image(img, caption=label, href=url)
        link = {"type": "link", "attrs": {"href": url}}
        return [{"type": "paragraph", "content": [_text(label, [link])]}]

    def collect_footnotes(self, section) -> None:
        for number, li in enumerate(section.find_all("li", recursive=True), start=1):
            match = re.fullmatch(r"fn(\d+)", li.get("id") or "")
            content = self.blocks(li)
            if content:
                self.footnotes.append({
                    "type": "footnote",
                    "attrs": {"number": int(match.group(1)) if match else number},
                    "content": content,
                })


def run_has_text(run) -> bool:
    return any(str(getattr(node, "text", node)).strip() for node in run)


def to_document(fragment: str, upload: Callable[[str], Image], *, subscribe_text: str = "Subscribe",
                lang: str = "en", where: str = "") -> Converted:
    """The ProseMirror `doc` for an email-safe HTML fragment; images go through `upload`."""
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(fragment, "html.parser")
    converter = _Converter(upload, subscribe_text, lang, where)
    content = converter.blocks(soup) + converter.footnotes
    warnings = list(dict.fromkeys(converter.warnings))
    return Converted({"type": "doc", "content": content}, warnings)
