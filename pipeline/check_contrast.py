"""`publish check`'s contrast rules: is every text run legible in each way a reader sees it?

Three views are judged, statically, from the finished HTML:
- `contrast`: light mode, the inline styles and the `<style>` rules outside media queries;
- `dark-mode-contrast`: the email's own `prefers-color-scheme: dark` rules applied on top,
  as Apple Mail and Outlook.com do; the page turns dark when the email says it supports
  dark mode (`color-scheme`) or leaves its background to the client;
- `inverted-contrast`: the light view under `invert(1) hue-rotate(180deg)`, as Gmail's
  apps recolour an email.

A small cascade does the work: rules are matched with lxml's cssselect (compiled to XPath,
so a long issue stays fast), ordered by importance,
origin (inline beats a stylesheet), specificity and order; `color` is inherited and a
background is the nearest one behind the text. WCAG AA needs 4.5:1, or 3:1 for large text.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field
from functools import lru_cache

from . import colours
from . import contrast_values as values
from .contrast_values import PROPERTIES

LIGHT_CANVAS = (255.0, 255.0, 255.0)
DARK_CANVAS = (18.0, 18.0, 18.0)  # what Chromium and Apple Mail paint behind a dark page
LINK = {"light": (0.0, 0.0, 238.0), "dark": (158.0, 158.0, 255.0)}
_SKIP = {"head", "style", "script", "title", "template", "noscript"}
_BOLD_TAGS = {"h1", "h2", "h3", "h4", "h5", "h6", "b", "strong", "th"}
_HEADING_EM = {"h1": 2.0, "h2": 1.5, "h3": 1.17, "h4": 1.0, "h5": 0.83, "h6": 0.67}
_DARK_MEDIA = re.compile(r"prefers-color-scheme\s*:\s*dark", re.I)


@dataclass
class Rule:
    """A stylesheet rule's colour declarations, for one selector."""

    selector: str
    specificity: tuple
    order: int
    declarations: dict[str, tuple[str, bool]]  # property -> (value, important)
    dark_only: bool


@dataclass
class Problem:
    """Text that is hard to read in one view, for one colour pair."""

    rule: str
    message: str
    hint: str
    element: object
    count: int = 1
    places: list = field(default_factory=list)


def _style_text(tree) -> str:
    return "\n".join(style.text or "" for style in tree.iter("style"))


def _stylesheet_rules(tree) -> list[Rule]:
    return _rules_of(tuple(style.text or "" for style in tree.iter("style")))


@lru_cache(maxsize=16)
def _rules_of(style_texts: tuple[str, ...]) -> list[Rule]:
    """The colour rules of the head's style blocks; the same blocks from build to build
    (they come from the templates), so parsed once per process and kept between runs
    (_csscache). Callers do not change the list."""
    from . import _csscache

    fields = _csscache.kept("contrast-rules", style_texts, lambda: _parsed(style_texts),
                            _rule_fields)
    return [Rule(selector, tuple(specificity), order, dict(declarations), dark)
            for selector, specificity, order, declarations, dark in fields]


def _rule_fields(fields) -> bool:
    return isinstance(fields, list) and all(
        isinstance(f, tuple) and len(f) == 5 and isinstance(f[0], str)
        and isinstance(f[1], tuple) and isinstance(f[3], dict) for f in fields)


def _parsed(style_texts: tuple[str, ...]) -> list[tuple]:
    from . import _csscache

    cssutils = _csscache.quiet_cssutils()
    rules: list[tuple] = []
    for text in style_texts:
        sheet = cssutils.parseString(text, validate=False)
        stack = [(rule, False) for rule in sheet.cssRules]
        while stack:
            rule, dark = stack.pop(0)
            if rule.type == rule.MEDIA_RULE:
                media = rule.media.mediaText
                if _DARK_MEDIA.search(media):
                    stack[0:0] = [(inner, True) for inner in rule.cssRules]
                continue  # other media queries (widths) do not change colours
            if rule.type != rule.STYLE_RULE:
                continue
            declarations = {
                prop.name.lower(): (prop.value, prop.priority == "important")
                for prop in rule.style.getProperties(all=True)
                if prop.name.lower() in PROPERTIES}
            if not declarations:
                continue
            for selector in rule.selectorList:
                rules.append((selector.selectorText, tuple(selector.specificity), len(rules),
                              declarations, dark))
    return rules


