"""`publish site` and `publish serve`: the newsletter's web."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from .cli import Context


@click.command(name="site")
@click.option("--drafts", is_flag=True,
              help="Also show issues never sent or published (to look at locally).")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.pass_obj
def site_command(obj: Context, drafts: bool, as_json: bool) -> None:
    """Build the static site (site_dir): a page per sent issue, the archive, an Atom feed,
    the assets the issues use and a subscribe page. Upload it to base_url."""
    from . import site

    report = site.build_site(obj.settings, drafts=drafts)
    if as_json:
        click.echo(json.dumps({"folder": str(report.folder),
                               "issues": [p.slug for p in report.pages],
                               "rendered": report.rendered, "written": report.written,
                               "removed": report.removed, "warnings": report.warnings},
                              ensure_ascii=False, indent=2))
        return
    click.echo(f"Site    {report.folder}: {len(report.pages)} issue(s), "
               f"{report.rendered} rendered, {len(report.written)} file(s) written, "
               f"{len(report.removed)} removed")
    for warning in report.warnings:
        click.echo(f"warning: {warning}", err=True)


@click.command(name="serve")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=click.IntRange(1, 65535), default=8000, show_default=True)
@click.option("--workers", type=click.IntRange(1, 64), default=1, show_default=True)
@click.option("--proxy-headers", is_flag=True,
              help="Trust X-Forwarded-For from the proxy in front (for rate limits).")
@click.pass_obj
def serve_command(obj: Context, host: str, port: int, workers: int,
                  proxy_headers: bool) -> None:
    """Run the web app under uvicorn: one-click unsubscribe, double opt-in, the site."""
    import os

    import uvicorn

    from . import webapp

    webapp.create_app(obj.settings.root)  # refuse bad settings before listening
    os.chdir(obj.settings.root)
    uvicorn.run("pipeline.webapp:create_app", factory=True, host=host, port=port,
                workers=workers, proxy_headers=proxy_headers, server_header=False,
                log_level="warning", access_log=False)
