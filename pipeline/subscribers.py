"""Subscriber lists: CSV files in `subscribers/`, read row by row, never held whole in memory.

Our format is `email,name,status,created_at` plus any extra columns, kept as attributes.
`import_file` also reads Substack's exports (the old dashboard's two layouts and the
newer labelled export) and plain lists of addresses. `suppressed.csv` always wins.

Changing a list (an import, an unsubscribe) rewrites only the rows it means to change:
every other row, even one that is not a valid subscriber, is copied byte for byte, under
a lock, into a new file that replaces the old one whole (see `listlock` and `listmerge`).
"""

from __future__ import annotations

import json
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
# labels of letters, digits and inner hyphens (no `--` anywhere, which covers `xn--`), a
# top-level domain of letters that is not a special-use name, 254 characters in all (so
# the domain is under its limit of 253). Anything else asks email-validator;
# tests/test_subscribers_fast.py checks this against it over generated addresses.
_PLAIN_LOCAL = re.compile(r"[A-Za-z0-9_%+'=-]++(?:\.[A-Za-z0-9_%+'=-]++)*+").fullmatch
_PLAIN_DOMAIN = re.compile(
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)++[A-Za-z]{2,63}").fullmatch
# email-validator refuses these top-level names (special use).
_SPECIAL_USE = frozenset(("arpa", "invalid", "local", "localhost", "onion", "test"))
# Domains as written -> in lower case when plain, else None. An export has few domains
# for many addresses: each is checked once (up to this many are remembered).
_DOMAINS: dict[str, str | None] = {}
_DOMAINS_KEPT = 16384


def _plain_domain(domain: str) -> str | None:
    """A plain domain in lower case, or None (remembered in `_DOMAINS`)."""
    lowered: str | None = domain.lower()
    if not _PLAIN_DOMAIN(domain) or "--" in domain or \
            lowered.rpartition(".")[2] in _SPECIAL_USE:  # type: ignore[union-attr]
        lowered = None
    if len(_DOMAINS) < _DOMAINS_KEPT:
        _DOMAINS[domain] = lowered
    return lowered


def _plain(value: str) -> str | None:
    """The normalised form of a plain ASCII address, or None to ask email-validator."""
    local, _, domain = value.rpartition("@")
    if len(value) > 254 or len(local) > 64 or not _PLAIN_LOCAL(local):
        return None
    lowered = _DOMAINS[domain] if domain in _DOMAINS else _plain_domain(domain)
    return None if lowered is None else f"{local}@{lowered}"


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

_KNOWN = {"email", "name", "status", "created_at", *_SUBSTACK_COLUMNS}
_DELETION_REQUEST = "@deletion-request.substack.com"
_CACHED = 4096  # distinct attribute sets remembered per file


