"""The newsletter's state database: drafts pushed, their revisions, uploads, and send ledgers.

One SQLite file (`.publish/state.db`, in WAL mode). Its schema is versioned with
`PRAGMA user_version` and marked with an application id, so a foreign file or one from a
newer publish is refused with a clear message instead of being reset; an older schema is
migrated forward after a backup copy is made beside it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import sqlite3
import time
from pathlib import Path

from .errors import PublishError

APPLICATION_ID = 0x5075626C  # "Publ"
DB_NAME = "state.db"
BUSY_TIMEOUT = 10.0  # seconds to wait for another process's write before giving up

# Each entry migrates from version (index) to version (index + 1).
MIGRATIONS: list[str] = [
    """
    CREATE TABLE drafts (
        id INTEGER PRIMARY KEY,
        issue TEXT NOT NULL,              -- issue path relative to the newsletter folder
        service TEXT NOT NULL,
        remote_id TEXT,                   -- NULL while a create is in flight
        url TEXT NOT NULL DEFAULT '',
        title TEXT NOT NULL DEFAULT '',
        revision TEXT NOT NULL DEFAULT '', -- hash of the email as rendered (html, text, subject)
        pushed_body TEXT NOT NULL DEFAULT '', -- hash of what the service holds after our push
        source_hash TEXT NOT NULL DEFAULT '', -- hash of the Markdown file at push time
        status TEXT NOT NULL DEFAULT 'draft', -- draft | creating | sent
        pushed_at REAL,
        UNIQUE (issue, service)
    );
    CREATE TABLE draft_revisions (
        id INTEGER PRIMARY KEY,
        draft_id INTEGER NOT NULL REFERENCES drafts(id),
        revision TEXT NOT NULL,
        subject TEXT NOT NULL,
        html TEXT NOT NULL,
        text TEXT NOT NULL,
        eml BLOB NOT NULL,
        created_at REAL NOT NULL
    );
    CREATE TABLE uploads (
        service TEXT NOT NULL,
        target TEXT NOT NULL,             -- the publication the image was uploaded to
        sha256 TEXT NOT NULL,
        url TEXT NOT NULL,
        width INTEGER,
        height INTEGER,
        bytes INTEGER,
        PRIMARY KEY (service, target, sha256)
    );
    """,
    """
    CREATE TABLE sends (
        id INTEGER PRIMARY KEY,
        issue TEXT NOT NULL,
        service TEXT NOT NULL,
        audience TEXT NOT NULL,           -- the subscriber list, or the service's own audience
        revision TEXT NOT NULL,
        subject TEXT NOT NULL,
        html TEXT NOT NULL,               -- the content, frozen when the send starts
        text TEXT NOT NULL,
        status TEXT NOT NULL,             -- sending | interrupted | done
        total INTEGER NOT NULL DEFAULT 0,
        started_at REAL NOT NULL,
        finished_at REAL,
        lock_pid INTEGER,
        lock_host TEXT,
        note TEXT NOT NULL DEFAULT ''
    );
    CREATE TABLE recipients (
        id INTEGER PRIMARY KEY,
        send_id INTEGER NOT NULL REFERENCES sends(id),
        key TEXT NOT NULL,                -- the address in lower case
        email TEXT NOT NULL,
        name TEXT NOT NULL DEFAULT '',
        state TEXT NOT NULL,              -- pending | sending | sent | failed | in_doubt | skipped
        reason TEXT NOT NULL DEFAULT '',  -- why skipped, or the server's last answer
        attempts INTEGER NOT NULL DEFAULT 0,
        message_id TEXT,
        updated_at REAL,
        UNIQUE (send_id, key)
    );
    CREATE INDEX recipients_by_state ON recipients (send_id, state, id);
    """,
]
SCHEMA_VERSION = len(MIGRATIONS)


def connect(state_dir: Path) -> sqlite3.Connection:
    """Open (creating if needed) the state database, migrated to the current schema."""
    state_dir.mkdir(parents=True, exist_ok=True)
    path = state_dir / DB_NAME
    existed = path.exists() and path.stat().st_size > 0
    try:
        db = sqlite3.connect(path, timeout=BUSY_TIMEOUT, isolation_level=None)
        db.row_factory = sqlite3.Row
        app_id = db.execute("PRAGMA application_id").fetchone()[0]
        version = db.execute("PRAGMA user_version").fetchone()[0]
    except sqlite3.DatabaseError as exc:
        raise PublishError(f"not a publish state database ({exc}); move it aside", path) from None
    if existed and app_id != APPLICATION_ID:
        db.close()
        raise PublishError("not a publish state database (foreign SQLite file); move it aside",
                           path)
    if version > SCHEMA_VERSION:
        db.close()
        raise PublishError(
            f"made by a newer publish (schema {version}, this one knows {SCHEMA_VERSION}); "
            "upgrade publish", path)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")  # WAL keeps every commit across a process crash
    db.execute("PRAGMA foreign_keys=ON")
    if version < SCHEMA_VERSION:
        if existed:
            backup = path.with_name(f"{DB_NAME}.v{version}-{int(time.time())}.bak")
            db.execute("PRAGMA wal_checkpoint(FULL)")
            shutil.copy2(path, backup)
        try:
            db.executescript(
                "BEGIN IMMEDIATE;"
                + "".join(MIGRATIONS[version:])
                + f"PRAGMA application_id={APPLICATION_ID};"
                + f"PRAGMA user_version={SCHEMA_VERSION};"
                + "COMMIT;"
            )
        except sqlite3.DatabaseError as exc:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise PublishError(f"cannot migrate the state database: {exc}", path) from None
    return db


def process_alive(pid: int | None, host: str | None) -> bool:
    """Whether the process holding a lock still runs (assumed so when on another host)."""
    if not pid:
        return False
    if host and host != socket.gethostname():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def begin_immediate(db: sqlite3.Connection) -> None:
    """Take the database's write lock (waiting up to the busy timeout), or say who has it."""
    try:
        db.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError as exc:
        raise explain(exc, db) from None


