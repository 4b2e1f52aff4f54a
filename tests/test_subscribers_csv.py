"""The shortcuts of a big import say exactly what the plain way says.

Differential, over generated input: records split without the csv module against records
read by it; a row's subscriber read through a file's Layout against the rules written out
on a dict of values; the new lines SQLite writes against csv.writer's.
"""

from __future__ import annotations

import csv
import io
import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline import csvrows, listmerge, listscratch, subscribers

TEXT = st.text(alphabet='ab@.,;"\n\r é\t|\x00x', max_size=200)


@settings(max_examples=1500, deadline=None)
@given(text=TEXT, delimiter=st.sampled_from(csvrows.DELIMITERS),
       newline=st.sampled_from(["", "\n", None]))
def test_split_lines_are_what_the_csv_module_reads(text, delimiter, newline):
    fast = list(csvrows.record_tuples(io.StringIO(text, newline=newline), delimiter))
    slow = list(csvrows.record_tuples(io.StringIO(text, newline=newline), delimiter,
                                      fast=False))
    assert fast == slow


def test_a_line_over_the_field_limit_still_goes_to_the_csv_module():
    text = "a@example.org," + "x" * 140_000 + "\nb@example.org,B\n"
    fast = list(csvrows.record_tuples(io.StringIO(text, newline=""), ","))
    assert fast[0][2] is None and "field larger than field limit" in fast[0][3]
    assert fast[1] == (2, "b@example.org,B\n", ["b@example.org", "B"], "")


# The rules as written before rows were read through a Layout: a dict of stripped values.
_TRUE = {"true", "t", "1", "yes", "y"}
_SUBSTACK = {"active_subscription", "expiry", "expiration_date", "email_disabled",
             "stripe_connected_customer_id", "cancel_date"}


def spec(line: int, columns: list[str], cells: list[str]):
    cells = cells + [""] * (len(columns) - len(cells))
    values = {name: cell.strip() for name, cell in zip(columns, cells, strict=False) if name}
    email = values.get("email", "")
    name = values.get("name", "")
    status = (values.get("status") or "active").lower()
    status = {"subscribed": "active", "cleaned": "bounced"}.get(status, status)
    if values.get("email_disabled", "").lower() in _TRUE:
        status = "unsubscribed"
    if values.get("cancel_date"):
        status = "unsubscribed"
    if email.lower().endswith("@deletion-request.substack.com"):
        status = "unsubscribed"
    if "type" in values and _SUBSTACK & values.keys():
        attributes = {"substack_type": values["type"]} if values["type"] else {}
    else:
        known = {"email", "name", "status", "created_at", *_SUBSTACK}
        attributes = {k: v for k, v in values.items() if k not in known and v}
    value = email[1:-1].strip() if email.startswith("<") and email.endswith(">") else email
    if not value:
        return ("rejected", line, email, "empty address", "")
    try:
        address = subscribers.validated(value)  # email-validator itself, no fast path
    except ValueError as exc:
        return ("rejected", line, email, str(exc), "")
    if status not in subscribers.STATUSES:
        return ("rejected", line, email, f"unknown status {status!r} (kept, never sent to)",
                status)
    return (address.lower(), address, name, status, values.get("created_at", ""), attributes)


COLUMN = st.sampled_from(["email", "name", "status", "created_at", "type", "cancel_date",
                          "email_disabled", "expiry", "plan", "tags", "", "email", "name"])
CELL = st.sampled_from(["", " ", "a@example.org", " B@Example.ORG ", "<c@example.org>",
                        "x@deletion-request.substack.com", "user@xn--bcher-kva.de",
                        "Café@example.org", "bad", "a@b.test", "Active", "SUBSCRIBED",
                        "cleaned", "paused", "true", "Yes", "false", "2024-01-01", "free",
                        "paid", "é", "x y"])


