"""What a send freezes and how each recipient's message is made from it.

`DraftSource` finds the draft a send may use (refusing a stale one, or pushing it first
with --redraft) and the content a new send freezes. `Messages` turns frozen content into
one recipient's message: the whole MIME message for a transport that takes messages, or
the values that personalise a template for a transport that renders one itself.
"""

from __future__ import annotations

import sqlite3
from email.utils import make_msgid
from pathlib import Path

from . import draft as draft_mod
from . import issue as issue_mod
from . import ledger, render, services, templates, transports, unsubscribe
from .delivery import Job
from .errors import InputError, PublishError
from .message import MessageTemplate, Recipient
from .settings import Settings


class DraftSource:
    """The draft of one issue in the store a service sends from."""

    def __init__(self, path: Path, issue: str, settings: Settings,
                 capabilities: services.Capabilities, redraft: bool):
        self.path, self.issue, self.settings = path, issue, settings
        self.store = capabilities.draft_store
        self.redraft = redraft

    def row(self, db: sqlite3.Connection) -> sqlite3.Row | None:
        return db.execute("SELECT * FROM drafts WHERE issue = ? AND service = ?",
                          (self.issue, self.store)).fetchone()

    def stale(self, row: sqlite3.Row | None) -> str:
        """Why the draft cannot be sent as it is, or ''."""
        if row is None:
            return "has no draft yet"
        if row["remote_id"] is None or \
                row["source_hash"] != draft_mod.sha256(self.path.read_bytes()):
            return "changed since its draft was pushed"
        return ""

    def refuse_stale(self, why: str) -> None:
        try:
            default_store = services.capabilities(self.settings.service).draft_store
        except InputError:
            default_store = ""
        flag = "" if self.store == default_store else f" --service {self.store}"
        raise PublishError(f"{self.issue} {why}; run `publish draft {self.issue}{flag}` "
                           "first, or add --redraft")

    def current(self, db: sqlite3.Connection, *, push: bool = True) -> sqlite3.Row | None:
        """The draft to send. A stale one is refused, or with --redraft pushed first (or,
        when `push` is False, None is returned: the caller renders the issue itself)."""
        row = self.row(db)
        why = self.stale(row)
        if not why:
            return row
        if not self.redraft:
            self.refuse_stale(why)
        if not push:
            return None
        draft_mod.push(self.path, self.settings, self.store)
        row = self.row(db)
        if self.stale(row):  # the file changed again while it was pushed
            self.refuse_stale(self.stale(row))
        return row

    def content(self, db: sqlite3.Connection, row: sqlite3.Row | None) -> ledger.Content:
        """What a new send freezes: the stored draft, or (dry run with --redraft) the
        issue rendered now."""
        if row is None:
            from .build import render_issue  # only for a send with nothing frozen yet

            email = render_issue(self.path, self.settings).email
            return ledger.Content(draft_mod.sha256("\0".join((email.subject, email.html,
                                                               email.text))),
                                  email.subject, email.html, email.text)
        revision = db.execute(
            "SELECT subject, html, text, revision FROM draft_revisions WHERE draft_id = ? "
            "ORDER BY id DESC LIMIT 1", (row["id"],)).fetchone()
        if revision is None:
            raise PublishError(f"the stored draft of {self.issue} has no revision; "
                               f"run `publish draft {self.issue}` again")
        return ledger.Content(row["revision"], revision["subject"], revision["html"],
                              revision["text"])


class Messages:
    """One issue's frozen content, addressed to one recipient at a time."""

    def __init__(self, path: Path, settings: Settings, content: ledger.Content, *,
                 subject_prefix: str = ""):
        self.settings = settings
        lang = render.choose_language(issue_mod.load(path), settings)
        folder = templates.templates_dir(settings.root, settings.templates_dir)
        self.template = MessageTemplate(
            render.Email(content.subject, "", content.html, content.text, ""),
            sender=settings.sender, list_name=settings.name,
            unsubscribe_mailto=settings.unsubscribe_mailto, subject_prefix=subject_prefix,
            name_fallback=templates.strings(folder, lang)["name_fallback"])
        self.key = signing_key(settings)
        self.domain = settings.sender_address.rpartition("@")[2]

    def unsubscribe_url(self, email: str) -> str:
        token = unsubscribe.make_token(self.key, email) if self.key else ""
        return unsubscribe.url(self.settings.unsubscribe_url, self.settings.base_url, email,
                               token)

    def message(self, address: str, name: str = "", message_id: str | None = None) -> bytes:
        """The whole message; ValueError or InputError when it cannot be addressed."""
        envelope = transports.envelope_address(address)
        return self.template.render(Recipient(envelope, name), self.unsubscribe_url(address),
                                    message_id=message_id)

    def job(self, recipient_id: int, address: str, name: str, *,
            whole_message: bool = True) -> Job:
        """One recipient's job: refused (failed, never handed over) when the address or
        name cannot be written into a message."""
        message_id = make_msgid(domain=self.domain)
        try:
            envelope = transports.envelope_address(address)
            fields = {"email": address, "name": name or self.template.name_fallback,
                      "unsubscribe_url": self.unsubscribe_url(address)}
            data = self.template.render(Recipient(envelope, name), fields["unsubscribe_url"],
                                        message_id=message_id) if whole_message else None
        except (InputError, ValueError) as exc:
            return Job(recipient_id, address, message_id, None, refused=f"refused: {exc}")
        return Job(recipient_id, envelope, message_id, data, fields=fields)


def signing_key(settings: Settings) -> bytes | None:
    """The unsubscribe links' secret, when they carry a token (a missing one is an error)."""
    if "{token}" not in settings.unsubscribe_url:
        return None
    return unsubscribe.signing_key(settings.state_path)
