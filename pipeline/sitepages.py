"""The site's own pages: the archive (all issues, and one page per language), the subscribe
page, and the Atom feed with the full content of every issue (made with feedgen)."""

from __future__ import annotations

import datetime as dt
import re
from typing import TYPE_CHECKING

from . import webpages
from .errors import InputError
from .settings import Settings

if TYPE_CHECKING:
    from .site import Page

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ufffe\uffff]")


def _site_lang(settings: Settings) -> str:
    try:
        webpages.language_name(settings, settings.language)
        return settings.language
    except InputError:
        return "en"


def _index(settings: Settings, pages: list[Page], depth: str, languages: list,
           title_lang: str) -> bytes:
    s = webpages.strings(settings, title_lang)
    items = [{"href": f"{depth}issues/{p.slug}/", "title": p.title, "lang": p.lang,
              "date": p.date, "summary": p.summary, "draft": p.draft,
              "language_name": _language_label(settings, p.lang)}
             for p in pages]
    html = webpages.render(settings, "index.html.j2", title_lang, s,
                           title=s["archive_title"].format(name=settings.name),
                           home=depth, subscribe_page=f"{depth}subscribe/",
                           feed=f"{depth}feed.xml", issues=items,
                           languages=[(c, label, f"{depth}lang/{c}/", n)
                                      for c, label, n in languages])
    return html.encode("utf-8")


def _language_label(settings: Settings, lang: str) -> str:
    try:
        return webpages.strings(settings, lang)["language_name"]
    except InputError:
        return lang


def archive_pages(settings: Settings, pages: list[Page]) -> dict[str, bytes]:
    """index.html, lang/<code>/index.html (when there are several) and subscribe/."""
    lang = _site_lang(settings)
    counts: dict[str, int] = {}
    for page in pages:
        counts[page.lang] = counts.get(page.lang, 0) + 1
    languages = [(code, _language_label(settings, code), n)
                 for code, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))]
    files = {"index.html": _index(settings, pages, "", languages, lang)}
    if len(languages) > 1:
        for code, _label, _n in languages:
            if not re.fullmatch(r"[A-Za-z0-9-]{1,35}", code):
                continue
            try:
                webpages.language_name(settings, code)
                page_lang = code
            except InputError:
                page_lang = lang
            files[f"lang/{code}/index.html"] = _index(
                settings, [p for p in pages if p.lang == code], "../../", languages, page_lang)
    s = webpages.strings(settings, lang)
    files["subscribe/index.html"] = webpages.render(
        settings, "subscribe.html.j2", lang, s,
        title=s["subscribe_title"].format(name=settings.name), home="../",
        subscribe_page="./", feed="../feed.xml", action="../subscribe").encode("utf-8")
    return files


def _clean(text: str) -> str:
    return _CONTROL.sub("", text)


def feed(settings: Settings, pages: list[Page]) -> bytes:
    """An Atom feed of the published issues, newest first, each with its full content."""
    from feedgen.feed import FeedGenerator

    base = settings.base_url
    fg = FeedGenerator()
    fg.id(base)
    fg.title(_clean(settings.name) or "Newsletter")
    fg.author({"name": _clean(settings.name) or "Newsletter"})
    fg.link(href=base, rel="alternate")
    fg.link(href=f"{base}feed.xml", rel="self")
    fg.language(_site_lang(settings))
    newest = dt.datetime.fromtimestamp(0, dt.UTC)
    for page in reversed(pages):  # feedgen puts the last added first
        when = dt.datetime.fromtimestamp(page.sort_key or 0, dt.UTC)
        newest = max(newest, when)
        entry = fg.add_entry()
        url = f"{base}issues/{page.slug}/"
        entry.id(url)
        entry.title(_clean(page.title) or page.slug)
        entry.link(href=url, rel="alternate")
        entry.published(when)
        entry.updated(when)
        if page.summary:
            entry.summary(_clean(page.summary))
        entry.content(_clean(page.content), type="html")
    fg.updated(newest)
    return fg.atom_str(pretty=True)
