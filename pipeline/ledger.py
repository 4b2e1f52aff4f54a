"""The send ledger: every change to the state of a send and of its recipients, in one place.

Tables `sends` and `recipients` in the state database are the truth about who was sent
what. A recipient moves

    pending --claim--> sending --settle--> sent | failed | in_doubt | pending (to retry)

and a row a run leaves in `sending` (the process died, or could not record the answer)
becomes `in_doubt` when the send is next opened: reported, never sent again unless asked.
A send is opened (created or resumed) under its lock in one transaction together with
every check that can refuse it, so a refused run records nothing. The moves of single
recipients (claim, settle) are in `ledger_recipients`, re-exported here.
"""

from __future__ import annotations

import os
import socket
import sqlite3
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from . import state
from .errors import PublishError
from .ledger_recipients import (  # noqa: F401 (the ledger's one public face)
    SETTLED,
    Claimed,
    Outcome,
    claim,
    claim_batch,
    next_retry,
    pending,
    settle,
    settle_and_claim,
    settle_by_delivery,
    settle_many,
    transaction,
)

# (key, email, name, state, reason) for each row of the audience, in list order.
AudienceRow = tuple[str, str, str, str, str]


@dataclass(frozen=True)
class SendKey:
    """What makes two sends the same send: an issue, through a service, to an audience."""

    issue: str
    service: str
    audience: str


@dataclass(frozen=True)
class Content:
    """The email as it is frozen into a new send."""

    revision: str
    subject: str
    html: str
    text: str


@dataclass
class Opened:
    """A send opened under its lock: what this run will do."""

    send_id: int
    created: bool
    notes: list[str] = field(default_factory=list)
    counts: Counter = field(default_factory=Counter)  # recipients by state
    skipped: Counter = field(default_factory=Counter)  # skipped recipients by reason
    sample: list[str] = field(default_factory=list)  # the first few still to send to


# opening a send ------------------------------------------------------------------

def open_send(db: sqlite3.Connection, key: SendKey, *, new_content: Callable[[], Content],
              audience: Callable[[], Iterable[AudienceRow]], current_revision: str | None,
              retry_failed: bool = False, resend_in_doubt: bool = False,
              commit: bool = True, source_hash: str = "",
              refuse: Callable[[Counter], None] | None = None) -> Opened:
    """Create or resume the send of `key` and take its lock, all in one transaction.

    Invariant: when this returns (with commit), this process holds the send's lock and no
    other live process held a lock on a send of this issue; when it raises, nothing was
    written. `new_content` and `audience` are only called for a new send; either may raise
    to refuse it, and so may `refuse`, given the recipients by state once the send is
    open (a quota). With commit=False every check runs and everything is rolled back: what
    a dry run reports is what the real send would do.
    """
    with transaction(db, commit=commit):
        refuse_if_running(db, key.issue)
        existing = latest(db, key)
        if existing is None:
            content = new_content()
            refuse_if_sent_under_another_name(db, key, content.revision, source_hash)
            send_id = _create(db, key, content, audience())
            notes: list[str] = []
        else:
            send_id = existing["id"]
            if existing["status"] == "done" and not (retry_failed or resend_in_doubt):
                raise PublishError(already_sent_message(db, existing))
            notes = _reopen(db, send_id, retry_failed, resend_in_doubt)
            if current_revision is not None and current_revision != existing["revision"]:
                notes.append("the draft changed since this send started; the rest of the "
                             "audience gets the content frozen when it started, like "
                             "everyone before them")
        _take_lock(db, send_id)
        opened = Opened(send_id, existing is None, notes)
        opened.counts, opened.skipped = counts(db, send_id)
        if refuse is not None:
            refuse(opened.counts)
        opened.sample = [r["email"] for r in db.execute(
            "SELECT email FROM recipients WHERE send_id = ? AND state = 'pending' "
            "ORDER BY id LIMIT 10", (send_id,))]
    return opened


def refuse_if_running(db: sqlite3.Connection, issue: str) -> None:
    """Raise when another live process holds the lock of a send of this issue."""
    other = state.running_send(db, issue)
    if other is not None:
        raise PublishError(f"another `publish send` of {issue} is running (pid {other}); "
                           "wait for it to finish")