def explain(exc: sqlite3.Error, db: sqlite3.Connection | None = None) -> PublishError:
    """One line for a database error a person can act on: who holds the lock, a full disk."""
    path = _file_of(db)
    text = str(exc)
    if "locked" in text or "busy" in text:
        holder = lock_holder(path) if path else None
        who = "another process" if holder is None else (
            "this process" if holder[0] == os.getpid() else f"process {holder[0]} ({holder[1]})")
        return PublishError(f"the state database is locked by {who} for longer than "
                            f"{BUSY_TIMEOUT:.0f} s; let it finish (or stop it) and run the "
                            "same command again", path)
    if "full" in text:
        return PublishError("the state database cannot be written: the disk holding it is "
                            "full; free some space and run the same command again", path)
    return PublishError(f"the state database failed: {text}", path)


def _file_of(db: sqlite3.Connection | None) -> Path | None:
    if db is None:
        return None
    try:
        name = db.execute("PRAGMA database_list").fetchone()[2]
    except sqlite3.Error:
        return None
    return Path(name) if name else None


def lock_holder(path: Path) -> tuple[int, str] | None:
    """(pid, program name) of the process holding the write lock of the database at `path`.

    SQLite takes POSIX byte-range locks: in WAL mode byte 120 of the `-shm` file is the
    write lock (and the database file's reserved/pending bytes otherwise). Linux lists
    them in /proc/locks; elsewhere the holder is unknown (None).
    """
    wanted = {}
    for file, first, last in ((Path(f"{path}-shm"), 120, 120), (path, 0x40000000, 0x40000001)):
        with contextlib.suppress(OSError):
            info = file.stat()
            wanted[(os.major(info.st_dev), os.minor(info.st_dev), info.st_ino)] = (first, last)
    try:
        lines = Path("/proc/locks").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        fields = line.split()
        if "->" in fields or len(fields) < 8 or fields[1] != "POSIX" or fields[3] != "WRITE":
            continue
        try:
            major, minor, inode = fields[5].split(":")
            where = (int(major, 16), int(minor, 16), int(inode))
            pid, start = int(fields[4]), int(fields[6])
            end = float("inf") if fields[7] == "EOF" else int(fields[7])
        except ValueError:
            continue
        span = wanted.get(where)
        if span and start <= span[1] and end >= span[0]:
            try:
                name = Path(f"/proc/{pid}/comm").read_text().strip()
            except OSError:
                name = "unknown program"
            return pid, name
    return None


def running_send(db: sqlite3.Connection, issue: str) -> int | None:
    """The pid of another live `publish send` of this issue, if there is one."""
    for row in db.execute("SELECT lock_pid, lock_host FROM sends WHERE issue = ? AND "
                          "status != 'done' AND lock_pid IS NOT NULL", (issue,)).fetchall():
        if row["lock_pid"] != os.getpid() and process_alive(row["lock_pid"], row["lock_host"]):
            return row["lock_pid"]
    return None