class Layout:
    """Where a file's columns put a subscriber's fields, worked out once per file.

    A row's values are its cells by column name, stripped; a name given to two columns
    takes the later cell. Fields: `email`, `name`, `created_at`; the status from `status`
    (`subscribed` and `cleaned` as their aliases), made `unsubscribed` by a true
    `email_disabled`, a `cancel_date` or a Substack deletion-request address. Attributes:
    a Substack export keeps only its `type` (as `substack_type`), any other file every
    other non-empty column.
    """

    def __init__(self, columns: list[str]):
        self.width = len(columns)
        last = {name: i for i, name in enumerate(columns) if name}  # order of first use
        self.email = last.get("email")
        self.name = last.get("name")
        self.status = last.get("status")
        self.created = last.get("created_at")
        self.disabled = last.get("email_disabled")
        self.cancel = last.get("cancel_date")
        substack = "type" in last and bool(_SUBSTACK_COLUMNS & last.keys())
        self.substack_type = last["type"] if substack else None
        self.extras = [] if substack else [(k, i) for k, i in last.items() if k not in _KNOWN]
        # attribute values -> (attributes, their JSON); callers never change them in place
        self.cache: dict[object, tuple[dict[str, str], str]] = {}

    def fields(self, cells: list[str]) -> tuple[str, str, str, str]:
        """(email, name, status, created_at) of a row; `cells` at least `width` long."""
        at = self.email
        email = cells[at].strip() if at is not None else ""
        at = self.name
        name = cells[at].strip() if at is not None else ""
        at = self.status
        status = cells[at].strip().lower() if at is not None else ""
        if status in STATUSES:
            pass
        elif not status:
            status = "active"
        else:
            status = STATUS_ALIASES.get(status, status)
        at = self.created
        created = cells[at].strip() if at is not None else ""
        if self.cancelled(cells):
            status = "unsubscribed"
        if email.lower().endswith(_DELETION_REQUEST):
            status = "unsubscribed"
        return email, name, status, created

    def cancelled(self, cells: list[str]) -> bool:
        """Whether the export's own columns say the reader left (disabled, cancelled)."""
        at = self.disabled
        if at is not None and cells[at].strip().lower() in _TRUE:
            return True
        at = self.cancel
        return at is not None and bool(cells[at].strip())

    def attributes(self, cells: list[str]) -> tuple[dict[str, str], str]:
        """The row's attributes and their JSON text (shared: never change them in place)."""
        if self.substack_type is not None:
            key: object = cells[self.substack_type].strip()
        elif not self.extras:
            key = ()
        else:
            key = tuple([cells[i].strip() for _, i in self.extras])
        found = self.cache.get(key)
        if found is None:
            if self.substack_type is not None:
                attributes = {"substack_type": key} if key else {}
            else:
                attributes = {k: v for (k, _), v in zip(self.extras, key, strict=True) if v}
            found = (attributes, json.dumps(attributes))
            if len(self.cache) < _CACHED:
                self.cache[key] = found
        return found

    def entry(self, line: int, cells: list[str]) -> Entry | Rejected:
        """A data row as an Entry, or Rejected with the reason.

        `fields`, `_plain` and `attributes` written out again in one, as this runs for
        every row of an import; tests/test_subscribers_csv.py checks it against the rules.
        """
        if len(cells) < self.width:
            cells = cells + [""] * (self.width - len(cells))
        at = self.email
        email = cells[at].strip() if at is not None else ""
        at = self.status
        status = cells[at].strip().lower() if at is not None else ""
        if status not in STATUSES:
            status = STATUS_ALIASES.get(status, status) if status else "active"
        if self.cancelled(cells):
            status = "unsubscribed"
        key = email.lower()
        if key.endswith(_DELETION_REQUEST):
            status = "unsubscribed"
        local, _, domain = email.rpartition("@")
        lowered = _DOMAINS[domain] if domain in _DOMAINS else _plain_domain(domain)
        if (lowered is not None and len(email) <= 254 and len(local) <= 64
                and _PLAIN_LOCAL(local)):
            address = f"{local}@{lowered}"
            if key == address:  # one string for both: a row sent between processes is smaller
                key = address
        else:
            try:
                address = normalize_email(email)
            except ValueError as exc:
                return Rejected(line, email, str(exc))
            key = address.lower()
            if key == address:
                key = address
        if status not in STATUSES:
            return Rejected(line, email, f"unknown status {status!r} (kept, never sent to)",
                            status)
        if self.substack_type is not None:
            found = self.cache.get(cells[self.substack_type].strip())
        else:
            found = self.cache.get(()) if not self.extras else None
        if found is None:
            found = self.attributes(cells)
        at = self.name
        name = cells[at].strip() if at is not None else ""
        at = self.created
        created = cells[at].strip() if at is not None else ""
        return key, address, name, status, created, found[0], found[1]


# (key, email, name, status, created_at, attributes, attributes as JSON): a valid row.
Entry = tuple[str, str, str, str, str, dict[str, str], str]


def from_values(values: dict[str, str]) -> tuple[str, str, str, str, dict[str, str]]:
    """(email, name, status, created_at, attributes) from a row in any supported layout."""
    layout = Layout(list(values))
    cells = list(values.values())
    return *layout.fields(cells), dict(layout.attributes(cells)[0])


def to_item(line: int, values: dict[str, str]) -> Subscriber | Rejected:
    """One data row as a Subscriber, or Rejected with the reason."""
    return subscriber(Layout(list(values)).entry(line, list(values.values())))


def subscriber(entry: Entry | Rejected) -> Subscriber | Rejected:
    if isinstance(entry, Rejected):
        return entry
    _, email, name, status, created, attributes, _ = entry
    return Subscriber(email, name, status, created, dict(attributes))


def broken(record: csvrows.Record) -> Rejected:
    return Rejected(record.line, record.raw.strip()[:80], record.problem)


def broken_row(line: int, raw: str, problem: str) -> Rejected:
    return Rejected(line, raw.strip()[:80], problem)


def entries(path: Path, progress: Progress | None = None,
            table: csvrows.Table | None = None) -> Iterator[tuple[int, Entry | Rejected]]:
    """Each row of a list as an Entry, or Rejected with the reason: `read` without objects."""
    size = path.stat().st_size if progress and path.is_file() else 0
    done = chars = 0
    table = table or csvrows.Table(path)
    layout = None
    for kind, line, raw, cells, problem in csvrows.rows(path, table):
        if progress:
            done, chars = done + 1, chars + len(raw)
            if done % 1000 == 0:
                progress(done, chars, size)
        if kind == "data":
            if layout is None:
                layout = Layout(table.columns)
            yield line, layout.entry(line, cells)  # type: ignore[arg-type]
        elif kind == "broken":
            yield line, broken_row(line, raw, problem)


def read(path: Path,
         progress: Progress | None = None) -> Iterator[tuple[int, Subscriber | Rejected]]:
    """Each row of a list as a Subscriber, or Rejected with the reason."""
    for line, entry in entries(path, progress):
        yield line, subscriber(entry)


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
