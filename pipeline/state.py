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
    """
    ALTER TABLE recipients ADD COLUMN batch_id TEXT;   -- the call that carried it (batch sends)
    ALTER TABLE recipients ADD COLUMN retry_at REAL;   -- pending, but not before this time
    ALTER TABLE recipients ADD COLUMN remote_id TEXT;  -- the service's id for the message
    CREATE INDEX recipients_by_remote_id ON recipients (remote_id) WHERE remote_id IS NOT NULL;
    """,
    """
    CREATE TABLE scheduled (
        id INTEGER PRIMARY KEY,
        issue TEXT NOT NULL,
        service TEXT NOT NULL,
        audience TEXT NOT NULL,           -- the subscriber list, or the service's own audience
        due_at REAL NOT NULL,             -- when the send is to start (Unix time, UTC)
        revision TEXT NOT NULL,           -- the draft scheduled; a changed draft is not sent
        options TEXT NOT NULL DEFAULT '{}', -- the send's options (JSON), for `publish due`
        by_service INTEGER NOT NULL DEFAULT 0, -- 1: the service itself sends it at due_at
        remote_id TEXT,
        status TEXT NOT NULL,             -- scheduled | started | done | cancelled | failed
        created_at REAL NOT NULL,
        started_at REAL,
        started_pid INTEGER,              -- the `publish due` that started it
        started_host TEXT,
        send_id INTEGER,
        note TEXT NOT NULL DEFAULT ''
    );
    CREATE UNIQUE INDEX scheduled_once ON scheduled (issue, service, audience)
        WHERE status = 'scheduled';
    CREATE TABLE service_memory (
        service TEXT NOT NULL,
        target TEXT NOT NULL,             -- the publication or site
        key TEXT NOT NULL,                -- e.g. the route or cookie name that worked
        value TEXT NOT NULL,
        PRIMARY KEY (service, target, key)
    );
    """,
    """
    CREATE TABLE feedback_events (
        id TEXT PRIMARY KEY,              -- the same event seen twice has the same id
        kind TEXT NOT NULL,               -- delivery | bounce | soft_bounce | complaint | ...
        remote_id TEXT NOT NULL DEFAULT '', -- the service's id for the message
        email TEXT NOT NULL DEFAULT '',   -- the recipient it is about, lower case
        detail TEXT NOT NULL DEFAULT '',
        at REAL NOT NULL
    );
    CREATE INDEX feedback_by_remote_id ON feedback_events (remote_id, kind);
    CREATE INDEX feedback_by_email ON feedback_events (email, kind);
    """,
]
SCHEMA_VERSION = len(MIGRATIONS)


# The database last opened in this process, so an error raised later can name it.
last_opened: Path | None = None


def describe(exc: BaseException, path: Path | None = None) -> PublishError:
    """One line for a SQLite error: the real cause (a full disk, a lock and who holds it, a
    damaged file, a read-only folder), never a follow-on error that hides it."""
    path = path or last_opened
    cause = exc
    while "no transaction is active" in str(cause) and isinstance(
            cause.__context__, sqlite3.Error):
        cause = cause.__context__  # a failed ROLLBACK after the real error
    text = str(cause)
    code = getattr(cause, "sqlite_errorcode", None)
    if "disk is full" in text or code == sqlite3.SQLITE_FULL or (
            "I/O error" in text and path is not None and _space_left(path) < 1024 * 1024):
        message = ("the state database cannot be written: the disk holding it is full; "
                   "free some space and run the same command again")
    elif "locked" in text or "busy" in text:
        holder = lock_holder(path) if path else None
        who = "another process" if holder is None else (
            "this process" if holder[0] == os.getpid() else f"process {holder[0]} ({holder[1]})")
        message = (f"the state database is locked by {who} for longer than "
                   f"{BUSY_TIMEOUT:.0f} s; let it finish (or stop it) and run the same "
                   "command again")
    elif "readonly" in text or "read-only" in text:
        message = ("the state database is read-only; commands that record (draft, send) "
                   "need its folder writable, read-only ones (drafts, sends) still work")
    elif "malformed" in text or "not a database" in text or (isinstance(
            cause, sqlite3.DatabaseError) and not isinstance(cause, sqlite3.OperationalError)):
        message = (f"the state database is damaged ({text}); restore a backup if you "
                   "have one (state.db.*.bak beside it) or move it aside to start anew")
    elif "unable to open" in text:
        message = (f"cannot open the state database ({text}); check that its folder exists "
                   "and is readable and writable")
    else:
        message = f"the state database failed: {text}"
    return PublishError(message, path)


