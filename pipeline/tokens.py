"""The email's look: design tokens from `email_templates/tokens.toml`, and its partials.

Widths, fonts and colours are read from one file that the layout, the stylesheet, the card
and callout partials and the build's own stages all use, so a different look is an edit
to templates, never to Python. The tokens that ship with publish hold every value; a
newsletter's own `tokens.toml` overrides any of them. A value the email cannot use stops
the build with one line naming the file and the line.
"""

from __future__ import annotations

import copy
import re
import tomllib
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from pathlib import Path

from .errors import InputError
from .templates import bytecode_cache, edited_loader
from .toml_lines import key_lines

FILE = "tokens.toml"

# What each token is. px: whole pixels in a range; number: a decimal in a range; colour:
# #rgb or #rrggbb; pair: a light and a dark colour; fonts: a CSS font list; lengths: CSS
# lengths such as "12px 14px"; palette: a Pygments style name.
SCHEMA: dict[str, dict[str, tuple]] = {
    "layout": {
        "body_width": ("px", 320, 1200),
        "gutter": ("px", 0, 120),
    },
    "fonts": {name: ("fonts",) for name in (
        "latin", "chinese_simplified", "chinese_traditional", "generic", "code")},
    "code": {
        "background": ("colour",),
        "text": ("colour",),
        "palette": ("palette",),
        "font_size": ("px", 8, 40),
        "inline_font_size": ("px", 8, 40),
        "line_height": ("number", 1.0, 3.0),
        "padding": ("lengths",),
        "radius": ("px", 0, 40),
    },
    "colours": {
        **{name: ("pair",) for name in (
            "page", "paper", "text", "link", "muted", "border", "shade", "on_card")},
        # One colour: in dark mode the element shows the named pair's dark colour (or,
        # for None, keeps this one).
        "heading": ("colour", "text"),
        "secondary": ("colour", "text"),
        "code_span": ("colour", "shade"),
        "accent": ("colour", None),
        "card_bar": ("colour", "shade"),
        "card_caption": ("colour", "muted"),
        **{f"callout_{kind}": ("colour", "border")
           for kind in ("note", "tip", "important", "warning", "caution")},
    },
}
MAX_BYTES = 256 * 1024
MIN_CONTENT_WIDTH = 240  # px: narrower, and a card's caption no longer fits beside its mark

_COLOUR = re.compile(r"#(?:[0-9a-fA-F]{3}|[0-9a-fA-F]{6})")
_LENGTH = r"(?:0|\d{1,3}(?:\.\d+)?(?:px|em))"
_LENGTHS = re.compile(rf"{_LENGTH}(?: {_LENGTH}){{0,3}}")
# A font name: quoted in single quotes, or bare; never what could end a CSS declaration,
# an HTML attribute or a style block.
_FONT = re.compile(r"'[^'\"\\;{}<>\x00-\x1f\x7f]+'|[^'\"\\;{}<>,\x00-\x1f\x7f]+")


@dataclass(frozen=True)
class Tokens:
    """The validated tokens: layout, fonts and code as written, colours split by mode."""

    layout: dict[str, int]
    fonts: dict[str, str]
    code: dict
    light: dict[str, str]  # every colour's light value
    dark: dict[str, str]  # the dark value of each light/dark pair
    # Where partials are looked for: the newsletter's own templates first, then publish's.
    folders: tuple[Path, ...] = field(default=(), compare=False)

    @property
    def content_width(self) -> int:
        """What images and cards are sized to: the column less its gutters."""
        return self.layout["body_width"] - 2 * self.layout["gutter"]

    def font_stack(self, *names: str) -> str:
        """The named font lists joined, then the generic family."""
        return ", ".join([*(self.fonts[name] for name in names), self.fonts["generic"]])

    def template_globals(self) -> dict:
        """What every template sees of the tokens."""
        return {"layout": {**self.layout, "content_width": self.content_width},
                "fonts": self.fonts, "code": self.code, "light": self.light,
                "dark": self.dark}

    def partial_file(self, names: str | list[str]) -> Path:
        """The file the first of the partials `names` there is is read from."""
        return _template_file(self.folders, names)

    @cached_property
    def _partials(self):
        return partials_environment(self.folders)

    def partial(self, names: str | list[str], *, compact: bool = False, **context) -> str:
        """Render the first partial of `names` there is (e.g. `cards/media.html.j2`), with
        the tokens in scope. `compact` drops line breaks and indentation between tags."""
        import jinja2

        try:
            template = self._partials.get_or_select_template(names)
            markup = template.render({**self.template_globals(), **context})
        except jinja2.TemplateSyntaxError as exc:
            raise InputError(f"template error: {exc.message}", exc.filename,
                             exc.lineno) from None
        except jinja2.TemplateNotFound as exc:
            raise InputError(f"template {exc.name} is missing", self.folders[-1]) from None
        except jinja2.TemplateError as exc:
            where = _template_file(self.folders, names)
            raise InputError(f"template error: {exc}", where) from None
        return _BETWEEN_TAGS.sub("><", markup).strip() if compact else markup


