"""`publish send`: deliver an issue to its audience exactly once, resumably.

A send reads like the README's description of one: plan (every check, nothing recorded)
→ confirm → open (the ledger creates or resumes the send under its lock, in one
transaction with every check that can refuse it) → deliver (workers, see `delivery`) →
report. The ledger (`ledger`, tables `sends` and `recipients`) is the truth.
"""

from __future__ import annotations

import math
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email.utils import make_msgid
from pathlib import Path

from . import (
    build,
    check,
    ledger,
    render,
    services,
    state,
    subscribers,
    templates,
    transports,
    unsubscribe,
)
from . import draft as draft_mod
from . import issue as issue_mod
from .delivery import Delivery, Job
from .errors import InputError, PublishError
from .ledger import SendSummary
from .message import MessageTemplate, Recipient
from .redact import redact
from .settings import Settings

MIN_RATE = 0.001  # messages per second: one every 17 minutes
MAX_BACKOFF = 3600.0  # seconds


@dataclass
class SendOptions:
    service: str | None = None
    list_name: str = "main"
    subscribers_path: Path | None = None
    retry_failed: bool = False
    resend_in_doubt: bool = False
    connections: int = 1
    rate: float | None = None  # messages per second, all connections together
    redraft: bool = False
    ignore_check: bool = False
    # Called now and then while the list is read: (rows read, characters read, file size).
    reading: Callable[[int, int, int], None] | None = None


@dataclass
class Plan:
    """What the send would do, found by running every check the real send runs."""

    service: str
    per_recipient: bool
    resuming: int | None = None  # the send that would continue; None for a new one
    will_send: int = 0
    in_doubt: int = 0
    skipped: Counter = field(default_factory=Counter)
    sample: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def summary(self) -> dict:
        return {"will_send": self.will_send, "skipped": dict(self.skipped),
                "sample": self.sample, "resuming": self.resuming, "in_doubt": self.in_doubt,
                "notes": self.notes}


@dataclass
class SendReport:
    send_id: int
    service: str
    sent: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    in_doubt: list[str] = field(default_factory=list)
    skipped: Counter = field(default_factory=Counter)
    pending: int = 0
    stopped: str = ""  # why the send stopped early, if it did
    seconds: float = 0.0
    note: str = ""
    error: BaseException | None = None  # the exception behind `stopped`, for --debug

    @property
    def complete(self) -> bool:
        return not self.pending and not self.stopped

    def summary(self) -> dict:
        return {
            "send_id": self.send_id, "service": self.service, "sent": self.sent,
            "failed": [{"email": e, "reason": r} for e, r in self.failed],
            "in_doubt": self.in_doubt, "skipped": dict(self.skipped), "pending": self.pending,
            "stopped": self.stopped, "seconds": round(self.seconds, 3), "note": self.note,
        }


def classify(item: subscribers.Subscriber | subscribers.Rejected,
             suppressed: set[str]) -> tuple[str, str]:
    """(state, reason) for one row of a list: pending, or skipped and why."""
    if isinstance(item, subscribers.Rejected):
        return "skipped", f"invalid: {item.reason}"
    if item.key in suppressed:
        return "skipped", "suppressed"
    if item.status != "active":
        return "skipped", item.status
    return "pending", ""


def _number(value: float, what: str, low: float, high: float) -> float:
    if not (math.isfinite(value) and low <= value <= high):
        raise InputError(f"{what} must be a number from {low:g} to {high:g}, not {value!r}")
    return value


