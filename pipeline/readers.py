"""What readers changed on the web: unsubscribes and confirmed subscriptions, in the state DB.

The CSV lists in `subscribers/` stay the editor's format; a reader's own change (a one-click
unsubscribe, a confirmed double opt-in) is recorded here, durably, in one transaction, before
the web answers. Rewriting a CSV list for each click would serialise every reader behind a
whole-file rewrite; a row in SQLite is committed in milliseconds and is what `publish send`
reads, in the very transaction that freezes its audience:

- a reader's latest change wins over their row in a list (`unsubscribed` from every list,
  `active` on the list they confirmed), and `subscribers/suppressed.csv` wins over both;
- an unsubscribe also skips the reader in every send still pending for them, so a send
  already under way never reaches them after the answer (a message already being handed
  over is the only one that can still arrive).

`publish subscribers export` writes a list with these changes applied.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from . import state

SCHEMA = """
CREATE TABLE IF NOT EXISTS reader_changes (
    key TEXT PRIMARY KEY,              -- the address in lower case
    email TEXT NOT NULL,
    name TEXT NOT NULL DEFAULT '',
    status TEXT NOT NULL,              -- active (confirmed on `list`) | unsubscribed (from all)
    list TEXT NOT NULL DEFAULT '',     -- the list a confirmed reader joined (subscribers/x.csv)
    lang TEXT NOT NULL DEFAULT '',
    source TEXT NOT NULL,              -- one-click | unsubscribe-page | confirm | ...
    changed_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS used_tokens (
    nonce TEXT PRIMARY KEY,            -- a confirmation link, once it has been used
    used_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS signup_attempts (
    key TEXT NOT NULL,                 -- the address asked for, in lower case
    client TEXT NOT NULL,              -- the client's network address
    at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS signup_attempts_by_key ON signup_attempts (key, at);
CREATE INDEX IF NOT EXISTS signup_attempts_by_client ON signup_attempts (client, at);
"""

UNSUBSCRIBED = "unsubscribed"
ACTIVE = "active"


@dataclass(frozen=True)
class Change:
    key: str
    email: str
    name: str
    status: str
    list: str
    lang: str
    source: str
    changed_at: float


def ensure(db: sqlite3.Connection) -> None:
    """Create the tables (once); the web app calls this when it starts."""
    with _transaction(db):
        for statement in SCHEMA.split(";"):
            if statement.strip():
                db.execute(statement)


def present(db: sqlite3.Connection) -> bool:
    return db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND "
                      "name = 'reader_changes'").fetchone() is not None


class _transaction:
    """BEGIN IMMEDIATE … COMMIT (ROLLBACK on any error): one durable change per request."""

    def __init__(self, db: sqlite3.Connection):
        self.db = db

    def __enter__(self) -> sqlite3.Connection:
        state.begin_immediate(self.db)
        return self.db

    def __exit__(self, kind, value, traceback) -> None:
        if kind is None:
            self.db.execute("COMMIT")
        elif self.db.in_transaction:
            self.db.execute("ROLLBACK")


# changes -------------------------------------------------------------------------

def unsubscribe(db: sqlite3.Connection, email: str, source: str,
                now: float | None = None) -> bool:
    """Record that `email` unsubscribed, and skip them in every send still pending for them.

    Idempotent: True only the first time (the first time is kept). Durable when it returns.
    """
    now = time.time() if now is None else now
    key = email.lower()
    with _transaction(db):
        row = db.execute("SELECT status FROM reader_changes WHERE key = ?", (key,)).fetchone()
        first = row is None or row[0] != UNSUBSCRIBED
        if first:
            db.execute(
                "INSERT INTO reader_changes (key, email, name, status, list, lang, source, "
                "changed_at) VALUES (?, ?, '', ?, '', '', ?, ?) ON CONFLICT (key) DO UPDATE SET "
                "status = excluded.status, source = excluded.source, "
                "changed_at = excluded.changed_at", (key, email, UNSUBSCRIBED, source, now))
        # A send under way: whoever is still pending is skipped; claim() never takes them.
        db.execute("UPDATE recipients SET state = 'skipped', reason = 'unsubscribed', "
                   "updated_at = ? WHERE key = ? AND state = 'pending'", (now, key))
    return first


def confirm(db: sqlite3.Connection, email: str, name: str, list_key: str, lang: str,
            nonce: str, now: float | None = None) -> bool:
    """Make a reader active on `list_key`, once per confirmation link (False: already used)."""
    now = time.time() if now is None else now
    with _transaction(db):
        used = db.execute("INSERT INTO used_tokens (nonce, used_at) VALUES (?, ?) "
                          "ON CONFLICT DO NOTHING", (nonce, now)).rowcount
        if not used:
            return False
        db.execute(
            "INSERT INTO reader_changes (key, email, name, status, list, lang, source, "
            "changed_at) VALUES (?, ?, ?, ?, ?, ?, 'confirm', ?) ON CONFLICT (key) DO UPDATE "
            "SET email = excluded.email, name = excluded.name, status = excluded.status, "
            "list = excluded.list, lang = excluded.lang, source = excluded.source, "
            "changed_at = excluded.changed_at",
            (email.lower(), email, name, ACTIVE, list_key, lang, now))
    return True


def allow_signup(db: sqlite3.Connection, email: str, client: str, *, per_address: int,
                 per_client: int, window: float = 3600.0, now: float | None = None) -> bool:
    """Count one sign-up attempt; False when the address or the client asked too often."""
    now = time.time() if now is None else now
    key = email.lower()
    with _transaction(db):
        db.execute("DELETE FROM signup_attempts WHERE at < ?", (now - window,))
        by_key = db.execute("SELECT count(*) FROM signup_attempts WHERE key = ?",
                            (key,)).fetchone()[0]
        by_client = db.execute("SELECT count(*) FROM signup_attempts WHERE client = ?",
                               (client,)).fetchone()[0]
        if by_key >= per_address or by_client >= per_client:
            return False
        db.execute("INSERT INTO signup_attempts (key, client, at) VALUES (?, ?, ?)",
                   (key, client, now))
    return True


# reading -------------------------------------------------------------------------

def changes(db: sqlite3.Connection) -> dict[str, Change]:
    """Every reader's latest change, by address key (empty before the web ever ran)."""
    if not present(db):
        return {}
    return {row[0]: Change(*row) for row in db.execute(
        "SELECT key, email, name, status, list, lang, source, changed_at FROM reader_changes")}


AudienceRow = tuple[str, str, str, str, str]  # key, email, name, state, reason


def apply(db: sqlite3.Connection, list_key: str, rows: Iterable[AudienceRow],
          suppressed: set[str]) -> Iterator[AudienceRow]:
    """A send's audience with the readers' own changes applied; read inside the send's
    transaction, so an unsubscribe committed before it is honoured and one after it finds
    the reader `pending` and skips them (see `unsubscribe`)."""
    found = changes(db)
    joined = {k: c for k, c in found.items() if c.status == ACTIVE and c.list == list_key}
    for key, email, name, status, reason in rows:
        change = found.get(key)
        if change is not None and reason != "suppressed":
            if change.status == UNSUBSCRIBED:
                status, reason = "skipped", UNSUBSCRIBED
            elif key in joined and reason in (UNSUBSCRIBED, "bounced"):
                status, reason = "pending", ""  # confirmed again since
        joined.pop(key, None)
        yield key, email, name, status, reason
    for key, change in joined.items():
        if key in suppressed:
            yield key, change.email, change.name, "skipped", "suppressed"
        else:
            yield key, change.email, change.name, "pending", ""


def current(db: sqlite3.Connection | None, list_key: str,
            items: Iterable) -> Iterator:
    """A list's rows (line, Subscriber | Rejected) with the readers' changes applied, then
    the readers who confirmed on the web and are not on it (line 0)."""
    from dataclasses import replace

    from .subscribers import Subscriber

    found = changes(db) if db is not None else {}
    joined = {k: c for k, c in found.items() if c.status == ACTIVE and c.list == list_key}
    for line, item in items:
        if isinstance(item, Subscriber):
            change = found.get(item.key)
            if change is not None and (change.status == UNSUBSCRIBED or item.key in joined):
                item = replace(item, status=change.status)
            joined.pop(item.key, None)
        yield line, item
    for change in joined.values():
        created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(change.changed_at))
        yield 0, Subscriber(change.email, change.name, ACTIVE, created,
                            {"source": "web", "lang": change.lang} if change.lang else {})
