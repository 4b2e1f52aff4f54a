"""The `local` service: drafts kept in the state database, no account and no server needed."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

from ..settings import Settings
from . import DraftContent, DraftRecord, PushResult

if TYPE_CHECKING:  # a build asks what this service can do without loading how it sends
    import sqlite3

    from ..transports import MaildirTransport


class LocalService:
    """Drafts in the state database; each message delivered into a Maildir outbox."""

    name = "local"
    # Where this service's drafts are kept: per-recipient services share the local store.
    draft_store = "local"
    per_recipient = True
    can_send_test = True
    can_schedule = True
    batch_size = 1
    max_connections = 1  # one writer into the outbox is as fast as the disk
    # Mail lands in a local folder: placeholder settings are warnings, not errors.
    reaches_readers = False

    def transport(self, template: object = None) -> MaildirTransport:
        """The outbox; `template` is for services whose transport personalises one."""
        from ..transports import MaildirTransport

        return MaildirTransport(self.settings.root / self.settings.outbox_dir)

    def __init__(self, settings: Settings, db: sqlite3.Connection):
        self.settings = settings
        self.db = db

    def _draft_folder(self, slug: str) -> Path:
        return self.settings.state_path / "drafts" / slug

    def push_draft(
        self, content: DraftContent, previous: DraftRecord | None, *, force: bool
    ) -> PushResult:
        """Record a revision of the draft and keep its latest files where a person can open them."""
        row = self.db.execute(
            "SELECT id FROM drafts WHERE issue = ? AND service = ?", (content.issue, self.name)
        ).fetchone()
        draft_id = row["id"]
        self.db.execute(
            "INSERT INTO draft_revisions (draft_id, revision, subject, html, text, eml, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (draft_id, content.revision, content.title, content.html, content.text, content.eml,
             time.time()),
        )
        folder = self._draft_folder(content.slug)
        folder.mkdir(parents=True, exist_ok=True)
        for name, data in (("email.html", content.preview_html.encode("utf-8")),
                           ("email.txt", content.preview_text.encode("utf-8")),
                           ("email.eml", content.eml)):
            staging = folder / f".{name}.tmp"
            staging.write_bytes(data)
            staging.replace(folder / name)
        return PushResult(
            remote_id=f"local-{draft_id}",
            url=(folder / "email.html").resolve().as_uri(),
            created=previous is None or previous.remote_id is None,
            pushed_body=content.revision,
        )