def _inline(element) -> dict[str, tuple[str, bool]]:
    return dict(values.inline_style(element.get("style") or ""))


_MATCHERS = threading.local()  # lxml's compiled XPath is not shared between threads


def _matcher(selector: str):
    """A function (tree, css_match.Index) -> the elements the selector matches, kept per
    thread (the templates' selectors are the same from build to build); None when it
    cannot be evaluated statically."""
    kept = getattr(_MATCHERS, "kept", None)
    if kept is None:
        kept = _MATCHERS.kept = {}
    if selector not in kept:
        if len(kept) >= 1024:
            kept.clear()
        kept[selector] = _compiled(selector)
    return kept[selector]


def _compiled(selector: str):
    """Simple selectors are matched in Python on the tree's index (css_match), the rest
    by cssselect's XPath; both give the XPath's elements."""
    from lxml.etree import XPath, XPathError

    from . import css_match

    xpath = _xpath_of(selector)
    if xpath is None:
        return None
    try:  # first: a selector lxml cannot take (`[x!="\\b"]`, a control character) is left out
        compiled = XPath(xpath)
    except (XPathError, ValueError, TypeError):
        return None
    simple = css_match.matcher(selector)
    if simple is not None:
        return lambda tree, index: simple(index)
    return lambda tree, index: compiled(tree)


@lru_cache(maxsize=1024)
def _xpath_of(selector: str) -> str | None:
    """The XPath for a CSS selector (translating is most of the cost; kept per process)."""
    from cssselect import GenericTranslator, SelectorError

    try:
        xpath = GenericTranslator().css_to_xpath(selector)
    except (SelectorError, ValueError, TypeError):
        return None  # a selector we cannot evaluate statically (:hover, vendor pseudo)
    # `a *` becomes `…/descendant-or-self::*/*`, which lxml makes quadratic on a long
    # issue; `…/descendant::*` selects the same elements.
    return xpath.replace("/descendant-or-self::*/", "/descendant::")


def _presentational(tree) -> list[tuple[object, str, str, tuple]]:
    """(element, property, value, precedence) for each inline style declaration and
    colour attribute: the same for every view, so read once."""
    found = []
    for element in tree.iter():
        if not isinstance(element.tag, str):
            continue
        style = element.get("style")
        if style:
            for prop, (value, important) in values.inline_style(style):
                found.append((element, prop, value, (4 if important else 2, (1, 0, 0, 0), 0)))
        if element.get("bgcolor"):
            found.append((element, "background-color", element.get("bgcolor"), (0, (0,), 0)))
        if element.tag == "font" and element.get("color"):
            found.append((element, "color", element.get("color"), (0, (0,), 0)))
    return found


def _declared(tree, rules: list[Rule], presentational: list) -> tuple[dict, dict]:
    """Each element's winning value per property, in light mode and with the dark-mode
    rules applied on top: each selector is matched once for both."""
    from .css_match import Index

    index = Index(tree)
    # per view: element -> {property: its winning key}, and -> {property: its value}
    light_keys: dict = {}
    dark_keys: dict = {}
    light: dict = {}
    dark: dict = {}

    def offer(keys: dict, chosen: dict, element, prop: str, value: str, key: tuple) -> None:
        best = keys.get(element)
        if best is None:
            keys[element] = {prop: key}
            chosen[element] = {prop: value}
            return
        old = best.get(prop)
        if old is None or key >= old:
            best[prop] = key
            chosen[element][prop] = value

    both = ((light_keys, light), (dark_keys, dark))
    for rule in rules:
        matcher = _matcher(rule.selector)
        if matcher is None:
            continue
        views = both[1:] if rule.dark_only else both
        for element in matcher(tree, index):
            for prop, (value, important) in rule.declarations.items():
                key = (3 if important else 1, rule.specificity, rule.order)
                for keys, chosen in views:
                    offer(keys, chosen, element, prop, value, key)
    for element, prop, value, key in presentational:
        offer(light_keys, light, element, prop, value, key)
        offer(dark_keys, dark, element, prop, value, key)
    return light, dark


