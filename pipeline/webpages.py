"""The newsletter's web pages, in the reader's language: templates and words.

The templates are `email_templates/web/*.html.j2` and the words `email_templates/web/strings/
<lang>.toml`; a newsletter without its own `web/` folder uses the ones shipped with publish.
Jinja2 escapes every value, so an address or a name shown on a page is never markup.
"""

from __future__ import annotations

import functools
import tomllib
from pathlib import Path

from . import templates
from .errors import InputError
from .settings import Settings


def web_dir(settings: Settings) -> Path:
    own = settings.root / settings.templates_dir / "web"
    if (own / "base.html.j2").is_file():
        return own
    return templates.skeleton_dir() / "email_templates" / "web"


def known_languages(settings: Settings) -> list[str]:
    return sorted(p.stem for p in (web_dir(settings) / "strings").glob("*.toml"))


@functools.lru_cache(maxsize=64)
def _read(path: Path, mtime: float) -> dict[str, str]:
    try:
        data = tomllib.loads(path.read_text("utf-8"))
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read the web page strings: {exc}", path) from None
    return {str(k): str(v) for k, v in data.items()}


def _file(path: Path) -> dict[str, str]:
    return _read(path, path.stat().st_mtime if path.exists() else 0.0)


def language_name(settings: Settings, lang: str) -> str:
    """The strings file for `lang` ('zh-CN' → zh, 'zh-TW' → zh-Hant); InputError if none."""
    from .language import require_strings_name

    if not lang or len(lang) > 35 or not all(c.isalnum() or c == "-" for c in lang):
        raise InputError(f"unknown language {lang[:40]!r}")
    folder = web_dir(settings) / "strings"
    return require_strings_name(lang, known_languages(settings), folder)[0]


def strings(settings: Settings, lang: str) -> dict[str, str]:
    """The words for `lang`, over English for any key a translation lacks."""
    name = language_name(settings, lang)
    folder = web_dir(settings) / "strings"
    base = _file(folder / "en.toml") if name != "en" else {}
    return {**base, **_file(folder / f"{name}.toml")}


def negotiate(settings: Settings, accept_language: str) -> str:
    """The first language of an Accept-Language header that has words, else the setting's."""
    choices = []
    for part in accept_language.split(",")[:20]:
        tag, _, params = part.strip().partition(";")
        weight = 1.0
        if params.strip().startswith("q="):
            try:
                weight = float(params.strip()[2:])
            except ValueError:
                weight = 0.0
        if tag and tag != "*":
            choices.append((-weight, len(choices), tag))
    for _, _, tag in sorted(choices):
        try:
            language_name(settings, tag)
            return tag
        except InputError:
            continue
    try:
        language_name(settings, settings.language)
        return settings.language
    except InputError:
        return "en"


@functools.lru_cache(maxsize=8)
def _environment(folder: Path):
    import jinja2

    return jinja2.Environment(loader=jinja2.FileSystemLoader(str(folder)), autoescape=True,
                              auto_reload=True, undefined=jinja2.StrictUndefined,
                              bytecode_cache=templates.bytecode_cache("web"))


def render(settings: Settings, template: str, lang: str, s: dict[str, str], *, title: str,
           home: str, subscribe_page: str, feed: str = "", noindex: bool = False,
           **context) -> str:
    """One page: the site's bar (name, archive, feed, subscribe), a title and the content."""
    env = _environment(web_dir(settings))
    return env.get_template(template).render(
        lang=lang, s=s, name=settings.name, title=title, home=home, feed=feed,
        subscribe_page=subscribe_page, noindex=noindex, **context)
