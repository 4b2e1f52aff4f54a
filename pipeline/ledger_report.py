"""The ledger read for people: past sends, newest first, with their recipients by state."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass


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


def list_sends(db: sqlite3.Connection) -> list[SendSummary]:
    """Past sends with their counts, newest first."""
    result = []
    for row in db.execute("SELECT * FROM sends ORDER BY id DESC").fetchall():
        by_state = dict(db.execute("SELECT state, count(*) FROM recipients WHERE send_id = ? "
                                   "GROUP BY state", (row["id"],)).fetchall())
        result.append(SendSummary(row["id"], row["issue"], row["service"], row["audience"],
                                  row["status"], row["started_at"], by_state, row["note"]))
    return result
