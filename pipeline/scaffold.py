"""`publish init`: a new newsletter folder an editor can start writing in."""

from __future__ import annotations

import shutil
from pathlib import Path

from .errors import InputError
from .templates import skeleton_dir

SAMPLE_ISSUE = "2025-01-ai-art.md"
SETTINGS_TEMPLATE = '''# Settings for {name}. Environment variables PUBLISH_<NAME> override each.
name = "{name}"
sender = "{name} <newsletter@example.com>"
base_url = "https://example.com/"
web_url = ""
profile_url = ""
unsubscribe_url = "{{base_url}}unsubscribe?token={{token}}"
postal_address = "Your street address, City, Country"
language = "en"
service = "local"
'''


def init(folder: Path, name: str) -> list[Path]:
    """Copy the skeleton into `folder`; refuses to touch a folder that already has settings."""
    if '"' in name or "\n" in name:
        raise InputError("the newsletter name may not contain quotes or line breaks")
    if (folder / "publish.toml").exists():
        raise InputError("already a newsletter folder (publish.toml exists)", folder)
    skeleton = skeleton_dir()
    created: list[Path] = []
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copytree(skeleton / "email_templates", folder / "email_templates", dirs_exist_ok=True)
    created += [p for p in (folder / "email_templates").rglob("*") if p.is_file()]
    (folder / "issues").mkdir(exist_ok=True)
    shutil.copy2(skeleton / "issues" / SAMPLE_ISSUE, folder / "issues" / SAMPLE_ISSUE)
    created.append(folder / "issues" / SAMPLE_ISSUE)
    (folder / "subscribers").mkdir(exist_ok=True)
    subscribers = folder / "subscribers" / "main.csv"
    if not subscribers.exists():
        subscribers.write_text("email,name,status,created_at\n", "utf-8")
        created.append(subscribers)
    (folder / "publish.toml").write_text(SETTINGS_TEMPLATE.format(name=name), "utf-8")
    created.append(folder / "publish.toml")
    (folder / ".gitignore").write_text(".publish/\nbuild/\noutbox/\n", "utf-8")
    created.append(folder / ".gitignore")
    return created
