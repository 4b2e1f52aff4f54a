"""The ledger read for people: past sends, newest first, with their recipients by state
and, for a service that reports back (`publish feedback`), what happened to the mail."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field


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
    # Recipients the service later reported delivered, bounced, complained (about).
    feedback: dict[str, int] = field(default_factory=dict)


def list_sends(db: sqlite3.Connection) -> list[SendSummary]:
    """Past sends with their counts, newest first."""
    result = []
    for row in db.execute("SELECT * FROM sends ORDER BY id DESC").fetchall():
        by_state = dict(db.execute("SELECT state, count(*) FROM recipients WHERE send_id = ? "
                                   "GROUP BY state", (row["id"],)).fetchall())
        result.append(SendSummary(row["id"], row["issue"], row["service"], row["audience"],
                                  row["status"], row["started_at"], by_state, row["note"],
                                  _feedback(db, row["id"])))
    return result


FEEDBACK_NAMES = {"delivery": "delivered", "bounce": "bounced", "soft_bounce": "soft-bounced",
                  "complaint": "complained"}


def _feedback(db: sqlite3.Connection, send_id: int) -> dict[str, int]:
    """Recipients of the send by what the service reported of their message (each counted
    once per kind, however often it was reported)."""
    if db.execute("SELECT 1 FROM sqlite_master WHERE name = 'feedback_events'").fetchone() \
            is None:
        return {}
    return {FEEDBACK_NAMES[kind]: count for kind, count in db.execute(
        "SELECT f.kind, count(DISTINCT r.id) FROM recipients r JOIN feedback_events f "
        "ON f.remote_id = r.remote_id AND f.email = r.key WHERE r.send_id = ? "
        "AND r.remote_id IS NOT NULL GROUP BY f.kind", (send_id,)) if kind in FEEDBACK_NAMES}
