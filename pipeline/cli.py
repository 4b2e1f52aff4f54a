"""The `publish` command: a thin layer over the library that parses flags and prints."""

from __future__ import annotations

import gc
import importlib
import sys
from typing import TYPE_CHECKING

import click

from . import __version__
from .errors import PublishError

if TYPE_CHECKING:
    from pathlib import Path

# Commands kept in their own modules, imported only when run: a build does not load the
# machinery of sending, subscribers or the web. `publish --help` lists them by the first
# sentence of their help, kept here (tests/test_cli_help.py holds the two equal).
ELSEWHERE = {
    "send": ("cli_send:send",
             "Send ISSUE to its subscribers, exactly once; re-run the same command to resume."),
    "sends": ("cli_sends:sends",
              "List past sends with how many were sent, failed, skipped and in doubt."),
    "feedback": ("cli_sends:feedback", "Take back bounces, complaints and deliveries that SES "
                 "reports (feedback_queue_url)."),
    "due": ("cli_schedule:due_command",
            "Start every send scheduled with --at whose time has come (run it from cron)."),
    "subscribers": ("cli_subscribers:subscribers_group",
                    "Manage subscriber lists (CSV files in subscribers/)."),
    "site": ("cli_web:site_command", "Build the static site (site_dir): a page per sent issue, "
             "the archive, an Atom feed, the assets the issues use and a subscribe page."),
    "serve": ("cli_web:serve_command",
              "Run the web app under uvicorn: one-click unsubscribe, double opt-in, the site."),
}


class PathParam(click.Path):
    """click.Path handing the command a pathlib.Path, which `publish --help` never imports."""

    def coerce_path_result(self, value):  # type: ignore[override]
        from pathlib import Path

        return Path(value)


