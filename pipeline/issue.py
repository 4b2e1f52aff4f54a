"""Read an issue: YAML front matter and a Markdown body, with line numbers kept for errors."""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import InputError

_FENCE = re.compile(r"^---[ \t]*$")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_LANG_TAG = re.compile(r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})*$")


@dataclass(frozen=True)
class Person:
    """An author or guest named in the front matter."""

    name: str
    user: str = ""
    guest: bool = False
    org: str = ""
    proofreader: bool = False


@dataclass(frozen=True)
class Issue:
    """An issue file read: its front matter and its Markdown body."""

    path: Path
    slug: str
    title: str
    body: str
    # Line of the file on which the body starts (1-based), so body lines map to file lines.
    body_line: int
    meta: dict[str, Any] = field(default_factory=dict)
    subtitle: str = ""
    date: dt.date | None = None
    authors: tuple[Person, ...] = ()
    translators: tuple[Person, ...] = ()
    thumbnail: str = ""
    preheader: str = ""
    lang: str = ""
    warnings: tuple[str, ...] = ()
    # File line of each top-level front matter key, for errors about its value.
    meta_lines: dict[str, int] = field(default_factory=dict)

    def where(self, body_line: int | None) -> str:
        """`path:line` for a 1-based line of the body, as editors see it in their file."""
        if body_line is None:
            return str(self.path)
        return f"{self.path}:{self.body_line + body_line - 1}"

    def line_of(self, needle: str, nth: int = 0) -> int | None:
        """The body line (1-based) of the nth occurrence of `needle`, for error messages."""
        start = -1
        for _ in range(nth + 1):
            start = self.body.find(needle, start + 1)
            if start < 0:
                return None
        return self.body.count("\n", 0, start) + 1


MAX_ISSUE_BYTES = 10 * 1024 * 1024


def read_text(path: Path) -> str:
    """The issue's text; only a regular file, and at most MAX_ISSUE_BYTES of it, is read."""
    import stat

    try:
        mode = path.stat().st_mode
        if stat.S_ISDIR(mode):
            raise InputError("is a folder, not an issue file", path)
        if not stat.S_ISREG(mode):
            raise InputError("is not a regular file (a pipe, device or socket); "
                             "give the issue's Markdown file", path)
        with path.open("rb") as handle:
            raw = handle.read(MAX_ISSUE_BYTES + 1)
    except FileNotFoundError:
        raise InputError("no such file", path) from None
    except IsADirectoryError:
        raise InputError("is a folder, not an issue file", path) from None
    except OSError as exc:
        raise InputError(f"cannot read: {exc.strerror}", path) from None
    if len(raw) > MAX_ISSUE_BYTES:
        raise InputError(f"larger than {MAX_ISSUE_BYTES // (1024 * 1024)} MB; "
                         "an issue is a Markdown file, not a data file", path)
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise InputError("not UTF-8 text; save the issue as UTF-8", path, line) from None
    return text.replace("\r\n", "\n").replace("\r", "\n")


def split_front_matter(text: str, path: Path) -> tuple[str, int, str, int]:
    """Split into (yaml, yaml_first_line, body, body_first_line); blank lines may lead."""
    lines = text.split("\n")
    first = 0
    while first < len(lines) and not lines[first].strip():
        first += 1
    if first >= len(lines) or not _FENCE.match(lines[first]):
        raise InputError("no front matter: start the file with '---', a title, and '---'", path, 1)
    for end in range(first + 1, len(lines)):
        if _FENCE.match(lines[end]):
            return (
                "\n".join(lines[first + 1 : end]),
                first + 2,
                "\n".join(lines[end + 1 :]),
                end + 2,
            )
    raise InputError("front matter is not closed by a '---' line", path, first + 1)


_PLAIN_SCALAR_LINE = re.compile(r"^(\s*-?\s*[\w-]+:[ \t]+)([^'\"\s].*?)\s*$")


def _parse_yaml(
    source: str, path: Path, first_line: int, warnings: list[str]
) -> dict[str, Any]:
    """Parse front matter; a plain value holding ': ' (a common slip) is quoted with a warning.

    The last front matter parsed is kept (a preview rebuilds on every save, and the front
    matter seldom changes): the same text at the same place gives a copy of the same data.
    """
    import copy

    global _last_yaml
    key = (source, str(path), first_line)
    last = _last_yaml  # one read: another thread may replace it meanwhile
    if last is not None and last[0] == key:
        data, said = copy.deepcopy(last[1])
    else:
        said: list[str] = []
        data = _load_yaml(source, path, first_line, said)
        _last_yaml = (key, copy.deepcopy((data, said)))
    warnings.extend(said)
    return data


_last_yaml: tuple | None = None  # ((source, path, first line), (data, warnings))


