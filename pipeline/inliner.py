"""The CSS inlined into the email with premailer, and what is kept of its work.

premailer is the inliner (the design card names it). A build and every save of the preview
call it on an email whose styles mostly repeat, so what it works out from a style (merged
declarations, float, the attributes it reads) is kept by all it is given (`_csscache`),
each result byte for byte what stock premailer makes (tests/test_email_path_kept.py).
"""

from __future__ import annotations

import html
import re
from functools import lru_cache

from . import _csscache
from .keep import kept_while_short


def _pairs_of(style) -> bool:
    return isinstance(style, list) and all(
        isinstance(p, tuple) and len(p) == 2 and all(isinstance(x, str) for x in p)
        for p in style)


def _rules_shape(found) -> bool:
    rules, leftover = found
    return (isinstance(rules, list) and isinstance(leftover, list) and all(
        isinstance(r, tuple) and len(r) == 3 and isinstance(r[0], tuple)
        and all(isinstance(n, int) for n in r[0]) and isinstance(r[1], str)
        and isinstance(r[2], str) for r in rules))


def _kept_pairs(original):
    """premailer's `csstext_to_pairs` answered from the kept results (_csscache)."""

    def csstext_to_pairs(csstext, validate=True):
        def compute():
            _csscache.quiet_cssutils()
            return list(original(csstext, validate=validate))

        if not isinstance(csstext, str):
            return compute()
        return _csscache.kept("premailer-pairs", (csstext, bool(validate)), compute,
                              _pairs_of)

    csstext_to_pairs.kept = True
    # premailer's own function takes the lock it hangs on itself, by this name
    csstext_to_pairs._lock = getattr(original, "_lock", None)
    return csstext_to_pairs


class _FloatsKept:
    """cssutils as premailer's module sees it, with each image style's float kept
    (_csscache): read once, not in every build.

    premailer parses the whole style of every <img style> only to read its `float` (for
    Outlook's align attribute): about a millisecond each, and the same few image styles
    come back in every email and every save. Its only use of `parseStyle` is that read.
    """

    def __init__(self, module):
        self._module = module

    def __getattr__(self, name: str):
        return getattr(self._module, name)

    def parseStyle(self, css_text: str):
        from types import SimpleNamespace

        return SimpleNamespace(float=_float_of(css_text))


KEEP_STYLE_LIMIT = 1024  # a longer style (a data: URI in it) is worked out each time


def _kept_merges(original):
    """premailer's `merge_styles`, its result kept by all it is given: an email's elements
    repeat a few dozen combinations of their own style and the rules' declarations, and a
    save repeats the email's."""

    @lru_cache(maxsize=4096)
    def kept(inline_style, new_styles: tuple, classes: tuple, remove_unset: bool) -> str:
        return original(inline_style, new_styles, classes,
                        remove_unset_properties=remove_unset)

    def merge_styles(inline_style, new_styles, classes, remove_unset_properties=False):
        if (not isinstance(inline_style, str) or len(inline_style) > KEEP_STYLE_LIMIT
                or not all(isinstance(c, str) for c in classes)):
            return original(inline_style, new_styles, classes,
                            remove_unset_properties=remove_unset_properties)
        styles = tuple(tuple(style) for style in new_styles)
        try:
            if sum(len(k) + len(v) for style in styles for k, v in style) <= KEEP_STYLE_LIMIT * 4:
                return kept(inline_style, styles, tuple(classes), bool(remove_unset_properties))
        except (TypeError, ValueError):  # pairs of another shape: premailer's own answer
            pass
        return original(inline_style, new_styles, classes,
                        remove_unset_properties=remove_unset_properties)

    merge_styles.kept = True
    merge_styles.cache = kept
    merge_styles.original = original
    return merge_styles


@kept_while_short(4096, KEEP_STYLE_LIMIT)
def _basic_attributes(style_content: str) -> tuple[tuple[str, str], ...]:
    """The HTML attributes premailer's `_style_to_basic_html_attributes` reads from a
    style, in its order (its own code, without the element)."""
    from collections import OrderedDict

    from premailer import Premailer

    if style_content.count("}") and style_content.count("{") == style_content.count("}"):
        style_content = style_content.split("}")[0][1:]
    attributes = OrderedDict()
    for key, value in [x.split(":") for x in style_content.split(";")
                       if len(x.split(":")) == 2]:
        key = key.strip()
        if key == "text-align":
            attributes["align"] = value.strip()
        elif key == "vertical-align":
            attributes["valign"] = value.strip()
        elif key == "background-color" and "transparent" not in value.lower():
            attributes["bgcolor"] = Premailer.six_color(value.strip())
        elif key == "width" or key == "height":
            value = value.strip()
            if value.endswith("px"):
                value = value[:-2]
            attributes[key] = value
    return tuple(attributes.items())


