"""Subscriber lists: CSV files in `subscribers/`, read row by row, never held whole in memory.

Our format is `email,name,status,created_at` plus any extra columns, kept as attributes.
`import_file` also reads Substack's exports (the old dashboard's two layouts and the
newer labelled export) and plain lists of addresses. `suppressed.csv` always wins.
"""

from __future__ import annotations

import csv
import json
import os
import sqlite3
import tempfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from .errors import InputError

STATUSES = ("active", "unsubscribed", "bounced")
COLUMNS = ["email", "name", "status", "created_at"]
SUPPRESSED = "suppressed.csv"
_TRUE = {"true", "t", "1", "yes", "y"}


@dataclass(frozen=True)
class Subscriber:
    email: str
    name: str = ""
    status: str = "active"
    created_at: str = ""
    attributes: dict[str, str] = field(default_factory=dict, compare=False, hash=False)

    @property
    def key(self) -> str:
        return self.email.lower()


@dataclass(frozen=True)
class Rejected:
    line: int
    value: str
    reason: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.value!r}: {self.reason}"


def list_path(root: Path, name: str = "main") -> Path:
    return root / "subscribers" / (name if name.endswith(".csv") else f"{name}.csv")


def normalize_email(raw: str) -> str:
    """The address with its domain in lower case; ValueError with a reason when invalid."""
    from email_validator import EmailNotValidError, validate_email

    value = raw.strip().strip("<>").strip()
    if not value:
        raise ValueError("empty address")
    try:
        result = validate_email(value, check_deliverability=False)
    except EmailNotValidError as exc:
        raise ValueError(str(exc)) from None
    local, _, domain = result.normalized.rpartition("@")
    return f"{local}@{domain.lower()}"


# reading CSV -----------------------------------------------------------------------

def _encoding(path: Path) -> str:
    """UTF-8 (with or without BOM) or UTF-16 by BOM; Windows-1252 when the bytes are not UTF-8."""
    import codecs

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


def _delimiter(sample: str) -> str:
    """The delimiter the header line uses most: comma, semicolon, tab or bar."""
    header = sample.split("\n", 1)[0]
    return max(",;\t|", key=header.count) if any(c in header for c in ",;\t|") else ","


def rows(path: Path) -> Iterator[tuple[int, dict[str, str]]]:
    """(line number, row) for each data row; keys are lower-cased header names.

    A file whose first row holds an address and no header is read as a plain list.
    """
    if not path.is_file():
        raise InputError("no such file", path)
    encoding = _encoding(path)
    try:
        with open(path, encoding=encoding, newline="") as handle:
            sample = handle.read(8192)
            handle.seek(0)
            reader = csv.reader(handle, delimiter=_delimiter(sample))
            header: list[str] | None = None
            for record in reader:
                if not any(cell.strip() for cell in record):
                    continue
                if header is None:
                    first = [cell.strip().lstrip("\ufeff") for cell in record]
                    if len(first) == 1 and "@" in first[0]:
                        header = ["email"]
                    else:
                        header = [cell.lower() for cell in first]
                        if "email" not in header:
                            raise InputError(
                                "no 'email' column in the header "
                                f"(found: {', '.join(first[:8])})", path, reader.line_num)
                        continue
                values = {name: (record[i].strip() if i < len(record) else "")
                          for i, name in enumerate(header) if name}
                yield reader.line_num, values
    except UnicodeDecodeError as exc:
        raise InputError(f"cannot decode as {encoding}: {exc.reason}", path) from None
    except csv.Error as exc:
        raise InputError(f"not a readable CSV file: {exc}", path) from None


def _from_row(values: dict[str, str]) -> tuple[str, str, str, str, dict[str, str]]:
    """(email, name, status, created_at, attributes) from any supported layout."""
    email = values.get("email", "")
    name = values.get("name", "")
    status = (values.get("status") or "active").lower()
    created = values.get("created_at") or values.get("start date") or ""
    if values.get("email_disabled", "").lower() in _TRUE:
        status = "unsubscribed"
    if values.get("cancel date"):
        status = "unsubscribed"
    if email.lower().endswith("@deletion-request.substack.com"):
        status = "unsubscribed"
    known = {"email", "name", "status", "created_at", "start date", "cancel date",
             "email_disabled", "active_subscription", "expiry", "stripe_connected_customer_id"}
    if "type" in values and ("expiry" in values or "start date" in values):
        attributes = {"substack_type": values["type"]} if values["type"] else {}
    else:
        attributes = {k: v for k, v in values.items() if k not in known and v}
    return email, name, status, created, attributes


def read(path: Path) -> Iterator[tuple[int, Subscriber | Rejected]]:
    """Each row of a list as a Subscriber, or Rejected with the reason."""
    for line, values in rows(path):
        email, name, status, created, attributes = _from_row(values)
        try:
            address = normalize_email(email)
        except ValueError as exc:
            yield line, Rejected(line, email, str(exc))
            continue
        if status not in STATUSES:
            yield line, Rejected(line, email, f"unknown status {status!r}")
            continue
        yield line, Subscriber(address, name, status, created, attributes)