@settings(max_examples=600, deadline=None)
@given(columns=st.lists(COLUMN, min_size=1, max_size=7),
       rows=st.lists(st.lists(CELL, max_size=9), min_size=1, max_size=6))
def test_a_layout_reads_a_row_as_the_rules_say(columns, rows):
    layout = subscribers.Layout(columns)
    for line, cells in enumerate(rows, 2):
        got = layout.entry(line, list(cells))
        if isinstance(got, subscribers.Rejected):
            got = ("rejected", got.line, got.value, got.reason, got.status)
        else:
            key, email, name, status, created, attributes, text = got
            assert json.loads(text) == attributes
            got = (key, email, name, status, created, attributes)
        assert got == spec(line, columns, list(cells))


FIELD = st.text(alphabet=st.sampled_from(list(',;\t|"\r\n x=é@\x00'))
              | st.characters(blacklist_categories=("Cs",)),
                max_size=8)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=st.lists(st.tuples(FIELD, FIELD, FIELD, FIELD,
                               st.dictionaries(st.sampled_from(["plan", "a,b", 'q"', "tags"]),
                                               FIELD, max_size=2)), min_size=1, max_size=8),
       delimiter=st.sampled_from(csvrows.DELIMITERS),
       ending=st.sampled_from(["\n", "\r\n", "\r"]),
       order=st.sampled_from(["plain", "reordered"]))
def test_new_lines_are_what_csv_writer_writes(rows, delimiter, ending, order):
    extras = ["plan", "a,b", 'q"', "tags"]
    columns = subscribers.COLUMNS + extras
    if order == "reordered":
        columns = ["name", "tags", "email", "status", "created_at", "plan", "a,b", 'q"']
    with listscratch.scratch() as db:
        db.executemany(f"INSERT INTO {listscratch.INCOMING} VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                       [(n, f"k{n}", *row[:4], json.dumps(row[4]),
                         listscratch.QUOTABLE("".join(row[:4])) is None)
                        for n, row in enumerate(rows)])
        merge = listmerge._Merge(db, extras, listmerge.ImportReport())
        merge.columns, merge.table.delimiter, merge.ending = columns, delimiter, ending
        out = io.StringIO(newline="")
        merge._new_rows(out, needs_break=False)
    want = io.StringIO(newline="")
    writer = csv.writer(want, delimiter=delimiter, lineterminator=ending)
    for email, name, status, created, attributes in rows:
        values = {**attributes, "email": email, "name": name, "status": status,
                  "created_at": created}
        writer.writerow([values.get(c, "") for c in columns])
    assert out.getvalue() == want.getvalue()
    assert merge.report.added == len(rows)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=st.lists(st.tuples(FIELD, FIELD, FIELD, FIELD), min_size=1, max_size=300),
       delimiter=st.sampled_from(csvrows.DELIMITERS),
       ending=st.sampled_from(["\n", "\r\n", "\r"]))
def test_rows_loaded_by_the_import_are_written_as_csv_writer_writes(rows, delimiter, ending):
    """Through the import's own batches and load (bare asked of a whole batch, then of
    each row; statements of many rows and of one): the lines are csv.writer's."""
    entries = iter([(n, (f"k{n}", *row, {}, "{}")) for n, row in enumerate(rows)])
    report = listmerge.ImportReport()
    with listscratch.scratch() as db:
        listscratch.load(db, listscratch.batches(entries), report)
        bare = [flag for flag, in db.execute("SELECT bare FROM incoming ORDER BY ord")]
        merge = listmerge._Merge(db, [], listmerge.ImportReport())
        merge.columns, merge.table.delimiter, merge.ending = subscribers.COLUMNS, delimiter, ending
        out = io.StringIO(newline="")
        merge._new_rows(out, needs_break=False)
    assert bare == [listscratch.QUOTABLE("".join(row)) is None for row in rows]
    want = io.StringIO(newline="")
    csv.writer(want, delimiter=delimiter, lineterminator=ending).writerows(rows)
    assert out.getvalue() == want.getvalue()
