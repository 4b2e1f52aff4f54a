"""The reference for `publish subscribers import`: the least a careful import does.

Usage: python bench/reference_csv_email_validator_sqlite.py EXPORT.csv DATABASE
Reads the export with the csv module, validates each address with
email_validator.validate_email(check_deliverability=False), and inserts the valid ones
(the first of each address, without regard to case) into SQLite in one transaction.
No exact bytes kept, no merge with an existing list, no report of bad rows: what
bench/subscribers.py measures `publish subscribers import` against.
"""

from __future__ import annotations

import csv
import sqlite3
import sys

from email_validator import EmailNotValidError, validate_email


def main() -> None:
    source, database = sys.argv[1], sys.argv[2]
    db = sqlite3.connect(database, isolation_level=None)
    db.execute("CREATE TABLE IF NOT EXISTS subscribers (key TEXT PRIMARY KEY, email TEXT,"
               " name TEXT)")
    added = rejected = 0
    db.execute("BEGIN")
    with open(source, encoding="utf-8", newline="") as handle:
        rows = csv.reader(handle)
        header = [cell.strip().lower() for cell in next(rows)]
        email_at, name_at = header.index("email"), header.index("name")
        for row in rows:
            try:
                email = validate_email(row[email_at], check_deliverability=False).normalized
            except EmailNotValidError:
                rejected += 1
                continue
            added += db.execute("INSERT OR IGNORE INTO subscribers VALUES (?, ?, ?)",
                                (email.lower(), email, row[name_at])).rowcount
    db.execute("COMMIT")
    print(f"{added} added, {rejected} rejected")


if __name__ == "__main__":
    main()