class Sender:
    """One `publish send` of one issue: plan, test copy, then the send itself."""

    def __init__(self, issue_path: str | Path, settings: Settings, options: SendOptions):
        self.settings = settings
        self.options = options
        self.path = Path(issue_path)
        self.service_name = options.service or settings.service
        self.service_class = services.service_class(self.service_name)
        if options.connections < 1 or options.connections > 32:
            raise InputError("--connections must be between 1 and 32")
        if options.rate is not None:
            _number(options.rate, "--rate (messages per second)", MIN_RATE, 1e6)
        self.backoff = _number(settings.number("retry_backoff"),
                               "setting 'retry_backoff' (seconds)", 0, MAX_BACKOFF)
        if not self.path.is_file():
            raise InputError("no such file", self.path)
        self.issue = draft_mod.issue_key(self.path, settings)
        if self.service_class.per_recipient:
            self.list_path = options.subscribers_path or subscribers.list_path(
                settings.root, options.list_name)
            if not self.list_path.is_file():
                raise InputError("no such subscriber list", self.list_path)
            self.audience_name = draft_mod.issue_key(self.list_path, settings)
        else:
            if options.subscribers_path or options.list_name != "main":
                raise InputError(f"{self.service_name} sends to its own subscribers; "
                                 "--list and --subscribers do not apply")
            self.audience_name = f"{self.service_name} subscribers"
        self.key = ledger.SendKey(self.issue, self.service_name, self.audience_name)

    # the draft ---------------------------------------------------------------------
    def _draft_row(self, db: sqlite3.Connection) -> sqlite3.Row | None:
        return db.execute("SELECT * FROM drafts WHERE issue = ? AND service = ?",
                          (self.issue, self.service_class.draft_store)).fetchone()

    def _stale(self, row: sqlite3.Row | None) -> str:
        """Why the draft cannot be sent as it is, or ''."""
        if row is None:
            return "has no draft yet"
        if row["remote_id"] is None or \
                row["source_hash"] != draft_mod.sha256(self.path.read_bytes()):
            return "changed since its draft was pushed"
        return ""

    def _refuse_stale(self, why: str) -> None:
        store = self.service_class.draft_store
        raise PublishError(f"{self.issue} {why}; run `publish draft {self.issue}"
                           f"{'' if store == 'local' else ' --service ' + store}` first, "
                           "or add --redraft")

    def _draft(self, db: sqlite3.Connection, *, push: bool = True) -> sqlite3.Row | None:
        """The draft to send. A stale one is refused, or with --redraft pushed first (or,
        when `push` is False, None is returned: the caller renders the issue itself)."""
        row = self._draft_row(db)
        why = self._stale(row)
        if not why:
            return row
        if not self.options.redraft:
            self._refuse_stale(why)
        if not push:
            return None
        draft_mod.push(self.path, self.settings, self.service_class.draft_store)
        row = self._draft_row(db)
        if self._stale(row):  # the file changed again while it was pushed
            self._refuse_stale(self._stale(row))
        return row

    def _content(self, db: sqlite3.Connection, row: sqlite3.Row | None) -> ledger.Content:
        """What a new send freezes: the stored draft, or (dry run with --redraft) the
        issue rendered now."""
        if row is None:
            email = build.render_issue(self.path, self.settings).email
            return ledger.Content(draft_mod.sha256("\0".join((email.subject, email.html,
                                                               email.text))),
                                  email.subject, email.html, email.text)
        revision = db.execute(
            "SELECT subject, html, text, revision FROM draft_revisions WHERE draft_id = ? "
            "ORDER BY id DESC LIMIT 1", (row["id"],)).fetchone()
        if revision is None:
            raise PublishError(f"the local draft of {self.issue} has no stored revision; "
                               f"run `publish draft {self.issue}` again")
        return ledger.Content(row["revision"], revision["subject"], revision["html"],
                              revision["text"])

    def _name_fallback(self) -> str:
        lang = render.choose_language(issue_mod.load(self.path), self.settings)
        folder = templates.templates_dir(self.settings.root, self.settings.templates_dir)
        return templates.strings(folder, lang)["name_fallback"]

    def _template(self, subject: str, html: str, text: str,
                  subject_prefix: str = "") -> MessageTemplate:
        return MessageTemplate(render.Email(subject, "", html, text, ""),
                               sender=self.settings.sender, list_name=self.settings.name,
                               unsubscribe_mailto=self.settings.unsubscribe_mailto,
                               subject_prefix=subject_prefix,
                               name_fallback=self._name_fallback())

    def _unsubscribe_url(self, key: bytes | None, email: str) -> str:
        token = unsubscribe.make_token(key, email) if key else ""
        return unsubscribe.url(self.settings.unsubscribe_url, self.settings.base_url, email,
                               token)

    def _key(self) -> bytes | None:
        if "{token}" not in self.settings.unsubscribe_url:
            return None
        return unsubscribe.signing_key(self.settings.state_path)

    def _refuse_placeholder_settings(self) -> None:
        """A service that reaches real readers never sends with the scaffold's placeholders."""
        from .build import placeholder_findings

        found = [] if self.options.ignore_check else check.errors(
            placeholder_findings(self.settings, self.service_name))
        if found:
            raise InputError(f"{found[0].message}; {found[0].hint} (or add --ignore-check)")

    def _refuse_on_check_errors(self, content: ledger.Content) -> None:
        if self.options.ignore_check:
            return
        found = check.errors(check.check_html(
            content.html, text=content.text, subject=content.subject,
            postal_address=self.settings.postal_address,
            accept=check.accepted(self.settings.check_accept)))
        if found:
            raise PublishError(f"`publish check {self.issue}` finds {len(found)} error(s), "
                               f"first: {found[0]}; fix them or add --ignore-check")

    def _audience(self) -> Iterator[ledger.AudienceRow]:
        suppressed = subscribers.suppressed(self.settings.root)
        for line, item in subscribers.read(self.list_path, self.options.reading):
            status, reason = classify(item, suppressed)
            if isinstance(item, subscribers.Rejected):
                yield f"line {line}: {item.value}".lower(), item.value, "", status, reason
            else:
                yield item.key, item.email, item.name, status, reason

    # plan and open: the same checks, rolled back or kept -----------------------------
    def _open(self, db: sqlite3.Connection, *, commit: bool) -> ledger.Opened:
        """Every check of a send, then the send opened under its lock (commit) or not."""
        self._refuse_placeholder_settings()
        self._key()  # a missing unsubscribe secret stops us before anything is recorded
        service = services.get(self.service_name, self.settings, db)
        service.transport().close()  # its settings and secrets, checked without connecting
        row = self._draft(db, push=commit)

        def new_content() -> ledger.Content:
            # Read again under the lock: a draft pushed meanwhile is the one frozen.
            current = self._draft_row(db) if row is not None else None
            if current is not None and self._stale(current):
                self._refuse_stale(self._stale(current))
            content = self._content(db, current)
            self._refuse_on_check_errors(content)
            return content

        try:
            return ledger.open_send(
                db, self.key, new_content=new_content, audience=self._audience,
                current_revision=row["revision"] if row is not None else None,
                retry_failed=self.options.retry_failed,
                resend_in_doubt=self.options.resend_in_doubt, commit=commit,
                source_hash=draft_mod.sha256(self.path.read_bytes()))
        except sqlite3.Error as exc:
            raise state.explain(exc, db) from None

    def plan(self) -> Plan:
        """What `run` would do, by running every one of its checks; nothing is written."""
        plan = Plan(self.service_name, self.service_class.per_recipient)
        db = state.connect(self.settings.state_path)
        try:
            if not self.service_class.per_recipient:
                self._refuse_placeholder_settings()
                row = self._draft(db, push=False)
                services.get(self.service_name, self.settings, db)
                ledger.open_publication(db, self.key, revision="", title="", commit=False)
                if row is None:
                    plan.notes.append("a new draft would be pushed first (--redraft)")
                return plan
            redraft = bool(self._stale(self._draft_row(db)))
            opened = self._open(db, commit=False)
        finally:
            db.close()
        plan.resuming = None if opened.created else opened.send_id
        plan.will_send = opened.counts["pending"]
        plan.in_doubt = opened.counts["in_doubt"]
        plan.skipped, plan.sample, plan.notes = opened.skipped, opened.sample, opened.notes
        if redraft:
            plan.notes.insert(0, "a new draft would be pushed first (--redraft)")
        return plan

    def send_test(self, address: str) -> str:
        """One copy to `address`, subject prefixed [TEST]; not recorded in the ledger."""
        db = state.connect(self.settings.state_path)
        try:
            row = self._draft(db)
            service = services.get(self.service_name, self.settings, db)
            if not self.service_class.per_recipient:
                raise PublishError(f"{self.service_name} has no API for test emails; open the "
                                   f"draft in its editor to preview it: {row['url']}")
            content = self._content(db, row)
            template = self._template(content.subject, content.html, content.text,
                                      subject_prefix="[TEST] ")
            normalized = subscribers.normalize_email(address)
            recipient = Recipient(transports.envelope_address(normalized))
            data = template.render(recipient, self._unsubscribe_url(self._key(), normalized))
            transport = service.transport()
            try:
                return transport.deliver(self.settings.sender_address, recipient.email, data)
            except transports.DeliveryError as exc:
                raise PublishError(f"test copy to {address} not delivered: {exc.response}"
                                   ) from None
            finally:
                transport.close()
        except ValueError as exc:
            raise InputError(f"--test {address!r}: {exc}") from None
        finally:
            db.close()

    # the send ------------------------------------------------------------------------
    def run(self, progress: Callable[[int, int], None] | None = None,
            stop: threading.Event | None = None) -> tuple[SendReport, list[str]]:
        """Send (or continue sending) the issue. Returns the report and notes for the editor."""
        db = state.connect(self.settings.state_path)
        started = time.monotonic()
        try:
            if not self.service_class.per_recipient:
                return self._publish(db), []
            opened = self._open(db, commit=True)
            delivery = self._delivery(db, opened.send_id, progress, stop)
            stopped = "interrupted"
            try:
                stopped = delivery.run(db)
            finally:
                try:
                    ledger.finish(db, opened.send_id, stopped)
                except (sqlite3.Error, PublishError) as exc:
                    stopped = stopped or str(exc if isinstance(exc, PublishError)
                                             else state.explain(exc, db))
            report = self.report(db, opened.send_id)
            report.stopped, report.error = redact(stopped), delivery.error
            report.seconds = time.monotonic() - started
            return report, opened.notes
        finally:
            db.close()

    def _delivery(self, db: sqlite3.Connection, send_id: int,
                  progress: Callable[[int, int], None] | None,
                  stop: threading.Event | None) -> Delivery:
        row = db.execute("SELECT * FROM sends WHERE id = ?", (send_id,)).fetchone()
        template = self._template(row["subject"], row["html"], row["text"])
        key = self._key()
        domain = self.settings.sender_address.rpartition("@")[2]
        unsubscribe_url = self._unsubscribe_url

        def prepare(recipient_id: int, address: str, name: str) -> Job:
            message_id = make_msgid(domain=domain)
            try:
                envelope = transports.envelope_address(address)
                data = template.render(Recipient(envelope, name),
                                       unsubscribe_url(key, address), message_id=message_id)
            except (InputError, ValueError) as exc:
                return Job(recipient_id, address, message_id, None, refused=f"refused: {exc}")
            return Job(recipient_id, envelope, message_id, data)

        service = services.get(self.service_name, self.settings, db)
        return Delivery(
            state_dir=self.settings.state_path, send_id=send_id,
            sender=self.settings.sender_address, transport=service.transport,
            prepare=prepare, rate=self.options.rate,
            connections=min(self.options.connections, self.service_class.max_connections),
            backoff=self.backoff, progress=progress, stop=stop)

    def report(self, db: sqlite3.Connection, send_id: int) -> SendReport:
        by_state, skipped = ledger.counts(db, send_id)
        return SendReport(send_id, self.service_name, sent=by_state["sent"],
                          failed=ledger.failed(db, send_id),
                          in_doubt=ledger.in_doubt(db, send_id), skipped=skipped,
                          pending=by_state["pending"])

    # a service that sends to its own audience ---------------------------------------
    def _publish(self, db: sqlite3.Connection) -> SendReport:
        self._refuse_placeholder_settings()
        row = self._draft(db)
        service = services.get(self.service_name, self.settings, db)
        send_id = ledger.open_publication(db, self.key, revision=row["revision"],
                                          title=row["title"])
        note, published_now = service.publish(row["remote_id"])
        ledger.finish_publication(db, send_id, note)
        db.execute("UPDATE drafts SET status = 'sent' WHERE issue = ? AND service = ?",
                   (self.issue, self.service_class.draft_store))
        if not published_now:
            raise PublishError(f"{self.issue}: {note}")
        return SendReport(send_id, self.service_name, note=note)


def list_sends(settings: Settings) -> list[SendSummary]:
    """Past sends with their counts, newest first."""
    if not (settings.state_path / state.DB_NAME).exists():
        return []
    db = state.connect(settings.state_path, readonly=True)
    try:
        return ledger.list_sends(db)
    finally:
        db.close()
