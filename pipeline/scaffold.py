"""`publish init`: a new newsletter folder an editor can start writing in.

Init only ever adds: a file that exists is kept as it is (a line is appended to
`.gitignore`, never taken away), and a folder that already holds a newsletter's settings
is refused.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from .errors import InputError
from .templates import skeleton_dir

SAMPLE_ISSUE = "2025-01-ai-art.md"
# The scaffold's placeholders, which `publish check` reports until they are changed.
PLACEHOLDER_SENDER = "newsletter@example.com"
PLACEHOLDER_BASE_URL = "https://example.com/"
PLACEHOLDER_POSTAL = "Your street address, City, Country"
SETTINGS_TEMPLATE = '''# This newsletter's settings; PUBLISH_<NAME> in the environment wins.
name = {name}
sender = {sender}
base_url = "{base_url}"
web_url = ""
profile_url = ""
unsubscribe_url = "{{base_url}}unsubscribe?token={{token}}"
postal_address = "{postal}"
language = "en"
service = "local"
'''
# The state folder holds the send ledger and the unsubscribe signing key: never committed.
GITIGNORE_LINES = (".publish/", "build/", "outbox/", "subscribers/.lock")
_NOT_IN_NAME = re.compile(r"[\x00-\x1f\x7f\x85\u2028\u2029\ud800-\udfff]")


@dataclass
class Created:
    files: list[Path] = field(default_factory=list)
    kept: list[Path] = field(default_factory=list)  # already there, left untouched


def toml_string(value: str) -> str:
    """A TOML basic string holding exactly `value` (quotes, backslashes, non-ASCII)."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\t", "\\t")
    return f'"{escaped}"'


def display_name(name: str) -> str:
    """`name` as the display name of an address: quoted when it holds RFC 5322 specials."""
    if re.search(r'[()<>@,;:\\".\[\]]', name):
        return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return name


def settings_text(name: str) -> str:
    text = SETTINGS_TEMPLATE.format(
        name=toml_string(name),
        sender=toml_string(f"{display_name(name)} <{PLACEHOLDER_SENDER}>"),
        base_url=PLACEHOLDER_BASE_URL, postal=PLACEHOLDER_POSTAL)
    if tomllib.loads(text)["name"] != name:  # the file must say what the editor typed
        raise InputError(f"cannot write the name {name!r} into publish.toml")
    return text


def has_settings(folder: Path) -> Path | None:
    """The file that makes `folder` a newsletter already, if there is one."""
    if (folder / "publish.toml").exists():
        return folder / "publish.toml"
    pyproject = folder / "pyproject.toml"
    if pyproject.is_file():
        try:
            data = tomllib.loads(pyproject.read_text("utf-8", "replace"))
        except tomllib.TOMLDecodeError:
            data = {}
        if "publish" in data.get("tool", {}) or "[tool.publish]" in pyproject.read_text(
                "utf-8", "replace"):
            return pyproject
    return None


def _check_name(name: str) -> None:
    if not name.strip():
        raise InputError("the newsletter name may not be empty")
    if _NOT_IN_NAME.search(name):
        raise InputError("the newsletter name must be one line without control characters")


def _add(created: Created, path: Path, data: bytes) -> None:
    """Write `path` only if nothing is there (exclusive create: no race, no overwrite)."""
    try:
        with path.open("xb") as handle:
            handle.write(data)
    except FileExistsError:
        created.kept.append(path)
        return
    created.files.append(path)


def _gitignore(created: Created, folder: Path) -> None:
    path = folder / ".gitignore"
    if not path.exists():
        _add(created, path, ("\n".join(GITIGNORE_LINES) + "\n").encode("utf-8"))
        return
    text = path.read_text("utf-8", "replace")
    present = {line.strip().lstrip("/") for line in text.splitlines()}
    missing = [line for line in GITIGNORE_LINES
               if line not in present and line.rstrip("/") not in present]
    if missing:
        with path.open("a", encoding="utf-8") as handle:
            handle.write(("" if text.endswith("\n") or not text else "\n")
                         + "# publish: state (send ledger, signing key) and outputs\n"
                         + "\n".join(missing) + "\n")
    created.kept.append(path)


def init(folder: Path, name: str) -> Created:
    """Copy the skeleton into `folder`, adding files only; refuses a folder with settings."""
    _check_name(name)
    existing = has_settings(folder)
    if existing is not None:
        raise InputError(f"already a newsletter folder ({existing.name} has its settings); "
                         "nothing was changed", folder)
    if folder.exists() and not folder.is_dir():
        raise InputError("is a file, not a folder", folder)
    skeleton = skeleton_dir()
    created = Created()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        sources = sorted(p for p in (skeleton / "email_templates").rglob("*") if p.is_file())
        for source in sources:
            target = folder / source.relative_to(skeleton)
            target.parent.mkdir(parents=True, exist_ok=True)
            _add(created, target, source.read_bytes())
        (folder / "issues").mkdir(exist_ok=True)
        _add(created, folder / "issues" / SAMPLE_ISSUE,
             (skeleton / "issues" / SAMPLE_ISSUE).read_bytes())
        (folder / "subscribers").mkdir(exist_ok=True)
        _add(created, folder / "subscribers" / "main.csv",
             b"email,name,status,created_at\n")
        _add(created, folder / "publish.toml", settings_text(name).encode("utf-8"))
        _gitignore(created, folder)
    except OSError as exc:
        raise InputError(f"cannot create the newsletter: {exc.strerror}",
                         exc.filename or folder) from None
    return created
