"""`publish check`: lint a built email for what breaks it in mail clients, before sending.

Each finding has a rule id, a severity (error or warning), the element it is about, and a
one-line fix hint. Errors make `publish check` exit 1 and stop `publish send`. The rules
are the table in check_rules; client support comes from caniemail (check_support); the
build's own warnings become findings of the same kind (`from_warnings`).
"""

from __future__ import annotations

import re

from .check_rules import GMAIL_CLIP, RULES, Page, Rule
from .findings import Finding, snippet

__all__ = ["ACCEPTED", "GMAIL_CLIP", "Finding", "accepted", "check_html", "check_links",
           "errors", "from_warnings", "link_targets"]

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


def _found(rule: Rule, page: Page) -> list[Finding]:
    return [Finding(rule.id, rule.severity, rule.message.format(**hit.fields), rule.hint,
                    snippet(hit.element) if hit.element is not None else "")
            for hit in rule.find(page)]


def check_html(html: str, *, text: str = "", subject: str = "", preheader: str = "",
               postal_address: str = "", accept: set[str] | None = None) -> list[Finding]:
    """Every finding for a finished email.

    `accept` holds caniemail features and rule ids to stay quiet about (the defaults in
    ACCEPTED when None); only warnings can be accepted, never an error.
    """
    from .check_contrast import parsed, problems
    from .check_support import support

    accept = accept if accept is not None else set(ACCEPTED)
    tree = parsed(html)  # one tree for the rules and the contrast pass
    page = Page(html, tree, text, subject, preheader, postal_address)
    findings = [finding for rule in RULES for finding in _found(rule, page)]
    # text that is hard to read in light mode, in the email's own dark mode, or inverted
    findings += [Finding(p.rule, "warning", p.message, p.hint, snippet(p.element))
                 for p in problems(html, tree=tree)]
    findings += support(page, accept)
    return [f for f in findings if f.severity == "error" or f.rule not in accept]


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