def suppressed(root: Path) -> set[str]:
    """Addresses that are never sent to, from `subscribers/suppressed.csv` (small by nature)."""
    path = root / "subscribers" / SUPPRESSED
    if not path.is_file():
        return set()
    return {item.key for _, item in read(path) if isinstance(item, Subscriber)}


def count(path: Path) -> Counter:
    counts: Counter = Counter()
    for _, item in read(path):
        counts[item.status if isinstance(item, Subscriber) else "invalid"] += 1
    return counts


# writing ---------------------------------------------------------------------------

@dataclass
class ImportReport:
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    duplicates: int = 0
    rejected: list[Rejected] = field(default_factory=list)


def _merge_db() -> sqlite3.Connection:
    """A scratch database on disk, so merging a million rows keeps memory flat."""
    handle, path = tempfile.mkstemp(suffix=".db")
    os.close(handle)
    db = sqlite3.connect(path, isolation_level=None)
    os.unlink(path)  # stays usable until closed, and vanishes after
    db.execute("PRAGMA journal_mode=OFF")
    db.execute("PRAGMA synchronous=OFF")
    db.execute("CREATE TABLE rows (key TEXT PRIMARY KEY, email TEXT, name TEXT, status TEXT,"
               " created_at TEXT, attributes TEXT, ord INTEGER, imported INTEGER DEFAULT 0)")
    return db


_RANK = {"active": 0, "bounced": 1, "unsubscribed": 2}


def _write(db: sqlite3.Connection, dest: Path) -> None:
    extras: list[str] = []
    seen: set[str] = set()
    for (attributes,) in db.execute("SELECT DISTINCT attributes FROM rows"):
        for key in json.loads(attributes):
            if key not in seen:
                seen.add(key)
                extras.append(key)
    dest.parent.mkdir(parents=True, exist_ok=True)
    handle, staging = tempfile.mkstemp(prefix=f".{dest.name}.", dir=dest.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8", newline="") as out:
            writer = csv.writer(out)
            writer.writerow(COLUMNS + extras)
            for email, name, status, created, attributes in db.execute(
                    "SELECT email, name, status, created_at, attributes FROM rows ORDER BY ord"):
                attrs = json.loads(attributes)
                writer.writerow([email, name, status, created] + [attrs.get(k, "") for k in extras])
        os.replace(staging, dest)
    finally:
        if os.path.exists(staging):
            os.unlink(staging)


def import_file(source: Path, dest: Path) -> ImportReport:
    """Merge a subscriber export into a list; the stricter status wins for a known address."""
    report = ImportReport()
    db = _merge_db()
    order = 0
    db.execute("BEGIN")
    if dest.exists():
        for _, item in read(dest):
            if isinstance(item, Subscriber):
                order += 1
                db.execute("INSERT OR IGNORE INTO rows VALUES (?, ?, ?, ?, ?, ?, ?, 0)",
                           (item.key, item.email, item.name, item.status, item.created_at,
                            json.dumps(item.attributes), order))
    for _, item in read(source):
        if isinstance(item, Rejected):
            report.rejected.append(item)
            continue
        row = db.execute("SELECT name, status, imported FROM rows WHERE key = ?",
                         (item.key,)).fetchone()
        if row is None:
            order += 1
            report.added += 1
            db.execute("INSERT INTO rows VALUES (?, ?, ?, ?, ?, ?, ?, 1)",
                       (item.key, item.email, item.name, item.status, item.created_at,
                        json.dumps(item.attributes), order))
            continue
        if row[2]:  # seen earlier in this same file, in some spelling
            report.duplicates += 1
            continue
        name = row[0] or item.name
        status = max(row[1], item.status, key=lambda s: _RANK.get(s, 0))
        if (name, status) == (row[0], row[1]):
            report.unchanged += 1
        else:
            report.updated += 1
        db.execute("UPDATE rows SET name = ?, status = ?, imported = 1 WHERE key = ?",
                   (name, status, item.key))
    db.execute("COMMIT")
    _write(db, dest)
    db.close()
    return report


def set_status(dest: Path, email: str, status: str) -> bool:
    """Change one subscriber's status, rewriting the list atomically; False when not on it."""
    key = normalize_email(email).lower()
    db = _merge_db()
    found = False
    db.execute("BEGIN")
    for order, (_, item) in enumerate(read(dest)):
        if isinstance(item, Subscriber):
            row_status = item.status
            if item.key == key:
                found = True
                row_status = status
            db.execute("INSERT OR IGNORE INTO rows VALUES (?, ?, ?, ?, ?, ?, ?, 0)",
                       (item.key, item.email, item.name, row_status, item.created_at,
                        json.dumps(item.attributes), order))
    db.execute("COMMIT")
    if found:
        _write(db, dest)
    db.close()
    return found


def suppress(root: Path, email: str) -> None:
    """Add an address to the suppression list, which wins over every list."""
    path = root / "subscribers" / SUPPRESSED
    address = normalize_email(email)
    if address.lower() in suppressed(root):
        return
    new = not path.exists()
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8", newline="") as out:
        writer = csv.writer(out)
        if new:
            writer.writerow(["email", "name", "status", "created_at"])
        writer.writerow([address, "", "unsubscribed", ""])