def refuse_if_sent_under_another_name(db: sqlite3.Connection, key: SendKey,
                                      revision: str, source_hash: str = "") -> None:
    """Raise when this very email (same subject, HTML and text), or an issue file with the
    same bytes, was sent or is being sent to the same audience under another name: a
    renamed, copied or hard-linked issue is not a new issue (its slug, and so its links,
    may differ), and its readers must not get it twice."""
    other = db.execute(
        "SELECT issue FROM sends WHERE service = ? AND audience = ? AND issue != ? AND "
        "(revision = ? OR issue IN (SELECT issue FROM drafts WHERE source_hash = ? "
        "AND source_hash != '')) ORDER BY id DESC LIMIT 1",
        (key.service, key.audience, key.issue, revision, source_hash)).fetchone()
    if other is not None:
        raise PublishError(f"{key.issue} is the same email as {other['issue']}, which was "
                           f"already sent (or started) to {key.audience}; resume or retry "
                           f"it as `publish send {other['issue']}`")


def latest(db: sqlite3.Connection, key: SendKey) -> sqlite3.Row | None:
    return db.execute(
        "SELECT * FROM sends WHERE issue = ? AND service = ? AND audience = ? "
        "ORDER BY id DESC LIMIT 1", (key.issue, key.service, key.audience)).fetchone()


def already_sent_message(db: sqlite3.Connection, send: sqlite3.Row) -> str:
    by_state, _ = counts(db, send["id"])
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(send["finished_at"] or 0))
    return (f"{send['issue']} was already sent to {send['audience']} on {when} "
            f"({by_state['sent']} sent, {by_state['failed']} failed, "
            f"{by_state['in_doubt']} in doubt); use --retry-failed or --resend-in-doubt to "
            "reach those again")


def _create(db: sqlite3.Connection, key: SendKey, content: Content,
            audience: Iterable[AudienceRow]) -> int:
    """A new send with its audience frozen. Invariant: a send has at least one recipient
    to send to; an audience with nobody in it is refused. A reader on two lists gets an
    issue once: whoever an earlier send of it (to another list) reached, or may have
    reached, is skipped."""
    send_id = db.execute(
        "INSERT INTO sends (issue, service, audience, revision, subject, html, text, status,"
        " started_at) VALUES (?, ?, ?, ?, ?, ?, ?, 'sending', ?) RETURNING id",
        (key.issue, key.service, key.audience, content.revision, content.subject,
         content.html, content.text, time.time())).fetchone()[0]
    db.executemany(
        "INSERT OR IGNORE INTO recipients (send_id, key, email, name, state, reason)"
        " VALUES (?, ?, ?, ?, ?, ?)", ((send_id, *row) for row in audience))
    db.execute(
        "UPDATE recipients SET state = 'skipped', reason = 'already sent this issue' "
        "WHERE send_id = ? AND state = 'pending' AND key IN (SELECT r.key FROM recipients r "
        "JOIN sends s ON s.id = r.send_id WHERE s.issue = ? AND s.service = ? AND s.id != ? "
        "AND r.state IN ('sent', 'sending', 'in_doubt'))",
        (send_id, key.issue, key.service, send_id))
    by_state, skipped = counts(db, send_id)
    if not by_state["pending"]:
        why = ", ".join(f"{n} {reason}" for reason, n in sorted(skipped.items()))
        raise PublishError(f"nobody to send {key.issue} to: {key.audience} has no active "
                           "subscriber" + (f" ({why})" if why else ""))
    db.execute("UPDATE sends SET total = ? WHERE id = ?", (by_state["pending"], send_id))
    return send_id


def _reopen(db: sqlite3.Connection, send_id: int, retry_failed: bool,
            resend_in_doubt: bool) -> list[str]:
    """Resume a send. Invariant: rows an earlier run left `sending` become `in_doubt`
    first, so only --resend-in-doubt can send to them again."""
    notes = []
    moved = db.execute("UPDATE recipients SET state = 'in_doubt', reason = 'interrupted while "
                       "sending' WHERE send_id = ? AND state = 'sending'", (send_id,)).rowcount
    if moved:
        notes.append(f"{moved} recipient(s) were being sent to when an earlier run stopped; "
                     "they are in doubt and will not be sent again (--resend-in-doubt)")
    if resend_in_doubt:
        db.execute("UPDATE recipients SET state = 'pending' WHERE send_id = ? AND "
                   "state = 'in_doubt'", (send_id,))
    if retry_failed:
        db.execute("UPDATE recipients SET state = 'pending', attempts = 0 WHERE send_id = ? "
                   "AND state = 'failed'", (send_id,))
    db.execute("UPDATE sends SET status = 'sending', finished_at = NULL WHERE id = ?",
               (send_id,))
    return notes