_BETWEEN_TAGS = re.compile(r">[ \t]*\n\s*<")


def _template_file(folders: tuple[Path, ...], names: str | list[str]) -> Path:
    names = [names] if isinstance(names, str) else names
    return next((folder / name for name in names for folder in folders
                 if (folder / name).is_file()), folders[-1] / names[-1])


@lru_cache(maxsize=16)
def partials_environment(folders: tuple[Path, ...]):
    """One Jinja environment per search path; a changed partial is read again."""
    import jinja2

    return jinja2.Environment(
        loader=jinja2.ChoiceLoader([edited_loader(f) for f in folders]),
        autoescape=True, undefined=jinja2.StrictUndefined, keep_trailing_newline=True,
        auto_reload=True, bytecode_cache=bytecode_cache("partials"))


# reading ---------------------------------------------------------------------------------
def packaged_folder() -> Path:
    from .templates import skeleton_dir

    return skeleton_dir() / "email_templates"


def _packaged_values() -> dict:
    path = packaged_folder() / FILE
    values, lines = _read(path)
    missing = [f"{table}.{key}" for table, keys in SCHEMA.items() for key in keys
               if key not in values.get(table, {})
               or (SCHEMA[table][key][0] == "pair" and len(values[table][key]) != 2)]
    if missing:
        raise InputError(f"the packaged tokens lack {', '.join(missing)}", path)
    _check_content_width(values, path, lines)
    return values


def packaged_tokens() -> Tokens:
    """The tokens that ship with publish, with only publish's own partials."""
    return _tokens(_packaged_values(), (packaged_folder(),))


def load_tokens(folder: Path | None) -> Tokens:
    """The tokens for a newsletter whose own templates live in `folder`.

    Its `tokens.toml`, if there is one, overrides the packaged values key by key; its
    partials, if it has any, are used before the packaged ones. A folder made before
    tokens existed builds with the packaged look.
    """
    base = packaged_folder()
    folders = (base,)
    values = _packaged_values()
    if folder is not None and folder.is_dir() and folder.resolve() != base.resolve():
        folders = (folder, base)
        own = folder / FILE
        if own.exists() or own.is_symlink():
            own_values, lines = _read(own)
            values = _merge(values, own_values)
            _check_content_width(values, own, lines)
    return _tokens(values, folders)


def _read(path: Path) -> tuple[dict, dict]:
    """`_validated(path)`, worked out again only when the file's text changed (a preview
    rebuilds often): kept by the text itself, so an edit within the same tick of the
    modification time is seen too."""
    try:
        if not path.is_file() or path.stat().st_size > MAX_BYTES:
            return _validated(path)  # says why it cannot be used
        text = path.read_text("utf-8")
    except (OSError, UnicodeDecodeError):
        return _validated(path)  # says why it cannot be read
    if len(text) > MAX_BYTES:  # grown since
        return _validated(path)
    return _validated_text(path, text)


@lru_cache(maxsize=32)
def _validated_text(path: Path, text: str) -> tuple[dict, dict]:
    return _checked(path, text)


def _tokens(values: dict, folders: tuple[Path, ...]) -> Tokens:
    colours = values["colours"]
    light = {name: (value["light"] if isinstance(value, dict) else value)
             for name, value in colours.items()}
    dark = {name: value["dark"] for name, value in colours.items() if isinstance(value, dict)}
    return Tokens(dict(values["layout"]), dict(values["fonts"]), dict(values["code"]),
                  light, dark, folders)


def _merge(base: dict, own: dict) -> dict:
    """`own` over `base`, key by key; a pair given one colour keeps the other."""
    merged = copy.deepcopy(base)
    for table, keys in own.items():
        for key, value in keys.items():
            if isinstance(value, dict):
                merged[table][key] = {**merged[table][key], **value}
            else:
                merged[table][key] = value
    return merged


def _check_content_width(values: dict, path: Path, lines: dict) -> None:
    width, gutter = values["layout"]["body_width"], values["layout"]["gutter"]
    if width - 2 * gutter < MIN_CONTENT_WIDTH:
        key = ("layout", "gutter") if ("layout", "gutter") in lines else ("layout", "body_width")
        raise _error(f"layout.body_width {width} less twice the gutter {gutter} leaves "
                     f"{width - 2 * gutter} px for images and text; it needs at least "
                     f"{MIN_CONTENT_WIDTH}", path, lines, key)


def _validated(path: Path) -> tuple[dict, dict]:
    """The file's tokens, every one checked (InputError with the line for the first bad
    one), and the line of each key."""
    try:
        if not path.is_file():
            raise InputError("cannot read the tokens: not a file", path)
        if path.stat().st_size > MAX_BYTES:
            raise InputError(f"the tokens file is over {MAX_BYTES // 1024} KB; it holds a "
                             "few dozen values", path)
        text = path.read_text("utf-8")
    except UnicodeDecodeError:
        raise InputError("cannot read the tokens: the file is not UTF-8 text", path) from None
    except OSError as exc:
        raise InputError(f"cannot read the tokens: {exc.strerror or exc}", path) from None
    return _checked(path, text)


