"""`publish --help` lists every command without importing the modules kept elsewhere, and
lists them exactly as it would once they are loaded."""

from __future__ import annotations

import importlib
import subprocess
import sys

import click
import pytest

from pipeline import cli

HELP_WITHOUT_LOADING = """
import sys
sys.argv = ["publish", "--help"]
from pipeline import cli
if {load}:
    for name in cli.ELSEWHERE:
        cli.cli.get_command(None, name)
try:
    cli.main()
except SystemExit:
    pass
loaded = sorted(m for m in sys.modules if m.startswith("pipeline."))
print("LOADED", " ".join(loaded))
"""


def _help(load: bool) -> tuple[str, list[str]]:
    out = subprocess.run([sys.executable, "-c", HELP_WITHOUT_LOADING.format(load=load)],
                         capture_output=True, text=True, check=True, timeout=60,
                         env={"PATH": "/usr/bin:/bin", "COLUMNS": "80"}).stdout
    text, _, loaded = out.rpartition("LOADED")
    return text, loaded.split()


@pytest.mark.parametrize("name", sorted(cli.ELSEWHERE))
def test_kept_summary_is_the_commands_own_first_sentence(name):
    where, summary = cli.ELSEWHERE[name]
    module, attr = where.split(":")
    command = getattr(importlib.import_module(f"pipeline.{module}"), attr)
    for limit in (20, 45, 1000):
        assert click.Command(name, help=summary).get_short_help_str(limit) == \
            command.get_short_help_str(limit), f"update ELSEWHERE[{name!r}] in pipeline/cli.py"


def test_help_lists_every_command_once_without_importing_them():
    text, loaded = _help(load=False)
    assert not [m for m in loaded if m.startswith("pipeline.cli_")], loaded
    listed = [line.split()[0] for line in text.split("Commands:")[1].splitlines() if line.strip()]
    assert listed == sorted(set(listed))
    assert set(cli.ELSEWHERE) <= set(listed) and {"build", "check", "draft"} <= set(listed)


def test_help_reads_the_same_before_and_after_the_commands_are_loaded():
    cold, _ = _help(load=False)
    warm, loaded = _help(load=True)
    assert "pipeline.cli_send" in loaded
    assert cold == warm


def test_a_command_kept_elsewhere_still_runs_and_shows_its_own_help():
    out = subprocess.run([sys.executable, "-m", "pipeline.cli", "send", "--help"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "Send ISSUE to its subscribers" in out.stdout and "--test" in out.stdout


def test_version_is_the_installed_packages_version():
    from importlib.metadata import version

    out = subprocess.run([sys.executable, "-m", "pipeline.cli", "--version"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"publish, version {version('publish')}"
