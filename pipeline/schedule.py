"""Scheduled sends: `publish send --at TIME`, `--unschedule`, `publish due`.

A service that schedules posts itself (Substack, Ghost, Buttondown) is asked to, and the
schedule is recorded here so `publish sends` shows it and a second send is refused. For
the newsletter's own list (local, smtp) the send is recorded as scheduled and started by
`publish due` (run it from cron every minute): each due send is claimed in one write
transaction, so however many `publish due` run at once, each send starts exactly once.

What is frozen when: the draft is frozen when the send is scheduled (a draft that changes
afterwards is not sent: schedule again); the audience is read when the send starts, like
any send, so whoever unsubscribed in between is not sent to.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import socket
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from . import state
from .errors import InputError, PublishError

if TYPE_CHECKING:  # `publish due` with nothing due stays cheap: no renderer loaded
    from . import send
    from .settings import Settings

UTC = dt.UTC


def parse_when(text: str, settings: Settings, now: float | None = None) -> dt.datetime:
    """An aware time from ISO text with a zone, or local to the `timezone` setting.

    Refused (InputError, before any request): unreadable, without a time of day, in the
    past, or local and ambiguous or nonexistent at a DST change.
    """
    raw = text.strip()
    try:
        when = dt.datetime.fromisoformat(raw)
    except ValueError:
        raise InputError(f"--at {text!r}: not an ISO time such as 2026-12-01T09:00+08:00"
                         ) from None
    if "T" not in raw.upper() and " " not in raw:
        raise InputError(f"--at {text!r}: give a time of day too, e.g. {raw}T09:00")
    if when.tzinfo is None:
        when = _localize(when, text, settings.timezone.strip())
    if when.timestamp() <= (time.time() if now is None else now):
        shown = when.astimezone(UTC).strftime("%Y-%m-%d %H:%M")
        raise InputError(f"--at {text!r} is in the past ({shown} UTC)")
    return when.astimezone(UTC)


def _localize(naive: dt.datetime, text: str, zone_name: str) -> dt.datetime:
    if not zone_name:
        raise InputError(f"--at {text!r} has no zone: add one (…+08:00, …Z) or set the "
                         "timezone setting (e.g. timezone = \"Europe/Berlin\")")
    try:
        zone = ZoneInfo(zone_name)
    except (ZoneInfoNotFoundError, ValueError):
        raise InputError(f"setting 'timezone': unknown time zone {zone_name!r} (an IANA "
                         "name such as Europe/Berlin)") from None
    first, second = naive.replace(tzinfo=zone, fold=0), naive.replace(tzinfo=zone, fold=1)
    if first.utcoffset() != second.utcoffset():
        back = first.astimezone(UTC).astimezone(zone).replace(tzinfo=None)
        if back != naive:
            raise InputError(f"--at {text!r} does not exist in {zone_name} (the clocks skip "
                             "it at a DST change); pick another time or give an offset")
        raise InputError(f"--at {text!r} happens twice in {zone_name} (the clocks go back "
                         f"at a DST change); give the offset: {first.isoformat()} or "
                         f"{second.isoformat()}")
    return first


@dataclass(frozen=True)
class Scheduled:
    id: int
    issue: str
    service: str
    audience: str
    due_at: float
    status: str
    by_service: bool
    remote_id: str | None
    started_at: float | None
    send_id: int | None
    note: str

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> Scheduled:
        return cls(row["id"], row["issue"], row["service"], row["audience"], row["due_at"],
                   row["status"], bool(row["by_service"]), row["remote_id"],
                   row["started_at"], row["send_id"], row["note"])

    def summary(self) -> dict:
        return {**self.__dict__, "due": _iso(self.due_at)}

    def listing(self) -> dict:
        """As `publish sends --json` lists it, beside the sends (same keys, and more)."""
        return {"id": self.send_id, "scheduled_id": self.id, "issue": self.issue,
                "service": self.service, "audience": self.audience,
                "status": f"scheduled: {self.status}" if self.status != "scheduled"
                else "scheduled", "due": self.summary()["due"], "started_at": self.started_at,
                "counts": {}, "note": self.note, "by_service": self.by_service}


def _iso(timestamp: float) -> str:
    return dt.datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="minutes")


def refuse_if_scheduled(db: sqlite3.Connection, issue: str, service: str) -> None:
    """A send now of an issue already scheduled on that service would send it twice."""
    row = db.execute("SELECT due_at, by_service FROM scheduled WHERE issue = ? AND "
                     "service = ? AND status = 'scheduled'", (issue, service)).fetchone()
    if row is None:
        return
    if row["by_service"] and row["due_at"] <= time.time():
        raise PublishError(f"{issue} was scheduled on {service} for {_iso(row[0])}, which "
                           f"has passed: {service} has published it; nothing sent now")
    raise PublishError(f"{issue} is scheduled on {service} for {_iso(row[0])}; cancel "
                       "that first with --unschedule")


def _options_json(options: send.SendOptions, root: Path) -> str:
    subscribers = options.subscribers_path
    if subscribers is not None:
        subscribers = Path(subscribers).resolve()
        subscribers = subscribers.relative_to(root.resolve()) \
            if subscribers.is_relative_to(root.resolve()) else subscribers
    return json.dumps({"list_name": options.list_name,
                       "subscribers_path": str(subscribers) if subscribers else None,
                       "connections": options.connections, "rate": options.rate,
                       "ignore_check": options.ignore_check})


def schedule(path: str | Path, settings: Settings, options: send.SendOptions, at: str,
             now: float | None = None) -> tuple[Scheduled, str]:
    """Schedule the send of an issue; every check of a real send runs first."""
    from . import send, services

    when = parse_when(at, settings, now)
    sender = send.Sender(path, settings, options)
    sender.plan()  # refuses what the send would refuse; records nothing
    by_service = not sender.can.per_recipient
    if not sender.can.can_schedule:
        raise InputError(f"{sender.service_name} cannot schedule a send (--at)")
    db = state.connect(settings.state_path)
    try:
        draft = db.execute("SELECT * FROM drafts WHERE issue = ? AND service = ?",
                           (sender.issue, sender.can.draft_store)).fetchone()
        if draft is None or draft["remote_id"] is None:
            raise PublishError(f"{sender.issue} has no draft on "
                               f"{sender.can.draft_store}; push it first")
        state.begin_immediate(db)
        try:
            refuse_if_scheduled(db, sender.issue, sender.service_name)
            schedule_id = db.execute(
                "INSERT INTO scheduled (issue, service, audience, due_at, revision, options, "
                "by_service, remote_id, status, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, "
                "'scheduled', ?) RETURNING id",
                (sender.issue, sender.service_name, sender.audience_name, when.timestamp(),
                 draft["revision"], _options_json(options, settings.root), int(by_service),
                 draft["remote_id"] if by_service else None, time.time())).fetchone()[0]
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        note = f"scheduled for {when.isoformat(timespec='minutes')}; `publish due` starts it"
        if by_service:
            service = services.get(sender.service_name, settings, db)
            try:
                note = service.schedule(draft["remote_id"],
                                        when.isoformat(timespec="seconds").replace("+00:00",
                                                                                   "Z"))
            except BaseException as exc:
                db.execute("UPDATE scheduled SET status = 'failed', note = ? WHERE id = ?",
                           (str(exc)[:500], schedule_id))
                raise
        db.execute("UPDATE scheduled SET note = ? WHERE id = ?", (note, schedule_id))
        row = db.execute("SELECT * FROM scheduled WHERE id = ?", (schedule_id,)).fetchone()
        return Scheduled.from_row(row), note
    finally:
        db.close()


def unschedule(path: str | Path, settings: Settings, options: send.SendOptions) -> str:
    """Cancel the scheduled send of an issue on a service (on the service too)."""
    from . import send, services

    sender = send.Sender(path, settings, options)
    db = state.connect(settings.state_path)
    try:
        row = db.execute("SELECT * FROM scheduled WHERE issue = ? AND service = ? AND "
                         "status = 'scheduled'", (sender.issue, sender.service_name)).fetchone()
        if row is None:
            raise InputError(f"{sender.issue} is not scheduled on {sender.service_name}")
        note = "cancelled"
        if row["by_service"]:
            service = services.get(sender.service_name, settings, db)
            note = service.unschedule(row["remote_id"])
        # Only a row still scheduled is cancelled: `publish due` may have just started it.
        if not db.execute("UPDATE scheduled SET status = 'cancelled', note = ? WHERE id = ? "
                          "AND status = 'scheduled'", (note, row["id"])).rowcount:
            raise PublishError(f"{sender.issue} started sending before it could be cancelled")
        return note
    finally:
        db.close()


@dataclass
class DueOutcome:
    scheduled: Scheduled
    late_seconds: float
    report: send.SendReport | None = None
    error: str = ""
    resumed: bool = False  # a send an earlier `publish due` started and did not finish

    def summary(self) -> dict:
        return {"issue": self.scheduled.issue, "service": self.scheduled.service,
                "audience": self.scheduled.audience, "due": _iso(self.scheduled.due_at),
                "late_seconds": round(self.late_seconds), "resumed": self.resumed,
                "report": self.report.summary() if self.report else None,
                "error": self.error}


def _claim(db: sqlite3.Connection, row: sqlite3.Row, now: float) -> bool:
    """scheduled -> started, in one write transaction: exactly one `publish due` wins.

    A send a `publish due` started and that did not finish (the process died, or the send
    stopped with readers left) is claimed again once that process is gone; the send
    ledger then resumes it, so nobody gets it twice.
    """
    state.begin_immediate(db)
    try:
        current = db.execute("SELECT * FROM scheduled WHERE id = ?", (row["id"],)).fetchone()
        if current["status"] == "scheduled":
            claimed = True
        else:
            claimed = current["status"] == "started" and not state.process_alive(
                current["started_pid"], current["started_host"]) and _unfinished(db, current)
        if claimed:
            db.execute("UPDATE scheduled SET status = 'started', started_at = ?, "
                       "started_pid = ?, started_host = ? WHERE id = ?",
                       (now, os.getpid(), socket.gethostname(), row["id"]))
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise
    return claimed


def _unfinished(db: sqlite3.Connection, row: sqlite3.Row) -> bool:
    """Whether the send a started schedule opened is still short of its readers."""
    send_row = db.execute("SELECT status FROM sends WHERE issue = ? AND service = ? AND "
                          "audience = ? ORDER BY id DESC LIMIT 1",
                          (row["issue"], row["service"], row["audience"])).fetchone()
    return send_row is None or send_row["status"] != "done"


def run_due(settings: Settings, now: float | None = None) -> list[DueOutcome]:
    """Start every scheduled send whose time has come, each exactly once."""
    if not (settings.state_path / state.DB_NAME).exists():
        return []
    now = time.time() if now is None else now
    db = state.connect(settings.state_path)
    outcomes = []
    try:
        rows = db.execute("SELECT * FROM scheduled WHERE status IN ('scheduled', 'started') "
                          "AND by_service = 0 AND due_at <= ? ORDER BY due_at, id",
                          (now,)).fetchall()
        for row in rows:
            if not _claim(db, row, now):
                continue  # another `publish due` started it, or it is done
            outcome = DueOutcome(Scheduled.from_row(row), now - row["due_at"],
                                 resumed=row["status"] == "started")
            try:
                outcome.report = _start(db, row, settings)
                status = "done" if outcome.report.complete else "started"
                note = outcome.report.stopped or "sent"
            except PublishError as exc:
                outcome.error = str(exc)
                # Refused before anything was sent (a changed draft): failed for good.
                # Stopped during the send: the next `publish due` resumes it.
                status, note = "failed", str(exc)
            db.execute("UPDATE scheduled SET status = ?, note = ?, send_id = ? WHERE id = ?",
                       (status, note[:500],
                        outcome.report.send_id if outcome.report else None, row["id"]))
            outcomes.append(outcome)
    finally:
        db.close()
    return outcomes


def _start(db: sqlite3.Connection, row: sqlite3.Row, settings: Settings) -> send.SendReport:
    from . import send

    stored = json.loads(row["options"])
    subscribers = stored.pop("subscribers_path", None)
    options = send.SendOptions(service=row["service"], **stored,
                               subscribers_path=settings.root / subscribers
                               if subscribers else None)
    sender = send.Sender(settings.root / row["issue"], settings, options)
    draft = db.execute("SELECT revision FROM drafts WHERE issue = ? AND service = ?",
                       (row["issue"], sender.can.draft_store)).fetchone()
    if draft is None or draft["revision"] != row["revision"]:
        raise PublishError(f"{row['issue']}: the draft changed after the send was scheduled; "
                           "nothing sent — check it and schedule again")
    report, _notes = sender.run()
    return report


def list_scheduled(settings: Settings) -> list[Scheduled]:
    """Sends scheduled and not yet started, soonest first, then the rest, newest first."""
    if not (settings.state_path / state.DB_NAME).exists():
        return []
    db = state.connect(settings.state_path, readonly=True)
    try:
        rows = db.execute("SELECT * FROM scheduled ORDER BY status != 'scheduled', "
                          "CASE WHEN status = 'scheduled' THEN due_at ELSE -id END").fetchall()
    finally:
        db.close()
    return [Scheduled.from_row(row) for row in rows]