class Commands(click.Group):
    """The `publish` group: its own commands, and those of ELSEWHERE on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *ELSEWHERE})

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in ELSEWHERE and name not in self.commands:
            module, attr = ELSEWHERE[name][0].split(":")
            self.add_command(getattr(importlib.import_module(f".{module}", __package__), attr),
                             name)
        return super().get_command(ctx, name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """List every command without importing those kept elsewhere."""
        loaded = dict(self.commands)
        for name, (_, summary) in ELSEWHERE.items():
            self.commands.setdefault(name, click.Command(name, help=summary))
        try:
            super().format_commands(ctx, formatter)
        finally:
            self.commands.clear()
            self.commands.update(loaded)


def _echo_json(data: object) -> None:
    import json

    click.echo(json.dumps(data, ensure_ascii=False, indent=2))


class Context:
    def __init__(self, root: Path | None, debug: bool):
        self.root = root
        self.debug = debug
        self._settings = None

    @property
    def settings(self):
        if self._settings is None:
            from . import settings

            self._settings = settings.load(self.root)
        return self._settings


@click.group(cls=Commands, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--root",
    type=PathParam(file_okay=False),
    help="The newsletter folder (default: the nearest folder with publish.toml).",
)
@click.option("--debug", is_flag=True, help="Show tracebacks for unexpected errors.")
@click.version_option(__version__, prog_name="publish")
@click.pass_context
def cli(ctx: click.Context, root: Path | None, debug: bool) -> None:
    """Turn Markdown newsletter issues into email that reads well in every inbox.

    \b
    Start a newsletter:   publish init my-letter
    Build an issue:       publish build issues/2025-01-ai-art.md
    Look at it:           publish preview issues/2025-01-ai-art.md
    Lint it:              publish check issues/2025-01-ai-art.md
    Push the draft:       publish draft issues/2025-01-ai-art.md [--service substack]
    Send a test copy:     publish send issues/2025-01-ai-art.md --test me@example.com
    Send it, once:        publish send issues/2025-01-ai-art.md
    Send it later:        publish send issues/2025-01-ai-art.md --at 2026-12-01T09:00+08:00
    Start what is due:    publish due            (from cron, every minute)
    Subscribers:          publish subscribers import export.csv
    The web:              publish site; publish serve

    Settings live in publish.toml; secrets (SUBSTACK_SID, GHOST_ADMIN_API_KEY,
    BUTTONDOWN_API_KEY, SMTP_PASSWORD) only in the environment. Unsubscribe
    links are signed with a key made once in .publish/ (PUBLISH_UNSUBSCRIBE_SECRET
    overrides it). Add --json to most
    commands for machine-readable output.
    """
    ctx.obj = Context(root, debug)
    _STARTING["one_shot"] = ctx.invoked_subcommand in ONE_SHOT
    if _STARTING["collector_paused"] and not _STARTING["one_shot"]:
        _STARTING["collector_paused"] = False
        gc.enable()
    if debug:
        _debug_log()


def _debug_log() -> None:
    """--debug also shows what the services learn (a route or cookie name that worked);
    lines pass through the same redaction as errors."""
    import logging

    class Redacted(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            _say_error(f"debug: {record.getMessage()}")

    logger = logging.getLogger("pipeline")
    if not any(isinstance(h, Redacted) for h in logger.handlers):
        logger.addHandler(Redacted())
    logger.setLevel(logging.DEBUG)


def _print_summary(summary: dict) -> None:
    size = summary["html_bytes"]
    limit = summary["gmail_clip_bytes"]
    embeds = summary["embeds_swapped"]
    swapped = ", ".join(f"{n} {kind}" for kind, n in sorted(embeds.items())) or "none"
    click.echo(f"Built   {summary['title']}  [{summary['lang']}]")
    click.echo(f"Lang    {summary['lang']} ({summary['lang_reason']})")
    click.echo(f"Inbox   {summary['preheader'] or '(no preheader)'}")
    click.echo(f"HTML    {size / 1024:.1f} KB of Gmail's {limit // 1024} KB clip limit "
               f"({100 * size / limit:.0f}%)")
    click.echo(f"Images  {summary['images']}")
    click.echo(f"Embeds  {swapped}")
    for name, path in summary["files"].items():
        from pathlib import Path

        shown = Path(path)
        if shown.is_relative_to(Path.cwd()):
            shown = shown.relative_to(Path.cwd())
        click.echo(f"{name:<11} {shown}")
    for warning in summary["warnings"]:
        click.secho(f"warning: {warning}", fg="yellow", err=True)
    for finding in summary["findings"]:
        click.secho(f"check: {finding['severity']} {finding['rule']}: {finding['message']}"
                    + (f" at {finding['where']}" if finding["where"] else ""),
                    fg="yellow", err=True)
    if not summary["warnings"] and not summary["findings"]:
        click.echo("No warnings.")


@cli.command()
@click.argument("issue", type=PathParam())
@click.option("--out", type=PathParam(),
              help="Folder for the outputs (default: build/<slug>/): a new or empty folder, "
              "or one an earlier build made.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.pass_obj
def build(obj: Context, issue: Path, out: Path | None, as_json: bool) -> None:
    """Build ISSUE into email.html, email.txt and email.eml.

    \b
    email.html  the finished email, CSS inlined: paste it into any sending service
    email.txt   the plain-text part
    email.eml   the whole message: double-click to open it in a mail client

    Outputs are written to a temporary folder and moved into place whole, so a
    failed build never leaves half-written files.
    """
    from . import build as build_mod

    result = build_mod.build(issue, obj.settings, out)
    summary = result.summary()
    if as_json:
        _echo_json(summary)
    else:
        _print_summary(summary)


@cli.command()
@click.argument("issue", type=PathParam())
@click.option("--port", type=click.IntRange(0, 65535), default=0,
              help="Port on 127.0.0.1 (default: a free one).")
@click.option("--no-open", is_flag=True, help="Do not open a browser.")
@click.pass_obj
def preview(obj: Context, issue: Path, port: int, no_open: bool) -> None:
    """Preview ISSUE in a browser: desktop and mobile, dark mode, text, source, headers.

    Saving the issue, a template or the settings rebuilds and refreshes the page; a
    build error shows in the page and the server keeps running. Ctrl-C stops it.
    """
    import time
    import webbrowser

    from . import preview as preview_mod

    running = preview_mod.start(issue, obj.settings, port)
    click.echo(f"Previewing {issue} at {running.url}  (Ctrl-C to stop)")
    if not no_open:
        webbrowser.open(running.url)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        running.stop()
        click.echo("Stopped.")


@cli.command(name="check")
@click.argument("issue", type=PathParam())
@click.option("--links", is_flag=True,
              help="Also request every link and image (needs the network; off by default).")
@click.option("--json", "as_json", is_flag=True, help="Print the findings as JSON.")
@click.pass_obj
def check_command(obj: Context, issue: Path, links: bool, as_json: bool) -> None:
    """Build ISSUE and lint the email; exit 1 when an error is found.

    Every warning of the build comes first, with the file and line it is about.

    Rules cover what mail clients cannot show (video, iframes, scripts, forms, SVG,
    custom elements, linked CSS, flex/grid/position layout), client support from
    caniemail's data for Gmail, Outlook, Apple Mail and Yahoo (accept features with
    check_accept in publish.toml), Gmail's 102 KB clip, images and links, the
    preheader and subject, the unsubscribe link and postal address, and text that can
    vanish in dark mode.
    """
    from . import build as build_mod
    from . import check

    built = build_mod.render_issue(issue, obj.settings)
    findings = check.from_warnings(built.warnings, str(built.issue.path)) + built.findings
    if links:
        findings += check.check_links(built.html, timeout=obj.settings.http_timeout_seconds)
    if as_json:
        _echo_json([f.as_dict() for f in findings])
    else:
        for finding in findings:
            click.echo(str(finding))
        errors = len(check.errors(findings))
        click.echo(f"{issue}: {errors} error(s), {len(findings) - errors} warning(s)"
                   if findings else f"{issue}: clean")
    if check.errors(findings):
        sys.exit(1)


@cli.command()
@click.argument("issue", type=PathParam())
@click.option("--service", help="Where to push (default: the 'service' setting, normally local).")
@click.option("--force", is_flag=True,
              help="Overwrite a draft that was edited on the service since the last push.")
@click.option("--json", "as_json", is_flag=True, help="Print the outcome as JSON.")
@click.pass_obj
def draft(obj: Context, issue: Path, service: str | None, force: bool, as_json: bool) -> None:
    """Build ISSUE and push it as a draft; running it again updates the same draft.

    \b
    publish draft issues/2025-01-ai-art.md                    # the local service
    publish draft issues/2025-01-ai-art.md --service substack # needs SUBSTACK_SID

    The state database (.publish/state.db) remembers which draft belongs to which
    issue, so a second push never creates a second draft.
    """
    from . import draft as draft_mod

    outcome = draft_mod.push(issue, obj.settings, service, force=force)
    if as_json:
        _echo_json(outcome.summary())
        return
    changes = ", ".join(outcome.changes) if outcome.changes else "none (already up to date)"
    click.echo(f"Draft   {outcome.remote_id} on {outcome.service}")
    click.echo(f"See it  {outcome.url}")
    click.echo(f"Changed {changes}")
    for warning in outcome.warnings:
        click.secho(f"warning: {warning}", fg="yellow", err=True)


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print the drafts as JSON.")
@click.pass_obj
def drafts(obj: Context, as_json: bool) -> None:
    """List the drafts this newsletter has pushed, and whether their Markdown changed since."""
    import datetime as dt

    from . import draft as draft_mod

    listings = draft_mod.list_drafts(obj.settings)
    rows = [
        {
            "issue": item.record.issue,
            "service": item.record.service,
            "draft_id": item.record.remote_id,
            "state": item.record.status,
            "markdown_changed": item.markdown_changed,
            "pushed_at": item.record.pushed_at,
            "url": item.record.url,
        }
        for item in listings
    ]
    if as_json:
        _echo_json(rows)
        return
    if not rows:
        click.echo("No drafts yet. Push one with: publish draft issues/<file>.md")
        return
    for row in rows:
        changed = {True: "Markdown changed since push", False: "up to date",
                   None: "issue file missing"}[row["markdown_changed"]]
        when = (dt.datetime.fromtimestamp(row["pushed_at"]).strftime("%Y-%m-%d %H:%M")
                if row["pushed_at"] else "never")
        click.echo(f"{row['issue']}  {row['service']}:{row['draft_id']}  {row['state']}  "
                   f"pushed {when}  {changed}")


@cli.command()
@click.argument("folder", type=PathParam())
@click.option("--name", default="My Newsletter", show_default=True, help="The newsletter's name.")
def init(folder: Path, name: str) -> None:
    """Create a new newsletter in FOLDER: settings, templates, a sample issue, a subscriber list."""
    from . import scaffold

    created = scaffold.init(folder, name)
    click.echo(f"Created a newsletter in {folder}/ ({len(created.files)} files).")
    if created.kept:
        click.echo(f"Kept {len(created.kept)} file(s) already there, unchanged except for "
                   "lines added to .gitignore:")
        for path in created.kept:
            click.echo(f"  {path}")
    click.echo(f"Next:  cd {folder} && publish build issues/{scaffold.SAMPLE_ISSUE}")
    click.echo("Before sending to real readers, set sender, base_url and postal_address "
               "in publish.toml.")


def _say_error(text: str, **style) -> None:
    """Print an error line with every secret in it hidden (the one place errors are shown)."""
    from .redact import redact

    click.secho(redact(text), err=True, **style)


def _sqlite_error() -> type[Exception] | tuple[()]:
    """sqlite3.Error when a command used the database (else nothing it could raise)."""
    sqlite3 = sys.modules.get("sqlite3")
    return sqlite3.Error if sqlite3 is not None else ()


def _say_traceback() -> None:
    import traceback

    _say_error(traceback.format_exc().rstrip("\n"))


# Commands that build one issue in one short process. Their objects (modules, classes,
# the issue's trees) mostly live to the end, so Python's cyclic garbage collector would
# walk them ~90 times (~25 ms of a cold build) and free next to nothing, and tearing the
# interpreter down object by object at exit takes ~70 ms more. For them the collector
# stays off (the peak memory of a 60,000-cell table's build is the same: 518 MB either
# way) and the process ends as soon as its exit handlers have run and its output is
# flushed (see _end_now). Every other command (a server, a send, a list import) turns the
# collector back on as it starts and exits as usual.
ONE_SHOT = ("build", "check")
_STARTING = {"collector_paused": False, "one_shot": False}


def main() -> None:
    """Entry point: people see one-line errors; tracebacks only with --debug; no secrets."""
    _STARTING["collector_paused"] = gc.isenabled()
    gc.disable()
    try:
        _run()
    except SystemExit as exc:
        if _STARTING["one_shot"]:
            _end_now(exc.code)
        raise
    else:
        if _STARTING["one_shot"]:
            _end_now(0)
    finally:  # the usual exit: the collector as it was
        if _STARTING["collector_paused"]:
            _STARTING["collector_paused"] = False
            gc.enable()


def _end_now(code) -> None:
    """End a one-shot command's process without tearing the interpreter down: the exit
    handlers run (the kept caches are written, temporary folders removed), standard
    output and error are flushed (a failed flush ends it with 120, as Python does), then
    the process exits. Every file a build writes is closed before this. Only when this
    thread is the process's last (else the usual exit waits for the others)."""
    import atexit
    import os
    import threading

    run_handlers = getattr(atexit, "_run_exitfuncs", None)
    if run_handlers is None or threading.active_count() > 1:
        return
    if code is None:
        code = 0
    elif not isinstance(code, int):
        print(code, file=sys.stderr)
        code = 1
    run_handlers()
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except (OSError, ValueError):
            code = code or 120
    os._exit(code)


