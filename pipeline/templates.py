"""Find the newsletter's email templates and the strings for each language.

A newsletter folder may carry its own `email_templates/`; otherwise the templates that
ship with publish are used.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

from .errors import InputError


def skeleton_dir() -> Path:
    """The newsletter skeleton: this checkout when run from source, else the packaged copy."""
    package = Path(__file__).resolve().parent
    packaged = package / "skeleton"
    if (packaged / "email_templates").is_dir():
        return packaged
    return package.parent


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
