"""`publish site`: the newsletter on the web, as static files for any static host.

`site_dir` (default `site/`) gets, for every issue that was sent or published:
`issues/<slug>/index.html` (the email itself as a web page, with no reader's token or
unsubscribe link, a bar linking back to the archive, and the issue's `lang`), `index.html`
(newest first, with a page per language under `lang/<code>/` when there are several),
`feed.xml` (Atom, the full content of each issue), `subscribe/index.html`, and the files of
the newsletter's `assets/` the issues use. `web_url` defaults to the issue's page here.

A rebuild renders only the issues whose file, settings or templates changed (the manifest
`.publish-site.json` remembers each page's inputs) and writes only files whose bytes differ.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlsplit

from . import draft as draft_mod
from . import sitewrite, state, templates, webpages
from .errors import InputError, PublishError
from .settings import Settings

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


@dataclass
class Page:
    """One issue's page, as remembered in the manifest between builds."""

    slug: str
    title: str
    lang: str
    date: str  # ISO date: the issue's, else the day it was first sent
    sort_key: float
    summary: str
    content: str  # the email's body for the feed, absolute links
    assets: list[str]
    inputs: str  # hash of what the page was made from
    draft: bool = False


@dataclass
class SiteReport:
    folder: Path
    pages: list[Page] = field(default_factory=list)
    written: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    rendered: int = 0
    warnings: list[str] = field(default_factory=list)


def published(settings: Settings) -> dict[str, float]:
    """Issue → when it was first sent to someone (or published on a service)."""
    if not (settings.state_path / state.DB_NAME).is_file():
        return {}
    db = state.connect(settings.state_path, readonly=True)
    try:
        return {row[0]: row[1] for row in db.execute(
            "SELECT s.issue, min(s.started_at) FROM sends s WHERE (s.status = 'done' AND "
            "s.html = '') OR EXISTS (SELECT 1 FROM recipients r WHERE r.send_id = s.id AND "
            "r.state IN ('sent', 'in_doubt')) GROUP BY s.issue")}
    finally:
        db.close()


def _inputs_hash(path: Path, settings: Settings) -> str:
    digest = hashlib.sha256(path.read_bytes())
    digest.update(json.dumps({k: str(v) for k, v in dataclasses.asdict(settings).items()},
                             sort_keys=True).encode())
    folder = templates.templates_dir(settings.root, settings.templates_dir)
    for file in sorted(folder.rglob("*")):
        if file.is_file():
            digest.update(file.relative_to(folder).as_posix().encode() + file.read_bytes())
    from importlib.metadata import PackageNotFoundError, version

    with contextlib.suppress(PackageNotFoundError):
        digest.update(version("publish").encode())
    return digest.hexdigest()


def _assets_used(html: str, settings: Settings) -> list[str]:
    """Paths under assets/ that the email links to as `{base_url}assets/…`."""
    base = settings.base_url + "assets/"
    found = set()
    for url in re.findall(r'(?:src|href)="([^"]+)"', html):
        url = url.replace("&amp;", "&")
        if url.startswith(base):
            rel = unquote(urlsplit(url[len(base):]).path)
            if rel and ".." not in rel.split("/") and not rel.startswith("/"):
                found.add(rel)
    return sorted(found)


def _page_html(built, settings: Settings, s_web: dict[str, str], depth: str) -> tuple[str, str]:
    """(the web page, the body for the feed) from a built issue's email."""
    from bs4 import BeautifulSoup

    from .render import personalize

    folder = templates.templates_dir(settings.root, settings.templates_dir)
    fallback = templates.strings(folder, built.email.lang)["name_fallback"]
    mark = "publish-site-subscribe:"

    def version(subscribe: str) -> BeautifulSoup:
        html = personalize(built.email.html, {"name": fallback, "email": "",
                                              "unsubscribe_url": mark}, escape=True)
        soup = BeautifulSoup(html, "html.parser")
        for a in soup.find_all("a", href=mark):
            a["href"] = subscribe
            a.string = s_web["subscribe"]
        return soup

    feed_soup = version(settings.base_url + "subscribe/")
    body = feed_soup.body or feed_soup
    content = _CONTROL.sub("", body.decode_contents())
    soup = version(f"{depth}subscribe/")
    html_tag = soup.find("html")
    if html_tag is not None:
        html_tag["lang"] = built.email.lang
    head = soup.head
    if head is not None:
        if head.title is None:
            head.append(soup.new_tag("title"))
        head.title.string = f"{built.email.subject} · {settings.name}"
        head.append(soup.new_tag("link", rel="alternate", type="application/atom+xml",
                                 href=f"{depth}feed.xml", title=settings.name))
    if soup.body is not None:
        bar = BeautifulSoup(webpages.render(
            settings, "bar.html.j2", s_web["lang"], s_web, title="", home=depth,
            subscribe_page=f"{depth}subscribe/", feed=f"{depth}feed.xml"), "html.parser")
        soup.body.insert(0, bar)
    return "<!doctype html>\n" + _CONTROL.sub("", str(soup).removeprefix("<!doctype html>")
                                               .lstrip()), content