@lru_cache(maxsize=1)
def _inliner_class():
    """premailer, with what it reads with cssutils kept between runs (_csscache).

    The stylesheet is the templates' (the same from build to build, and from save to
    save in the preview), and the inline styles MJML writes repeat from issue to issue:
    a build whose every style was seen before neither imports cssutils nor parses CSS.
    premailer has no hook for its style pairs, so the two names it calls them by are
    pointed at the kept ones (the same function, answered from the file).
    """
    from . import lazy

    lazy.defer("cssutils")  # premailer imports it; loaded only when a result is computed
    from premailer import Premailer, merge_style
    from premailer import premailer as premailer_module

    for module in (premailer_module, merge_style):
        if not getattr(module.csstext_to_pairs, "kept", False):
            module.csstext_to_pairs = _kept_pairs(module.csstext_to_pairs)

    if not getattr(premailer_module.merge_styles, "kept", False):
        premailer_module.merge_styles = _kept_merges(premailer_module.merge_styles)

    if not isinstance(premailer_module.cssutils, _FloatsKept):
        premailer_module.cssutils = _FloatsKept(premailer_module.cssutils)

    class Inliner(Premailer):
        def _style_to_basic_html_attributes(self, element, style_content, force=False):
            # premailer's own, with what it reads from the style kept by the style's text
            disabled = self.disable_basic_attributes
            for key, value in _basic_attributes(style_content):
                if (key in element.attrib and not force) or key in disabled:
                    continue
                element.attrib[key] = value

        def _parse_style_rules(self, css_body, ruleset_index):
            # What premailer does with the leftover rules (media queries) is only used
            # when it writes them back into the head; with these options it never does,
            # so only their number is kept.
            if not (self.disable_leftover_css and self.keep_style_tags
                    and isinstance(css_body, str)):
                return super()._parse_style_rules(css_body, ruleset_index)

            def compute():
                _csscache.quiet_cssutils()
                rules, leftover = super(Inliner, self)._parse_style_rules(
                    css_body, ruleset_index)
                return (list(rules),
                        [item if isinstance(item, tuple) else "@media" for item in leftover])

            key = (css_body, ruleset_index, bool(self.strip_important),
                   bool(self.disable_validation), bool(self.exclude_pseudoclasses),
                   bool(self.include_star_selectors))
            rules, leftover = _csscache.kept("premailer-rules", key, compute, _rules_shape)
            return list(rules), list(leftover)  # premailer extends what it is given

    return Inliner


def _float_of(style: str) -> str:
    def compute():
        value = _csscache.quiet_cssutils().parseStyle(style).float
        return value if isinstance(value, str) else ""

    return _csscache.kept("float", style, compute, lambda v: isinstance(v, str))


def inline_css(document: str, css: str) -> str:
    """Inline `css` into the body with premailer; MJML's own <style> blocks stay as they are.

    MJML's head styles (resets, responsive columns, our dark mode) are meant to stay in
    the head, so premailer is told to ignore them: that keeps their `!important`, which
    MJML's responsive columns need, and saves most of premailer's time. premailer also
    drops the doctype, without which clients render in quirks mode; it is put back.
    """
    document = document.replace("<style", '<style data-premailer="ignore"')
    inliner = _inliner_class()(
        document,
        css_text=css,
        allow_network=False,
        strip_important=False,
        keep_style_tags=True,
        remove_classes=False,
        disable_validation=True,
        disable_leftover_css=True,
        # Our width attributes are what Outlook sizes images by; never replace them by CSS.
        disable_basic_attributes=["width", "height"],
    )
    return _finished(inliner.transform(pretty_print=False))


def _finished(result: str) -> str:
    """premailer's output as the email has it: the style blocks' marks removed, the doctype
    put back, in-page anchors unescaped."""
    result = result.replace(' data-premailer="ignore"', "")
    result = re.sub(r"^\s*<!doctype[^>]*>\s*", "", result, flags=re.I)
    result = _unescape_anchors(result)
    return f"<!doctype html>\n{result}"


# lxml percent-encodes non-ASCII in `href` and `name`, so `#更新` would no longer match
# `id="更新"` character for character; mail clients that compare names literally need that.
_IN_PAGE_ANCHOR = re.compile(r'\b(href="#|name=")([^"]*%[0-9A-Fa-f]{2}[^"]*)"')


def _unescape_anchors(document: str) -> str:
    """`_IN_PAGE_ANCHOR.sub(_unescape_anchor, document)`, trying the pattern only where
    one of its two openings is (str.find), not at every character of the email."""
    parts: list[str] = []
    done = at = 0
    while True:
        starts = [found for found in (document.find('href="#', at), document.find('name="', at))
                  if found >= 0]
        if not starts:
            break
        at = min(starts)
        match = _IN_PAGE_ANCHOR.match(document, at)
        if match is None:
            at += 1
            continue
        parts += [document[done:at], _unescape_anchor(match)]
        done = at = match.end()
    if not parts:
        return document
    parts.append(document[done:])
    return "".join(parts)


def _unescape_anchor(match: re.Match) -> str:
    from urllib.parse import unquote

    return f'{match.group(1)}{html.escape(unquote(match.group(2)), quote=True)}"'
