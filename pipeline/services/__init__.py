"""Where drafts go and how they are sent: one small interface, one module per service.

A service pushes a draft (create or update) and sends it: message by message through a
transport (local Maildir, SMTP), or by publishing to its own audience (Substack). Adding
one is a new module here and a line in SERVICES.
"""

from __future__ import annotations

import importlib
import sqlite3
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..errors import InputError, PublishError
from ..settings import Settings

SERVICES = {
    "local": "pipeline.services.local:LocalService",
    "substack": "pipeline.services.substack:SubstackService",
    "smtp": "pipeline.services.smtp:SmtpService",
    "ghost": "pipeline.services.ghost:GhostService",
    "buttondown": "pipeline.services.buttondown:ButtondownService",
}


@dataclass(frozen=True)
class DraftContent:
    """An issue ready to push: the rendered email and what it came from."""

    issue: str  # path relative to the newsletter folder
    slug: str
    title: str
    subtitle: str
    lang: str
    fragment: str  # the email-safe body, for services that convert it to their own format
    html: str  # the email with %%token%% placeholders, as it will be personalised
    text: str
    preview_html: str  # the same with preview values, for people to look at
    preview_text: str
    eml: bytes
    revision: str  # hash of subject, html and text
    source_hash: str  # hash of the Markdown file
    # Front matter meant for services (audience, section, tags): key -> (value, line).
    front_matter: dict[str, tuple[Any, int]] = field(default_factory=dict)

    def choice(self, key: str, setting: str, allowed: tuple[str, ...], *,
               setting_name: str) -> str:
        """A value from the front matter, else the setting; one of `allowed`, or an error
        naming the issue's line (or the setting) before anything is sent anywhere."""
        value, line = self.front_matter.get(key, (None, 0))
        if value is None:
            if setting not in allowed:
                raise InputError(f"setting '{setting_name}' must be one of "
                                 f"{', '.join(allowed)}, not {setting!r}")
            return setting
        if not isinstance(value, str) or value.strip() not in allowed:
            raise InputError(f"front matter '{key}': must be one of {', '.join(allowed)}, "
                             f"not {value!r}", self.issue, line)
        return value.strip()


@dataclass(frozen=True)
class DraftRecord:
    """What the state database remembers of an earlier push."""

    issue: str
    service: str
    remote_id: str | None
    url: str
    title: str
    revision: str
    pushed_body: str
    source_hash: str
    status: str
    pushed_at: float | None

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> DraftRecord:
        return cls(**{key: value for key, value in dict(row).items() if key != "id"})


class EmailNotConfirmed(PublishError):
    """Published, but the service's reply does not confirm that the email went out: the
    publication is recorded as done (it is public) and the editor is told, exit 1."""


@dataclass
class PushResult:
    remote_id: str
    url: str
    created: bool
    pushed_body: str  # fingerprint of the draft as the service holds it after the push
    warnings: list[str] = field(default_factory=list)


class Service(Protocol):
    """What `publish draft` and `publish send` need from a service.

    A service that sends to the newsletter's own list (`per_recipient = True`) gives
    `publish send` a `transport()` that delivers one message at a time; the ledger and
    retries are the send's. A service with its own audience (`per_recipient = False`)
    offers `publish(remote_id) -> (note, published_now)` instead.
    """

    name: str
    draft_store: str  # the service whose drafts this one sends (smtp sends local drafts)
    per_recipient: bool
    max_connections: int  # transports a send may run side by side (per_recipient only)
    # Whether a send reaches real readers (placeholder settings then stop it); a service
    # that does not say is assumed to.
    reaches_readers: bool

    def push_draft(
        self, content: DraftContent, previous: DraftRecord | None, *, force: bool
    ) -> PushResult:
        """Create the draft, or update `previous`; never create a second one for an issue."""
        ...


def service_class(name: str) -> type:
    """The class behind a service name; a clear error for a name that does not exist."""
    try:
        module_name, class_name = SERVICES[name].split(":")
    except KeyError:
        raise InputError(
            f"unknown service '{name}' (known: {', '.join(sorted(SERVICES))})"
        ) from None
    return getattr(importlib.import_module(module_name), class_name)


def reaches_readers(name: str) -> bool:
    return bool(getattr(service_class(name), "reaches_readers", True))


def get(name: str, settings: Settings, db: sqlite3.Connection) -> Service:
    return service_class(name)(settings, db)
