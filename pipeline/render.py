"""Render an issue's email-safe fragment into the final email: Jinja2 -> MJML -> HTML -> inlined.

This runs once per issue. What differs per recipient is left as `%%token%%` placeholders
that `personalize` fills in, so sending never re-renders.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from . import _csscache
from .errors import InputError, PublishError
from .issue import Issue, Person
from .plaintext import underline
from .settings import Settings
from .templates import bytecode_cache, edited_loader
from .tokens import Tokens, packaged_tokens

TOKENS = ("unsubscribe_url", "email", "name")
_PREHEADER_SPACER = "\u200c\u00a0" * 90
_MSO = re.compile(r"<!--\[if")


@dataclass
class Email:
    """The finished email, tokens still in place for each reader."""

    subject: str
    preheader: str
    html: str  # with %%token%% placeholders
    text: str  # with %%token%% placeholders
    lang: str
    warnings: list[str] = field(default_factory=list)


def token(name: str) -> str:
    return f"%%{name}%%"


_TOKEN = re.compile("%%(" + "|".join(TOKENS) + ")%%")


def split_tokens(template: str) -> list[str]:
    """The template cut at its placeholders: literal text at even places, token names at odd."""
    return _TOKEN.split(template)


def fill(segments: list[str], values: dict[str, str], *, escape: bool) -> str:
    """Join split segments with each token's value (HTML-escaped for the HTML part)."""
    parts = segments.copy()
    for i in range(1, len(parts), 2):
        value = values.get(parts[i], "")
        parts[i] = html.escape(value) if escape else value
    return "".join(parts)


def personalize(template: str, values: dict[str, str], *, escape: bool) -> str:
    """Fill `%%token%%` placeholders; values are HTML-escaped for the HTML part."""
    return fill(split_tokens(template), values, escape=escape)


def font_stack(lang: str, look: Tokens | None = None) -> str:
    """The body fonts: Traditional Chinese gets its own CJK fonts first, whose glyph shapes
    follow its script's conventions."""
    from .language import TRADITIONAL_CHINESE

    look = look or packaged_tokens()
    if lang.lower().startswith(TRADITIONAL_CHINESE):
        return look.font_stack("latin", "chinese_traditional", "chinese_simplified")
    return look.font_stack("latin", "chinese_simplified")


def choose_language(issue: Issue, settings: Settings) -> str:
    """The front matter's `lang`, else the language of the prose, else the setting."""
    from .language import choose

    return choose(issue, settings).lang


def greeting(issue: Issue, settings: Settings, s: dict[str, str]) -> str:
    """The line above the article, if the newsletter or the issue asks for one.

    Off unless the `greeting` setting or the issue's `greeting:` says otherwise: text is
    used as written (merge tags such as %%name%% are filled per recipient), `true` or
    "auto" is the issue language's own greeting, `false` or "" is none.
    """
    value = issue.meta.get("greeting", settings.greeting)
    if value is None or value is False:
        return ""
    if value is True:
        return s["greeting"]
    if not isinstance(value, str | int | float):
        raise InputError("front matter 'greeting' must be text, true or false", issue.path,
                         issue.meta_lines.get("greeting"))
    value = " ".join(str(value).split())
    return s["greeting"] if value.lower() == "auto" else value


def unknown_merge_tags(text: str) -> list[str]:
    """`%%tags%%` in `text` that sending would not fill."""
    return [tag for tag in re.findall(r"%%([^%\s]*)%%", text) if tag not in TOKENS]


def _join(names: list[str], s: dict[str, str]) -> str:
    if len(names) <= 1:
        return "".join(names)
    return s["list_separator"].join(names[:-1]) + f" {s['and']} " + names[-1]


def _person(person: Person, settings: Settings, s: dict[str, str], look: Tokens) -> str:
    name = html.escape(person.name)
    if person.user and settings.profile_url:
        url = html.escape(settings.profile_url.format(user=person.user), quote=True)
        name = f'<a href="{url}" style="color:{look.light["muted"]};">{name}</a>'
    return name


