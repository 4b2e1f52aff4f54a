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

from .errors import InputError, PublishError
from .inliner import inline_css
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