def _space_left(path: Path) -> int:
    """Bytes free for us where the database lives (SQLite calls a full disk an I/O error
    when it happens while growing the WAL index)."""
    try:
        info = os.statvfs(path.parent)
    except OSError:
        return 1 << 62
    return info.f_bavail * info.f_frsize


def _writable(path: Path) -> bool:
    folder = path.parent
    return os.access(folder, os.W_OK) and (not path.exists() or os.access(path, os.W_OK))


def _open_read_only(path: Path) -> sqlite3.Connection:
    """A read-only connection; `immutable` when nobody can change the file (a read-only
    folder has no room for the WAL index SQLite otherwise needs)."""
    uri = path.resolve().as_uri() + "?mode=ro"
    try:
        db = sqlite3.connect(uri, uri=True, timeout=BUSY_TIMEOUT, isolation_level=None)
        db.execute("PRAGMA application_id").fetchone()
        return db
    except sqlite3.OperationalError as exc:
        if (_writable(path) and _space_left(path) >= 1024 * 1024) or "locked" in str(exc):
            raise
    return sqlite3.connect(uri + "&immutable=1", uri=True, timeout=BUSY_TIMEOUT,
                           isolation_level=None)


def connect(state_dir: Path, readonly: bool = False) -> sqlite3.Connection:
    """Open (creating if needed) the state database, migrated to the current schema.

    `readonly` is for commands that only look (drafts, sends): they work on a database in a
    read-only folder too, and never create or migrate one.
    """
    global last_opened
    path = state_dir / DB_NAME
    last_opened = path
    if not readonly:
        try:
            state_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise PublishError(f"cannot create the state folder: {exc.strerror}",
                               state_dir) from None
        if path.exists() and not _writable(path):
            raise PublishError("the state database is read-only; this command records what it "
                               "does and needs the folder writable (read-only commands such as "
                               "`publish drafts` and `publish sends` still work)", path)
    existed = path.exists() and path.stat().st_size > 0
    try:
        if readonly:
            db = _open_read_only(path)
        else:
            db = sqlite3.connect(path, timeout=BUSY_TIMEOUT, isolation_level=None)
        db.row_factory = sqlite3.Row
        app_id = db.execute("PRAGMA application_id").fetchone()[0]
        version = db.execute("PRAGMA user_version").fetchone()[0]
    except sqlite3.DatabaseError as exc:
        if "not a database" in str(exc) or "malformed" in str(exc):
            raise PublishError(f"not a publish state database ({exc}); move it aside",
                               path) from None
        raise describe(exc, path) from None
    if existed and app_id != APPLICATION_ID:
        db.close()
        raise PublishError("not a publish state database (foreign SQLite file); move it aside",
                           path)
    if version > SCHEMA_VERSION:
        db.close()
        raise PublishError(
            f"made by a newer publish (schema {version}, this one knows {SCHEMA_VERSION}); "
            "upgrade publish", path)
    if readonly:
        if version < SCHEMA_VERSION:
            db.close()
            raise PublishError("made by an older publish; run `publish draft` once to "
                               "update it", path)
        return db
    try:
        _prepare(db, path, version, existed)
    except sqlite3.DatabaseError as exc:
        db.close()
        raise describe(exc, path) from None
    return db


def _prepare(db: sqlite3.Connection, path: Path, version: int, existed: bool) -> None:
    """WAL mode, and the schema migrated forward (after a backup copy) in one transaction."""
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")  # WAL keeps every commit across a process crash
    db.execute("PRAGMA foreign_keys=ON")
    if version < SCHEMA_VERSION:
        if existed:
            backup = path.with_name(f"{DB_NAME}.v{version}-{int(time.time())}.bak")
            db.execute("PRAGMA wal_checkpoint(FULL)")
            try:
                shutil.copy2(path, backup)
            except OSError as exc:
                backup.unlink(missing_ok=True)
                raise PublishError(f"cannot back up the state database before updating it: "
                                   f"{exc.strerror}", path) from None
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
            raise PublishError(f"cannot update the state database: {describe(exc, path).message}",
                               path) from None


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
    return describe(exc, _file_of(db))


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


def recall(db: sqlite3.Connection, service: str, target: str, key: str) -> str | None:
    """What a service learnt about a publication on an earlier run (a route that works)."""
    row = db.execute("SELECT value FROM service_memory WHERE service = ? AND target = ? "
                     "AND key = ?", (service, target, key)).fetchone()
    return row[0] if row else None


def remember(db: sqlite3.Connection, service: str, target: str, key: str, value: str) -> None:
    db.execute("INSERT OR REPLACE INTO service_memory VALUES (?, ?, ?, ?)",
               (service, target, key, value))
