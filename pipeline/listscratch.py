"""The export's rows in a scratch SQLite database on disk, where an import merges them.

On disk, so merging a million rows keeps memory flat; the row id is the export's order,
so new rows come back in that order without a sort; rows go in by statements of 120.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import sqlite3
import tempfile
from collections.abc import Iterator
from typing import TYPE_CHECKING

from . import csvrows
from .errors import PublishError
from .subscribers import COLUMNS, Entry, Rejected

if TYPE_CHECKING:
    from .listmerge import ImportReport


@contextlib.contextmanager
def scratch() -> Iterator[sqlite3.Connection]:
    """A scratch database on disk, so merging a million rows keeps memory flat."""
    try:
        db = _open()
        try:
            yield db
        finally:
            db.close()
    except (sqlite3.Error, OSError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        raise PublishError(f"cannot merge the list in a temporary folder: {reason}; the list "
                           "is unchanged") from None


def _open() -> sqlite3.Connection:
    handle, path = tempfile.mkstemp(suffix=".db")
    os.close(handle)
    db = sqlite3.connect(path, isolation_level=None)
    os.unlink(path)  # stays usable until closed, and vanishes after
    db.execute("PRAGMA journal_mode=OFF")
    db.execute("PRAGMA synchronous=OFF")
    # The index of a million addresses outgrows SQLite's default 2 MB page cache, and
    # each insert then waits on the disk: 8 MB (a bound, whatever the size) halves the load.
    db.execute("PRAGMA cache_size=-8000")
    # `ord` is the row id: new rows come back in the export's order without a sort.
    # `bare`: no field holds a character CSV quotes for (see `listmerge._lines_sql`).
    db.execute("CREATE TABLE incoming (ord INTEGER PRIMARY KEY, key TEXT UNIQUE, email TEXT,"
               " name TEXT, status TEXT, created_at TEXT, attributes TEXT,"
               " bare INTEGER DEFAULT 0, matched INTEGER DEFAULT 0)")
    return db


INCOMING = "incoming (ord, key, email, name, status, created_at, attributes, bare)"
# What CSV may quote for: every delimiter a list can have, the quote, line breaks.
QUOTABLE = re.compile('[' + re.escape(csvrows.DELIMITERS) + '"\r\n]').search
_INSERT = f"INSERT OR IGNORE INTO {INCOMING} VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
_PER_INSERT = 120  # rows per INSERT statement (8 values each: under SQLite's 999)
_INSERT_MANY = (f"INSERT OR IGNORE INTO {INCOMING} VALUES "
                + ",".join(["(?, ?, ?, ?, ?, ?, ?, ?)"] * _PER_INSERT))
_BATCH = _PER_INSERT * 40
_KNOWN_SETS = 4096  # attribute sets remembered as bringing no new column


class _Loader:
    """Puts the export's rows into the scratch database, by batches, in order.

    (Loading in a second thread while the export is read was tried: SQLite works without
    the interpreter's lock, but the two threads then wait on each other and the import
    took 15 % longer. The reading and checking run in a second process instead: `listfeed`.)
    """

    def __init__(self, db: sqlite3.Connection):
        self.db = db
        self.extras: dict[str, None] = {}  # new columns, from the first row of an address
        self.duplicates = 0

    def insert(self, batch: list[tuple]) -> None:
        db = self.db
        before = db.total_changes
        whole = len(batch) - len(batch) % _PER_INSERT
        for start in range(0, whole, _PER_INSERT):  # rows go in in order: the first one wins
            db.execute(_INSERT_MANY, list(itertools.chain.from_iterable(
                batch[start:start + _PER_INSERT])))
        db.executemany(_INSERT, batch[whole:])
        self.duplicates += len(batch) - (db.total_changes - before)

    def alone(self, row: tuple, attributes: dict[str, str]) -> None:
        """A row that may bring new columns: they are the list's if it is not a duplicate."""
        new = [k for k in attributes if k not in COLUMNS and k not in self.extras]
        if self.db.execute(_INSERT, row).rowcount:
            self.extras.update(dict.fromkeys(new))
        else:  # seen earlier in this same file, in some spelling
            self.duplicates += 1


# A batch of the export's rows, by columns (ready for `_rows`): the order of its first
# row, then its keys, addresses, names, statuses, created_at, attributes as JSON and
# whether each row is bare (None: every row is); the rows refused among them; the
# distinct attribute texts of the rows.
Batch = tuple[int, list[tuple | None], list[Rejected], set[str]]


def batches(items: Iterator[tuple[int, Entry | Rejected]]) -> Iterator[Batch]:
    """The export's entries as batches, in the export's order.

    This is the work that can run in another process (`listfeed`): it needs nothing of the
    scratch database. By columns: a batch crosses a pipe in half the time.
    """
    valid: list[Entry] = []
    rejected: list[Rejected] = []
    first = 1
    for _, entry in items:
        if type(entry) is Rejected:
            rejected.append(entry)  # type: ignore[arg-type]
            if len(rejected) < _BATCH:
                continue
        else:
            valid.append(entry)  # type: ignore[arg-type]
            if len(valid) < _BATCH:
                continue
        yield _by_columns(first, valid, rejected)
        first += len(valid)
        valid, rejected = [], []
    yield _by_columns(first, valid, rejected)


def _by_columns(first: int, valid: list[Entry], rejected: list[Rejected]) -> Batch:
    if not valid:
        return first, [], rejected, set()
    key, email, name, status, created, _, text = zip(*valid, strict=True)
    # Bare: no field holds a character CSV may quote for. Asked of the whole batch at
    # once, and of each row only when the batch has such a character somewhere.
    bare = None if QUOTABLE("".join(email) + "".join(name) + "".join(status)
                            + "".join(created)) is None else tuple(
        QUOTABLE(f"{e}{n}{s}{c}") is None
        for e, n, s, c in zip(email, name, status, created, strict=True))
    return first, [key, email, name, status, created, text, bare], rejected, set(text)


def _rows(first: int, columns: list[tuple | None]) -> list[tuple]:
    """A batch's rows to insert: (ord, key, email, name, status, created_at, attributes,
    bare)."""
    if not columns:
        return []
    *fields, bare = columns
    count = len(fields[0])  # type: ignore[arg-type]
    return list(zip(range(first, first + count), *fields,  # type: ignore[misc]
                    itertools.repeat(True, count) if bare is None else bare, strict=True))


def load(db: sqlite3.Connection, prepared: Iterator[Batch], report: ImportReport) -> list[str]:
    """Load the rows to merge into the scratch database; the extra columns they bring.

    Rows go in by batches; a row that may bring a column not seen yet goes in alone, since
    only a row that is not a duplicate (the first of its address) adds its columns.
    """
    loader = _Loader(db)
    known: set[str] = set()  # attributes (as JSON) whose names are all the loader's extras
    db.execute("BEGIN")
    for first, columns, rejected, texts in prepared:
        report.rejected.extend(rejected)
        rows = _rows(first, columns)
        if texts <= known:  # the usual batch: no row can bring a new column
            loader.insert(rows)
            continue
        pending: list[tuple] = []
        for row in rows:
            text = row[6]
            if text not in known:
                attributes = json.loads(text)
                if any(k not in COLUMNS and k not in loader.extras for k in attributes):
                    loader.insert(pending)
                    loader.alone(row, attributes)
                    pending = []
                    continue
                if len(known) < _KNOWN_SETS:
                    known.add(text)
            pending.append(row)
        loader.insert(pending)
    db.execute("COMMIT")
    report.duplicates += loader.duplicates
    return list(loader.extras)
