"""Subscriber lists: CSV files in `subscribers/`, read row by row, never held whole in memory.

Our format is `email,name,status,created_at` plus any extra columns, kept as attributes.
`import_file` also reads Substack's exports (the old dashboard's two layouts and the
newer labelled export) and plain lists of addresses. `suppressed.csv` always wins.

Changing a list (an import, an unsubscribe) rewrites only the rows it means to change:
every other row, even one that is not a valid subscriber, is copied byte for byte, under
a lock, into a new file that replaces the old one whole (see `listlock` and `listmerge`).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from . import csvrows

STATUSES = ("active", "unsubscribed", "bounced")
STATUS_ALIASES = {"subscribed": "active", "cleaned": "bounced"}
COLUMNS = ["email", "name", "status", "created_at"]
SUPPRESSED = "suppressed.csv"
_TRUE = {"true", "t", "1", "yes", "y"}
# Columns of Substack's exports that decide a status, or only describe the export itself.
_SUBSTACK_COLUMNS = {"active_subscription", "expiry", "expiration_date", "email_disabled",
                     "stripe_connected_customer_id", "cancel_date"}

Progress = Callable[[int, int, int], None]  # (rows read, characters read, file size)


@dataclass(frozen=True)
class Subscriber:
    email: str
    name: str = ""
    status: str = "active"
    created_at: str = ""
    attributes: dict[str, str] = field(default_factory=dict, compare=False, hash=False)

    @property
    def key(self) -> str:
        return email_key(self.email)


@dataclass(frozen=True)
class Rejected:
    line: int
    value: str
    reason: str
    status: str = ""  # the unknown status, when that is why the row is not a subscriber

    def __str__(self) -> str:
        return f"line {self.line}: {self.value!r}: {self.reason}"


def list_path(root: Path, name: str = "main") -> Path:
    return root / "subscribers" / (name if name.endswith(".csv") else f"{name}.csv")


# A plain ASCII address whose every part email-validator accepts and leaves as written but
# for the domain's case: dot-atom local part of common characters (at most 64), domain
# labels of letters, digits and inner hyphens (none with `--` in third and fourth place,
# which covers `xn--`), a top-level domain of letters. Anything else asks email-validator;
# tests/test_subscribers_fast.py checks this against it over generated addresses.
_PLAIN_ADDRESS = re.compile(
    r"(?=[^@]{1,64}@)[A-Za-z0-9_%+'=-]+(?:\.[A-Za-z0-9_%+'=-]+)*"
    r"@(?:(?![A-Za-z0-9-]{2}--)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+"
    r"[A-Za-z]{2,63}")
# email-validator refuses these top-level names (special use); its own list decides.
_SPECIAL_USE = ("arpa", "invalid", "local", "localhost", "onion", "test")


def _plain(value: str) -> str | None:
    """The normalised form of a plain ASCII address, or None to ask email-validator."""
    if len(value) > 254 or not _PLAIN_ADDRESS.fullmatch(value):
        return None
    local, _, domain = value.rpartition("@")
    domain = domain.lower()
    if len(domain) > 253 or domain.rpartition(".")[2] in _SPECIAL_USE:
        return None
    return f"{local}@{domain}"


def normalize_email(raw: str) -> str:
    """The one address validator: lists, imports, suppression, test sends and sends use it.

    What is stored is email-validator's normalised address: the local part as written
    (Unicode NFC, case kept), `@`, the domain in lower case and in Unicode (an `xn--`
    domain is stored decoded, so both spellings are one subscriber). Internationalised
    addresses are accepted (SMTPUTF8); no DNS is asked. Transports turn the domain into
    punycode and need SMTPUTF8 for a non-ASCII local part. ValueError says why an address
    is refused.
    """
    value = raw.strip()
    if value.startswith("<") and value.endswith(">"):
        value = value[1:-1].strip()
    if not value:
        raise ValueError("empty address")
    return _plain(value) or validated(value)


def validated(value: str) -> str:
    """email-validator's normalised address (the domain in lower case), or ValueError."""
    from email_validator import EmailNotValidError, validate_email

    try:
        result = validate_email(value, check_deliverability=False, allow_smtputf8=True)
    except EmailNotValidError as exc:
        raise ValueError(str(exc)) from None
    local, _, domain = result.normalized.rpartition("@")
    return f"{local}@{domain.lower()}"