def _take_lock(db: sqlite3.Connection, send_id: int) -> None:
    db.execute("UPDATE sends SET lock_pid = ?, lock_host = ? WHERE id = ?",
               (os.getpid(), socket.gethostname(), send_id))


def open_publication(db: sqlite3.Connection, key: SendKey, *, revision: str, title: str,
                     commit: bool = True) -> int:
    """The send of a service that mails its own audience, created or resumed under the lock.

    Invariant as for `open_send`: refused (already published, another run) means nothing
    written; commit=False checks and rolls back.
    """
    with transaction(db, commit=commit):
        refuse_if_running(db, key.issue)
        existing = db.execute("SELECT id, status FROM sends WHERE issue = ? AND service = ? "
                              "ORDER BY id DESC LIMIT 1", (key.issue, key.service)).fetchone()
        if existing is not None and existing["status"] == "done":
            raise PublishError(f"{key.issue} was already published on {key.service}")
        if existing is None:
            send_id = db.execute(
                "INSERT INTO sends (issue, service, audience, revision, subject, html, text,"
                " status, started_at) VALUES (?, ?, ?, ?, ?, '', '', 'sending', ?) "
                "RETURNING id", (key.issue, key.service, key.audience, revision, title,
                                 time.time())).fetchone()[0]
        else:
            send_id = existing["id"]
        _take_lock(db, send_id)
    return send_id


def finish(db: sqlite3.Connection, send_id: int, stopped: str) -> None:
    """Release the lock once every worker has stopped; `done` when nobody is left to try.

    Invariant: rows still `sending` here are ones whose outcome no worker recorded, so
    they become `in_doubt`.
    """
    with transaction(db):
        db.execute("UPDATE recipients SET state = 'in_doubt', reason = 'the outcome could not "
                   "be recorded' WHERE send_id = ? AND state = 'sending'", (send_id,))
        left = db.execute("SELECT count(*) FROM recipients WHERE send_id = ? AND state = "
                          "'pending'", (send_id,)).fetchone()[0]
        status = "done" if not left and not stopped else "interrupted"
        db.execute("UPDATE sends SET status = ?, finished_at = ?, lock_pid = NULL, note = ? "
                   "WHERE id = ? AND lock_pid = ?",
                   (status, time.time(), stopped, send_id, os.getpid()))


def finish_publication(db: sqlite3.Connection, send_id: int, note: str) -> None:
    db.execute("UPDATE sends SET status = 'done', finished_at = ?, lock_pid = NULL, note = ? "
               "WHERE id = ?", (time.time(), note, send_id))


# reading -------------------------------------------------------------------------

def counts(db: sqlite3.Connection, send_id: int) -> tuple[Counter, Counter]:
    """Recipients by state, and the skipped ones by reason (the part before any colon)."""
    by_state: Counter = Counter()
    skipped: Counter = Counter()
    for status, reason, count in db.execute(
            "SELECT state, CASE WHEN state = 'skipped' THEN reason ELSE '' END, count(*) "
            "FROM recipients WHERE send_id = ? GROUP BY 1, 2", (send_id,)):
        by_state[status] += count
        if status == "skipped":
            skipped[reason.split(":")[0]] += count
    return by_state, skipped


def failed(db: sqlite3.Connection, send_id: int) -> list[tuple[str, str]]:
    return [(r["email"], r["reason"]) for r in db.execute(
        "SELECT email, reason FROM recipients WHERE send_id = ? AND state = 'failed' "
        "ORDER BY id", (send_id,))]


def in_doubt(db: sqlite3.Connection, send_id: int) -> list[str]:
    """Recipients who may have the message: in doubt, or left `sending` by a run that could
    not record the outcome (they become in doubt when the send is next opened)."""
    return [r["email"] for r in db.execute(
        "SELECT email FROM recipients WHERE send_id = ? AND state IN ('in_doubt', 'sending') "
        "ORDER BY id", (send_id,))]
