"""The email-safe fragment as Ghost's HTML source wants it: its own cards, hosted images.

Ghost turns HTML into its editor's cards when the markup is a card's (`kg-card`): a
YouTube link becomes an embed card, a web page or a demo a bookmark card, the subscribe
button a button card. Video and audio files become bookmark cards with their thumbnail:
Ghost's own video and audio cards play files uploaded to Ghost, which publish does not
upload. Every image is uploaded through `upload(src) -> url` (which caches by content).
"""

from __future__ import annotations

import html
from collections.abc import Callable

from ..embeds import youtube_id


def _bookmark(url: str, title: str, thumbnail: str) -> str:
    thumb = (f'<div class="kg-bookmark-thumbnail"><img src="{html.escape(thumbnail, True)}" '
             'alt=""></div>') if thumbnail else ""
    return (f'<figure class="kg-card kg-bookmark-card"><a class="kg-bookmark-container" '
            f'href="{html.escape(url, True)}"><div class="kg-bookmark-content">'
            f'<div class="kg-bookmark-title">{html.escape(title)}</div>'
            f'<div class="kg-bookmark-metadata"><span class="kg-bookmark-publisher">'
            f'{html.escape(url)}</span></div></div>{thumb}</a></figure>')


def _card(table) -> str:
    links = table.find_all("a", href=True)
    url = links[0]["href"] if links else ""
    text = links[-1].get_text(" ", strip=True) if links else ""
    if "card-subscribe" in (table.get("class") or []):
        return (f'<div class="kg-card kg-button-card kg-align-center"><a href="'
                f'{html.escape(url, True)}" class="kg-btn kg-btn-accent">{html.escape(text)}'
                "</a></div>")
    video_id = youtube_id(url)
    caption_el = table.find(class_="card-caption")
    caption = caption_el.get_text(" ", strip=True) if caption_el else ""
    if video_id:
        figcaption = f"<figcaption>{html.escape(caption)}</figcaption>" if caption else ""
        return ('<figure class="kg-card kg-embed-card"><iframe width="560" height="315" '
                f'src="https://www.youtube.com/embed/{html.escape(video_id, True)}" '
                'frameborder="0" allowfullscreen></iframe>' + figcaption + "</figure>")
    img = table.find("img")
    title = caption or text.lstrip("▶\ufe0e ").strip() or url
    return _bookmark(url, title, img["src"] if img is not None and img.get("src") else "")


def to_ghost_html(fragment: str, upload: Callable[[str], str]) -> str:
    """Ghost's HTML source for the fragment: cards as Ghost cards, images uploaded."""
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(fragment, "html.parser")
    for table in soup.find_all("table", class_="card"):
        table.replace_with(BeautifulSoup(_card(table), "html.parser"))
    for img in soup.find_all("img", src=True):
        img["src"] = upload(img["src"])
        img.attrs.pop("style", None)  # the email's inline layout; Ghost's theme styles it
    return str(soup)
