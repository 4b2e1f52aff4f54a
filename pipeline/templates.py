"""Find the newsletter's email templates and the strings for each language.

A newsletter folder may carry its own `email_templates/`; otherwise the templates that
ship with publish are used.
"""

from __future__ import annotations

import contextlib
import tomllib
from functools import lru_cache
from pathlib import Path

from .errors import InputError


def skeleton_dir() -> Path:
    """The newsletter skeleton: this checkout when run from source, else the packaged copy."""
    package = Path(__file__).resolve().parent
    packaged = package / "skeleton"
    if (packaged / "email_templates").is_dir():
        return packaged
    return package.parent


@lru_cache(maxsize=4)
def bytecode_cache(kind: str):
    """Compiled templates kept between runs, so a build compiles only templates it has not
    compiled before (compiling the email's templates is ~40 ms of a cold build). `kind`
    names the environment: its entries are kept apart, since the same file compiles to
    different code under other options (autoescaping, trailing newlines).

    Jinja2's own cache, in a folder of the user's temporary directory that only the user
    may read or write (Jinja2 refuses any other). A cache entry is keyed by the template's
    file and checked against its source, so an edited template is compiled again. A
    cache that cannot be read or written only costs the compiling; None when there is
    no safe folder.
    """
    import jinja2

    class Cache(jinja2.FileSystemBytecodeCache):
        def load_bytecode(self, bucket) -> None:
            try:
                super().load_bytecode(bucket)
            except Exception:  # a damaged entry: compile again, and replace it
                bucket.reset()

        def dump_bytecode(self, bucket) -> None:
            # a full or read-only disk: the next run compiles again
            with contextlib.suppress(OSError):
                super().dump_bytecode(bucket)

    try:
        return Cache(pattern=f"publish-{kind}-%s.cache")
    except (OSError, RuntimeError):
        return None


def templates_dir(root: Path, name: str = "email_templates") -> Path:
    own = root / name
    if (own / "issue.mjml.j2").is_file():
        return own
    return skeleton_dir() / "email_templates"


def _strings_file(path: Path) -> dict[str, str]:
    try:
        data = tomllib.loads(path.read_text("utf-8"))
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read template strings: {exc}", path) from None
    return {str(k): str(v) for k, v in data.items()}


def known_languages(folder: Path) -> list[str]:
    return sorted(p.stem for p in (folder / "strings").glob("*.toml"))


def resolve(folder: Path, lang: str) -> tuple[str, str]:
    """The strings file for `lang` (zh-TW → zh-Hant) and a warning when it only approximates it."""
    from .language import require_strings_name

    return require_strings_name(lang, known_languages(folder), folder / "strings")


def strings(folder: Path, lang: str) -> dict[str, str]:
    """Template strings for `lang` ('zh-CN' uses zh, 'zh-TW' zh-Hant), over English for any
    missing key."""
    name, _warning = resolve(folder, lang)
    path = folder / "strings" / f"{name}.toml"
    base = _strings_file(folder / "strings" / "en.toml") if name != "en" else {}
    return {**base, **_strings_file(path)}