def _render_page(path: Path, key: str, settings: Settings, first_sent: float | None,
                 inputs: str) -> tuple[Page, str]:
    from . import build

    # The page is the email without its "View in browser" link: it would point at itself.
    built = build.render_issue(path, dataclasses.replace(settings, web_url=""))
    lang = built.email.lang
    s_web = webpages.strings(settings, lang)
    html, content = _page_html(built, settings, s_web, "../../")
    issue = built.issue
    when = issue.date or (dt.date.fromtimestamp(first_sent) if first_sent else None)
    sort_key = (dt.datetime.combine(when, dt.time()).timestamp() if when else 0.0)
    page = Page(issue.slug, built.email.subject, lang, when.isoformat() if when else "",
                sort_key, built.email.preheader, content, _assets_used(built.email.html,
                                                                        settings), inputs,
                draft=first_sent is None)
    return page, html


def _issue_paths(settings: Settings, drafts: bool) -> list[tuple[Path, str, float | None]]:
    sent = published(settings)
    found = {key: (settings.root / key, key, at) for key, at in sent.items()}
    if drafts:
        for path in sorted((settings.root / "issues").glob("*.md")):
            key = draft_mod.issue_key(path, settings)
            found.setdefault(key, (path, key, None))
    return sorted(found.values(), key=lambda item: item[1])


def build_site(settings: Settings, *, drafts: bool = False,
               out: Path | None = None) -> SiteReport:
    """Build (or bring up to date) the site; only files whose bytes change are written."""
    folder = out or settings.root / settings.site_dir
    site = sitewrite.begin(folder, settings)
    report = SiteReport(site)
    before = {p.get("slug"): p for p in sitewrite.previous_files(site).get("pages", [])
              if isinstance(p, dict)}
    files: dict[str, bytes] = {}
    slugs: dict[str, str] = {}
    for path, key, first_sent in _issue_paths(settings, drafts):
        if not path.is_file():
            report.warnings.append(f"{key}: was sent but the file is gone; not on the site")
            continue
        inputs = _inputs_hash(path, settings) + ("d" if first_sent is None else "")
        page = _reuse(before, path, inputs, site)
        if page is None:
            page, html = _render_page(path, key, settings, first_sent, inputs)
            report.rendered += 1
        else:
            html = (site / "issues" / page.slug / "index.html").read_text("utf-8")
        if page.slug in slugs:
            raise InputError(f"two issues have the slug {page.slug!r}: {slugs[page.slug]} "
                             f"and {key}; give one a `slug:`", path)
        slugs[page.slug] = key
        files[f"issues/{page.slug}/index.html"] = html.encode("utf-8")
        report.pages.append(page)
    report.pages.sort(key=lambda p: (-p.sort_key, p.title))
    files.update(_assets(settings, report))
    from . import sitepages

    files.update(sitepages.archive_pages(settings, report.pages))
    files["feed.xml"] = sitepages.feed(settings, [p for p in report.pages if not p.draft])
    for rel, data in files.items():
        if sitewrite.write_file(site, rel, data):
            report.written.append(rel)
    report.removed = sitewrite.finish(site, [*files, sitewrite.MARKER], {
        "pages": [dataclasses.asdict(p) for p in report.pages]})
    return report


def _reuse(before: dict, path: Path, inputs: str, site: Path) -> Page | None:
    for entry in before.values():
        if entry.get("inputs") == inputs:
            try:
                page = Page(**entry)
            except TypeError:
                return None
            if (site / "issues" / page.slug / "index.html").is_file():
                return page
    return None


def _assets(settings: Settings, report: SiteReport) -> dict[str, bytes]:
    """The files of the newsletter's assets/ that the pages use, read from inside it only."""
    folder = (settings.root / "assets").resolve()
    out: dict[str, bytes] = {}
    for rel in sorted({rel for page in report.pages for rel in page.assets}):
        source = (folder / rel).resolve()
        if not source.is_relative_to(folder) or not source.is_file():
            report.warnings.append(f"assets/{rel}: used by an issue but not in assets/ "
                                   "(symlinks out of it are not followed)")
            continue
        try:
            out[f"assets/{rel}"] = source.read_bytes()
        except OSError as exc:
            raise PublishError(f"cannot read an asset: {exc.strerror}", source) from None
    return out
