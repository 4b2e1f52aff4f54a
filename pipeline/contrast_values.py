"""What the contrast pass reads from a declaration: an inline style's colour properties,
a background's colour, a font size in pixels, a colour blended over another.

The same few values come back in every email and at every save of a preview, so each is
worked out once and kept: bounded in number (least recently used let go) and in size (a
value longer than KEEP_LIMIT, such as a data: URI in a background, is never kept).
"""

from __future__ import annotations

import re
from functools import lru_cache

from . import colours
from .keep import kept_while_short

PROPERTIES = ("color", "background-color", "background", "display", "font-size", "font-weight")
_COLOUR_TOKEN = re.compile(r"#[0-9a-f]{3,8}\b|rgba?\([^)]*\)|\b[a-z]+\b", re.I)

KEEP_LIMIT = 1024


@kept_while_short(4096, KEEP_LIMIT)  # MJML and the templates repeat the same few styles
def inline_style(style: str) -> tuple[tuple[str, tuple[str, bool]], ...]:
    found = {}
    for part in style.split(";"):
        name, colon, value = part.partition(":")
        name = name.strip().lower()
        if colon and name in PROPERTIES:
            important = "!important" in value.lower()
            found[name] = (re.sub(r"!\s*important", "", value, flags=re.I).strip(), important)
    return tuple(found.items())


@kept_while_short(1024, KEEP_LIMIT)
def background_colour(value: str) -> tuple[colours.RGB, float] | str | None:
    """A background value's colour; "image" when it paints an image; None when none."""
    value = value.strip().lower()
    if "url(" in value or "gradient" in value:
        return "image"
    for token in _COLOUR_TOKEN.findall(value):
        if token == "transparent":
            return None
        parsed = colours.parse(token)
        if parsed is not None:
            return parsed
    return None


@kept_while_short(1024, KEEP_LIMIT)
def font_px(value: str, parent_px: float) -> float:
    value = value.strip().lower()
    for unit, scale in (("px", 1.0), ("pt", 4 / 3), ("em", parent_px), ("rem", 16.0)):
        if value.endswith(unit):
            try:
                return float(value[: -len(unit)]) * scale
            except ValueError:
                return parent_px
    if value.endswith("%"):
        try:
            return float(value[:-1]) / 100 * parent_px
        except ValueError:
            return parent_px
    return parent_px


@lru_cache(maxsize=4096)
def over(top: colours.RGB, alpha: float, under: colours.RGB) -> colours.RGB:
    return colours.over(top, alpha, under)
