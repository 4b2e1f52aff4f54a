"""Where drafts go and how they are sent: one small interface, one module per service.

A service pushes a draft (create or update) and sends it: through a transport that takes
one message (local Maildir, SMTP) or a batch of recipients per call, or by publishing to
its own audience (Substack). Each declares what it can do (`Capabilities`) and callers ask
(`capabilities(name)`) instead of knowing names. Adding one is a new module here and a
line in SERVICES.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from ..errors import InputError, PublishError

if TYPE_CHECKING:  # `publish --help` lists the services without loading the settings code
    import sqlite3

    from ..settings import Settings

SERVICES = {
    "local": "pipeline.services.local:LocalService",
    "substack": "pipeline.services.substack:SubstackService",
    "smtp": "pipeline.services.smtp:SmtpService",
    "ghost": "pipeline.services.ghost:GhostService",
    "buttondown": "pipeline.services.buttondown:ButtondownService",
    "ses": "pipeline.services.ses:SesService",
}


@dataclass(frozen=True)
class Capabilities:
    """What a service can do, as callers need to know it (class attributes of a service)."""

    name: str
    draft_store: str  # the service whose drafts it sends (smtp sends local drafts)
    per_recipient: bool  # sends to our own list through the ledger (else: its own audience)
    can_send_test: bool  # `send --test ADDRESS` delivers one copy
    batch_size: int  # recipients per call of its transport (1: one message at a time)
    # `send --at`: per-recipient sends are run by `publish due`; a service with its own
    # audience schedules the post itself (`schedule(remote_id, iso)`, `unschedule`).
    can_schedule: bool
    reaches_readers: bool  # placeholder settings stop a send (else they are warnings)
    max_connections: int  # transports a send may run side by side
    renders_itself: bool  # its transport personalises one template (else: whole messages)


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
    `publish send` a `transport(template=None)` that delivers one message per call, or
    (`batch_size > 1`) `batch_size` recipients per call; the ledger and retries are the
    send's. A service with its own audience (`per_recipient = False`) offers
    `publish(remote_id) -> (note, published_now)` instead. The class attributes of
    `Capabilities` say what else it can do.
    """

    name: str
    draft_store: str
    per_recipient: bool

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


def names() -> list[str]:
    """The known service names, for help texts and messages."""
    return sorted(SERVICES)


def capabilities(name: str) -> Capabilities:
    """What the service `name` can do; an unknown name is a clear InputError. A service
    that does not say is assumed to reach readers, one message and one connection at a
    time, without test copies or schedules."""
    cls = service_class(name)
    per_recipient = bool(cls.per_recipient)
    return Capabilities(
        name=name, draft_store=getattr(cls, "draft_store", name), per_recipient=per_recipient,
        can_send_test=bool(getattr(cls, "can_send_test", False)),
        batch_size=int(getattr(cls, "batch_size", 1)),
        can_schedule=bool(getattr(cls, "can_schedule", False)),
        reaches_readers=bool(getattr(cls, "reaches_readers", True)),
        max_connections=int(getattr(cls, "max_connections", 1)),
        renders_itself=bool(getattr(cls, "renders_itself", False)))


def reaches_readers(name: str) -> bool:
    return capabilities(name).reaches_readers


def get(name: str, settings: Settings, db: sqlite3.Connection) -> Service:
    return service_class(name)(settings, db)
