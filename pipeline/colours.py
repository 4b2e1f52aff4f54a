"""Colour arithmetic for legibility: WCAG contrast, and the inversion Gmail's apps apply.

Shared by the code palette (markdown.py) and `publish check`'s contrast rules, so what
the build promises and what the check measures are computed the same way.
"""

from __future__ import annotations

import re
from functools import lru_cache

RGB = tuple[float, float, float]  # 0..255 per channel
_NAMED = {"white": "#ffffff", "black": "#000000", "red": "#ff0000", "green": "#008000",
          "blue": "#0000ff", "gray": "#808080", "grey": "#808080", "silver": "#c0c0c0",
          "yellow": "#ffff00", "orange": "#ffa500", "navy": "#000080", "purple": "#800080"}
# invert(1) followed by hue-rotate(180deg), the CSS filter functions' matrices (sRGB).
_HUE_180 = ((-0.574, 1.43, 0.144), (0.426, 0.43, 0.144), (0.426, 1.43, -0.856))


@lru_cache(maxsize=4096)  # an email repeats a few colours thousands of times
def parse(value: str) -> tuple[RGB, float] | None:
    """(rgb, alpha) of a CSS colour: #rgb, #rrggbb, #rrggbbaa, rgb(), rgba(), a few names."""
    value = value.replace("!important", "").strip().lower()
    value = _NAMED.get(value, value)
    match = re.fullmatch(r"#([0-9a-f]{3,4}|[0-9a-f]{6}|[0-9a-f]{8})", value)
    if match:
        digits = match.group(1)
        if len(digits) <= 4:
            digits = "".join(c * 2 for c in digits)
        alpha = int(digits[6:8], 16) / 255 if len(digits) == 8 else 1.0
        return (int(digits[0:2], 16), int(digits[2:4], 16), int(digits[4:6], 16)), alpha
    match = re.fullmatch(
        r"rgba?\(\s*([\d.]+)[\s,]+([\d.]+)[\s,]+([\d.]+)(?:\s*[,/]\s*([\d.]+)(%?))?\s*\)", value)
    if match:
        alpha = 1.0
        if match.group(4) is not None:
            alpha = float(match.group(4)) / (100 if match.group(5) else 1)
        return (float(match.group(1)), float(match.group(2)), float(match.group(3))), alpha
    return None


def over(top: RGB, alpha: float, under: RGB) -> RGB:
    return tuple(t * alpha + u * (1 - alpha) for t, u in zip(top, under, strict=True))


@lru_cache(maxsize=4096)
def luminance(rgb: RGB) -> float:
    def channel(c: float) -> float:
        c /= 255
        return c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4

    r, g, b = (channel(c) for c in rgb)
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def contrast(a: RGB, b: RGB) -> float:
    light, dark = sorted((luminance(a), luminance(b)), reverse=True)
    return (light + 0.05) / (dark + 0.05)


def inverted(rgb: RGB) -> RGB:
    """The colour after `filter: invert(1) hue-rotate(180deg)`, as Gmail on iOS shows it."""
    r, g, b = (255 - c for c in rgb)
    return tuple(max(0.0, min(255.0, x * r + y * g + z * b)) for x, y, z in _HUE_180)


def needed(font_px: float, bold: bool) -> float:
    """WCAG AA: 4.5:1, or 3:1 for large text (24 px, or 18.66 px bold)."""
    return 3.0 if font_px >= 24 or (bold and font_px >= 18.66) else 4.5


def hex_colour(rgb: RGB) -> str:
    return "#" + "".join(f"{round(c):02x}" for c in rgb)


def legible_on(colour: str, background: str, target: float = 4.6) -> str:
    """`colour` lightened or darkened just enough to reach `target` against `background`,
    both as it is and inverted."""
    (fg, _), (bg, _) = parse(colour), parse(background)
    towards = (255.0, 255.0, 255.0) if luminance(bg) < 0.2 else (0.0, 0.0, 0.0)
    for step in range(51):
        mixed = over(towards, step / 50, fg)
        if (contrast(mixed, bg) >= target
                and contrast(inverted(mixed), inverted(bg)) >= target):
            return hex_colour(mixed)
    return hex_colour(towards)