def _checked(path: Path, text: str) -> tuple[dict, dict]:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        found = re.search(r"\(at line (\d+), column \d+\)$", message)
        line = int(found.group(1)) if found else None
        message = re.sub(r"\s*\(at (?:line \d+, column \d+|end of document)\)$", "", message)
        raise InputError(f"not valid TOML: {message}", path, line) from None
    lines = key_lines(text)
    checked: dict = {}
    for table, keys in data.items():
        if table not in SCHEMA:
            raise _error(f"unknown table [{table}]{_suggest(table, SCHEMA)}", path, lines,
                         (table,))
        if not isinstance(keys, dict):
            raise _error(f"{table} must be a table: [{table}]", path, lines, (table,))
        checked[table] = {key: _check(table, key, value, path, lines)
                          for key, value in keys.items()}
    return checked, lines


def _check(table: str, key: str, value, path: Path, lines: dict):
    """`value` if it is a `table.key` the email can use, else InputError at its line."""
    if key not in SCHEMA[table]:
        raise _error(f"unknown token {table}.{key}{_suggest(key, SCHEMA[table])}",
                     path, lines, (table, key))
    kind, *limits = SCHEMA[table][key]
    why = _CHECKS[kind](value, *limits)
    if why:
        raise _error(f"{table}.{key} {why}", path, lines, (table, key))
    return value.strip() if kind == "lengths" else value


def _px(value, low: int, high: int) -> str:
    if isinstance(value, bool) or not isinstance(value, int):
        return f"must be a whole number of pixels from {low} to {high}, not {_shown(value)}"
    return "" if low <= value <= high else f"must be from {low} to {high} (pixels), not {value}"


def _number(value, low: float, high: float) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return f"must be a number from {low} to {high}, not {_shown(value)}"
    return "" if low <= value <= high else f"must be from {low} to {high}, not {value}"


def _colour(value, follows: str | None = None) -> str:
    if isinstance(value, dict):
        dark = (f"dark mode shows it as colours.{follows}'s dark" if follows
                else "it is the same in dark mode")
        return f"takes one colour, not a table ({dark})"
    if isinstance(value, str) and _COLOUR.fullmatch(value):
        return ""
    return f'must be a colour like "#c2410c" (#rgb or #rrggbb), not {_shown(value)}'


def _pair(value) -> str:
    if not isinstance(value, dict) or not value:
        return ('takes a light and a dark colour, { light = "#…", dark = "#…" }, '
                f"not {_shown(value)}")
    for mode, colour in value.items():
        if mode not in ("light", "dark"):
            return f"has a light and a dark colour, not {mode!r}"
        why = _colour(colour)
        if why:
            return f"{mode} {why}"
    return ""


def _fonts(value) -> str:
    if isinstance(value, str) and value.strip() and all(
            _FONT.fullmatch(name.strip()) for name in value.split(",")):
        return ""
    return ("must be a CSS font list like \"Georgia, 'Times New Roman', serif\" (names "
            f"with spaces in single quotes), not {_shown(value)}")


def _lengths(value) -> str:
    if isinstance(value, str) and _LENGTHS.fullmatch(value.strip()):
        return ""
    return f'must be one to four lengths like "12px 14px", not {_shown(value)}'


def _palette(value) -> str:
    if isinstance(value, str) and _known_palette(value):
        return ""
    return f'must be the name of a Pygments style like "github-dark", not {_shown(value)}'


_CHECKS = {"px": _px, "number": _number, "colour": _colour, "pair": _pair, "fonts": _fonts,
           "lengths": _lengths, "palette": _palette}


def _known_palette(name: str) -> bool:
    from pygments.styles import STYLE_MAP

    if name in STYLE_MAP:
        return True
    from pygments.styles import get_style_by_name
    from pygments.util import ClassNotFound

    try:
        get_style_by_name(name)
    except ClassNotFound:
        return False
    return True


def _shown(value) -> str:
    if isinstance(value, str):
        return repr(value if len(value) <= 40 else value[:37] + "…")
    if isinstance(value, dict):
        return "a table"
    return repr(value) if len(repr(value)) <= 40 else type(value).__name__


def _suggest(name: str, known) -> str:
    import difflib

    close = difflib.get_close_matches(name, list(known), n=1)
    return f" (did you mean {close[0]}?)" if close else f" (known: {', '.join(known)})"


def _error(message: str, path: Path, lines: dict, key: tuple[str, ...]) -> InputError:
    return InputError(message, path, _line(lines, key))


def _line(lines: dict, key: tuple[str, ...]) -> int | None:
    """The line that sets `key`, or its table's, or None."""
    for size in range(len(key), 0, -1):
        if key[:size] in lines:
            return lines[key[:size]]
    return None