def _supports_dark(tree) -> bool:
    metas = " ".join(m.get("content", "") for m in tree.iter("meta")
                     if "color-scheme" in (m.get("name") or "").lower())
    return bool(re.search(r"color-scheme\s*:[^;}]*dark", _style_text(tree))) or "dark" in metas


def _runs(tree, declared: dict, canvas: colours.RGB, text: colours.RGB,
          link: colours.RGB) -> list[tuple]:
    """(element, fg, bg, font px, bold) for every visible text run, in document order.

    What a run inherits (colour, background, font size, boldness; background None where
    an image is behind) is passed down as arguments; an element that declares nothing
    of its own only changes it by its tag.
    """
    runs: list[tuple] = []

    def visit(element, colour, background, parent_px: float, bold: bool) -> None:
        tag = element.tag
        if tag in _SKIP:
            return
        own = declared.get(element)
        if own and own.get("display", "").strip().lower() == "none":
            return
        inherited_background = background
        if tag == "a" and element.get("href"):
            colour = link
        font_px = 16.0 * _HEADING_EM[tag] if tag in _HEADING_EM else parent_px
        bold = bold or tag in _BOLD_TAGS
        if own:
            if "color" in own:
                parsed = colours.parse(own["color"])
                if parsed is not None:
                    colour = values.over(parsed[0], parsed[1], inherited_background or canvas)
            for prop in ("background", "background-color"):
                if prop in own:
                    found = values.background_colour(own[prop])
                    if found == "image":
                        background = None
                    elif found is not None and background is not None:
                        background = values.over(found[0], found[1], background)
            if "font-size" in own:
                font_px = values.font_px(own["font-size"], parent_px)
            weight = own.get("font-weight", "").strip().lower()
            if weight:
                bold = weight in ("bold", "bolder") or (weight.isdigit() and int(weight) >= 700)
        run = (element, colour, background, font_px, bold)
        if (element.text or "").strip():
            runs.append(run)
        for child in element:
            if isinstance(child.tag, str):
                visit(child, colour, background, font_px, bold)
            if (child.tail or "").strip():
                runs.append(run)

    visit(tree, text, canvas, 16.0, False)
    return runs


_NONE: dict = {}


def _has_own_background(tree, declared: dict) -> bool:
    """Whether the email paints its own page (html, body, or the wrapper right inside body);
    if not, a client in dark mode paints it dark."""
    body = tree.find("body")
    wrapper = next((c for c in body if isinstance(c.tag, str)
                    and declared.get(c, {}).get("display", "").strip() != "none"),
                   None) if body is not None else None
    for element in (tree, body, wrapper):
        own = declared.get(element, {}) if element is not None else {}
        if any(values.background_colour(own.get(p, "")) not in (None, "image")
               for p in ("background", "background-color")):
            return True
    return False


VIEWS = {
    "contrast": "in light mode",
    "dark-mode-contrast": "under the email's dark-mode rules (Apple Mail, Outlook.com)",
    "inverted-contrast": "when the colours are inverted (Gmail's apps)",
}
HINTS = {
    "contrast": "darken the text or lighten its background",
    "dark-mode-contrast": "add a colour for it to the prefers-color-scheme: dark rules, or "
                          "give it a background of its own",
    "inverted-contrast": "avoid mid-tone text and backgrounds; pick colours that keep "
                         "their contrast when inverted",
}


