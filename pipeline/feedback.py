"""`publish feedback`: bounces, complaints and deliveries reported by SES, taken back.

SES publishes the events of a configuration set to an SNS topic; an SQS queue subscribed
to it (`feedback_queue_url`) holds them until read here. Each event is recorded once in
`feedback_events` (an event seen twice, or read again after a crash, changes nothing), in
any order, and:
- a permanent bounce or a complaint suppresses the address (`subscribers/suppressed.csv`,
  with the reason and the date: every later send skips it);
- transient bounces are counted; `soft_bounce_limit` of them suppress the address;
- a delivery settles a recipient left in doubt (its call got no answer) as `sent`, found
  by the recipient tag the message carries.
A queue message is deleted only once everything it says is recorded.
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

from . import ledger, state, subscribers
from .errors import InputError, PublishError
from .services.ses import RECIPIENT_TAG, client, error_code
from .settings import Settings

RECEIVE_WAIT = 20  # seconds an SQS long poll waits for a message


@dataclass(frozen=True)
class Event:
    """One recipient's part of one SES event."""

    id: str  # the same for the same event, however often it arrives
    kind: str  # delivery | bounce | soft_bounce | complaint | reject | other
    remote_id: str  # SES's message id
    email: str
    detail: str
    at: float
    recipient_id: int | None  # our recipient, from the tag the message carried


@dataclass
class FeedbackReport:
    messages: int = 0
    events: Counter = field(default_factory=Counter)  # new events by kind
    repeated: int = 0  # events seen before
    unreadable: int = 0  # queue messages left in the queue: not an SES event
    suppressed: list[tuple[str, str]] = field(default_factory=list)  # (email, reason)
    settled: int = 0  # in-doubt recipients found delivered

    def summary(self) -> dict:
        return {"messages": self.messages, "events": dict(self.events),
                "repeated": self.repeated, "unreadable": self.unreadable,
                "suppressed": [{"email": e, "reason": r} for e, r in self.suppressed],
                "settled": self.settled}


def _timestamp(value: str | None) -> float:
    try:
        return dt.datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return time.time()


def _address(value: str) -> str:
    try:
        return subscribers.email_key(subscribers.normalize_email(value.rpartition("<")[2]
                                                                 .rstrip(">")))
    except ValueError:
        return ""


def parse(body: str) -> list[Event]:
    """The events in one queue message: an SNS notification wrapping an SES event, or
    (raw message delivery) the SES event itself. ValueError when it is neither."""
    message = json.loads(body)
    if isinstance(message, dict) and message.get("Type") == "Notification":
        message = json.loads(message.get("Message", ""))
    if not isinstance(message, dict) or "mail" not in message:
        raise ValueError("not an SES event")
    kind = str(message.get("eventType") or message.get("notificationType") or "").lower()
    mail = message["mail"]
    remote_id = str(mail.get("messageId", ""))
    tags = mail.get("tags") or {}
    tag = (tags.get(RECIPIENT_TAG) or [""])[0]
    recipient_id = int(tag) if str(tag).isdigit() else None
    part = message.get(kind) or {}
    if kind == "bounce":
        permanent = part.get("bounceType") == "Permanent"
        people = [(r.get("emailAddress", ""), r.get("diagnosticCode") or r.get("status") or "")
                  for r in part.get("bouncedRecipients", [])]
        kind = "bounce" if permanent else "soft_bounce"
        why = f"{part.get('bounceType', '')}/{part.get('bounceSubType', '')}"
        detail_of = {address: f"{why} {code}".strip() for address, code in people}
        identity = part.get("feedbackId") or part.get("timestamp")
    elif kind == "complaint":
        detail_of = {r.get("emailAddress", ""): part.get("complaintFeedbackType", "")
                     for r in part.get("complainedRecipients", [])}
        identity = part.get("feedbackId") or part.get("timestamp")
    elif kind == "delivery":
        detail_of = {address: part.get("smtpResponse", "") for address in
                     part.get("recipients", [])}
        identity = part.get("timestamp")
    else:
        detail_of = {address: "" for address in mail.get("destination", [])}
        identity = part.get("timestamp") or mail.get("timestamp")
        kind = kind if kind in ("reject", "send") else "other"
    at = _timestamp(part.get("timestamp") or mail.get("timestamp"))
    return [Event(f"{kind}|{remote_id}|{identity}|{_address(address)}", kind, remote_id,
                  _address(address), str(detail)[:300], at, recipient_id)
            for address, detail in detail_of.items() if _address(address)]


