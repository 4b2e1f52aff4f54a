"""The recipients of a send: claimed before their message is handed over, settled after.

A recipient moves pending --claim--> sending --settle--> sent | failed | in_doubt |
pending (to retry); `ledger` opens and finishes sends around these moves. Every function
here is one statement or one transaction, so two workers (threads or processes, each
with its own connection) can never both claim a row, and a crash leaves a claimed row
`sending`: in doubt when the send is next opened.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import NamedTuple

from . import state


@contextlib.contextmanager
def transaction(db: sqlite3.Connection, *, commit: bool = True) -> Iterator[None]:
    """BEGIN IMMEDIATE … COMMIT, or ROLLBACK on any error (or always, with commit=False).

    IMMEDIATE takes the database's write lock first, so whatever is read inside cannot
    change before the transaction's own writes land.
    """
    state.begin_immediate(db)
    try:
        yield
    except BaseException:
        if db.in_transaction:  # SQLite has already rolled back after a full disk
            db.execute("ROLLBACK")
        raise
    if commit:
        db.execute("COMMIT")
    elif db.in_transaction:
        db.execute("ROLLBACK")



_CLAIM = ("UPDATE recipients SET state = 'sending', attempts = attempts + 1, message_id = ?, "
          "batch_id = NULL, updated_at = ? WHERE id = ? AND state = 'pending'")
_SETTLE = ("UPDATE recipients SET state = ?, reason = ?, updated_at = ?, "
           "remote_id = coalesce(?, remote_id), retry_at = ?, attempts = max(attempts - ?, 0) "
           "WHERE id = ? AND state IN ('pending', 'sending')")


def pending(db: sqlite3.Connection, send_id: int, after_id: int, limit: int) -> list[tuple]:
    """The next pending recipients (id, email, name) in list order, after `after_id`, that
    are due now (a recipient put back with a retry time waits for it)."""
    return db.execute(
        "SELECT id, email, name FROM recipients WHERE send_id = ? AND state = 'pending' "
        "AND id > ? AND (retry_at IS NULL OR retry_at <= ?) ORDER BY id LIMIT ?",
        (send_id, after_id, time.time(), limit)).fetchall()


def claim(db: sqlite3.Connection, recipient_id: int, message_id: str) -> bool:
    """pending -> sending, one recipient, before its message is handed to a server.

    Invariant: a message is only ever handed over for a row this call moved; False (and no
    change) when the row is no longer pending. One UPDATE: two processes claiming the same
    row cannot both succeed.
    """
    return db.execute(_CLAIM, (message_id, time.time(), recipient_id)).rowcount == 1


class Claimed(NamedTuple):
    """A recipient claimed for a batch, with how many times it has been claimed."""

    id: int
    email: str
    name: str
    attempts: int


def claim_batch(db: sqlite3.Connection, send_id: int, limit: int,
                batch_id: str) -> list[Claimed]:
    """pending -> sending, the next `limit` due recipients at once, all under `batch_id`.

    Invariant: as for `claim`, for every row returned, in list order:
    one UPDATE moves them all or none, so two processes (or threads) claiming at the same
    time get disjoint batches, and a crash after it leaves the whole batch `sending`, which
    the next open turns `in_doubt`. An empty list: nobody is due now.
    """
    now = time.time()
    rows = db.execute(
        "UPDATE recipients SET state = 'sending', attempts = attempts + 1, batch_id = ?, "
        "updated_at = ? WHERE id IN (SELECT id FROM recipients WHERE send_id = ? AND "
        "state = 'pending' AND (retry_at IS NULL OR retry_at <= ?) ORDER BY id LIMIT ?) "
        "AND state = 'pending' RETURNING id, email, name, attempts",
        (batch_id, now, send_id, now, limit)).fetchall()
    return sorted(Claimed(*row) for row in rows)


def next_retry(db: sqlite3.Connection, send_id: int) -> float | None:
    """When the earliest recipient put back to wait becomes due; None when nobody waits."""
    return db.execute("SELECT min(retry_at) FROM recipients WHERE send_id = ? AND state = "
                      "'pending' AND retry_at IS NOT NULL", (send_id,)).fetchone()[0]


@dataclass(frozen=True)
class Outcome:
    """How one claimed recipient ends: sent, failed, in_doubt, or pending (to retry)."""

    recipient_id: int
    state: str
    reason: str = ""
    remote_id: str | None = None  # the service's id for a message it took
    retry_at: float | None = None  # pending: not before this time
    counted: bool = True  # False: the service asked us to wait; not an attempt


SETTLED = ("sent", "failed", "in_doubt", "pending")


def settle(db: sqlite3.Connection, recipient_id: int, outcome: str, reason: str, *,
           remote_id: str | None = None, retry_at: float | None = None) -> None:
    """sending (or pending) -> sent | failed | in_doubt | pending, with the server's answer.

    Invariant: `sent` only after the server's positive answer; `failed` only when the
    server refused the message or it was never handed over; `pending` only when it was
    not handed over; `in_doubt` whenever it may have been. Settled rows are never moved.
    """
    settle_many(db, [Outcome(recipient_id, outcome, reason, remote_id, retry_at)],
                transactional=False)


def settle_many(db: sqlite3.Connection, outcomes: Iterable[Outcome], *,
                transactional: bool = True) -> None:
    """Settle several claimed recipients (the entries of one batch) in one transaction.

    Invariant: as for `settle`, for each; all of a batch's answers are recorded, or (the
    process dies, the disk is full) none, and its rows stay `sending`: in doubt next time.
    """
    now = time.time()
    rows = [_settled(item, now) for item in outcomes]
    if not transactional:
        db.executemany(_SETTLE, rows)
        return
    with transaction(db):
        db.executemany(_SETTLE, rows)


def settle_and_claim(db: sqlite3.Connection, outcome: Outcome, recipient_id: int,
                     message_id: str) -> bool:
    """Settle one recipient and claim the next for the same connection in one transaction.

    Invariant: as for `settle` and `claim` together: both are recorded or neither. After it
    the settled recipient is final and the claimed one is `sending` but not yet handed
    over, exactly as after a `claim` alone: a crash then leaves at most that one in doubt.
    Returns whether the claim moved the row (False: it is no longer pending).
    """
    now = time.time()
    row = _settled(outcome, now)
    with transaction(db):
        db.execute(_SETTLE, row)
        return db.execute(_CLAIM, (message_id, now, recipient_id)).rowcount == 1


def _settled(item: Outcome, now: float) -> tuple:
    """The values of `_SETTLE` for one outcome."""
    if item.state not in SETTLED:
        raise ValueError(f"not a settled state: {item.state!r}")
    return (item.state, item.reason[:500], now, item.remote_id,
            item.retry_at if item.state == "pending" else None, 0 if item.counted else 1,
            item.recipient_id)


def settle_by_delivery(db: sqlite3.Connection, recipient_id: int, remote_id: str) -> bool:
    """in_doubt -> sent, when the service reports delivering the message it took for them.

    Invariant: only a recipient in doubt moves, and only on the service's own word that it
    has their message (a delivery event carrying our recipient tag and its message id).
    """
    return db.execute(
        "UPDATE recipients SET state = 'sent', reason = 'delivered (reported later)', "
        "remote_id = ?, updated_at = ? WHERE id = ? AND state = 'in_doubt'",
        (remote_id, time.time(), recipient_id)).rowcount == 1
