"""`publish check`: lint a built email for what breaks it in mail clients, before sending.

Each finding has a rule id, a severity (error or warning), the element it is about, and a
one-line fix hint. Errors make `publish check` exit 1 and stop `publish send`.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

from .plaintext import display_width

GMAIL_CLIP = 102 * 1024
SIZE_WARNING = 90 * 1024
STYLE_LIMIT = 16 * 1024
FORBIDDEN = ("video", "audio", "iframe", "script", "object", "embed", "form", "svg", "picture")
# The clients `check` judges support for, as caniemail names them.
TARGETS = {
    ("gmail", "desktop-webmail"): "Gmail (web)",
    ("gmail", "ios"): "Gmail (iOS)",
    ("gmail", "android"): "Gmail (Android)",
    ("outlook", "windows"): "Outlook (Windows)",
    ("outlook", "macos"): "Outlook (macOS)",
    ("outlook", "outlook-com"): "Outlook.com",
    ("apple-mail", "macos"): "Apple Mail (macOS)",
    ("apple-mail", "ios"): "Apple Mail (iOS)",
    ("yahoo", "desktop-webmail"): "Yahoo (web)",
}
# Features that degrade gracefully where unsupported; the `check_accept` setting adds more.
ACCEPTED = {
    "css-at-media": "MJML's responsive columns; Outlook on Windows keeps the fixed 600 px table",
    "css-at-media-prefers-color-scheme": "dark-mode colours are a bonus where supported",
    "css-color-scheme": "a dark-mode hint, ignored elsewhere",
    "html-meta-color-scheme": "a dark-mode hint, ignored elsewhere",
    "css-selector-attribute": "Outlook.com's dark-mode selectors only",
    "html-doctype": "Outlook on Windows ignores it; everyone else needs it",
    "css-border-radius": "corners are square where unsupported",
    "html-anchor-links": "Gmail on iOS does not jump to in-page anchors; the links do no harm",
    "css-height": "`height:auto` on images; Yahoo keeps the width attribute's proportions",
    "html-body": "MJML's <body>; Outlook for macOS drops its attributes, not its content",
    "html-aria-label": "MJML's accessible label; ignored where unsupported",
    "css-word-spacing": "MJML's body reset",
    "css-max-height": "belt and braces on the hidden preheader, which display:none hides",
    "css-opacity": "belt and braces on the hidden preheader",
    "css-overflow": "belt and braces on the hidden preheader",
    "css-outline": "MJML's image reset",
    "css-word-break": "long words wrap where supported",
    "css-word-wrap": "long words wrap where supported",
    "css-white-space": "code and math keep their lines in <pre> anyway",
    "css-min-width": "a wide table's scroll box; Outlook on Windows keeps its fixed 600 px column",
}


@dataclass(frozen=True)
class Finding:
    rule: str
    severity: str  # error | warning
    message: str
    hint: str
    where: str = ""  # the element, as a short snippet
    file: str = ""  # the issue file and line a finding from the build points at
    line: int | None = None

    def __str__(self) -> str:
        at = f" at {self.where}" if self.where else ""
        place = f"{self.file}:{self.line}: " if self.file and self.line else (
            f"{self.file}: " if self.file else "")
        return f"{place}{self.severity} {self.rule}: {self.message}{at} — {self.hint}"

    def as_dict(self) -> dict:
        return asdict(self)


# Build warnings as findings: (rule, what the warning says, hint), first match wins.
BUILD_RULES = (
    ("img-alt", "image has no alt text", "describe the image (alt=\"\" for decoration)"),
    ("anchor-missing", "matches no heading", "fix the link or the heading it points at"),
    ("link-malformed", "malformed link", "fix the link in the issue"),
    ("placeholder", "template placeholder", "fill it in or remove it"),
    ("scaffolding", "scaffolding", "remove the web page's scaffolding from the issue"),
    ("markdown-as-text", "shown as text", "fix the Markdown in the issue"),
    ("front-matter", "front matter", "fix the front matter"),
)
_LOCATED = re.compile(r"(?P<file>.+?):(?P<line>\d+): (?P<message>.*)", re.S)


def from_warnings(warnings: list[str], source: str = "") -> list[Finding]:
    """Every build warning as a finding, with the file and line it names.

    `publish check` is what an editor runs before sending, so it must show what the build saw.
    """
    findings = []
    for warning in warnings:
        file, line, message = "", None, warning
        located = _LOCATED.fullmatch(warning)
        if located:
            file, line, message = located["file"], int(located["line"]), located["message"]
        elif source and warning.startswith(f"{source}: "):
            file, message = source, warning[len(source) + 2:]
        rule, hint = next(((r, h) for r, needle, h in BUILD_RULES if needle in message),
                          ("build", "see the message"))
        findings.append(Finding(rule, "warning", message, hint, file=file, line=line))
    return findings


@lru_cache(maxsize=1)
def caniemail() -> dict[str, dict]:
    path = Path(__file__).with_name("data") / "caniemail.json"
    return {feature["slug"]: feature for feature in json.loads(path.read_text("utf-8"))["data"]}


def _snippet(element) -> str:
    attrs = " ".join(f'{k}="{v if isinstance(v, str) else " ".join(v)}"'[:70]
                     for k, v in element.attrs.items() if k in ("src", "href", "id", "class"))
    return f"<{element.name}{' ' + attrs if attrs else ''}>"


def _style_text(soup) -> str:
    return "\n".join(style.get_text() for style in soup.find_all("style"))


def _declarations(soup):
    """(element or None, property, value) for every inline and <style> declaration."""
    for element in soup.find_all(style=True):
        for part in element["style"].split(";"):
            if ":" in part:
                prop, _, value = part.partition(":")
                yield element, prop.strip().lower(), value.strip().lower()
    for block in re.findall(r"\{([^{}]*)\}", _style_text(soup)):
        for part in block.split(";"):
            if ":" in part:
                prop, _, value = part.partition(":")
                yield None, prop.strip().lower(), value.strip().lower()


# the rules ------------------------------------------------------------------------------
def check_html(html: str, *, text: str = "", subject: str = "", preheader: str = "",
               postal_address: str = "", accept: set[str] | None = None) -> list[Finding]:
    """Every finding for a finished email."""
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(html, "html.parser")
    findings: list[Finding] = []

    def add(rule: str, severity: str, message: str, hint: str, element=None) -> None:
        findings.append(Finding(rule, severity, message, hint,
                                _snippet(element) if element is not None else ""))

    # what email cannot show
    for element in soup.find_all(True):
        name = element.name
        if name in FORBIDDEN:
            add("forbidden-tag", "error", f"<{name}> does not work in email",
                "replace it with an image or a link (publish build swaps embeds for cards)",
                element)
        elif "-" in name:
            add("custom-element", "error", f"custom element <{name}> is not shown by mail clients",
                "remove it or replace it with plain HTML", element)
        if element.get("srcset") is not None:
            add("srcset", "error", "srcset is ignored by most mail clients",
                "use one image with a width attribute", element)
        if name == "link" and "stylesheet" in (element.get("rel") or []):
            add("external-css", "error", "linked stylesheets are dropped by Gmail and Yahoo",
                "inline the CSS (email.css)", element)
    if "@import" in _style_text(soup):
        add("external-css", "error", "@import is dropped by Gmail and Yahoo",
            "inline the CSS instead of importing it")
    for element, prop, value in _declarations(soup):
        layout = (prop == "position" and value not in ("static", "")) or (
            prop == "display" and re.search(r"\b(inline-)?(flex|grid)\b", value))
        if layout:
            add("layout-css", "error",
                f"CSS {prop}: {value} for layout breaks in Outlook and Gmail",
                "lay out with tables (MJML sections and columns)", element)

    # size and characters
    size = len(html.encode("utf-8"))
    if size > GMAIL_CLIP:
        add("gmail-clip", "error", f"the HTML is {size / 1024:.1f} KB; Gmail clips over 102 KB "
            "and hides the rest, unsubscribe link included", "shorten the issue or split it")
    elif size > SIZE_WARNING:
        add("size", "warning", f"the HTML is {size / 1024:.1f} KB, close to Gmail's 102 KB clip",
            "shorten the issue")
    style_bytes = len(_style_text(soup).encode("utf-8"))
    if style_bytes > STYLE_LIMIT:
        add("style-size", "warning", f"<style> holds {style_bytes / 1024:.1f} KB; Gmail drops "
            "style blocks over 16 KB", "move rules into email.css so they are inlined")
    if re.search("[\u0080-\u009f]", html):
        add("c1-control", "error", "C1 control characters (U+0080–U+009F) make Gmail clip",
            "remove them (often pasted from Windows-1252 text)")

    # images
    for img in soup.find_all("img"):
        src = (img.get("src") or "").strip()
        if img.get("alt") is None:
            add("img-alt", "error", "image without alt text",
                "add alt text (alt=\"\" for decoration)", img)
        if not img.get("width"):
            add("img-width", "warning", "image without a width attribute; Outlook shows it at "
                "full size", "set width", img)
        if src.startswith("data:"):
            add("img-data-uri", "warning", "data: image URI; Gmail does not show them",
                "host the image and link it", img)
        elif src.startswith("http://"):
            add("img-http", "warning", "image over http:", "use https", img)
        elif not src.startswith("https://"):
            add("img-relative", "error", "image URL is not absolute", "set base_url", img)

    # links
    targets = {el["id"] for el in soup.find_all(id=True)} | {
        el["name"] for el in soup.find_all("a", attrs={"name": True})}
    for link in soup.find_all("a"):
        if not link.has_attr("href"):
            continue
        href = link["href"].strip()
        label = " ".join(link.get_text(" ").split()).lower()
        if not href:
            add("link-empty", "error", "link with an empty href", "give it a URL", link)
        elif href.startswith("#"):
            if href[1:] not in targets:
                add("anchor-missing", "error", f"link to {href} matches no element",
                    "fix the table of contents link or the heading", link)
        elif href.startswith("http://"):
            add("link-http", "warning", "link over http:", "use https", link)
        elif not re.match(r"(https|mailto|tel):", href) and "%%" not in href:
            add("link-relative", "error", f"link {href!r} is not absolute", "set base_url", link)
        if label in {"click here", "here", "this link", "link", "点击这里", "这里"}:
            add("link-text", "warning", f"link text {label!r} says nothing about where it goes",
                "describe the destination", link)
    body_text = soup.body.get_text(" ") if soup.body else soup.get_text(" ")
    if re.search(r"\bTK\b", body_text + " " + text):
        add("placeholder", "error", "leftover TK placeholder", "write the missing part")

    # inbox and footer
    if not preheader:
        add("preheader", "warning", "no preheader; inboxes show the first text instead",
            "set preheader in the front matter")
    else:
        _preheader_rules(preheader, subject, add)
    if len(subject) > 78:
        add("subject-length", "warning", f"subject is {len(subject)} characters; inboxes cut "
            "it", "keep it under 78 characters")
    hrefs = " ".join(a.get("href", "") for a in soup.find_all("a")).lower()
    if "unsubscribe" not in hrefs and "%%unsubscribe_url%%" not in hrefs:
        add("unsubscribe", "error", "no unsubscribe link", "keep the template's footer link")
    if postal_address and postal_address not in soup.get_text(" "):
        add("postal-address", "error", "no postal address in the footer",
            "set postal_address in publish.toml")

    # text that is hard to read in light mode, in the email's own dark mode, or inverted
    from .check_contrast import problems

    for problem in problems(html):
        add(problem.rule, "warning", problem.message, problem.hint, problem.element)

    findings += _support(soup, accept if accept is not None else set(ACCEPTED))
    return findings


_MARKUP_IN_TEXT = re.compile(r"={3,}|\*\*|__|\]\(|^#{1,6}\s|\[!(NOTE|TIP|WARNING)\]", re.I)


def _preheader_rules(preheader: str, subject: str, add) -> None:
    """The inbox line: 40–140 columns wide, not the subject again, no Markdown syntax."""
    from .headline import normalise

    width = display_width(preheader)
    if not 40 <= width <= 140:
        add("preheader", "warning", f"preheader is {width} columns wide (a CJK character "
            "counts as two)", "keep it between 40 and 140 columns (20 to 70 Chinese characters)")
    if subject and normalise(preheader).startswith(normalise(subject)) and normalise(subject):
        add("preheader", "warning", "the preheader repeats the subject, which the inbox "
            "already shows beside it", "start it with what the issue says next")
    if _MARKUP_IN_TEXT.search(preheader):
        add("preheader", "warning", "the preheader shows Markdown syntax as text",
            "write it as plain text")


def features(soup) -> dict[str, object]:
    """caniemail features the email uses, each with an element that uses it."""
    used: dict[str, object] = {}

    def use(slug: str, element=None) -> None:
        used.setdefault(slug, element)

    known = caniemail()
    for element in soup.find_all(True):
        name = element.name
        for slug in (f"html-{name}", "html-h1-h6" if re.fullmatch(r"h[1-6]", name) else "",
                     "html-lists" if name in ("ul", "ol") else ""):
            if slug in known:
                use(slug, element)
        for attr in element.attrs:
            slug = {"loading": "html-loading-attribute"}.get(attr, f"html-{attr}")
            if slug in known and slug not in ("html-style",):
                use(slug, element)
        if name == "img":
            src = element.get("src", "")
            if src.startswith("data:"):
                use("image-base64", element)
            ext = re.search(r"\.(png|jpe?g|gif|webp|avif|svg|bmp)(\?|$)", src.lower())
            if ext:
                use({"jpeg": "image-jpg"}.get(ext.group(1), f"image-{ext.group(1)}"), element)
        if name == "a" and element.get("href", "").startswith("#"):
            use("html-anchor-links", element)
        if name == "a" and element.get("href", "").startswith("mailto:"):
            use("html-mailto-links", element)
    for element, prop, value in _declarations(soup):
        if f"css-{prop}" in known:
            use(f"css-{prop}", element)
        if prop == "display" and value in ("flex", "grid", "none"):
            use(f"css-display-{value}", element)
        if "!important" in value:
            use("css-important", element)
        if "rgba(" in value:
            use("css-rgba", element)
        if "linear-gradient" in value:
            use("css-linear-gradient", element)
        if "var(--" in value:
            use("css-variables", element)
        for unit in ("rem", "vh", "vw", "vmin", "vmax", "ch", "ex"):
            if re.search(rf"\d{unit}\b", value):
                use(f"css-unit-{unit}", element)
    styles = _style_text(soup)
    if "@media" in styles:
        use("css-at-media")
    if "prefers-color-scheme" in styles:
        use("css-at-media-prefers-color-scheme")
    for at_rule in ("font-face", "import", "keyframes", "supports"):
        if f"@{at_rule}" in styles:
            use(f"css-at-{at_rule}")
    if re.search(r"\[[\w-]+", styles):
        use("css-selector-attribute")
    return used


def _support(soup, accept: set[str]) -> list[Finding]:
    findings = []
    known = caniemail()
    for slug, element in features(soup).items():
        if slug in accept:
            continue
        lacking = []
        for (family, platform), label in TARGETS.items():
            versions = known[slug]["stats"].get(family, {}).get(platform)
            if versions and list(versions.values())[-1].startswith("n"):
                lacking.append(label)
        if lacking:
            findings.append(Finding(
                "client-support", "warning",
                f"{known[slug]['title']} is not supported in {', '.join(lacking)} "
                f"(caniemail: {slug})",
                f"avoid it, or accept it with check_accept = \"{slug}\" in publish.toml",
                _snippet(element) if element is not None else ""))
    return findings


def accepted(setting: str) -> set[str]:
    return set(ACCEPTED) | {s.strip() for s in setting.split(",") if s.strip()}


def errors(findings: list[Finding]) -> list[Finding]:
    return [f for f in findings if f.severity == "error"]


def link_targets(html: str) -> list[tuple[str, str]]:
    """(kind, url) for every distinct http(s) link and image in the email."""
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(html, "html.parser")
    seen: dict[str, str] = {}
    for kind, tag, attr in (("link", "a", "href"), ("image", "img", "src")):
        for element in soup.find_all(tag):
            url = (element.get(attr) or "").strip()
            if url.startswith(("http://", "https://")) and "%%" not in url:
                seen.setdefault(url, kind)
    return [(kind, url) for url, kind in seen.items()]


def check_links(html: str, *, timeout: float = 10.0, concurrency: int = 8) -> list[Finding]:
    """Request every link and image (HEAD, then GET when HEAD is refused); report failures."""
    from concurrent.futures import ThreadPoolExecutor

    import requests

    def probe(target: tuple[str, str]) -> Finding | None:
        kind, url = target
        with requests.Session() as session:
            session.max_redirects = 5
            session.headers["User-Agent"] = "publish-newsletter-link-check/0.1"
            try:
                reply = session.head(url, timeout=timeout, allow_redirects=True)
                if reply.status_code in (405, 501, 403):
                    reply = session.get(url, timeout=timeout, allow_redirects=True, stream=True)
                    reply.close()
            except requests.TooManyRedirects:
                return Finding("link-broken", "error", f"{kind} {url} redirects more than 5 times",
                               "link to the final address")
            except requests.RequestException as exc:
                return Finding("link-unreachable", "warning",
                               f"{kind} {url} did not answer ({type(exc).__name__})",
                               "check the address, or try again later")
        if reply.status_code >= 400:
            severity = "error" if reply.status_code in (404, 410) else "warning"
            return Finding("link-broken", severity, f"{kind} {url} answers {reply.status_code}",
                           "fix or remove the link")
        return None

    with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
        return [f for f in pool.map(probe, link_targets(html)) if f is not None]