def record(db: sqlite3.Connection, event: Event) -> bool:
    """Record an event; False (and nothing changed) when it was seen before."""
    return db.execute(
        "INSERT OR IGNORE INTO feedback_events (id, kind, remote_id, email, detail, at) "
        "VALUES (?, ?, ?, ?, ?, ?)", (event.id, event.kind, event.remote_id, event.email,
                                      event.detail, event.at)).rowcount == 1


class Feedback:
    """One `publish feedback` run over the queue."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.url = settings.feedback_queue_url.strip()
        if not self.url:
            raise InputError("no feedback queue: set feedback_queue_url (publish.toml or "
                             "PUBLISH_FEEDBACK_QUEUE_URL) to the SQS queue of the "
                             "configuration set's events")
        self.limit = int(settings.number("soft_bounce_limit", low=1, high=1000))
        self.sqs = client(settings, "sqs")
        self.report = FeedbackReport()

    def run(self, *, once: bool, stop: threading.Event | None = None) -> FeedbackReport:
        """Read the queue until it is empty (`once`) or until `stop`."""
        stop = stop or threading.Event()
        db = state.connect(self.settings.state_path)
        try:
            while not stop.is_set():
                messages = self._receive(0 if once else RECEIVE_WAIT)
                if not messages and once:
                    break
                for message in messages:
                    self._take(db, message)
        finally:
            db.close()
        return self.report

    def _receive(self, wait: int) -> list[dict]:
        try:
            answer = self.sqs.receive_message(QueueUrl=self.url, MaxNumberOfMessages=10,
                                              WaitTimeSeconds=wait)
        except Exception as exc:
            raise PublishError(f"cannot read the feedback queue: {error_code(exc) or exc}"
                               ) from None
        return answer.get("Messages", [])

    def _take(self, db: sqlite3.Connection, message: dict) -> None:
        """Everything one queue message says, then the message deleted."""
        self.report.messages += 1
        try:
            events = parse(message.get("Body", ""))
        except (ValueError, TypeError, AttributeError, KeyError):
            self.report.unreadable += 1  # left in the queue (its dead-letter queue decides)
            return
        for event in events:
            self._apply(db, event)
        try:
            self.sqs.delete_message(QueueUrl=self.url, ReceiptHandle=message["ReceiptHandle"])
        except Exception as exc:  # read again next time: every event in it is a repeat then
            raise PublishError(f"cannot delete a message from the feedback queue: "
                               f"{error_code(exc) or exc}") from None

    def _apply(self, db: sqlite3.Connection, event: Event) -> None:
        """Suppress first (idempotent), then record: a crash in between suppresses again."""
        when = dt.datetime.fromtimestamp(event.at, dt.UTC).strftime("%Y-%m-%d")
        if event.kind in ("bounce", "complaint"):
            reason = (f"complaint {event.detail}".strip() if event.kind == "complaint"
                      else f"bounce {event.detail}".strip())
            self._suppress(event.email, "bounced" if event.kind == "bounce"
                           else "unsubscribed", when, f"SES {reason}")
        with ledger.transaction(db):
            new = record(db, event)
            if new and event.kind == "delivery" and event.recipient_id is not None:
                self.report.settled += ledger.settle_by_delivery(db, event.recipient_id,
                                                                 event.remote_id)
            soft = db.execute("SELECT count(*) FROM feedback_events WHERE email = ? AND "
                              "kind = 'soft_bounce'", (event.email,)).fetchone()[0]
        if new:
            self.report.events[event.kind] += 1
        else:
            self.report.repeated += 1
        if event.kind == "soft_bounce" and soft >= self.limit:
            self._suppress(event.email, "bounced", when,
                           f"SES {soft} transient bounces (soft_bounce_limit {self.limit})")

    def _suppress(self, email: str, status: str, when: str, reason: str) -> None:
        if subscribers.suppress(self.settings.root, email, status=status, when=when,
                                reason=reason):
            self.report.suppressed.append((email, reason))
