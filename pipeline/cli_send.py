"""`publish send`: the command that sends an issue, with its progress, plan and report."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from .services import names as service_names

if TYPE_CHECKING:
    from .cli import Context

SERVICE_NAMES = service_names()


def _progress_printer():
    """A one-line progress display on stderr: count, rate, ETA (only on a terminal)."""
    import time

    started = time.monotonic()
    interactive = sys.stderr.isatty()
    state = {"last": 0.0}

    def show(done: int, total: int) -> None:
        now = time.monotonic()
        if not interactive or now - state["last"] < 0.2:
            return
        state["last"] = now
        rate = done / max(now - started, 1e-6)
        eta = (total - done) / rate if rate else 0
        percent = 100 * done / total if total else 100
        click.echo(f"\rSending  {done}/{total}  {percent:3.0f}%  {rate:6.1f} msg/s  "
                   f"ETA {eta:4.0f}s ", nl=False, err=True)

    return show


def _print_report(report, notes: list[str]) -> None:
    if sys.stderr.isatty():
        click.echo("", err=True)
    if report.note:
        click.echo(report.note)
    click.echo(f"Sent      {report.sent}")
    click.echo(f"Failed    {len(report.failed)}")
    for email, reason in report.failed[:20]:
        click.echo(f"  {email}: {reason}")
    if len(report.failed) > 20:
        click.echo(f"  … and {len(report.failed) - 20} more (publish sends --json)")
    skipped = ", ".join(f"{n} {why}" for why, n in sorted(report.skipped.items()))
    click.echo(f"Skipped   {sum(report.skipped.values())}" + (f" ({skipped})" if skipped else ""))
    click.echo(f"In doubt  {len(report.in_doubt)}")
    for email in report.in_doubt[:20]:
        click.echo(f"  {email}")
    if report.pending:
        click.echo(f"Not yet   {report.pending}")
    if report.seconds:
        click.echo(f"Time      {report.seconds:.1f} s")
    for note in notes:
        click.secho(f"note: {note}", fg="yellow", err=True)
    if report.stopped:
        click.secho(f"Stopped: {report.stopped}", fg="red", err=True)


@click.command()
@click.argument("issue", type=click.Path(path_type=Path))
@click.option("--service", help=f"{', '.join(SERVICE_NAMES)}. Default: the 'service' setting.")
@click.option("--list", "list_name", default="main", show_default=True,
              help="The subscriber list in subscribers/ to send to.")
@click.option("--subscribers", "subscribers_path", type=click.Path(path_type=Path),
              help="A subscriber CSV to send to instead of --list.")
@click.option("--test", "test_address", metavar="EMAIL",
              help="Send one copy to EMAIL, subject prefixed [TEST]; nothing is recorded.")
@click.option("--dry-run", is_flag=True, help="Show who would get it; send nothing.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@click.option("--redraft", is_flag=True, help="Push the draft first if the Markdown changed.")
@click.option("--retry-failed", is_flag=True, help="Send again to recipients that failed.")
@click.option("--resend-in-doubt", is_flag=True,
              help="Send again to recipients a crash left in doubt (they may get it twice).")
@click.option("--connections", type=click.IntRange(1, 32), default=1, show_default=True,
              help="Parallel connections to the service.")
@click.option("--rate", type=float, metavar="N", help="At most N messages per second.")
@click.option("--ignore-check", is_flag=True, help="Send even if `publish check` finds errors.")
@click.option("--at", "at", metavar="TIME",
              help="Send at TIME (2026-12-01T09:00+08:00, or local to the timezone setting).")
@click.option("--unschedule", is_flag=True, help="Cancel the send scheduled with --at.")
@click.option("--yes-over-quota", is_flag=True,
              help="Start although the service's 24-hour quota cannot cover everyone.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.pass_obj
def send(obj: Context, issue: Path, service: str | None, list_name: str,
         subscribers_path: Path | None, test_address: str | None, dry_run: bool, yes: bool,
         redraft: bool, retry_failed: bool, resend_in_doubt: bool, connections: int,
         rate: float | None, ignore_check: bool, yes_over_quota: bool, at: str | None,
         unschedule: bool, as_json: bool) -> None:
    """Send ISSUE to its subscribers, exactly once; re-run the same command to resume.

    \b
    publish send issues/2025-01-ai-art.md --test me@example.com   # one copy to you
    publish send issues/2025-01-ai-art.md --dry-run               # who would get it
    publish send issues/2025-01-ai-art.md                         # asks, then sends

    Every recipient is recorded in the send ledger (.publish/state.db): sent, failed,
    skipped, or in doubt (a crash mid-message: reported, not sent again unless
    --resend-in-doubt). After a crash or Ctrl-C, run the same command to continue.
    """
    from . import send as send_mod
    from .cli_subscribers import _rows_progress

    reading = _rows_progress("Reading")
    options = send_mod.SendOptions(
        service=service, list_name=list_name, subscribers_path=subscribers_path,
        retry_failed=retry_failed, resend_in_doubt=resend_in_doubt, connections=connections,
        rate=rate, redraft=redraft, ignore_check=ignore_check, reading=reading,
        yes_over_quota=yes_over_quota)
    if at or unschedule:
        clash = [flag for flag, given in (("--test", test_address), ("--dry-run", dry_run),
                                          ("--redraft", redraft),
                                          ("--retry-failed", retry_failed),
                                          ("--resend-in-doubt", resend_in_doubt)) if given]
        if clash:
            raise click.UsageError(f"{clash[0]} does not go with "
                                   f"{'--at' if at else '--unschedule'}")
        from .cli_schedule import schedule_send

        schedule_send(obj, issue, options, at, unschedule, yes, as_json)
        return
    sender = send_mod.Sender(issue, obj.settings, options)
    if test_address:
        answer = sender.send_test(test_address)
        click.echo(f"Test copy sent to {test_address}: {answer}")
        return
    if dry_run:
        plan = sender.plan()  # every check of the real send; no record
        reading.done()
        _print_plan(issue, plan, as_json)
        return
    if not yes:
        plan = sender.plan()  # what the question says is what the send will do
        reading.done()
        if not sys.stdin.isatty():
            raise click.UsageError("not a terminal to ask for confirmation; add --yes")
        who = (f"{plan.will_send} subscriber(s)" if plan.per_recipient
               else f"the {plan.service} publication's subscribers")
        click.confirm(f"Send {issue} to {who} through {plan.service}?", abort=True)
    report, notes = sender.run(progress=None if as_json else _progress_printer())
    if as_json:
        click.echo(json.dumps({**report.summary(), "notes": notes}, ensure_ascii=False,
                              indent=2))
    else:
        _print_report(report, notes)
    if report.stopped:
        if obj.debug and report.error is not None:
            import traceback

            from .redact import redact

            click.secho(redact("".join(traceback.format_exception(report.error)).rstrip("\n")),
                        err=True)
        sys.exit(130 if "Ctrl-C" in report.stopped else 1)


def _print_plan(issue: Path, plan, as_json: bool) -> None:
    """What `publish send --dry-run` found the real send would do."""
    if as_json:
        click.echo(json.dumps(plan.summary(), ensure_ascii=False, indent=2))
        return
    if not plan.per_recipient:
        click.echo(f"Would publish the {plan.service} draft of {issue} to the "
                   "publication's own subscribers; nothing sent.")
    elif plan.resuming:
        click.echo(f"Would continue send #{plan.resuming} of {issue}: {plan.will_send} "
                   f"subscriber(s) still to send to through {plan.service}; nothing sent.")
    else:
        click.echo(f"Would send {issue} to {plan.will_send} subscriber(s) "
                   f"through {plan.service}; nothing sent.")
    for why, n in sorted(plan.skipped.items()):
        click.echo(f"  skip {n} {why}")
    if plan.in_doubt:
        click.echo(f"  {plan.in_doubt} in doubt (not sent again without --resend-in-doubt)")
    for email in plan.sample:
        click.echo(f"  {email}")
    for note in plan.notes:
        click.secho(f"note: {note}", fg="yellow", err=True)
