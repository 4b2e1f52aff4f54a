"""Which caniemail features an email uses, and the warnings for those a target client lacks."""

from __future__ import annotations

import re
from functools import lru_cache

from . import caniemail
from .check_rules import Page
from .findings import Finding, snippet
from .keep import kept_while_short

_UNITS = ("rem", "vh", "vw", "vmin", "vmax", "ch", "ex")
_UNIT = re.compile(rf"\d({'|'.join(_UNITS)})\b")
_HEADING = re.compile(r"h[1-6]")
_KEEP_LIMIT = 1024  # longer values (data: URIs) are worked out each time, never kept


def features(page: Page) -> dict[str, object]:
    """caniemail features the email uses, each with an element that uses it."""
    used: dict[str, object] = {}

    def use(slug: str, element=None) -> None:
        used.setdefault(slug, element)

    for element in page.elements:
        name = element.name
        src = element.get("src", "") if name == "img" else ""
        href = element.get("href", "") if name == "a" else ""
        for slug in _element_features(name, tuple(element.attrs), src, href):
            use(slug, element)
    for element, style, pairs in page.styled:
        for slug in _style_features(style, pairs):
            use(slug, element)
    for prop, value in page.sheet_declarations:
        for slug in _declaration_features(prop, value):
            use(slug, None)
    styles = page.style_text
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


@kept_while_short(4096, _KEEP_LIMIT)
def _element_features(name: str, attributes: tuple, src: str, href: str) -> tuple[str, ...]:
    """The features an element uses by its tag, its attributes' names, an image's `src`
    and a link's `href`, in the order they are found (kept: an email repeats a few dozen
    such elements hundreds of times, and a save repeats the email's)."""
    known = caniemail.features()
    found: list[str] = []
    for slug in (f"html-{name}", "html-h1-h6" if _HEADING.fullmatch(name) else "",
                 "html-lists" if name in ("ul", "ol") else ""):
        if slug in known:
            found.append(slug)
    for attr in attributes:
        slug = {"loading": "html-loading-attribute"}.get(attr, f"html-{attr}")
        if slug in known and slug not in ("html-style",):
            found.append(slug)
    if name == "img":
        if src.startswith("data:"):
            found.append("image-base64")
        ext = re.search(r"\.(png|jpe?g|gif|webp|avif|svg|bmp)(\?|$)", src.lower())
        if ext:
            found.append({"jpeg": "image-jpg"}.get(ext.group(1), f"image-{ext.group(1)}"))
    if name == "a" and href.startswith("#"):
        found.append("html-anchor-links")
    if name == "a" and href.startswith("mailto:"):
        found.append("html-mailto-links")
    return tuple(found)


def _style_features(style: str, pairs: tuple) -> tuple[str, ...]:
    """The features an inline style's declarations (`pairs`, read from `style`) use, in
    order, each once (kept by the style's text)."""
    if len(style) > _KEEP_LIMIT:
        return _features_of(pairs)
    return _style_features_kept(style)


@lru_cache(maxsize=4096)
def _style_features_kept(style: str) -> tuple[str, ...]:
    from .check_rules import style_declarations

    return _features_of(style_declarations(style))


def _features_of(pairs: tuple) -> tuple[str, ...]:
    return tuple(dict.fromkeys(slug for prop, value in pairs
                               for slug in _declaration_features(prop, value)))


@kept_while_short(4096, _KEEP_LIMIT)
def _declaration_features(prop: str, value: str) -> tuple[str, ...]:
    """The features one declaration uses, in the order they are found (kept, as above)."""
    known = caniemail.features()
    found: list[str] = []
    if f"css-{prop}" in known:
        found.append(f"css-{prop}")
    if prop == "display" and value in ("flex", "grid", "none"):
        found.append(f"css-display-{value}")
    if "!important" in value:
        found.append("css-important")
    if "rgba(" in value:
        found.append("css-rgba")
    if "linear-gradient" in value:
        found.append("css-linear-gradient")
    if "var(--" in value:
        found.append("css-variables")
    if any(c.isdigit() for c in value):
        units = set(_UNIT.findall(value))
        for unit in _UNITS:
            if unit in units:
                found.append(f"css-unit-{unit}")
    return tuple(found)


def support(page: Page, accept: set[str]) -> list[Finding]:
    """A warning per feature the email uses that a target client lacks, unless accepted."""
    findings = []
    known = caniemail.features()
    for slug, element in features(page).items():
        if slug in accept:
            continue
        title, lacking = known[slug]
        if lacking:
            findings.append(Finding(
                "client-support", "warning",
                f"{title} is not supported in {', '.join(lacking)} (caniemail: {slug})",
                f"avoid it, or accept it with check_accept = \"{slug}\" in publish.toml",
                snippet(element) if element is not None else ""))
    return findings
