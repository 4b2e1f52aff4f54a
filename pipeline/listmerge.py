"""Changing a subscriber list: rewrite the rows a change means to touch, copy every other row.

An import or an unsubscribe reads the list record by record and writes the new list beside
it: a row the change does not touch, or cannot read (a bad address, an unknown status, a
broken quote), is copied as its raw text, so it survives byte for byte; a changed row is
written again with only its changed cells replaced; new rows go at the end. The whole
read-and-replace holds the lists' lock (see `listlock`).
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from . import csvrows, listlock
from .errors import PublishError
from .subscribers import (
    COLUMNS,
    Progress,
    Rejected,
    Subscriber,
    broken,
    email_key,
    normalize_email,
    read,
    to_item,
)

_RANK = {"active": 0, "bounced": 1, "unsubscribed": 2}


def _may_be(cell: str, keys: set[str]) -> bool:
    """Whether a list's email cell may validate to one of `keys` (False only when surely not).

    For plain ASCII without an `xn--` label, validating changes nothing but the case of
    the domain, so the lower-cased cell is the key it would have.
    """
    cheap = cell.strip().lower()
    if not cheap.isascii() or "xn--" in cheap or cheap.startswith("<"):
        return True
    return cheap in keys


def _stricter(a: str, b: str) -> str:
    """The status that sends less: unsubscribed over bounced over active."""
    return max(a, b, key=lambda s: _RANK.get(s, 0))


@dataclass
class ImportReport:
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    duplicates: int = 0
    rejected: list[Rejected] = field(default_factory=list)
    kept: list[Rejected] = field(default_factory=list)  # list rows that are not subscribers
    dry_run: bool = False

    def summary(self) -> dict:
        def rows(items: list[Rejected]) -> list[dict]:
            return [{"line": r.line, "value": r.value, "reason": r.reason} for r in items]

        return {"added": self.added, "updated": self.updated, "unchanged": self.unchanged,
                "duplicates": self.duplicates, "rejected": rows(self.rejected),
                "kept": rows(self.kept), "dry_run": self.dry_run}


class _Discard(Exception):
    """Raised inside a rewrite to leave the list as it was."""


@contextlib.contextmanager
def _scratch() -> Iterator[sqlite3.Connection]:
    """A scratch database on disk, so merging a million rows keeps memory flat."""
    try:
        db = _open_scratch()
        try:
            yield db
        finally:
            db.close()
    except (sqlite3.Error, OSError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        raise PublishError(f"cannot merge the list in a temporary folder: {reason}; the list "
                           "is unchanged") from None


def _open_scratch() -> sqlite3.Connection:
    handle, path = tempfile.mkstemp(suffix=".db")
    os.close(handle)
    db = sqlite3.connect(path, isolation_level=None)
    os.unlink(path)  # stays usable until closed, and vanishes after
    db.execute("PRAGMA journal_mode=OFF")
    db.execute("PRAGMA synchronous=OFF")
    db.execute("CREATE TABLE incoming (key TEXT PRIMARY KEY, email TEXT, name TEXT, status TEXT,"
               " created_at TEXT, attributes TEXT, ord INTEGER, matched INTEGER DEFAULT 0)")
    return db


class _Merge:
    """The text of the new list, produced while the old one is read."""

    def __init__(self, db: sqlite3.Connection, extras: list[str], report: ImportReport,
                 *, overwrite_status: bool = False, only: set[str] | None = None):
        self.db = db
        self.extras = extras
        self.report = report
        self.overwrite_status = overwrite_status  # set_status: the incoming status wins
        # The keys a one-address change looks for: other rows are copied unread (and their
        # problems not reported), so an unsubscribe from a long list takes seconds.
        self.only: set[str] | None = only
        self.table = csvrows.Table(Path())
        self.codec = _Json()
        self.columns: list[str] = []
        self.ending = "\n"

    def lines(self, dest: Path) -> Iterator[str]:
        wanted = COLUMNS + self.extras
        last = ""
        if dest.exists():
            for row in csvrows.scan(dest, self.table):
                record = row.record
                if row.kind == "header":
                    self.ending = record.ending or "\n"
                    yield self._header(record, wanted)
                elif row.kind == "data":
                    if not self.columns:  # a plain list of addresses: give it a header
                        self.columns = wanted
                        yield csvrows.format_row(wanted, self.table.delimiter,
                                                 record.ending or "\n")
                    yield self._data(record, row.values)
                else:
                    if row.kind == "broken":
                        self.report.kept.append(broken(record))
                    yield record.raw
                last = record.raw
        if not self.columns:
            self.columns = wanted
            if last and not csvrows.Record(0, last, None).ending:
                yield self.ending
            yield csvrows.format_row(wanted, self.table.delimiter, self.ending)
            last = self.ending
        yield from self._new_rows(needs_break=bool(last) and not
                                  csvrows.Record(0, last, None).ending)

    def _header(self, record: csvrows.Record, wanted: list[str]) -> str:
        missing = [name for name in wanted if name not in self.table.columns]
        self.columns = self.table.columns + missing
        if not missing:
            return record.raw
        return csvrows.format_row(list(record.cells or []) + missing, self.table.delimiter,
                                  record.ending)

    def _data(self, record: csvrows.Record, values: dict[str, str]) -> str:
        if self.only is not None and not _may_be(values.get("email", ""), self.only):
            return record.raw
        item = to_item(record.line, values)
        if isinstance(item, Rejected):
            self.report.kept.append(item)
            try:  # an unknown status: the address is still this one's
                key = email_key(normalize_email(values.get("email", "")))
            except ValueError:
                return record.raw
            if not self.overwrite_status:
                self._match(key, count=True)
                return record.raw
            current = {"name": values.get("name", ""), "status": item.status}
        else:
            key = item.key
            current = {"name": item.name, "status": item.status}
        incoming = self._match(key, count=False)
        if incoming is None:
            return record.raw
        name, status, first = incoming
        change = {"name": current["name"] or name,
                  "status": status if self.overwrite_status
                  else _stricter(current["status"], status)}
        change = {k: v for k, v in change.items() if v != current[k]}
        if first:
            if change:
                self.report.updated += 1
            else:
                self.report.unchanged += 1
        if not change:
            return record.raw
        cells = list(record.cells or [])
        for column, value in change.items():
            index = self.columns.index(column)
            cells += [""] * (index + 1 - len(cells))
            cells[index] = value
        return csvrows.format_row(cells, self.table.delimiter, record.ending)

    def _match(self, key: str, *, count: bool) -> tuple[str, str, bool] | None:
        """The incoming (name, status, first match) for `key`, marking it as on the list."""
        row = self.db.execute("SELECT name, status, matched FROM incoming WHERE key = ?",
                              (key,)).fetchone()
        if row is None:
            return None
        if not row[2]:
            self.db.execute("UPDATE incoming SET matched = 1 WHERE key = ?", (key,))
            if count:
                self.report.unchanged += 1
        return row[0], row[1], not row[2]

    def _new_rows(self, needs_break: bool) -> Iterator[str]:
        for email, name, status, created, attributes in self.db.execute(
                "SELECT email, name, status, created_at, attributes FROM incoming"
                " WHERE matched = 0 ORDER BY ord"):
            if needs_break:
                yield self.ending
                needs_break = False
            values = {**self.codec.loads(attributes), "email": email, "name": name,
                      "status": status, "created_at": created}
            self.report.added += 1
            yield csvrows.format_row([values.get(c, "") for c in self.columns],
                                     self.table.delimiter, self.ending)


def _rewrite(dest: Path, db: sqlite3.Connection, extras: list[str], report: ImportReport,
             *, overwrite_status: bool = False, only: set[str] | None = None,
             commit=lambda report: True) -> None:
    """Write the merged list in place of `dest` (the lock must be held) unless a dry run."""
    for encoding in (None, "utf-8"):  # the list's own encoding, unless new rows cannot be
        db.execute("UPDATE incoming SET matched = 0")
        fresh = ImportReport(duplicates=report.duplicates, rejected=report.rejected,
                             dry_run=report.dry_run)
        merge = _Merge(db, extras, fresh, overwrite_status=overwrite_status, only=only)
        try:
            if report.dry_run:
                for _ in merge.lines(dest):
                    pass
                break
            own = encoding or (csvrows.encoding_of(dest) if dest.exists() else "utf-8")
            with listlock.replacing(dest, own) as out:
                for text in merge.lines(dest):
                    out.write(text)
                if not commit(fresh):
                    raise _Discard
            break
        except UnicodeEncodeError:
            if encoding is not None:
                raise
        except _Discard:
            break
    report.__dict__.update({k: v for k, v in fresh.__dict__.items()
                            if k not in ("rejected", "duplicates", "dry_run")})


def _real(path: Path) -> Path:
    """The file a list path names: a symlinked list is changed where it lives."""
    return Path(os.path.realpath(path))


class _Json:
    """json.dumps / json.loads of the few distinct attribute sets an export repeats."""

    LIMIT = 4096

    def __init__(self):
        self.dumped: dict[tuple, str] = {}
        self.loaded: dict[str, dict] = {}

    def dumps(self, attributes: dict[str, str]) -> str:
        key = tuple(attributes.items())
        text = self.dumped.get(key)
        if text is None:
            text = json.dumps(attributes)
            if len(self.dumped) < self.LIMIT:
                self.dumped[key] = text
        return text

    def loads(self, text: str) -> dict:
        value = self.loaded.get(text)
        if value is None:
            value = json.loads(text)
            if len(self.loaded) < self.LIMIT:
                self.loaded[text] = value
        return value  # callers copy it ({**value, …}); never changed in place


_INSERT = "INSERT OR IGNORE INTO incoming VALUES (?, ?, ?, ?, ?, ?, ?, 0)"
_BATCH = 5000


def _incoming(db: sqlite3.Connection, items: Iterator[tuple[int, Subscriber | Rejected]],
              report: ImportReport) -> list[str]:
    """Load the rows to merge into the scratch database; the extra columns they bring.

    Rows go in by batches; a row that brings a column not seen yet goes in alone, since
    only a row that is not a duplicate (the first of its address) adds its columns.
    """
    extras: dict[str, None] = {}
    batch: list[tuple] = []
    codec = _Json()
    order = 0

    def flush() -> None:
        before = db.total_changes
        db.executemany(_INSERT, batch)
        report.duplicates += len(batch) - (db.total_changes - before)
        batch.clear()

    db.execute("BEGIN")
    for _, item in items:
        if isinstance(item, Rejected):
            report.rejected.append(item)
            continue
        order += 1
        row = (item.key, item.email, item.name, item.status, item.created_at,
               codec.dumps(item.attributes), order)
        new = [k for k in item.attributes if k not in COLUMNS and k not in extras]
        if not new:
            batch.append(row)
            if len(batch) >= _BATCH:
                flush()
            continue
        flush()
        if db.execute(_INSERT, row).rowcount:
            extras.update(dict.fromkeys(new))
        else:  # seen earlier in this same file, in some spelling
            report.duplicates += 1
    flush()
    db.execute("COMMIT")
    return list(extras)


def import_file(source: Path, dest: Path, *, dry_run: bool = False,
                progress: Progress | None = None) -> ImportReport:
    """Merge a subscriber export into a list; the stricter status wins for a known address."""
    report = ImportReport(dry_run=dry_run)
    dest = _real(dest)
    with _scratch() as db:
        extras = _incoming(db, read(source, progress), report)
        if dry_run:
            _rewrite(dest, db, extras, report)
        else:
            with listlock.locked(dest.parent):
                listlock.remove_stale(dest)
                # Nothing added or changed: the list is left alone, not rewritten (but a
                # list that does not exist yet is made, even empty).
                _rewrite(dest, db, extras, report,
                         commit=lambda r: r.added + r.updated > 0 or not dest.exists())
    return report


def set_status(dest: Path, email: str, status: str, *, dry_run: bool = False) -> bool:
    """Change one subscriber's status in a list, wherever it appears; False when not on it."""
    address = normalize_email(email)
    dest = _real(dest)
    if not dest.exists():
        return False
    report = ImportReport(dry_run=dry_run)
    with _scratch() as db:
        db.execute("INSERT INTO incoming VALUES (?, ?, '', ?, '', '{}', 1, 0)",
                   (email_key(address), address, status))
        # Rewritten only when a row changes; a row appended means the address was not there.
        with listlock.locked(dest.parent):
            listlock.remove_stale(dest)
            _rewrite(dest, db, [], report, overwrite_status=True, only={email_key(address)},
                     commit=lambda r: r.added == 0 and r.updated > 0)
    return report.added == 0


def suppress(path: Path, email: str, *, dry_run: bool = False, status: str = "unsubscribed",
             when: str = "", reason: str = "") -> bool:
    """Add an address to the suppression list (with the date and, when given, why: a
    `reason` column is added when needed); False when it is already there."""
    address = normalize_email(email)
    path = _real(path)
    report = ImportReport(dry_run=dry_run)
    with _scratch() as db:
        db.execute("INSERT INTO incoming VALUES (?, ?, '', ?, ?, ?, 1, 0)",
                   (email_key(address), address, status, when,
                    json.dumps({"reason": reason} if reason else {})))
        with listlock.locked(path.parent):
            listlock.remove_stale(path)
            _rewrite(path, db, ["reason"] if reason else [], report, only={email_key(address)},
                     commit=lambda r: r.added > 0)
    return report.added > 0