def _load_yaml(
    source: str, path: Path, first_line: int, warnings: list[str]
) -> dict[str, Any]:
    import json

    import yaml

    lines = source.split("\n")
    for _attempt in range(20):
        try:
            data = yaml.load("\n".join(lines), _loader()) if source.strip() else {}
            break
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            problem = getattr(exc, "problem", None) or "invalid YAML"
            line = first_line + mark.line if mark else first_line
            slip = _PLAIN_SCALAR_LINE.match(lines[mark.line]) if mark else None
            if not (slip and problem.startswith("mapping values are not allowed")):
                raise InputError(f"front matter: {problem}", path, line) from None
            lines[mark.line] = slip.group(1) + json.dumps(slip.group(2), ensure_ascii=False)
            warnings.append(
                f"{path}:{line}: front matter: the value contains ': '; "
                "read it as text (put it in quotes to silence this)"
            )
    else:
        raise InputError("front matter: invalid YAML", path, first_line)
    if not isinstance(data, dict):
        raise InputError("front matter must be 'key: value' lines", path, first_line)
    return data


def _loader():
    """PyYAML's safe loader, except that an impossible date (2025-13-45) stays text, so the
    date check can name its line instead of the YAML library failing without one."""
    import yaml

    class Loader(yaml.SafeLoader):
        def construct_yaml_timestamp(self, node):
            try:
                return super().construct_yaml_timestamp(node)
            except ValueError:
                return self.construct_scalar(node)

    Loader.add_constructor("tag:yaml.org,2002:timestamp", Loader.construct_yaml_timestamp)
    return Loader


def _first_surrogate(value: Any) -> str | None:
    """The first text in `value` holding a lone UTF-16 surrogate (YAML's "\\uD800")."""
    if isinstance(value, str):
        return value if any("\ud800" <= ch <= "\udfff" for ch in value) else None
    items = value.items() if isinstance(value, dict) else value if isinstance(value, list) else ()
    for item in items:
        for part in item if isinstance(value, dict) else (item,):
            found = _first_surrogate(part)
            if found is not None:
                return found
    return None


KNOWN_KEYS = {
    "title", "subtitle", "date", "preheader", "lang", "language", "slug", "thumbnail",
    "authors", "author", "translators", "translator", "proofreaders", "proofreader",
    "media_thumbnails", "embed_thumbnail", "greeting",
    "audience", "section", "tags",  # for services with their own audience (Substack, Ghost)
}
_YAML_WORDS = "yes, no, on, off, true, false, null, ~ and numbers"


class _Meta:
    """Typed access to front matter, with errors that point at the key's line."""

    def __init__(self, data: dict[str, Any], yaml_text: str, path: Path, first_line: int,
                 warnings: list[str]):
        self.data, self.yaml_text, self.path, self.first_line = data, yaml_text, path, first_line
        self.warnings = warnings

    def line(self, key: str) -> int:
        match = re.search(rf"^[ \t]*-?[ \t]*{re.escape(key)}[ \t]*:", self.yaml_text, re.M)
        return self.first_line + self.yaml_text.count("\n", 0, match.start()) if match else 1

    def fail(self, key: str, message: str) -> InputError:
        return InputError(f"front matter '{key}': {message}", self.path, self.line(key))

    def warn(self, key: str, message: str) -> None:
        self.warnings.append(f"{self.path}:{self.line(key)}: front matter '{key}': {message}")

    def raw(self, key: str) -> str:
        """The value as written on the key's line, for a plain scalar YAML turned into a
        bool or number (`lang: no` is false to YAML, Norwegian to the editor)."""
        match = re.search(rf"^{re.escape(key)}[ \t]*:[ \t]*([^'\"#\s][^#]*?)[ \t]*(#.*)?$",
                          self.yaml_text, re.M)
        return match.group(1) if match else ""

    def text(self, key: str, default: str = "") -> str:
        value = self.data.get(key)
        if value is None:
            return default
        if isinstance(value, str):
            return value.strip()
        if isinstance(value, bool | int | float | dt.date):
            written = self.raw(key)
            if not written:
                raise self.fail(key, f"must be text, not {type(value).__name__}")
            if isinstance(value, bool) or written != str(value):
                shown = str(value).lower() if isinstance(value, bool) else str(value)
                self.warn(key, f"YAML reads {written} as {shown}; read as the "
                          f"text \"{written}\" (put it in quotes: {key}: \"{written}\")")
            self.data[key] = written
            return written
        raise self.fail(key, f"must be text, not {type(value).__name__}")

    def warn_unknown_keys(self) -> None:
        for key in self.data:
            if str(key) in KNOWN_KEYS:
                continue
            import difflib  # only for a key it does not know

            close = difflib.get_close_matches(str(key), sorted(KNOWN_KEYS), n=1, cutoff=0.6)
            hint = f"did you mean '{close[0]}'?" if close else (
                f"known keys: {', '.join(sorted(KNOWN_KEYS))}")
            self.warn(str(key), f"unknown key, ignored; {hint}")


def _people(meta: _Meta, key: str, warnings: list[str]) -> list[Person]:
    value = meta.data.get(key)
    if value is None:
        return []
    if isinstance(value, str | dict):
        value = [value]
    if not isinstance(value, list):
        raise meta.fail(key, "must be a list of names or '- user: handle' entries")
    people = []
    for item in value:
        if isinstance(item, str) and item.strip():
            people.append(Person(name=item.strip()))
        elif isinstance(item, dict) and (item.get("user") or item.get("name")):
            user = str(item.get("user") or "").strip()
            people.append(
                Person(
                    name=str(item.get("name") or user).strip(),
                    user=user,
                    guest=bool(item.get("guest")),
                    org=str(item.get("org") or "").strip(),
                    proofreader=bool(item.get("proofreader")),
                )
            )
        else:
            warnings.append(
                f"{meta.path}:{meta.line(key)}: front matter '{key}': entry {item!r} "
                "has no user or name; ignored"
            )
    return people


