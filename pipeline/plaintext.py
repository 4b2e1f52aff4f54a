"""The plain-text part: every heading, paragraph and list item, links as `text (url)`.

Built from the same email-safe fragment as the HTML, so both parts say the same thing.
"""

from __future__ import annotations

import re
import unicodedata

from . import htmltree

BLOCK_TAGS = {
    "p", "div", "section", "article", "header", "footer", "aside", "nav", "figure",
    "figcaption", "blockquote", "pre", "table", "thead", "tbody", "tfoot", "tr", "ul", "ol",
    "li", "h1", "h2", "h3", "h4", "h5", "h6", "hr", "dl", "dt", "dd", "center", "address",
}
PLAY = "▶"


def display_width(text: str) -> int:
    """Columns `text` takes on screen: wide (CJK, most emoji) characters count two,
    combining marks and zero-width characters none."""
    width = 0
    for char in text:
        if unicodedata.combining(char) or unicodedata.category(char) in ("Mn", "Me", "Cf"):
            continue
        width += 2 if unicodedata.east_asian_width(char) in "WF" else 1
    return width


def underline(text: str, rule: str) -> str:
    """A heading for plain text: the text over a rule as wide as it looks on screen."""
    return f"{text}\n{rule * min(display_width(text), 78)}"


def _squash(text: str) -> str:
    return re.sub(r"[ \t\r\n\f\v]+", " ", text)


class _Writer:
    def __init__(self, strings: dict[str, str]):
        self.strings = strings

    def inline(self, node) -> str:
        element = htmltree.bs4_element()  # once per node: no import statement here
        NavigableString, Tag, Comment = element.NavigableString, element.Tag, element.Comment
        if isinstance(node, Comment):
            return ""
        if isinstance(node, NavigableString):
            return _squash(str(node))
        if not isinstance(node, Tag):
            return ""
        if node.name == "br":
            return "\n"
        if node.name == "img":
            alt = (node.get("alt") or "").strip()
            return f"[{alt}]" if alt else ""
        text = "".join(self.inline(child) for child in node.children)
        if node.name == "a" and "footnote-backref" in (node.get("class") or []):
            return ""
        if node.name == "a" and node.get("href"):
            href = node["href"]
            label = text.strip()
            if href.startswith("#") or not label:
                return text if label else (href if not href.startswith("#") else "")
            shown = href.removeprefix("mailto:")
            if label in {href, shown}:
                return shown
            return f"{text} ({shown})"
        if node.name in {"s", "del", "strike"} and text.strip():
            return f"~~{text}~~"
        return text

    def card(self, table) -> str:
        link = table.find("a", href=True)
        url = link["href"] if link else ""
        if "card-subscribe" in (table.get("class") or []):
            return f"{self.strings['subscribe_button']}: {url}"
        caption = table.find(class_="card-caption")
        label = caption.get_text(" ", strip=True) if caption else ""
        if not label:
            label = table.find_all("a", href=True)[-1].get_text(" ", strip=True)
        return f"{PLAY} {label.rstrip('.。:：')}: {url}"

    def blocks(self, node) -> list[str]:
        """Plain-text blocks for a container's children, inline runs joined into paragraphs."""
        Tag = htmltree.bs4_element().Tag
        out: list[str] = []
        run: list[str] = []

        def flush():
            text = "".join(run)
            lines = [line.strip() for line in text.split("\n")]
            text = "\n".join(line for line in lines).strip()
            if text:
                out.append(text)
            run.clear()

        for child in node.children:
            if isinstance(child, Tag) and (child.name in BLOCK_TAGS):
                flush()
                out.extend(self.block(child))
            else:
                run.append(self.inline(child))
        flush()
        return out

    def block(self, node) -> list[str]:
        name = node.name
        classes = node.get("class") or []
        if name == "table" and "card" in classes:
            return [self.card(node)]
        if name == "hr":
            return ["-" * 20]
        if re.fullmatch(r"h[1-6]", name):
            text = _squash(node.get_text(" ")).strip()
            if not text:
                return []
            return [underline(text, "=" if name in {"h1", "h2"} else "-")]
        if name == "div" and "math" in classes:
            return [node.get_text().strip()]
        if name == "pre":
            code = node.get_text().rstrip("\n")
            return ["\n".join("    " + line for line in code.split("\n"))]
        if name in {"ul", "ol"}:
            items = []
            number = int(node.get("start") or 1) if name == "ol" else 0
            for li in node.find_all("li", recursive=False):
                marker = f"{number}. " if name == "ol" else "- "
                number += 1
                body = "\n".join(self.blocks(li))
                pad = " " * len(marker)
                items.append(marker + body.replace("\n", "\n" + pad))
            return ["\n".join(items)] if items else []
        if name == "blockquote":
            inner = "\n\n".join(self.blocks(node))
            return ["\n".join("> " + line if line else ">" for line in inner.split("\n"))]
        if name == "table":
            rows = []
            for tr in node.find_all("tr"):
                cells = [
                    _squash(self.inline(cell)).strip() for cell in tr.find_all(["td", "th"])
                ]
                if any(cells):
                    rows.append(" | ".join(cells))
            return ["\n".join(rows)] if rows else []
        return self.blocks(node)


def from_html(fragment: str, strings: dict[str, str]) -> str:
    """Plain text for an email-safe HTML fragment."""
    soup = htmltree.parse(fragment, read_only=True)
    blocks = _Writer(strings).blocks(soup)
    return "\n\n".join(blocks).strip() + "\n"