def format_date(issue: Issue, s: dict[str, str]) -> str:
    if issue.date is None:
        return ""
    months = s.get("month_names", "").split(",")
    month_name = months[issue.date.month - 1] if len(months) == 12 else str(issue.date.month)
    return s["date_format"].format(
        year=issue.date.year, month=issue.date.month, day=issue.date.day, month_name=month_name
    )


def template_context(issue: Issue, settings: Settings, s: dict[str, str], lang: str,
                     body: str, preheader: str, headline: str = "",
                     look: Tokens | None = None) -> dict:
    """What issue.mjml.j2 and email.css.j2 see: the issue, the settings' words, the tokens."""
    from markupsafe import Markup

    look = look or packaged_tokens()

    def names(people: list[Person]) -> str:
        return _join([_person(p, settings, s, look) for p in people], s)

    byline = s["byline"].format(names=names(list(issue.authors))) if issue.authors else ""
    translators = [p for p in issue.translators if not p.proofreader]
    proofreaders = [p for p in issue.translators if p.proofreader]
    credits = s["credits_separator"].join(
        [s["translated_by"].format(names=names(translators))] * bool(translators)
        + [s["proofread_by"].format(names=names(proofreaders))] * bool(proofreaders)
    )
    web_url = settings.web_url.format(slug=issue.slug) if settings.web_url else ""
    return {
        "lang": lang,
        "title": issue.title,
        "headline": headline or issue.title,
        "greeting": greeting(issue, settings, s),
        "subtitle": issue.subtitle,
        "preheader": preheader,
        "preheader_spacer": _PREHEADER_SPACER,
        "font_stack": font_stack(lang, look),
        "newsletter_name": settings.name,
        "date_text": format_date(issue, s),
        "web_url": web_url,
        "byline": Markup(byline),
        "credits": Markup(credits),
        "body": Markup(body),
        "why_received": s["why_received"].format(name=settings.name),
        "unsubscribe_url": token("unsubscribe_url"),
        "postal_address": settings.postal_address,
        "s": s,
        **look.template_globals(),
    }


@lru_cache(maxsize=8)
def _environment(folder: Path):
    """One Jinja2 environment per templates folder, kept for the life of the process.

    Jinja2 keeps each template it compiled and compiles it again only when its file's
    text changes (templates.edited_loader), so a preview or a site rebuild compiles
    nothing that was not edited (compiling the email's templates is ~20 ms of each build
    otherwise).
    """
    import jinja2

    return jinja2.Environment(
        loader=edited_loader(folder),
        # HTML and MJML are escaped; CSS is not (quotes in font names must stay quotes).
        autoescape=lambda name: not (name or "").endswith(".css.j2"),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        bytecode_cache=bytecode_cache("email"),
    )


def render_mjml(folder: Path, context: dict) -> str:
    import jinja2

    try:
        return _environment(folder).get_template("issue.mjml.j2").render(context)
    except jinja2.TemplateSyntaxError as exc:
        raise InputError(f"template error: {exc.message}", exc.filename, exc.lineno) from None
    except jinja2.TemplateError as exc:
        raise InputError(f"template error: {exc}", folder / "issue.mjml.j2") from None


def read_css(folder: Path, context: dict | None = None) -> str:
    """The CSS to inline: email.css.j2 filled with the tokens, else a plain email.css (from
    before tokens), else none."""
    import jinja2

    if (folder / "email.css.j2").is_file():
        try:
            return _environment(folder).get_template("email.css.j2").render(
                context or packaged_tokens().template_globals())
        except jinja2.TemplateSyntaxError as exc:
            raise InputError(f"template error: {exc.message}", exc.filename,
                             exc.lineno) from None
        except (jinja2.TemplateError, UnicodeDecodeError) as exc:
            raise InputError(f"template error: {exc}", folder / "email.css.j2") from None
    path = folder / "email.css"
    try:
        return path.read_text("utf-8")
    except FileNotFoundError:
        return ""
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read the email CSS: {exc}", path) from None


def mjml_to_html(mjml_source: str) -> str:
    from mjml import mjml2html

    try:
        return mjml2html(mjml_source, disable_comments=True, fonts={})
    except ValueError as exc:
        raise PublishError(f"MJML could not render the email: {exc}") from None


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