_PEOPLE_KEYS = ("translators", "translator", "proofreaders", "proofreader")


def _move_misplaced_people(meta: _Meta) -> None:
    """`- translators:` written as an entry of `authors:` (a stray dash) makes YAML read every
    translator after it as an author; move them back where the editor meant them."""
    for key in ("authors", "author"):
        people = meta.data.get(key)
        if not isinstance(people, list):
            continue
        for index, item in enumerate(people):
            if not (isinstance(item, dict) and len(item) == 1):
                continue
            (inner, value), = item.items()
            if inner not in _PEOPLE_KEYS or not (value is None or isinstance(value, list)):
                continue
            moved = (value or []) + people[index + 1:]
            meta.data[key] = people[:index]
            existing = meta.data.get(inner)
            meta.data[inner] = ([existing] if isinstance(existing, str | dict) else
                                list(existing or [])) + moved
            meta.warn(inner, f"written as an entry of '{key}' (a '- ' before '{inner}:'); "
                      f"the {len(moved)} entries after it are read as {inner}, not {key} "
                      f"(remove the '- ' to silence this)")
            break


def _slug(meta: _Meta, path: Path) -> str:
    """The output folder's name: the `slug` key, else the file name; never `.`, `..` or a path."""
    written = "slug" in meta.data
    value = meta.text("slug") if written else path.stem
    cleaned = re.sub(r"[^\w.-]+", "-", value).strip("-")
    if "/" in value or "\\" in value or cleaned.strip(".") == "":
        where = "front matter 'slug'" if written else "the file name"
        error = InputError(
            f"{where} gives the slug {value!r}, which is not a folder name (no '/', and not "
            "only dots); write a slug such as 'slug: 2025-01-my-issue'",
            path, meta.line("slug") if written else 1)
        raise error
    return cleaned


def _date(meta: _Meta) -> dt.date | None:
    value = meta.data.get("date")
    if value is None or value == "":
        return None
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    if isinstance(value, str):
        try:
            return dt.date.fromisoformat(value.strip()[:10])
        except ValueError:
            pass
    raise meta.fail("date", f"{value!r} is not a date; write it as YYYY-MM-DD")


def load(path: str | Path) -> Issue:
    """Read and check an issue file; raises InputError naming the file and line."""
    path = Path(path)
    text = read_text(path)
    yaml_text, yaml_line, body, body_line = split_front_matter(text, path)
    warnings: list[str] = []
    data = _parse_yaml(yaml_text, path, yaml_line, warnings)
    meta = _Meta(data, yaml_text, path, yaml_line, warnings)
    for key, value in data.items():
        bad = _first_surrogate(value)
        if bad is not None:
            raise meta.fail(str(key), "holds a lone surrogate escape (such as \\uD800), which "
                            "is not a character; write the character itself")
    meta.warn_unknown_keys()
    _move_misplaced_people(meta)

    title = meta.text("title")
    if not title:
        raise InputError("front matter has no 'title'", path, yaml_line)
    for key in ("title", "subtitle", "preheader"):
        if re.search(r"[\r\n\x00-\x08\x0b\x0c\x0e-\x1f\x7f\x85\u2028\u2029]", meta.text(key)):
            raise meta.fail(key, "must be one line of text without control characters "
                            "or line separators")
    lang = meta.text("lang") or meta.text("language")
    if lang and not _LANG_TAG.match(lang):
        raise meta.fail("lang", f"'{lang}' is not a language tag such as 'en' or 'zh-CN'")
    translators = _people(meta, "translators", warnings) + _people(meta, "translator", warnings)
    proofreaders = _people(meta, "proofreaders", warnings) + _people(meta, "proofreader", warnings)
    translators += [
        Person(p.name, p.user, p.guest, p.org, proofreader=True) for p in proofreaders
    ]
    control = _CONTROL.search(body)
    if control:
        line = body_line + body.count("\n", 0, control.start())
        warnings.append(f"{path}:{line}: control characters (such as U+{ord(control.group()):04X}) "
                        "removed; they are not text")
        body = _CONTROL.sub("", body)
    slug = _slug(meta, path)
    return Issue(
        path=path,
        slug=slug,
        title=title,
        body=body,
        body_line=body_line,
        meta=meta.data,
        subtitle=meta.text("subtitle"),
        date=_date(meta),
        authors=tuple(_people(meta, "authors", warnings) + _people(meta, "author", warnings)),
        translators=tuple(translators),
        thumbnail=meta.text("thumbnail"),
        preheader=meta.text("preheader"),
        lang=lang,
        warnings=tuple(warnings),
        meta_lines={key: meta.line(str(key)) for key in data},
    )
