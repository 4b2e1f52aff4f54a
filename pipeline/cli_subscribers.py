"""`publish subscribers …`: the commands that read and change subscriber lists."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from .cli import Context


@click.group(name="subscribers")
def subscribers_group() -> None:
    """Manage subscriber lists (CSV files in subscribers/)."""
    from . import listlock

    listlock.notify = lambda message: click.echo(message, err=True)


def _list_file(obj: Context, list_name: str):
    from . import subscribers

    return subscribers.list_path(obj.settings.root, list_name)


def _current(obj: Context, list_name: str):
    """The list's rows with what readers changed on the web applied (see `readers`)."""
    from . import draft, readers, state, subscribers

    path = _list_file(obj, list_name)
    db = None
    if (obj.settings.state_path / state.DB_NAME).is_file():
        db = state.connect(obj.settings.state_path, readonly=True)
    try:
        key = draft.issue_key(path, obj.settings)
        rows = subscribers.read(path) if path.is_file() else iter(())
        yield from readers.current(db, key, rows)
    finally:
        if db is not None:
            db.close()


def _rows_progress(verb: str):
    """Progress of reading a list on stderr: on a terminal, or now and then for long work."""
    import time

    started = time.monotonic()
    interactive = sys.stderr.isatty()
    # On a terminal the first report shows at once (a fast read may be over in 0.2 s).
    state = {"last": 0.0 if interactive else started, "shown": False}

    def show(rows: int, chars: int, size: int) -> None:
        now = time.monotonic()
        if now - state["last"] < (0.2 if interactive else 10.0):
            return
        if not interactive and now - started < 5.0:
            return
        state["last"], state["shown"] = now, True
        rate = rows / max(now - started, 1e-6)
        percent = f"  {min(99, 100 * chars // size):3d}%" if size else ""
        line = f"{verb}  {rows} rows{percent}  {rate:,.0f} rows/s"
        click.echo(f"\r{line} " if interactive else line, nl=not interactive, err=True)

    def done() -> None:
        if state["shown"] and interactive:
            click.echo("\r\033[K", nl=False, err=True)

    show.done = done  # type: ignore[attr-defined]
    return show


def _print_rows(label: str, where: Path, items) -> None:
    for item in items:
        click.echo(f"  {label} {where}:{item.line}: {item.value!r}: {item.reason}", err=True)


