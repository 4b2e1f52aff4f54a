"""Reading subscriber CSV files record by record, each record with its raw text and first line.

Rewrites copy every record they do not change byte for byte, so a record keeps its raw
text, and the raw texts of all records put together are the whole file. A record that
cannot be read as one row (a quote left open that swallows the rows after it, a field over
the csv module's size limit) is reported on its first line alone, and reading goes on with
the next line: one bad row never takes the rows after it, or the whole file, with it.
"""

from __future__ import annotations

import codecs
import csv
import io
import re
import threading
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from .errors import InputError

DELIMITERS = ",;\t|"
# A line that starts with what looks like an address and then a delimiter or its end: a
# quoted field holding one is almost surely an opening quote that was never closed.
_ROW_START = re.compile(r'\s*"?[^\s@",;|\t]+@[^\s@",;|\t]+\.[^\s@",;|\t]+"?\s*(?:[,;\t|]|$)')

# Header names as exports spell them, to the name used here (after lower-casing and
# turning runs of spaces, underscores and hyphens into one underscore).
ALIASES = {
    "email_address": "email", "e_mail": "email", "user_email_address": "email",
    "subscriber_email": "email", "mail": "email",
    "user_name": "name", "full_name": "name",
    "subscription_date": "created_at", "subscription_created_at": "created_at",
    "start_date": "created_at", "created": "created_at", "signup_date": "created_at",
    "date_subscribed": "created_at",
    "unsubscribed_at": "cancel_date", "email_disabled": "email_disabled",
}


def column_name(raw: str) -> str:
    """The canonical name of a header cell: `Email disabled`, `EMAIL_DISABLED` → email_disabled."""
    key = re.sub(r"[\s_\-]+", "_", raw.strip().lstrip("\ufeff").strip().lower()).strip("_")
    return ALIASES.get(key, key)


def encoding_of(path: Path) -> str:
    """UTF-8 (with or without BOM) or UTF-16 by BOM; Windows-1252 when the bytes are not UTF-8."""
    with open(path, "rb") as handle:
        head = handle.read(4)
        if head.startswith((b"\xff\xfe", b"\xfe\xff")):
            return "utf-16"
        if head.startswith(b"\xef\xbb\xbf"):
            return "utf-8-sig"
        handle.seek(0)
        utf8 = codecs.getincrementaldecoder("utf-8")()
        try:
            while chunk := handle.read(1 << 20):
                utf8.decode(chunk)
            utf8.decode(b"", final=True)
        except UnicodeDecodeError:
            return "cp1252"
    return "utf-8"


def delimiter_of(first_line: str) -> str:
    """The delimiter the header line uses most: comma, semicolon, tab or bar."""
    if not any(c in first_line for c in DELIMITERS):
        return ","
    return max(DELIMITERS, key=first_line.count)


@dataclass(slots=True)
class Record:
    """One record of the file: `cells` is None when it could not be read as a row."""

    line: int
    raw: str
    cells: list[str] | None
    problem: str = ""

    @property
    def blank(self) -> bool:
        return is_blank(self.cells)

    @property
    def ending(self) -> str:
        """The record's line ending, kept when the record is rewritten."""
        return ending_of(self.raw)


def is_blank(cells: list[str] | None) -> bool:
    if cells is None:
        return False
    if cells and cells[0].strip():  # the usual row, decided by its first cell
        return False
    return not any(c.strip() for c in cells)


def ending_of(raw: str) -> str:
    for end in ("\r\n", "\n", "\r"):
        if raw.endswith(end):
            return end
    return ""


class _Lines:
    """The file's physical lines, numbered, with lines that can be given back to re-read."""

    def __init__(self, handle: TextIO):
        self.handle = handle
        self.number = 0
        self.returned: deque[tuple[int, str]] = deque()
        self.taken: list[tuple[int, str]] = []

    def __iter__(self) -> _Lines:
        return self

    def __next__(self) -> str:
        if self.returned:
            self.number, text = self.returned.popleft()
        else:
            text = next(self.handle)
            self.number += 1
        self.taken.append((self.number, text))
        return text

    def give_back(self, lines: list[tuple[int, str]]) -> None:
        self.returned.extendleft(reversed(lines))


def _swallowed(taken: list[tuple[int, str]]) -> bool:
    """Whether a record over several lines is an unclosed quote rather than a quoted field."""
    text = "".join(t for _, t in taken)
    if text.count('"') % 2:
        return True  # the file ended inside the quote
    return any(_ROW_START.match(t) for _, t in taken[1:])


def records(handle: TextIO, delimiter: str, *, fast: bool = True) -> Iterator[Record]:
    """Every record of an open file, blank lines included, in order."""
    for line, raw, cells, problem in record_tuples(handle, delimiter, fast=fast):
        yield Record(line, raw, cells, problem)