class Element:
    """An lxml element as `publish check` names it: a tag name and its attributes."""

    def __init__(self, element):
        self.name = element.tag
        self.attrs = dict(element.attrib)


def _tree(html: str):
    import lxml.html

    try:
        return lxml.html.document_fromstring(html)
    except (ValueError, TypeError):  # lxml refuses some inputs (an encoding declaration)
        return lxml.html.document_fromstring(html.encode("utf-8"))


@lru_cache(maxsize=4096)  # a page repeats a few colour and font combinations
def _verdict(fg: colours.RGB, bg: colours.RGB, font_px: float, bold: bool,
             invert: bool) -> tuple[float, str, str, float] | None:
    """(ratio, fg hex, bg hex, ratio needed) when the pair is too faint, else None."""
    if invert:
        fg, bg = colours.inverted(fg), colours.inverted(bg)
    ratio = colours.contrast(fg, bg)
    need = colours.needed(font_px, bold)
    if ratio >= need:
        return None
    return ratio, colours.hex_colour(fg), colours.hex_colour(bg), need


def problems(html: str, limit_per_view: int = 5, *, tree=None) -> list[Problem]:
    """Low-contrast text, grouped by view and colour pair, worst first. `tree` is the
    email's tree when the caller has parsed it (`parsed`)."""
    if not html.strip():
        return []
    if tree is None:
        tree = parsed(html)
    if tree is None:
        return []
    rules = _stylesheet_rules(tree)
    found: dict[tuple, Problem] = {}
    presentational = _presentational(tree)
    light, dark = _declared(tree, rules, presentational)
    supports_dark = _supports_dark(tree)
    dark_page = supports_dark or not _has_own_background(tree, light)
    views = [
        ("contrast", light, LIGHT_CANVAS, (0.0, 0.0, 0.0), LINK["light"], False),
        ("dark-mode-contrast", dark, DARK_CANVAS if dark_page else LIGHT_CANVAS,
         (255.0, 255.0, 255.0) if supports_dark else (0.0, 0.0, 0.0),
         LINK["dark"] if supports_dark else LINK["light"], False),
        ("inverted-contrast", light, LIGHT_CANVAS, (0.0, 0.0, 0.0), LINK["light"], True),
    ]
    runs: dict[tuple, list] = {}  # the light and inverted views read the same runs
    for view, declared, canvas, text, link, invert in views:
        key = (id(declared), canvas, text, link)
        if key not in runs:
            runs[key] = _runs(tree, declared, canvas, text, link)
        for element, fg, bg, font_px, bold in runs[key]:
            if bg is None:
                continue
            verdict = _verdict(fg, bg, font_px, bold, invert)
            if verdict is None:
                continue
            key = (view, *verdict[1:])
            if key in found:
                found[key].count += 1
                continue
            ratio, _fg, _bg, need = verdict
            found[key] = Problem(
                view,
                f"text is {ratio:.2f}:1 {VIEWS[view]} (needs {need:g}:1): {key[1]} on "
                f"{key[2]}",
                HINTS[view], Element(element))
    ordered = sorted(found.values(), key=lambda p: (p.rule, -p.count))
    kept: list[Problem] = []
    per_view: dict[str, int] = {}
    for problem in ordered:
        per_view[problem.rule] = per_view.get(problem.rule, 0) + 1
        if per_view[problem.rule] <= limit_per_view:
            if problem.count > 1:
                problem.message += f", {problem.count} places"
            kept.append(problem)
    return kept


def parsed(html: str):
    """The lxml tree of a finished email, or None when there is no document to read (no
    text, or only a comment): what the check's rules and this pass read."""
    from lxml.etree import ParserError

    try:
        return _tree(html)
    except ParserError:
        return None
