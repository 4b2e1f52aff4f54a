"""Secrets from the environment: checked before use, and never shown in any message.

A secret with a control character (a line break pasted with it, `%0A` in a cookie) would
otherwise reach a library that quotes it back in its error: `read_secret` refuses it with
the variable's name only. `redact` is the last line of defence where errors are printed:
every spelling of every secret (as is, URL-decoded or -encoded, escaped as Python or JSON
would print it, and each piece between control characters) becomes `[NAME]`.
"""

from __future__ import annotations

import json
import os
import re
import unicodedata
from urllib.parse import quote, unquote

from .errors import InputError

VARIABLES = ("SUBSTACK_SID", "SMTP_PASSWORD", "PUBLISH_UNSUBSCRIBE_SECRET",
             "GHOST_ADMIN_API_KEY", "BUTTONDOWN_API_KEY")
MIN_SHOWN = 4  # shorter pieces are not worth hiding (and would blank ordinary words)
_extra: dict[str, str] = {}  # secrets that do not come from the environment (a key file)


def _bad_character(value: str, ascii_only: bool) -> str | None:
    for char in value:
        if unicodedata.category(char) in {"Cc", "Cf", "Zl", "Zp"}:
            return "a control character (a line break or tab pasted with it?)"
        if ascii_only and not char.isascii():
            return "a character outside ASCII, which it cannot carry"
    return None


def check_secret(name: str, value: str, *, ascii_only: bool = False) -> str:
    """`value`, or an InputError naming `name` (never the value) when it is malformed."""
    problem = _bad_character(value, ascii_only)
    if problem:
        raise InputError(f"{name} is malformed: it holds {problem}; set it again to the "
                         "exact value")
    return value


def read_secret(name: str, env: dict[str, str] | None = None, *, ascii_only: bool = False,
                strip: bool = False) -> str:
    """The secret in environment variable `name` ("" when unset), checked before any use."""
    value = (os.environ if env is None else env).get(name, "")
    return check_secret(name, value.strip() if strip else value, ascii_only=ascii_only)


def register(name: str, value: str) -> None:
    """Hide `value` too (a secret read from a file rather than the environment)."""
    if value:
        _extra[name] = value


def _spellings(value: str) -> set[str]:
    forms = {value, value.strip(), unquote(value), quote(value), quote(value, safe=""),
             repr(value)[1:-1], ascii(value)[1:-1], json.dumps(value)[1:-1],
             value.encode("unicode_escape").decode("ascii"),
             repr(value.encode("utf-8", "replace"))[2:-1]}
    for form in list(forms):
        forms.update(re.split(r"[\x00-\x1f\x7f]|\\[nrt0]|\\x[0-9a-f]{2}|%0[ad]", form,
                              flags=re.IGNORECASE))
    return {form for form in forms if len(form) >= MIN_SHOWN}


def secrets_in_use(env: dict[str, str] | None = None) -> dict[str, str]:
    env = os.environ if env is None else env
    found = {name: env[name] for name in VARIABLES if env.get(name)}
    return {**found, **_extra}


def redact(text: str, env: dict[str, str] | None = None) -> str:
    """`text` with every spelling of every secret in use replaced by `[NAME]`."""
    pairs = [(form, name) for name, value in secrets_in_use(env).items()
             for form in _spellings(value)]
    for form, name in sorted(pairs, key=lambda pair: -len(pair[0])):
        text = text.replace(form, f"[{name}]")
    return text