def _basic_attributes(style: str) -> tuple[tuple[str, str], ...]:
    if len(style) > KEEP_STYLE_LIMIT:
        return _basic_attributes_kept.__wrapped__(style)
    return _basic_attributes_kept(style)


@lru_cache(maxsize=4096)
def _basic_attributes_kept(style_content: str) -> tuple[tuple[str, str], ...]:
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



_PRE_BLOCK = re.compile(r"<pre\b.*?</pre>", re.S | re.I)
_NEWLINE_BETWEEN_TAGS = re.compile(r">[ \t]*\n\s*<")


def keep_whitespace(fragment: str) -> str:
    """Protect whitespace that MJML's parser would drop.

    mrml drops text nodes that are only whitespace with a line break, which glues words
    together (`<b>a</b>\n<i>b</i>` reads "ab") and joins lines of code. Newlines in
    `<pre>` become `&#10;`; elsewhere such a node becomes one space.
    """
    parts = []
    last = 0
    for match in _PRE_BLOCK.finditer(fragment):
        parts.append(_NEWLINE_BETWEEN_TAGS.sub("> <", fragment[last : match.start()]))
        parts.append(match.group(0).replace("\n", "&#10;"))
        last = match.end()
    parts.append(_NEWLINE_BETWEEN_TAGS.sub("> <", fragment[last:]))
    return "".join(parts)


def render(issue: Issue, fragment: str, text_body: str, settings: Settings,
           template_folder: Path, strings: dict[str, str], lang: str,
           headline: str = "", look: Tokens | None = None) -> Email:
    """Wrap the fragment in the newsletter's template; return the finished email and its text.

    `headline` is what the header prints (the title unless the body's opening heading said
    it better; see headline.split). `look` is the newsletter's tokens (publish's own by
    default).
    """
    from . import preheader as preheader_mod

    warnings: list[str] = []
    preheader = issue.preheader or preheader_mod.derive(fragment, issue.title)
    context = template_context(
        issue, settings, strings, lang, keep_whitespace(fragment), preheader, headline, look
    )
    unknown = unknown_merge_tags(context["greeting"])
    if unknown:
        known = ", ".join(f"%%{name}%%" for name in TOKENS)
        where = (f"{issue.path}:{issue.meta_lines['greeting']}" if "greeting" in issue.meta
                 else "the greeting setting")
        warnings.append(f"{where}: the greeting uses {', '.join(f'%%{t}%%' for t in unknown)}, "
                        f"which sending does not fill (merge tags: {known})")
    mjml_source = render_mjml(template_folder, context)
    rendered = mjml_to_html(mjml_source)
    conditionals = len(_MSO.findall(rendered))
    final = inline_css(rendered, read_css(template_folder, context))
    if len(_MSO.findall(final)) != conditionals:
        raise PublishError("CSS inlining changed the Outlook conditional comments")
    text = render_text(issue, context, text_body, strings)
    return Email(issue.title, preheader, final, text, lang, warnings)


def _strip_tags(markup: str) -> str:
    return html.unescape(re.sub(r"<[^>]+>", "", str(markup)))


def render_text(issue: Issue, context: dict, body: str, s: dict[str, str]) -> str:
    """The plain-text part: the same header, body and footer as the HTML."""
    masthead = context["newsletter_name"]
    if context["date_text"]:
        masthead += f" · {context['date_text']}"
    head = [masthead]
    if context["web_url"]:
        head.append(f"{s['view_in_browser']}: {context['web_url']}")
    lines = ["\n".join(head), underline(context["headline"], "=")]
    for key in ("subtitle", "byline", "credits"):
        if context[key]:
            lines.append(_strip_tags(context[key]))
    if context["greeting"]:
        lines.append(context["greeting"])
    lines.append(body.strip())
    lines.append(
        "-- \n"
        f"{context['why_received']}\n"
        f"{s['unsubscribe']}: {token('unsubscribe_url')}\n"
        f"{context['postal_address']}"
    )
    return "\n\n".join(lines) + "\n"
