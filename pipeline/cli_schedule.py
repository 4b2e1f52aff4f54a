"""`publish send --at`, `--unschedule`, `publish due`, and the scheduled part of `publish sends`."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from .cli import Context


def print_scheduled(obj: Context, items: list, as_json: bool) -> list | None:
    """The scheduled part of `publish sends`; None when it printed everything (JSON)."""
    from . import schedule

    planned = schedule.list_scheduled(obj.settings)
    if as_json:
        # One list: scheduled sends first (they carry `due` and `scheduled_id`), then sends.
        click.echo(json.dumps([item.listing() for item in planned]
                              + [item.__dict__ for item in items],
                              ensure_ascii=False, indent=2))
        return None
    for item in planned:
        who = "the service sends it" if item.by_service else "`publish due` starts it"
        if item.by_service and item.due_at <= time.time():
            who = "sent by the service at that time"
        state = {"scheduled": f"scheduled; {who}"}.get(item.status, item.status)
        click.echo(f"@{item.summary()['due']} UTC  {item.issue} -> {item.audience} via "
                   f"{item.service}  [{state}]" + (f"  {item.note}" if item.status
                                                    in ("failed", "cancelled") else ""))
    return planned


def schedule_send(obj: Context, issue: Path, options, at: str | None, unschedule: bool,
                  yes: bool, as_json: bool) -> None:
    """`publish send --at TIME` and `publish send --unschedule`."""
    from . import schedule

    if at and unschedule:
        raise click.UsageError("--at and --unschedule do not go together")
    if unschedule:
        click.echo(schedule.unschedule(issue, obj.settings, options))
        return
    schedule.parse_when(at, obj.settings)  # a bad time is refused before anything else
    if not yes:
        if not sys.stdin.isatty():
            raise click.UsageError("not a terminal to ask for confirmation; add --yes")
        click.confirm(f"Schedule {issue} for {at}?", abort=True)
    item, note = schedule.schedule(issue, obj.settings, options, at)
    if as_json:
        click.echo(json.dumps({**item.summary(), "note": note}, ensure_ascii=False, indent=2))
        return
    click.echo(f"Scheduled {item.issue} -> {item.audience} via {item.service} for "
               f"{item.summary()['due']} UTC")
    click.echo(note)


@click.command(name="due")
@click.option("--json", "as_json", is_flag=True, help="Print what was started as JSON.")
@click.pass_obj
def due_command(obj: Context, as_json: bool) -> None:
    """Start every send scheduled with --at whose time has come (run it from cron).

    Safe to run every minute and several at once: each scheduled send starts exactly
    once. Prints nothing when nothing is due.
    """
    from . import schedule
    from .cli import _say_error
    from .cli_send import _print_report

    outcomes = schedule.run_due(obj.settings)
    if as_json:
        click.echo(json.dumps([o.summary() for o in outcomes], ensure_ascii=False, indent=2))
    for outcome in outcomes if not as_json else ():
        item = outcome.scheduled
        minutes = outcome.late_seconds / 60
        late = f"{minutes:.0f} min late" if minutes >= 1 else "on time"
        verb = "Resumed" if outcome.resumed else "Started"
        click.echo(f"{verb} {item.issue} -> {item.audience} via {item.service}, due "
                   f"{outcome.summary()['due']} UTC, {late}")
        if outcome.report is not None:
            _print_report(outcome.report, [])
        if outcome.error:
            _say_error(f"error: {outcome.error}", fg="red")
    if any(o.error or (o.report and o.report.stopped) for o in outcomes):
        sys.exit(1)
