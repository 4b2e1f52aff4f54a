"""Changing a subscriber list: rewrite the rows a change means to touch, copy every other row.

An import or an unsubscribe reads the list record by record and writes the new list beside
it: a row the change does not touch, or cannot read (a bad address, an unknown status, a
broken quote), is copied as its raw text, so it survives byte for byte; a changed row is
written again with only its changed cells replaced; new rows go at the end. The whole
read-and-replace holds the lists' lock (see `listlock`).
"""

from __future__ import annotations

import csv
import json
import os
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from . import csvrows, listfeed, listlock, listscratch
from .subscribers import (
    COLUMNS,
    Entry,
    Layout,
    Progress,
    Rejected,
    broken_row,
    email_key,
    normalize_email,
)

_RANK = {"active": 0, "bounced": 1, "unsubscribed": 2}
_LOOKUP = 500  # list rows looked up in the scratch database at once


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


class _Sink:
    """Where a dry run writes the new list: nowhere."""

    def write(self, text: str) -> int:
        return len(text)


class _Merge:
    """The text of the new list, written while the old one is read."""

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
        self.columns: list[str] = []
        self.ending = "\n"
        self.layout: Layout | None = None

    def write(self, dest: Path, out: TextIO) -> None:
        wanted = COLUMNS + self.extras
        last = ""
        if dest.exists():
            pending: list[csvrows.RowTuple] = []
            for row in csvrows.rows(dest, self.table):
                kind, _, raw, cells, _ = row
                if kind == "header":
                    self._rows(pending, out)
                    pending = []
                    self.ending = csvrows.ending_of(raw) or "\n"
                    out.write(self._header(raw, cells or [], wanted))
                    last = raw
                    continue
                if kind == "data" and not self.columns:  # a plain list: give it a header
                    self._rows(pending, out)
                    pending = []
                    self.columns = wanted
                    out.write(csvrows.format_row(wanted, self.table.delimiter,
                                                 csvrows.ending_of(raw) or "\n"))
                pending.append(row)
                if len(pending) >= _LOOKUP:
                    self._rows(pending, out)
                    pending = []
                last = raw
            self._rows(pending, out)
        if not self.columns:
            self.columns = wanted
            if last and not csvrows.ending_of(last):
                out.write(self.ending)
            out.write(csvrows.format_row(wanted, self.table.delimiter, self.ending))
            last = self.ending
        self._new_rows(out, needs_break=bool(last) and not csvrows.ending_of(last))

    def _header(self, raw: str, cells: list[str], wanted: list[str]) -> str:
        missing = [name for name in wanted if name not in self.table.columns]
        self.columns = self.table.columns + missing
        if not missing:
            return raw
        return csvrows.format_row(list(cells) + missing, self.table.delimiter,
                                  csvrows.ending_of(raw))

    def _rows(self, rows: list[csvrows.RowTuple], out: TextIO) -> None:
        """Write a run of the list's records, their addresses looked up all at once."""
        if self.layout is None and self.table.columns:
            self.layout = Layout(self.table.columns)
        layout = self.layout
        keyed: list[tuple[str | None, Entry | Rejected | None]] = []
        for kind, line, _, cells, _ in rows:
            if kind != "data" or layout is None:
                keyed.append((None, None))
                continue
            keyed.append(self._key(layout, line, cells or []))
        found = self._lookup({key for key, _ in keyed if key is not None})
        matched: list[tuple[str]] = []
        for (kind, line, raw, cells, problem), (key, entry) in zip(rows, keyed, strict=True):
            if kind == "broken":
                self.report.kept.append(broken_row(line, raw, problem))
            elif isinstance(entry, Rejected):
                self.report.kept.append(entry)
            if key is None or entry is None:
                out.write(raw)
                continue
            out.write(self._data(raw, cells or [], key, entry, found, matched))
        if matched:
            self.db.executemany("UPDATE incoming SET matched = 1 WHERE key = ?", matched)

    def _key(self, layout: Layout, line: int,
             cells: list[str]) -> tuple[str | None, Entry | Rejected | None]:
        """The key a list row is looked up by, and what the row is (None: copy it as is)."""
        email = cells[layout.email] if layout.email is not None and \
            layout.email < len(cells) else ""
        if self.only is not None and not _may_be(email, self.only):
            return None, None
        entry = layout.entry(line, cells)
        if not isinstance(entry, Rejected):
            return entry[0], entry
        try:  # an unknown status: the address is still this one's
            return email_key(normalize_email(email.strip())), entry
        except ValueError:
            return None, entry

    def _lookup(self, keys: set[str]) -> dict[str, list]:
        """{key: [name, status, matched]} of the incoming rows with these keys."""
        found: dict[str, list] = {}
        if keys:
            marks = ",".join("?" * len(keys))
            for key, name, status, matched in self.db.execute(
                    f"SELECT key, name, status, matched FROM incoming WHERE key IN ({marks})",
                    list(keys)):
                found[key] = [name, status, matched]
        return found

    def _data(self, raw: str, cells: list[str], key: str, entry: Entry | Rejected,
              found: dict[str, list], matched: list[tuple[str]]) -> str:
        incoming = found.get(key)
        if incoming is None:
            return raw
        name, status, was_matched = incoming
        if not was_matched:
            incoming[2] = 1
            matched.append((key,))
        if isinstance(entry, Rejected):
            if not self.overwrite_status:
                if not was_matched:
                    self.report.unchanged += 1
                return raw
            assert self.layout is not None
            padded = cells + [""] * (self.layout.width - len(cells))
            current = {"name": self.layout.fields(padded)[1], "status": entry.status}
        else:
            current = {"name": entry[2], "status": entry[3]}
        change = {"name": current["name"] or name,
                  "status": status if self.overwrite_status
                  else _stricter(current["status"], status)}
        change = {k: v for k, v in change.items() if v != current[k]}
        if not was_matched:
            if change:
                self.report.updated += 1
            else:
                self.report.unchanged += 1
        if not change:
            return raw
        cells = list(cells)
        for column, value in change.items():
            index = self.columns.index(column)
            cells += [""] * (index + 1 - len(cells))
            cells[index] = value
        return csvrows.format_row(cells, self.table.delimiter, csvrows.ending_of(raw))

    def _new_rows(self, out: TextIO, needs_break: bool) -> None:
        if self.db.execute("SELECT 1 FROM incoming WHERE matched = 0 LIMIT 1").fetchone() is None:
            return
        if needs_break:
            out.write(self.ending)
        if self.columns[:len(COLUMNS)] == COLUMNS and not COLUMNS_SET & set(
                self.columns[len(COLUMNS):]) and self._tails():
            # The usual list: SQLite writes each line, and Python only joins them up.
            tails = self.db.execute("SELECT tail FROM tails LIMIT 2").fetchall()
            text = self.db.execute(_lines_sql(self.table.delimiter, self.ending, len(tails) > 1),
                                   tails[0] if len(tails) == 1 else ())
            while lines := text.fetchmany(4096):
                out.write("".join([line for line, in lines]))
                self.report.added += len(lines)
            return
        rows = self.db.execute("SELECT email, name, status, created_at, attributes FROM incoming"
                               " WHERE matched = 0 ORDER BY ord")
        writer = csv.writer(out, delimiter=self.table.delimiter, lineterminator=self.ending)
        writer.writerows(self._cells(rows))

    def _tails(self) -> bool:
        """Fill `tails`: the attribute columns of each set of attributes, as CSV text after
        the four fields. False when there are too many sets to list."""
        sets = self.db.execute("SELECT DISTINCT attributes FROM incoming WHERE matched = 0"
                               f" LIMIT {_TAILS + 1}").fetchall()
        if len(sets) > _TAILS:
            return False
        rest = self.columns[len(COLUMNS):]
        tails = []
        for (text,) in sets:
            attributes = json.loads(text)
            row = csvrows.format_row(["", *(attributes.get(c, "") for c in rest)],
                                     self.table.delimiter, self.ending)
            row = row[:-len(self.ending)] if rest else ""  # (what to quote depends on it)
            tails.append((text, row))
        self.db.execute("CREATE TEMP TABLE IF NOT EXISTS tails (attributes TEXT PRIMARY KEY,"
                        " tail TEXT)")
        self.db.execute("DELETE FROM tails")
        self.db.executemany("INSERT INTO tails VALUES (?, ?)", tails)
        return True

    def _cells(self, rows: Iterator[tuple[str, str, str, str, str]]) -> Iterator[list[str]]:
        """Each new row's cells in the list's columns: its fields, then its attributes."""
        columns = self.columns
        at = {name: [i for i, c in enumerate(columns) if c == name] for name in COLUMNS}
        templates: dict[str, list[str]] = {}
        added = 0
        for row in rows:
            added += 1
            template = templates.get(row[4])
            if template is None:
                attributes = json.loads(row[4])
                template = [attributes.get(c, "") for c in columns]
                if len(templates) < _TAILS:
                    templates[row[4]] = template
            cells = list(template)
            for j, name in enumerate(COLUMNS):
                for i in at[name]:
                    cells[i] = row[j]
            yield cells
        self.report.added += added


