"""Which caniemail features an email uses, and the warnings for those a target client lacks."""

from __future__ import annotations

import re

from . import caniemail
from .check_rules import Page
from .findings import Finding, snippet

_UNITS = ("rem", "vh", "vw", "vmin", "vmax", "ch", "ex")
_UNIT = re.compile(rf"\d({'|'.join(_UNITS)})\b")
_HEADING = re.compile(r"h[1-6]")


def features(page: Page) -> dict[str, object]:
    """caniemail features the email uses, each with an element that uses it."""
    used: dict[str, object] = {}

    def use(slug: str, element=None) -> None:
        used.setdefault(slug, element)

    known = caniemail.features()
    for element in page.elements:
        name = element.name
        for slug in (f"html-{name}", "html-h1-h6" if _HEADING.fullmatch(name) else "",
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
    for element, prop, value in page.declarations:
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
        if any(c.isdigit() for c in value):
            units = set(_UNIT.findall(value))
            for unit in _UNITS:
                if unit in units:
                    use(f"css-unit-{unit}", element)
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