@subscribers_group.command(name="import")
@click.argument("source", type=click.Path(path_type=Path))
@click.option("--list", "list_name", default="main", show_default=True)
@click.option("--dry-run", is_flag=True, help="Report what the import would do; change nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.pass_obj
def subscribers_import(obj: Context, source: Path, list_name: str, dry_run: bool,
                       as_json: bool) -> None:
    """Import SOURCE: a Substack export (old or new), a plain list of addresses, or our CSV.

    Addresses are validated (no DNS), domains lower-cased, duplicates merged without
    regard to case; unsubscribed, cancelled, email-disabled and deletion-request rows
    become inactive. Every rejected row is reported with its line number. Rows already in
    the list are kept as they are, even those that are not valid subscribers.
    """
    from . import subscribers

    dest = _list_file(obj, list_name)
    progress = _rows_progress("Reading")
    report = subscribers.import_file(source, dest, dry_run=dry_run, progress=progress)
    progress.done()
    if as_json:
        click.echo(json.dumps({"list": str(dest), "source": str(source), **report.summary()},
                              ensure_ascii=False, indent=2))
        return
    verb = "Would import" if dry_run else "Imported"
    click.echo(f"{verb} into {dest}: {report.added} added, {report.updated} updated, "
               f"{report.unchanged} unchanged, {report.duplicates} duplicate(s) in the file, "
               f"{len(report.rejected)} rejected."
               + ("  (dry run: nothing changed)" if dry_run else ""))
    _print_rows("rejected", source, report.rejected)
    if report.kept:
        click.echo(f"{len(report.kept)} row(s) of {dest} are not valid subscribers; "
                   "kept as they are, never sent to:", err=True)
        _print_rows("kept", dest, report.kept)


@subscribers_group.command(name="list")
@click.option("--list", "list_name", default="main", show_default=True)
@click.option("--status", type=click.Choice(["active", "unsubscribed", "bounced"]))
@click.option("--json", "as_json", is_flag=True, help="Print the subscribers as JSON lines.")
@click.pass_obj
def subscribers_list(obj: Context, list_name: str, status: str | None, as_json: bool) -> None:
    """Print the subscribers of a list, one per line."""
    from . import subscribers

    for line, item in _current(obj, list_name):
        if isinstance(item, subscribers.Subscriber) and (status is None or item.status == status):
            if as_json:
                click.echo(json.dumps({"line": line, "email": item.email, "name": item.name,
                                       "status": item.status, "created_at": item.created_at,
                                       **({"attributes": item.attributes}
                                          if item.attributes else {})},
                                      ensure_ascii=False))
            else:
                click.echo(f"{item.email}\t{item.name}\t{item.status}")


@subscribers_group.command(name="count")
@click.option("--list", "list_name", default="main", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the counts as JSON.")
@click.pass_obj
def subscribers_count(obj: Context, list_name: str, as_json: bool) -> None:
    """Count a list's subscribers by status (unknown statuses and bad rows included)."""
    from collections import Counter

    from . import subscribers

    counts: Counter = Counter()
    for _, item in _current(obj, list_name):
        counts[item.status if isinstance(item, subscribers.Subscriber)
               else (item.status or "invalid")] += 1
    if as_json:
        click.echo(json.dumps({"list": list_name, "total": sum(counts.values()),
                               "by_status": dict(sorted(counts.items()))}, ensure_ascii=False))
        return
    click.echo(f"{sum(counts.values())} in {list_name}: " + ", ".join(
        f"{n} {status}" for status, n in sorted(counts.items())))


@subscribers_group.command(name="unsubscribe")
@click.argument("email", required=False)
@click.option("--token", help="An unsubscribe token from a link (checked with the "
              "newsletter's signing key) instead of EMAIL.")
@click.option("--list", "list_name", default="main", show_default=True)
@click.option("--dry-run", is_flag=True, help="Say what would change; change nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the outcome as JSON.")
@click.pass_obj
def subscribers_unsubscribe(obj: Context, email: str | None, token: str | None,
                            list_name: str, dry_run: bool, as_json: bool) -> None:
    """Unsubscribe EMAIL (or the reader a --token was made for): marked in the list and
    added to the suppression list, which wins over every list. Every other row of the
    list is kept exactly as it was."""
    from . import subscribers

    if bool(email) == bool(token):
        raise click.UsageError("give an EMAIL or --token, not both")
    if token:
        from . import signup

        email = signup.unsubscribe_address(signup.verification_keys(obj.settings),
                                           token.strip())
        if email is None:
            raise click.BadParameter("not a token made with this newsletter's signing key",
                                     param_hint="--token")
    try:
        address = subscribers.normalize_email(email or "")
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="EMAIL") from None
    found = subscribers.set_status(_list_file(obj, list_name), address, "unsubscribed",
                                   dry_run=dry_run)
    newly = subscribers.suppress(obj.settings.root, address, dry_run=dry_run)
    if as_json:
        click.echo(json.dumps({"email": address, "list": list_name, "on_list": found,
                               "newly_suppressed": newly, "dry_run": dry_run},
                              ensure_ascii=False))
        return
    if dry_run:
        on_list = "would be marked unsubscribed in the list" if found else "not on the list"
        listed = "would be added to" if newly else "already in"
        click.echo(f"{address}: {on_list}; {listed} subscribers/suppressed.csv (dry run: "
                   "nothing changed)")
        return
    on_list = "marked unsubscribed in the list" if found else "not on the list"
    listed = "added to" if newly else "already in"
    click.echo(f"{address}: {on_list}; {listed} subscribers/suppressed.csv")


@subscribers_group.command(name="export")
@click.option("--list", "list_name", default="main", show_default=True)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path),
              help="Write to this file (default: standard output).")
@click.pass_obj
def subscribers_export(obj: Context, list_name: str, out: Path | None) -> None:
    """Write a list as it stands now, as CSV: the readers' unsubscribes and confirmations
    from the web applied, suppressed addresses unsubscribed, invalid rows left out. Cells
    that a spreadsheet would run as a formula (=, +, -, @) are neutralised."""
    import csv
    import io

    from . import subscribers

    if not _list_file(obj, list_name).is_file():
        raise click.BadParameter(f"no list {_list_file(obj, list_name)}", param_hint="--list")
    if out is not None and out.resolve().is_relative_to(
            (obj.settings.root / "subscribers").resolve()):
        raise click.BadParameter("write the export outside subscribers/ (the lists are kept "
                                 "as they are)", param_hint="--out")
    suppressed = subscribers.suppressed(obj.settings.root)
    rows, extra = [], []
    for _, item in _current(obj, list_name):
        if not isinstance(item, subscribers.Subscriber):
            continue
        status = "unsubscribed" if item.key in suppressed else item.status
        rows.append([item.email, item.name, status, item.created_at, item.attributes])
        extra += [k for k in item.attributes if k not in extra]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([*subscribers.COLUMNS, *extra])
    for email, name, status, created, attributes in rows:
        writer.writerow([_cell(v) for v in (email, name, status, created,
                                            *(attributes.get(k, "") for k in extra))])
    if out is None:
        click.echo(buffer.getvalue(), nl=False)
        return
    staging = out.with_name(f".{out.name}.tmp")
    staging.write_text(buffer.getvalue(), "utf-8")
    staging.replace(out)
    click.echo(f"Exported {len(rows)} subscriber(s) of {list_name} to {out}", err=True)


def _cell(value: str) -> str:
    """A cell a spreadsheet shows as text: a leading =, +, -, @, tab or CR gets a quote."""
    return "'" + value if value[:1] in ("=", "+", "-", "@", "\t", "\r") else value
