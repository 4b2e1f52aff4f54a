"""`publish send`: deliver an issue to its audience exactly once, resumably.

The ledger (tables `sends` and `recipients` in the state database) is the truth. The
audience is frozen into it when a send starts. A recipient is marked `sending` before
its message is handed over and `sent` after the server's 250; rows a crash leaves in
`sending` become `in_doubt` and are reported, not re-sent, unless asked.
"""

from __future__ import annotations

import contextlib
import os
import queue
import socket
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email.utils import make_msgid
from pathlib import Path

from . import (
    check,
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
from .errors import InputError, PublishError
from .message import MessageTemplate, Recipient
from .settings import Settings

MAX_ATTEMPTS = 3


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


@dataclass
class Audience:
    """Who a send would reach, counted without sending anything."""

    will_send: int = 0
    skipped: Counter = field(default_factory=Counter)
    sample: list[str] = field(default_factory=list)


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


class _RateLimit:
    def __init__(self, per_second: float | None):
        self.interval = 1.0 / per_second if per_second else 0.0
        self.next = time.monotonic()
        self.lock = threading.Lock()

    def wait(self) -> None:
        if not self.interval:
            return
        with self.lock:
            now = time.monotonic()
            at = max(self.next, now)
            self.next = at + self.interval
        if at > now:
            time.sleep(at - now)


class Sender:
    """One `publish send` of one issue: plan, preview, test copy, then the send itself."""

    def __init__(self, issue_path: str | Path, settings: Settings, options: SendOptions):
        self.settings = settings
        self.options = options
        self.path = Path(issue_path)
        self.service_name = options.service or settings.service
        self.service_class = services.service_class(self.service_name)
        if options.connections < 1 or options.connections > 32:
            raise InputError("--connections must be between 1 and 32")
        if options.rate is not None and options.rate <= 0:
            raise InputError("--rate must be a positive number of messages per second")
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

    # the draft ---------------------------------------------------------------------
    def _draft(self, db: sqlite3.Connection) -> sqlite3.Row:
        """The draft to send, refusing one that is older than the Markdown."""
        store = self.service_class.draft_store
        row = db.execute("SELECT * FROM drafts WHERE issue = ? AND service = ?",
                         (self.issue, store)).fetchone()
        current = draft_mod.sha256(self.path.read_bytes())
        if row is None or row["remote_id"] is None or row["source_hash"] != current:
            if not self.options.redraft:
                why = "has no draft yet" if row is None else "changed since its draft was pushed"
                raise PublishError(
                    f"{self.issue} {why}; run `publish draft {self.issue}"
                    f"{'' if store == 'local' else ' --service ' + store}` first, "
                    "or add --redraft")
            draft_mod.push(self.path, self.settings, store)
            row = db.execute("SELECT * FROM drafts WHERE issue = ? AND service = ?",
                             (self.issue, store)).fetchone()
        return row

    def _email(self, db: sqlite3.Connection, draft_row: sqlite3.Row) -> render.Email:
        revision = db.execute(
            "SELECT subject, html, text, revision FROM draft_revisions WHERE draft_id = ? "
            "ORDER BY id DESC LIMIT 1", (draft_row["id"],)).fetchone()
        if revision is None:
            raise PublishError(f"the local draft of {self.issue} has no stored revision; "
                               f"run `publish draft {self.issue}` again")
        return render.Email(revision["subject"], "", revision["html"], revision["text"], "")

    def _name_fallback(self) -> str:
        lang = render.choose_language(issue_mod.load(self.path), self.settings)
        folder = templates.templates_dir(self.settings.root, self.settings.templates_dir)
        return templates.strings(folder, lang)["name_fallback"]

    def _template(self, email: render.Email, subject_prefix: str = "") -> MessageTemplate:
        return MessageTemplate(email, sender=self.settings.sender, list_name=self.settings.name,
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

    # looking before sending ----------------------------------------------------------
    def preview(self) -> Audience:
        """Who would receive the issue; nothing is written or sent."""
        audience = Audience()
        if not self.service_class.per_recipient:
            return audience
        suppressed = subscribers.suppressed(self.settings.root)
        for _, item in subscribers.read(self.list_path):
            status, reason = classify(item, suppressed)
            if status == "pending":
                audience.will_send += 1
                if len(audience.sample) < 10:
                    audience.sample.append(item.email)
            else:
                audience.skipped[reason.split(":")[0]] += 1
        return audience

    def check_ready(self) -> None:
        """Fail now, before asking for confirmation, if the draft or settings are not ready."""
        db = state.connect(self.settings.state_path)
        try:
            self._draft(db)
            service = services.get(self.service_name, self.settings, db)
            if self.service_class.per_recipient:
                self._key()
                service.transport().close()
        finally:
            db.close()

    def send_test(self, address: str) -> str:
        """One copy to `address`, subject prefixed [TEST]; not recorded in the ledger."""
        db = state.connect(self.settings.state_path)
        try:
            row = self._draft(db)
            service = services.get(self.service_name, self.settings, db)
            if not self.service_class.per_recipient:
                raise PublishError(f"{self.service_name} has no API for test emails; open the "
                                   f"draft in its editor to preview it: {row['url']}")
            template = self._template(self._email(db, row), subject_prefix="[TEST] ")
            recipient = Recipient(subscribers.normalize_email(address))
            data = template.render(recipient, self._unsubscribe_url(self._key(), address))
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
    def _lock(self, db: sqlite3.Connection, send_id: int) -> None:
        db.execute("BEGIN IMMEDIATE")
        try:
            other = state.running_send(db, self.issue)
            if other is not None:
                raise PublishError(f"another `publish send` of {self.issue} is running "
                                   f"(pid {other}); wait for it to finish")
            db.execute("UPDATE sends SET lock_pid = ?, lock_host = ? WHERE id = ?",
                       (os.getpid(), socket.gethostname(), send_id))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def _freeze(self, db: sqlite3.Connection, email: render.Email, revision: str) -> int:
        """Create the send and its frozen audience in one transaction."""
        suppressed = subscribers.suppressed(self.settings.root)

        def recipient_rows(send_id: int) -> Iterator[tuple]:
            for line, item in subscribers.read(self.list_path):
                status, reason = classify(item, suppressed)
                if isinstance(item, subscribers.Rejected):
                    yield send_id, f"line {line}: {item.value}".lower(), item.value, "", status, \
                        reason
                else:
                    yield send_id, item.key, item.email, item.name, status, reason

        db.execute("BEGIN IMMEDIATE")
        try:
            send_id = db.execute(
                "INSERT INTO sends (issue, service, audience, revision, subject, html, text,"
                " status, started_at) VALUES (?, ?, ?, ?, ?, ?, ?, 'sending', ?) RETURNING id",
                (self.issue, self.service_name, self.audience_name, revision, email.subject,
                 email.html, email.text, time.time())).fetchone()[0]
            db.executemany(
                "INSERT OR IGNORE INTO recipients (send_id, key, email, name, state, reason)"
                " VALUES (?, ?, ?, ?, ?, ?)", recipient_rows(send_id))
            total = db.execute("SELECT count(*) FROM recipients WHERE send_id = ? AND "
                               "state = 'pending'", (send_id,)).fetchone()[0]
            db.execute("UPDATE sends SET total = ? WHERE id = ?", (total, send_id))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return send_id

    def _open_send(self, db: sqlite3.Connection) -> tuple[int, list[str]]:
        """The send to work on: resumed, reopened for retries, or new. Returns (id, notes)."""
        notes: list[str] = []
        existing = db.execute(
            "SELECT * FROM sends WHERE issue = ? AND service = ? AND audience = ? "
            "ORDER BY id DESC LIMIT 1",
            (self.issue, self.service_name, self.audience_name)).fetchone()
        if existing is not None and existing["status"] == "done" \
                and not (self.options.retry_failed or self.options.resend_in_doubt):
            counts = dict(db.execute("SELECT state, count(*) FROM recipients WHERE send_id = ? "
                                     "GROUP BY state", (existing["id"],)).fetchall())
            when = time.strftime("%Y-%m-%d %H:%M", time.localtime(existing["finished_at"] or 0))
            raise PublishError(
                f"{self.issue} was already sent to {self.audience_name} on {when} "
                f"({counts.get('sent', 0)} sent, {counts.get('failed', 0)} failed, "
                f"{counts.get('in_doubt', 0)} in doubt); use --retry-failed or "
                "--resend-in-doubt to reach those again")
        if existing is None:
            draft_row = self._draft(db)
            email = self._email(db, draft_row)
            self._refuse_on_check_errors(email)
            send_id = self._freeze(db, email, draft_row["revision"])
            self._lock(db, send_id)
            return send_id, notes
        send_id = existing["id"]
        self._lock(db, send_id)
        moved = db.execute("UPDATE recipients SET state = 'in_doubt', reason = 'interrupted "
                           "while sending' WHERE send_id = ? AND state = 'sending'",
                           (send_id,)).rowcount
        if moved:
            notes.append(f"{moved} recipient(s) were being sent to when an earlier run stopped; "
                         "they are in doubt and will not be sent again (--resend-in-doubt)")
        if self.options.resend_in_doubt:
            db.execute("UPDATE recipients SET state = 'pending' WHERE send_id = ? AND "
                       "state = 'in_doubt'", (send_id,))
        if self.options.retry_failed:
            db.execute("UPDATE recipients SET state = 'pending', attempts = 0 WHERE send_id = ?"
                       " AND state = 'failed'", (send_id,))
        db.execute("UPDATE sends SET status = 'sending', finished_at = NULL WHERE id = ?",
                   (send_id,))
        current = db.execute("SELECT revision FROM drafts WHERE issue = ? AND service = ?",
                             (self.issue, self.service_class.draft_store)).fetchone()
        if current is not None and current["revision"] != existing["revision"]:
            notes.append("the draft changed since this send started; the rest of the audience "
                         "gets the content frozen when it started, like everyone before them")
        return send_id, notes

    def _refuse_on_check_errors(self, email: render.Email) -> None:
        if self.options.ignore_check:
            return
        found = check.errors(check.check_html(
            email.html, text=email.text, subject=email.subject,
            postal_address=self.settings.postal_address,
            accept=check.accepted(self.settings.check_accept)))
        if found:
            raise PublishError(f"`publish check {self.issue}` finds {len(found)} error(s), "
                               f"first: {found[0]}; fix them or add --ignore-check")

    def _refuse_placeholder_settings(self) -> None:
        """A service that reaches real readers never sends with the scaffold's placeholders."""
        from .build import placeholder_findings

        found = [] if self.options.ignore_check else check.errors(
            placeholder_findings(self.settings, self.service_name))
        if found:
            raise InputError(f"{found[0].message}; {found[0].hint} (or add --ignore-check)")

    def run(self, progress: Callable[[int, int], None] | None = None,
            stop: threading.Event | None = None) -> tuple[SendReport, list[str]]:
        """Send (or continue sending) the issue. Returns the report and notes for the editor."""
        stop = stop or threading.Event()
        self._refuse_placeholder_settings()
        db = state.connect(self.settings.state_path)
        started = time.monotonic()
        try:
            if not self.service_class.per_recipient:
                return self._publish(db), []
            self._key()  # a missing unsubscribe secret stops us before anything is frozen
            send_id, notes = self._open_send(db)
            stopped = "interrupted"
            try:
                stopped = self._deliver_all(db, send_id, progress, stop)
            finally:
                report = self.report(db, send_id)
                report.stopped = stopped
                report.seconds = time.monotonic() - started
                status = "done" if report.complete else "interrupted"
                db.execute("UPDATE sends SET status = ?, finished_at = ?, lock_pid = NULL, "
                           "note = ? WHERE id = ?",
                           (status, time.time(), report.stopped, send_id))
            return report, notes
        finally:
            db.close()

    def _deliver_all(self, db: sqlite3.Connection, send_id: int,
                     progress: Callable[[int, int], None] | None,
                     stop: threading.Event) -> str:
        """Hand pending recipients to workers; returns why it stopped early, or ''."""
        row = db.execute("SELECT * FROM sends WHERE id = ?", (send_id,)).fetchone()
        email = render.Email(row["subject"], "", row["html"], row["text"], "")
        template = self._template(email)
        key = self._key()
        service = services.get(self.service_name, self.settings, db)
        connections = self.options.connections if self.service_name != "local" else 1
        work: queue.Queue = queue.Queue(maxsize=connections * 64)
        limiter = _RateLimit(self.options.rate)
        todo = db.execute("SELECT count(*) FROM recipients WHERE send_id = ? AND state = "
                          "'pending'", (send_id,)).fetchone()[0]
        done = [0]
        fatal: list[str] = []
        lock = threading.Lock()
        backoff = self.settings.number("retry_backoff")

        domain = self.settings.sender_address.rpartition("@")[2]

        def prepare(row: tuple[int, str, str] | None) -> tuple | None:
            """A recipient's message, rendered; None marks the end of the work."""
            if row is None:
                return None
            recipient_id, address, name = row
            message_id = make_msgid(domain=domain)
            try:
                data = template.render(Recipient(address, name),
                                       self._unsubscribe_url(key, address),
                                       message_id=message_id)
            except InputError as exc:
                return recipient_id, address, message_id, None, f"refused: {exc}"
            return recipient_id, address, message_id, data, ""

        def worker() -> None:
            wdb = state.connect(self.settings.state_path)
            transport = service.transport()
            try:
                current = prepare(work.get())
                while current is not None:
                    if stop.is_set():  # drain the queue up to the end marker
                        current = work.get()
                        continue
                    following: list = []

                    def render_next(following: list = following) -> None:
                        # Runs while the server handles the current message.
                        if not following:
                            with contextlib.suppress(queue.Empty):
                                following.append(prepare(work.get_nowait()))

                    outcome = self._deliver_one(wdb, transport, current, limiter, backoff,
                                                stop, render_next)
                    with lock:
                        done[0] += 1
                        if outcome:
                            fatal.append(outcome)
                            stop.set()
                    current = following[0] if following else prepare(work.get())
            finally:
                transport.close()
                wdb.close()

        threads = [threading.Thread(target=worker, daemon=True) for _ in range(connections)]
        for thread in threads:
            thread.start()
        last_id = 0
        try:
            while not stop.is_set():
                batch = db.execute(
                    "SELECT id, email, name FROM recipients WHERE send_id = ? AND state = "
                    "'pending' AND id > ? ORDER BY id LIMIT 500", (send_id, last_id)).fetchall()
                if not batch:
                    break
                for row in batch:
                    last_id = row["id"]
                    while not stop.is_set():
                        try:
                            work.put((row["id"], row["email"], row["name"]), timeout=0.2)
                            break
                        except queue.Full:
                            if progress:
                                progress(done[0], todo)
                    if stop.is_set():
                        break
            for _ in threads:
                work.put(None)
            while any(t.is_alive() for t in threads):
                for thread in threads:
                    thread.join(timeout=0.2)
                if progress:
                    progress(done[0], todo)
        except KeyboardInterrupt:
            stop.set()
            for _ in threads:  # each finishes and records the message in flight
                work.put(None)
            for thread in threads:
                thread.join()
            return "interrupted (Ctrl-C); run the same command to continue"
        if fatal:
            return fatal[0]
        return "interrupted; run the same command to continue" if stop.is_set() else ""

    def _deliver_one(self, db: sqlite3.Connection, transport: transports.Transport,
                     item: tuple, limiter: _RateLimit, backoff: float, stop: threading.Event,
                     while_waiting: Callable[[], None]) -> str:
        """Send one rendered message and record the outcome; returns a reason to stop, or ''."""
        recipient_id, address, message_id, data, refused = item
        if data is None:
            self._mark(db, recipient_id, "failed", refused)
            return ""
        for attempt in range(1, MAX_ATTEMPTS + 1):
            limiter.wait()
            db.execute("UPDATE recipients SET state = 'sending', attempts = attempts + 1, "
                       "message_id = ?, updated_at = ? WHERE id = ?",
                       (message_id, time.time(), recipient_id))
            try:
                answer = transport.deliver(self.settings.sender_address, address, data,
                                           while_waiting)
            except transports.InDoubt as exc:
                self._mark(db, recipient_id, "in_doubt", exc.response)
                return ""
            except transports.Rejected as exc:
                self._mark(db, recipient_id, "failed", exc.response)
                return ""
            except transports.Fatal as exc:
                self._mark(db, recipient_id, "pending", exc.response)
                return exc.response
            except transports.Temporary as exc:
                last = attempt == MAX_ATTEMPTS or stop.is_set()
                if isinstance(exc, transports.Unreachable) and last:
                    self._mark(db, recipient_id, "pending", exc.response)
                    return f"{exc.response}; stopped, run the same command to continue"
                if last:
                    self._mark(db, recipient_id, "failed",
                               f"{exc.response} (gave up after {attempt} attempts)")
                    return ""
                self._mark(db, recipient_id, "pending", exc.response)
                time.sleep(backoff * 2 ** (attempt - 1))
                continue
            self._mark(db, recipient_id, "sent", answer)
            return ""
        return ""

    @staticmethod
    def _mark(db: sqlite3.Connection, recipient_id: int, status: str, reason: str) -> None:
        db.execute("UPDATE recipients SET state = ?, reason = ?, updated_at = ? WHERE id = ?",
                   (status, reason[:500], time.time(), recipient_id))

    def report(self, db: sqlite3.Connection, send_id: int) -> SendReport:
        report = SendReport(send_id, self.service_name)
        for status, reason, count in db.execute(
                "SELECT state, CASE WHEN state = 'skipped' THEN reason ELSE '' END, count(*) "
                "FROM recipients WHERE send_id = ? GROUP BY 1, 2", (send_id,)):
            if status == "sent":
                report.sent = count
            elif status == "skipped":
                report.skipped[reason.split(":")[0]] += count
            elif status in ("pending", "sending"):
                report.pending += count
        report.failed = [(r["email"], r["reason"]) for r in db.execute(
            "SELECT email, reason FROM recipients WHERE send_id = ? AND state = 'failed' "
            "ORDER BY id", (send_id,))]
        report.in_doubt = [r["email"] for r in db.execute(
            "SELECT email FROM recipients WHERE send_id = ? AND state = 'in_doubt' ORDER BY id",
            (send_id,))]
        return report

    # a service that sends to its own audience ---------------------------------------
    def _publish(self, db: sqlite3.Connection) -> SendReport:
        row = self._draft(db)
        service = services.get(self.service_name, self.settings, db)
        existing = db.execute("SELECT id, status FROM sends WHERE issue = ? AND service = ? "
                              "ORDER BY id DESC LIMIT 1",
                              (self.issue, self.service_name)).fetchone()
        if existing is not None and existing["status"] == "done":
            raise PublishError(f"{self.issue} was already published on {self.service_name}")
        if existing is None:
            send_id = db.execute(
                "INSERT INTO sends (issue, service, audience, revision, subject, html, text,"
                " status, started_at) VALUES (?, ?, ?, ?, ?, '', '', 'sending', ?) RETURNING id",
                (self.issue, self.service_name, self.audience_name, row["revision"],
                 row["title"], time.time())).fetchone()[0]
        else:
            send_id = existing["id"]
        self._lock(db, send_id)
        note, published_now = service.publish(row["remote_id"])
        db.execute("UPDATE sends SET status = 'done', finished_at = ?, lock_pid = NULL, note = ?"
                   " WHERE id = ?", (time.time(), note, send_id))
        db.execute("UPDATE drafts SET status = 'sent' WHERE issue = ? AND service = ?",
                   (self.issue, self.service_class.draft_store))
        if not published_now:
            raise PublishError(f"{self.issue}: {note}")
        return SendReport(send_id, self.service_name, note=note)


@dataclass(frozen=True)
class SendSummary:
    id: int
    issue: str
    service: str
    audience: str
    status: str
    started_at: float
    counts: dict[str, int]
    note: str


def list_sends(settings: Settings) -> list[SendSummary]:
    """Past sends with their counts, newest first."""
    if not (settings.state_path / state.DB_NAME).exists():
        return []
    db = state.connect(settings.state_path, readonly=True)
    try:
        result = []
        for row in db.execute("SELECT * FROM sends ORDER BY id DESC").fetchall():
            counts = dict(db.execute("SELECT state, count(*) FROM recipients WHERE send_id = ? "
                                     "GROUP BY state", (row["id"],)).fetchall())
            result.append(SendSummary(row["id"], row["issue"], row["service"], row["audience"],
                                      row["status"], row["started_at"], counts, row["note"]))
        return result
    finally:
        db.close()
