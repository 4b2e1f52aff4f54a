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
from pathlib import Path

from . import (
    check,
    delivery,
    delivery_chained,
    ledger,
    ledger_report,
    readers,
    schedule,
    services,
    state,
    subscribers,
    transports,
)
from . import draft as draft_mod
from .errors import InputError, PublishError
from .ledger_report import SendSummary
from .redact import redact
from .send_content import DraftSource, Messages, signing_key
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
    yes_over_quota: bool = False  # send although the service's daily quota is too small


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
        self.can = services.capabilities(self.service_name)
        if options.connections < 1 or options.connections > 32:
            raise InputError("--connections must be between 1 and 32")
        if options.rate is not None:
            _number(options.rate, "--rate (messages per second)", MIN_RATE, 1e6)
        self.backoff = _number(settings.number("retry_backoff"),
                               "setting 'retry_backoff' (seconds)", 0, MAX_BACKOFF)
        if not self.path.is_file():
            raise InputError("no such file", self.path)
        self.issue = draft_mod.issue_key(self.path, settings)
        self.drafts = DraftSource(self.path, self.issue, settings, self.can, options.redraft)
        if self.can.per_recipient:
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
        self.rate = options.rate  # messages per second; a service's own limit may lower it

    # the checks ----------------------------------------------------------------------
    def _refuse_placeholder_settings(self) -> None:
        """A service that reaches real readers never sends with the scaffold's placeholders
        (the errors `build.placeholder_findings` reports, without importing the build)."""
        from .settings import placeholders

        found = [] if self.options.ignore_check or not self.can.reaches_readers else (
            placeholders(self.settings))
        if found:
            raise InputError(f"{found[0][1]}; set it in publish.toml before sending to real "
                             "readers (or add --ignore-check)")

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

    def _list_rows(self, suppressed: set[str]) -> Iterator[ledger.AudienceRow]:
        for line, item in subscribers.read(self.list_path, self.options.reading):
            status, reason = classify(item, suppressed)
            if isinstance(item, subscribers.Rejected):
                yield f"line {line}: {item.value}".lower(), item.value, "", status, reason
            else:
                yield item.key, item.email, item.name, status, reason

    def _audience(self, db: sqlite3.Connection) -> Iterator[ledger.AudienceRow]:
        """The list, with what readers changed on the web (read in the send's transaction)."""
        suppressed = subscribers.suppressed(self.settings.root)
        return readers.apply(db, self.audience_name, self._list_rows(suppressed), suppressed)

    # plan and open: the same checks, rolled back or kept -----------------------------
    def _open(self, db: sqlite3.Connection, *, commit: bool) -> ledger.Opened:
        """Every check of a send, then the send opened under its lock (commit) or not."""
        schedule.refuse_if_scheduled(db, self.issue, self.service_name)
        self._refuse_placeholder_settings()
        signing_key(self.settings)  # a missing unsubscribe secret stops us before anything
        service = services.get(self.service_name, self.settings, db)
        service.transport().close()  # its settings and secrets, checked without connecting
        refuse = self._read_limits(service)
        row = self.drafts.current(db, push=commit)

        def new_content() -> ledger.Content:
            # Read again under the lock: a draft pushed meanwhile is the one frozen.
            current = self.drafts.row(db) if row is not None else None
            if current is not None and self.drafts.stale(current):
                self.drafts.refuse_stale(self.drafts.stale(current))
            content = self.drafts.content(db, current)
            self._refuse_on_check_errors(content)
            return content

        try:
            return ledger.open_send(
                db, self.key, new_content=new_content, audience=lambda: self._audience(db),
                current_revision=row["revision"] if row is not None else None,
                retry_failed=self.options.retry_failed,
                resend_in_doubt=self.options.resend_in_doubt, commit=commit,
                source_hash=draft_mod.sha256(self.path.read_bytes()), refuse=refuse)
        except sqlite3.Error as exc:
            raise state.explain(exc, db) from None

    def _read_limits(self, service: services.Service) -> Callable[[Counter], None] | None:
        """A service with sending limits (`limits()`): its rate caps ours (--rate can only
        lower it), and a send larger than what is left of its daily quota is refused
        unless --yes-over-quota."""
        read = getattr(service, "limits", None)
        if read is None:
            return None
        limits = read()
        self.rate = min(self.options.rate or math.inf, max(limits.max_rate, MIN_RATE))

        def refuse(by_state: Counter) -> None:
            left = limits.remaining_today
            if 0 <= left < by_state["pending"] and not self.options.yes_over_quota:
                raise PublishError(
                    f"{by_state['pending']} recipient(s) to send to, but {self.service_name}'s "
                    f"24-hour quota has {left} left; wait, raise the quota, or add "
                    "--yes-over-quota to send what it allows and resume later")
        return refuse

    def plan(self) -> Plan:
        """What `run` would do, by running every one of its checks; nothing is written."""
        plan = Plan(self.service_name, self.can.per_recipient)
        db = state.connect(self.settings.state_path)
        try:
            if not self.can.per_recipient:
                schedule.refuse_if_scheduled(db, self.issue, self.service_name)
                self._refuse_placeholder_settings()
                row = self.drafts.current(db, push=False)
                services.get(self.service_name, self.settings, db)
                ledger.open_publication(db, self.key, revision="", title="", commit=False)
                if row is None:
                    plan.notes.append("a new draft would be pushed first (--redraft)")
                return plan
            redraft = bool(self.drafts.stale(self.drafts.row(db)))
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
            row = self.drafts.current(db)
            service = services.get(self.service_name, self.settings, db)
            if not self.can.can_send_test:
                where = f": {row['url']}" if row is not None and row["url"] else ""
                raise PublishError(f"{self.service_name} has no API for test emails; open the "
                                   f"draft in its editor to preview it{where}")
            messages = Messages(self.path, self.settings, self.drafts.content(db, row),
                                subject_prefix="[TEST] ")
            return send_one(service, messages, subscribers.normalize_email(address))
        except ValueError as exc:
            raise InputError(f"--test {address!r}: {exc}") from None
        finally:
            db.close()

    # the send ------------------------------------------------------------------------
    def run(self, progress: Callable[[int, int], None] | None = None,
            stop: threading.Event | None = None) -> tuple[SendReport, list[str]]:
        """Open (or resume) the send, deliver to everyone still pending, report.

        Returns the report and notes for the editor."""
        db = state.connect(self.settings.state_path)
        started = time.monotonic()
        try:
            if not self.can.per_recipient:
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
                  stop: threading.Event | None) -> delivery.Delivery:
        """The delivery loop for this service's transport, over the frozen content."""
        row = db.execute("SELECT * FROM sends WHERE id = ?", (send_id,)).fetchone()
        frozen = ledger.Content(row["revision"], row["subject"], row["html"], row["text"])
        messages = Messages(self.path, self.settings, frozen)
        whole = not self.can.renders_itself

        def prepare(recipient_id: int, address: str, name: str) -> delivery.Job:
            return messages.job(recipient_id, address, name, whole_message=whole)

        service = services.get(self.service_name, self.settings, db)
        connections = min(self.options.connections, self.can.max_connections)
        options = dict(
            state_dir=self.settings.state_path, send_id=send_id,
            sender=self.settings.sender_address,
            transport=lambda: service.transport(messages.template),
            prepare=prepare, rate=self.rate, connections=connections,
            backoff=self.backoff, progress=progress, stop=stop)
        if self.can.batch_size > 1:
            return delivery.start(batch_size=self.can.batch_size, **options)
        return delivery_chained.ChainedDelivery(**options)

    def report(self, db: sqlite3.Connection, send_id: int) -> SendReport:
        by_state, skipped = ledger.counts(db, send_id)
        return SendReport(send_id, self.service_name, sent=by_state["sent"],
                          failed=ledger.failed(db, send_id),
                          in_doubt=ledger.in_doubt(db, send_id), skipped=skipped,
                          pending=by_state["pending"])

    # a service that sends to its own audience ---------------------------------------
    def _publish(self, db: sqlite3.Connection) -> SendReport:
        self._refuse_placeholder_settings()
        row = self.drafts.current(db)
        service = services.get(self.service_name, self.settings, db)
        schedule.refuse_if_scheduled(db, self.issue, self.service_name)
        send_id = ledger.open_publication(db, self.key, revision=row["revision"],
                                          title=row["title"])
        try:
            note, published_now = service.publish(row["remote_id"])
        except services.EmailNotConfirmed as exc:
            note, published_now = str(exc), False
        ledger.finish_publication(db, send_id, note)
        db.execute("UPDATE drafts SET status = 'sent' WHERE issue = ? AND service = ?",
                   (self.issue, self.can.draft_store))
        if not published_now:
            raise PublishError(f"{self.issue}: {note}")
        return SendReport(send_id, self.service_name, note=note)


def send_one(service: services.Service, messages: Messages, address: str) -> str:
    """One message to one address through the service's transport (a test copy)."""
    transport = service.transport(messages.template)
    try:
        if getattr(transport, "batch_size", 1) > 1:
            job = messages.job(0, address, "")
            if job.refused:
                raise InputError(job.refused)
            [answer] = transport.deliver_batch(
                messages.settings.sender_address,
                [transports.Entry(job.address, job.data, job.fields)])
            if answer.state != "sent":
                raise transports.Rejected(answer.response)
            return answer.response
        data = messages.message(address)
        return transport.deliver(messages.settings.sender_address,
                                 transports.envelope_address(address), data)
    except transports.DeliveryError as exc:
        raise PublishError(f"test copy to {address} not delivered: {exc.response}") from None
    finally:
        transport.close()


def list_sends(settings: Settings) -> list[SendSummary]:
    """Past sends with their counts, newest first."""
    if not (settings.state_path / state.DB_NAME).exists():
        return []
    db = state.connect(settings.state_path, readonly=True)
    try:
        return ledger_report.list_sends(db)
    finally:
        db.close()
