"""`publish draft` and `publish drafts`: push an issue to a service, idempotently, and list drafts.

The state database maps each issue file to its draft on each service, with the revision
pushed. A second push updates that draft; it never creates another.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from . import services, state
from .errors import PublishError
from .services import DraftContent, DraftRecord
from .settings import Settings

if TYPE_CHECKING:
    from .build import BuildResult

# Front matter that only services read (the email itself does not change with it).
SERVICE_KEYS = ("audience", "section", "tags")


@dataclass
class DraftOutcome:
    service: str
    remote_id: str
    url: str
    changes: list[str]  # "new draft", "title", "content", or empty when already up to date
    warnings: list[str] = field(default_factory=list)
    build_summary: dict = field(default_factory=dict)

    def summary(self) -> dict:
        return {
            "service": self.service,
            "draft_id": self.remote_id,
            "url": self.url,
            "changes": self.changes,
            "warnings": self.warnings,
            "build": self.build_summary,
        }


def sha256(data: bytes | str) -> str:
    if isinstance(data, str):
        data = data.encode("utf-8")
    return hashlib.sha256(data).hexdigest()


def issue_key(path: Path, settings: Settings) -> str:
    """How the state database names an issue: its path inside the newsletter folder."""
    resolved = path.resolve()
    try:
        return resolved.relative_to(settings.root.resolve()).as_posix()
    except ValueError:
        return resolved.as_posix()


def content_for(result: BuildResult, settings: Settings) -> DraftContent:
    built = result.built
    email = built.email
    return DraftContent(
        issue=issue_key(built.issue.path, settings),
        slug=built.issue.slug,
        title=built.issue.title,
        subtitle=built.issue.subtitle,
        lang=email.lang,
        fragment=built.fragment,
        html=email.html,
        text=email.text,
        preview_html=built.html,
        preview_text=built.text,
        eml=result.files["email.eml"].read_bytes(),
        revision=sha256("\0".join((email.subject, email.html, email.text))),
        source_hash=sha256(built.issue.path.read_bytes()),
        front_matter={key: (built.issue.meta[key], built.issue.meta_lines.get(key, 1))
                      for key in SERVICE_KEYS if key in built.issue.meta},
    )


def _record(db, issue: str, service: str) -> DraftRecord | None:
    row = db.execute(
        "SELECT * FROM drafts WHERE issue = ? AND service = ?", (issue, service)
    ).fetchone()
    return DraftRecord.from_row(row) if row else None


def push(path: str | Path, settings: Settings, service_name: str | None = None,
         *, force: bool = False) -> DraftOutcome:
    """Build the issue and push it as a draft; update the existing draft when there is one."""
    # An unknown name fails before anything is built; smtp keeps its drafts locally.
    name = services.service_class(service_name or settings.service).draft_store
    db = state.connect(settings.state_path)
    try:
        service = services.get(name, settings, db)  # checks its settings and secrets
        from .build import build  # not imported by `send`, which only reads drafts

        result = build(path, settings)  # a build error stops here: nothing is pushed
        content = content_for(result, settings)
        sending = state.running_send(db, content.issue)
        if sending is not None:
            raise PublishError(f"{content.issue} is being sent right now (pid {sending}); "
                               "push the draft after the send finishes")
        previous = _record(db, content.issue, name)
        if previous is not None and previous.status == "sent":
            raise PublishError(
                f"{content.issue} was already sent through {name}; its draft cannot change"
            )
        if previous is not None and previous.remote_id and not force \
                and previous.revision == content.revision:
            return DraftOutcome(name, previous.remote_id, previous.url, [],
                                result.built.warnings, result.summary())
        if previous is None:
            db.execute(
                "INSERT INTO drafts (issue, service, title, status) VALUES (?, ?, ?, 'creating')",
                (content.issue, name, content.title),
            )
        pushed = service.push_draft(content, previous, force=force)
        db.execute(
            "UPDATE drafts SET remote_id = ?, url = ?, title = ?, revision = ?, pushed_body = ?,"
            " source_hash = ?, status = 'draft', pushed_at = ? WHERE issue = ? AND service = ?",
            (pushed.remote_id, pushed.url, content.title, content.revision, pushed.pushed_body,
             content.source_hash, time.time(), content.issue, name),
        )
    finally:
        db.close()
    if pushed.created:
        changes = ["new draft"]
    else:
        changes = ["title"] * (previous.title != content.title) + ["content"]
    return DraftOutcome(name, pushed.remote_id, pushed.url, changes,
                        result.built.warnings + pushed.warnings, result.summary())


@dataclass(frozen=True)
class DraftListing:
    record: DraftRecord
    markdown_changed: bool | None  # None when the issue file is gone


def list_drafts(settings: Settings) -> list[DraftListing]:
    """Every draft this newsletter knows, and whether its Markdown changed since the push."""
    path = settings.state_path / state.DB_NAME
    if not path.exists():
        return []
    db = state.connect(settings.state_path, readonly=True)
    try:
        rows = db.execute("SELECT * FROM drafts ORDER BY pushed_at DESC").fetchall()
    finally:
        db.close()
    listings = []
    for row in rows:
        record = DraftRecord.from_row(row)
        source = settings.root / record.issue
        changed = sha256(source.read_bytes()) != record.source_hash if source.is_file() else None
        listings.append(DraftListing(record, changed))
    return listings