def _run() -> None:
    debug = "--debug" in sys.argv[1:]
    try:
        cli.main(standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        import io

        shown = io.StringIO()
        exc.show(file=shown)
        _say_error(shown.getvalue().rstrip("\n"))
        sys.exit(2 if exc.exit_code == 2 else exc.exit_code)
    except KeyboardInterrupt:
        click.echo("Interrupted.", err=True)
        sys.exit(130)
    except _sqlite_error() as exc:  # the state database: a full disk, a lock, a damaged page
        from . import state

        if debug:
            _say_traceback()
        _say_error(f"error: {state.describe(exc)}", fg="red")
        sys.exit(1)
    except OSError as exc:  # the file system said no: a full disk, a permission
        if debug:
            _say_traceback()
        where = f"{exc.filename}: " if exc.filename else ""
        _say_error(f"error: {where}{exc.strerror or type(exc).__name__}", fg="red")
        sys.exit(1)
    except Exception as exc:
        if debug:
            _say_traceback()
        if isinstance(exc, PublishError):
            _say_error(f"error: {exc}", fg="red")
            sys.exit(exc.exit_code)
        _say_error(f"internal error: {type(exc).__name__}: {exc}"
                   + ("" if debug else " (run with --debug for details)"), fg="red")
        sys.exit(1)


if __name__ == "__main__":
    main()
