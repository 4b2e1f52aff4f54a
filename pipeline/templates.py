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


def strings(folder: Path, lang: str) -> dict[str, str]:
    """Template strings for `lang` ('zh-CN' uses zh), over English for any missing key."""
    primary = lang.split("-")[0].lower()
    path = folder / "strings" / f"{primary}.toml"
    if not path.is_file():
        known = ", ".join(known_languages(folder)) or "none"
        raise InputError(
            f"no template strings for language '{lang}' (known: {known}); "
            f"add {path.name} to {path.parent}"
        )
    base = _strings_file(folder / "strings" / "en.toml") if primary != "en" else {}
    return {**base, **_strings_file(path)}