def email_key(address: str) -> str:
    """Two spellings of one address share this key (case is ignored throughout)."""
    return address.lower()


# reading ---------------------------------------------------------------------------

def from_values(values: dict[str, str]) -> tuple[str, str, str, str, dict[str, str]]:
    """(email, name, status, created_at, attributes) from a row in any supported layout."""
    email = values.get("email", "")
    name = values.get("name", "")
    status = (values.get("status") or "active").lower()
    status = STATUS_ALIASES.get(status, status)
    created = values.get("created_at", "")
    if values.get("email_disabled", "").lower() in _TRUE:
        status = "unsubscribed"
    if values.get("cancel_date"):
        status = "unsubscribed"
    if email.lower().endswith("@deletion-request.substack.com"):
        status = "unsubscribed"
    if "type" in values and _SUBSTACK_COLUMNS & values.keys():
        attributes = {"substack_type": values["type"]} if values["type"] else {}
    else:
        known = {"email", "name", "status", "created_at", *_SUBSTACK_COLUMNS}
        attributes = {k: v for k, v in values.items() if k not in known and v}
    return email, name, status, created, attributes


def to_item(line: int, values: dict[str, str]) -> Subscriber | Rejected:
    """One data row as a Subscriber, or Rejected with the reason."""
    email, name, status, created, attributes = from_values(values)
    try:
        address = normalize_email(email)
    except ValueError as exc:
        return Rejected(line, email, str(exc))
    if status not in STATUSES:
        return Rejected(line, email, f"unknown status {status!r} (kept, never sent to)", status)
    return Subscriber(address, name, status, created, attributes)


def broken(record: csvrows.Record) -> Rejected:
    return Rejected(record.line, record.raw.strip()[:80], record.problem)


def read(path: Path,
         progress: Progress | None = None) -> Iterator[tuple[int, Subscriber | Rejected]]:
    """Each row of a list as a Subscriber, or Rejected with the reason."""
    size = path.stat().st_size if progress and path.is_file() else 0
    done = chars = 0
    for row in csvrows.scan(path):
        if progress:
            done, chars = done + 1, chars + len(row.record.raw)
            if done % 1000 == 0:
                progress(done, chars, size)
        if row.kind == "broken":
            yield row.record.line, broken(row.record)
        elif row.kind == "data":
            yield row.record.line, to_item(row.record.line, row.values)


def suppressed(root: Path) -> set[str]:
    """Addresses that are never sent to, from `subscribers/suppressed.csv` (small by nature)."""
    path = root / "subscribers" / SUPPRESSED
    if not path.is_file():
        return set()
    return {item.key for _, item in read(path) if isinstance(item, Subscriber)}


def count(path: Path) -> Counter:
    """Rows by status; a row with an unknown status counts under it, a bad row as invalid."""
    counts: Counter = Counter()
    for _, item in read(path):
        if isinstance(item, Subscriber):
            counts[item.status] += 1
        else:
            counts[item.status or "invalid"] += 1
    return counts


# changing lists (the work is in listmerge) ------------------------------------------

def import_file(source: Path, dest: Path, *, dry_run: bool = False,
                progress: Progress | None = None):
    """Merge a subscriber export into a list; the stricter status wins for a known address."""
    from . import listmerge

    return listmerge.import_file(source, dest, dry_run=dry_run, progress=progress)


def set_status(dest: Path, email: str, status: str, *, dry_run: bool = False) -> bool:
    """Change one subscriber's status in a list; False when the address is not on it."""
    from . import listmerge

    return listmerge.set_status(dest, email, status, dry_run=dry_run)


def suppress(root: Path, email: str, *, dry_run: bool = False, status: str = "unsubscribed",
             when: str = "", reason: str = "") -> bool:
    """Add an address to the suppression list, which wins over every list; False if it was."""
    from . import listmerge

    return listmerge.suppress(root / "subscribers" / SUPPRESSED, email, dry_run=dry_run,
                              status=status, when=when, reason=reason)
