"""The `publish` command: a thin layer over the library that parses flags and prints."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from .errors import PublishError


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


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--root",
    type=click.Path(file_okay=False, path_type=Path),
    help="The newsletter folder (default: the nearest folder with publish.toml).",
)
@click.option("--debug", is_flag=True, help="Show tracebacks for unexpected errors.")
@click.version_option(package_name="publish", prog_name="publish")
@click.pass_context
def cli(ctx: click.Context, root: Path | None, debug: bool) -> None:
    """Turn Markdown newsletter issues into email that reads well in every inbox.

    \b
    Start a newsletter:     publish init my-letter
    Build an issue:         publish build issues/2025-01-ai-art.md
    Machine-readable:       publish build issues/2025-01-ai-art.md --json
    """
    ctx.obj = Context(root, debug)


def _print_summary(summary: dict) -> None:
    size = summary["html_bytes"]
    limit = summary["gmail_clip_bytes"]
    embeds = summary["embeds_swapped"]
    swapped = ", ".join(f"{n} {kind}" for kind, n in sorted(embeds.items())) or "none"
    click.echo(f"Built   {summary['title']}  [{summary['lang']}]")
    click.echo(f"HTML    {size / 1024:.1f} KB of Gmail's {limit // 1024} KB clip limit "
               f"({100 * size / limit:.0f}%)")
    click.echo(f"Images  {summary['images']}")
    click.echo(f"Embeds  {swapped}")
    for name, path in summary["files"].items():
        click.echo(f"{name:<10}{path}")
    for warning in summary["warnings"]:
        click.secho(f"warning: {warning}", fg="yellow", err=True)
    if not summary["warnings"]:
        click.echo("No warnings.")


@cli.command()
@click.argument("issue", type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(file_okay=False, path_type=Path),
              help="Folder for the outputs (default: build/<slug>/).")
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
        click.echo(json.dumps(summary, ensure_ascii=False, indent=2))
    else:
        _print_summary(summary)


@cli.command()
@click.argument("issue", type=click.Path(path_type=Path))
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
        click.echo(json.dumps(outcome.summary(), ensure_ascii=False, indent=2))
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
        click.echo(json.dumps(rows, ensure_ascii=False, indent=2))
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
@click.argument("folder", type=click.Path(path_type=Path))
@click.option("--name", default="My Newsletter", show_default=True, help="The newsletter's name.")
def init(folder: Path, name: str) -> None:
    """Create a new newsletter in FOLDER: settings, templates, a sample issue, a subscriber list."""
    from . import scaffold

    created = scaffold.init(folder, name)
    click.echo(f"Created a newsletter in {folder}/ ({len(created)} files).")
    click.echo(f"Next:  cd {folder} && publish build issues/{scaffold.SAMPLE_ISSUE}")


def main() -> None:
    """Entry point: people see one-line errors; tracebacks only with --debug."""
    debug = "--debug" in sys.argv[1:]
    try:
        cli.main(standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(2 if exc.exit_code == 2 else exc.exit_code)
    except PublishError as exc:
        if debug:
            raise
        click.secho(f"error: {exc}", fg="red", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("Interrupted.", err=True)
        sys.exit(130)
    except Exception as exc:
        if debug:
            raise
        click.secho(
            f"internal error: {type(exc).__name__}: {exc} (run with --debug for details)",
            fg="red", err=True,
        )
        sys.exit(1)


if __name__ == "__main__":
    main()