def record_tuples(handle: TextIO, delimiter: str, *, fast: bool = True,
                  own_lines: bool = False) -> Iterator[tuple[int, str, list[str] | None, str]]:
    """`records` as (line, raw, cells, problem) tuples, the form the hot loops read.

    A line without a quote (nearly every line of an export) is one record whose cells are
    the line split at the delimiter, which is what the csv module makes of it; only lines
    with a quote, or too long to be sure of, go through the csv module (`fast=False`
    sends every line there: tests/test_subscribers_csv.py checks the two agree).
    `own_lines`: the handle was opened with newline="", so a line break can only end a line.
    """
    lines = _Lines(handle)
    reader = csv.reader(lines, delimiter=delimiter)
    limit = csv.field_size_limit() if fast else -1
    while True:
        if not lines.returned:
            number = lines.number
            for text in handle:
                number += 1
                if len(text) > limit or '"' in text or "\0" in text:
                    lines.number = number - 1
                    lines.give_back([(number, text)])
                    break
                body = text.rstrip("\r\n")
                # A line break inside the line (a handle not opened with newline=""): csv.
                if not own_lines and (
                        "\r" in body or "\n" in body
                        or (len(text) - len(body) > 1 and not text.endswith("\r\n", -2))):
                    lines.number = number - 1
                    lines.give_back([(number, text)])
                    break
                yield number, text, body.split(delimiter) if body else [], ""
            else:
                lines.number = number
                return
        lines.taken = []
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            cells, problem = None, f"unreadable row: {exc}"
        else:
            problem = ""
            if len(lines.taken) > 1 and _swallowed(lines.taken):
                cells, problem = None, ("a quote opened on this line is never closed "
                                        "(the rows after it were read again on their own)")
        taken = lines.taken
        if not taken:
            return
        if cells is None:
            # Report the first line alone and read the lines after it again as rows.
            lines.give_back(taken[1:])
            reader = csv.reader(lines, delimiter=delimiter)
            yield taken[0][0], taken[0][1], None, problem
            continue
        yield taken[0][0], "".join(t for _, t in taken), cells, ""


@dataclass
class Table:
    """A CSV file opened for reading: its encoding, delimiter and, once read, its columns."""

    path: Path
    encoding: str = "utf-8"
    delimiter: str = ","
    columns: list[str] = field(default_factory=list)
    has_header: bool = False

    def column(self, name: str) -> int | None:
        return self.columns.index(name) if name in self.columns else None


@dataclass
class Row:
    """A record with its kind: blank, header, data (with values by column) or broken."""

    kind: str
    record: Record
    values: dict[str, str] = field(default_factory=dict)


def _first_line(path: Path, encoding: str) -> str:
    with open(path, encoding=encoding, newline="") as handle:
        for line in handle:
            if line.strip():
                return line
    return ""


def scan(path: Path, table: Table | None = None) -> Iterator[Row]:
    """Every record of `path` as a Row; `table` (if given) is filled in as the file is read.

    A file whose first row holds one cell with an address and no header is a plain list.
    """
    table = table or Table(path)
    for kind, line, raw, cells, problem in rows(path, table):
        record = Record(line, raw, cells, problem)
        if kind != "data":
            yield Row(kind, record)
            continue
        columns = table.columns
        if len(cells) < len(columns):
            cells = cells + [""] * (len(columns) - len(cells))
        # Cells past the header's columns are not values of any column.
        pairs = zip(columns, cells, strict=False)
        yield Row("data", record, {name: cell.strip() for name, cell in pairs if name})


RowTuple = tuple[str, int, str, "list[str] | None", str]


def rows(path: Path, table: Table) -> Iterator[RowTuple]:
    """`scan` as (kind, line, raw, cells, problem) tuples, cells as read (not padded)."""
    if not path.exists():
        raise InputError("no such file", path)
    if not path.is_file():
        raise InputError("not a regular file (a folder, a pipe or a device?); give a CSV "
                         "file", path)
    table.path = path
    table.encoding = encoding_of(path)
    try:
        table.delimiter = delimiter_of(_first_line(path, table.encoding))
        with open(path, encoding=table.encoding, newline="") as handle:
            tuples = record_tuples(handle, table.delimiter, own_lines=True)
            for line, raw, cells, problem in tuples:
                if cells is None:
                    yield "broken", line, raw, cells, problem
                elif is_blank(cells):
                    yield "blank", line, raw, cells, problem
                elif _header(table, cells, line):
                    yield "header", line, raw, cells, problem
                    break
                else:
                    yield "data", line, raw, cells, problem
                    break
            for line, raw, cells, problem in tuples:
                if cells is None:
                    yield "broken", line, raw, cells, problem
                elif (cells and cells[0].strip()) or not is_blank(cells):
                    yield "data", line, raw, cells, problem
                else:
                    yield "blank", line, raw, cells, problem
    except UnicodeDecodeError as exc:
        raise InputError(f"cannot decode as {table.encoding}: {exc.reason}", path) from None


def _header(table: Table, cells: list[str], line: int) -> bool:
    """Read the columns from the first row; False when it is a plain list's first address."""
    first = [cell.strip().lstrip("\ufeff") for cell in cells]
    if len(first) == 1 and "@" in first[0]:
        table.columns = ["email"]
        return False
    table.columns = [column_name(cell) for cell in first]
    table.has_header = True
    if "email" not in table.columns:
        raise InputError("no 'email' column in the header "
                         f"(found: {', '.join(first[:8])})", table.path, line)
    return True


_WRITERS = threading.local()  # per thread: (delimiter, ending) -> (buffer, csv writer)


def format_row(cells: list[str], delimiter: str, ending: str) -> str:
    """One row as CSV text with the given line ending."""
    writers = _WRITERS.__dict__
    made = writers.get((delimiter, ending))
    if made is None:
        out = io.StringIO()
        made = writers[(delimiter, ending)] = (
            out, csv.writer(out, delimiter=delimiter, lineterminator=ending or ""))
    out, writer = made
    out.seek(0)
    out.truncate()
    writer.writerow(cells)
    return out.getvalue()
