"""`publish sends` and `publish feedback`: what the ledger knows of past sends, and what
the sending service reports back about them."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from .cli import Context


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print the sends as JSON.")
@click.pass_obj
def sends(obj: Context, as_json: bool) -> None:
    """List past sends with how many were sent, failed, skipped and in doubt."""
    import datetime as dt

    from . import send as send_mod
    from .cli_schedule import print_scheduled

    items = send_mod.list_sends(obj.settings)
    planned = print_scheduled(obj, items, as_json)
    if planned is None:
        return
    if not items:
        if not planned:
            click.echo("No sends yet.")
        return
    for item in items:
        when = dt.datetime.fromtimestamp(item.started_at).strftime("%Y-%m-%d %H:%M")
        counts = ", ".join(f"{n} {state}" for state, n in sorted(item.counts.items()))
        reported = ", ".join(f"{n} {kind}" for kind, n in sorted(item.feedback.items()))
        click.echo(f"#{item.id}  {when}  {item.issue} -> {item.audience} via {item.service}  "
                   f"[{item.status}]  {counts or item.note}"
                   + (f"; reported: {reported}" if reported else ""))


@click.command()
@click.option("--once", is_flag=True, help="Read until the queue is empty, then stop (cron).")
@click.option("--json", "as_json", is_flag=True, help="Print what was taken back as JSON.")
@click.pass_obj
def feedback(obj: Context, once: bool, as_json: bool) -> None:
    """Take back bounces, complaints and deliveries that SES reports (feedback_queue_url).

    Permanent bounces and complaints suppress the address (subscribers/suppressed.csv),
    transient bounces after soft_bounce_limit of them; deliveries settle recipients left in
    doubt. An event read twice changes nothing. Without --once it keeps polling (Ctrl-C).
    """
    from . import feedback as feedback_mod

    reader = feedback_mod.Feedback(obj.settings)
    try:
        report = reader.run(once=once)
    except KeyboardInterrupt:
        report = reader.report
    if as_json:
        click.echo(json.dumps(report.summary(), ensure_ascii=False, indent=2))
        return
    events = ", ".join(f"{n} {kind}" for kind, n in sorted(report.events.items()))
    click.echo(f"{report.messages} message(s): {events or 'no new events'}"
               f"{f', {report.repeated} seen before' if report.repeated else ''}; "
               f"{report.settled} in doubt found delivered")
    for email, reason in report.suppressed:
        click.echo(f"  suppressed {email}: {reason}")
    if report.unreadable:
        click.secho(f"note: {report.unreadable} message(s) were not SES events; left in "
                    "the queue", fg="yellow", err=True)