COLUMNS_SET = set(COLUMNS)
_TAILS = 4096  # sets of attributes written by SQLite; more (an id per row) go through Python


def _lines_sql(delimiter: str, ending: str, many: bool) -> str:
    """SELECT each new row as the line csv.writer would write for it (ending included).

    A field is quoted exactly when csv.writer quotes it: when it holds a character that
    this Python's csv module quotes for (asked once, below), with its quotes doubled; a
    `bare` row holds none of the characters it could quote for, so it is not looked at.
    tests/test_subscribers_csv.py checks the lines against csv.writer.
    """
    def field(name: str) -> str:
        marks = " OR ".join(f"instr({name}, char({ord(c)})) > 0"
                            for c in _quoted_for(delimiter, ending))
        return (f"CASE WHEN {marks} THEN char(34) || replace({name}, char(34), char(34, 34))"
                f" || char(34) ELSE {name} END")

    comma = f" || char({ord(delimiter)}) || "
    line = (f"CASE WHEN bare THEN {comma.join(COLUMNS)}"  # (an import's status is a word)
            f" ELSE {comma.join(field(name) for name in COLUMNS)} END")
    end = " || ".join(f"char({ord(c)})" for c in ending) or "''"
    tail = ("(SELECT tail FROM tails WHERE tails.attributes = incoming.attributes)" if many
            else "?")  # one set of attributes for every row: its columns are given
    return f"SELECT {line} || {tail} || {end} FROM incoming WHERE matched = 0 ORDER BY ord"


def _quoted_for(delimiter: str, ending: str) -> list[str]:
    """The characters for which csv.writer quotes a field, of those it could quote for."""
    return [c for c in dict.fromkeys([delimiter, '"', "\r", "\n", *ending])
            if csvrows.format_row([f"a{c}b", "x"], delimiter, ending).startswith('"')]


def _rewrite(dest: Path, db: sqlite3.Connection, extras: list[str], report: ImportReport,
             *, overwrite_status: bool = False, only: set[str] | None = None,
             commit=lambda report: True) -> None:
    """Write the merged list in place of `dest` (the lock must be held) unless a dry run."""
    for encoding in (None, "utf-8"):  # the list's own encoding, unless new rows cannot be
        if encoding is not None:
            db.execute("UPDATE incoming SET matched = 0 WHERE matched = 1")
        fresh = ImportReport(duplicates=report.duplicates, rejected=report.rejected,
                             dry_run=report.dry_run)
        merge = _Merge(db, extras, fresh, overwrite_status=overwrite_status, only=only)
        try:
            if report.dry_run:
                merge.write(dest, _Sink())  # type: ignore[arg-type]
                break
            own = encoding or (csvrows.encoding_of(dest) if dest.exists() else "utf-8")
            with listlock.replacing(dest, own) as out:
                merge.write(dest, out)
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


def import_file(source: Path, dest: Path, *, dry_run: bool = False,
                progress: Progress | None = None) -> ImportReport:
    """Merge a subscriber export into a list; the stricter status wins for a known address."""
    report = ImportReport(dry_run=dry_run)
    dest = _real(dest)
    with listscratch.scratch() as db:
        feed = listfeed.batches(source, progress)
        try:
            extras = listscratch.load(db, feed, report)
        finally:
            feed.close()  # an error or Ctrl-C while loading: the reading process ends now
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
    with listscratch.scratch() as db:
        db.execute(f"INSERT INTO {listscratch.INCOMING} VALUES (1, ?, ?, '', ?, '', '{{}}', 0)",
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
    with listscratch.scratch() as db:
        db.execute(f"INSERT INTO {listscratch.INCOMING} VALUES (1, ?, ?, '', ?, ?, ?, 0)",
                   (email_key(address), address, status, when,
                    json.dumps({"reason": reason} if reason else {})))
        with listlock.locked(path.parent):
            listlock.remove_stale(path)
            _rewrite(path, db, ["reason"] if reason else [], report, only={email_key(address)},
                     commit=lambda r: r.added > 0)
    return report.added > 0
