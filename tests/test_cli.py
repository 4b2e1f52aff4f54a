"""The `publish` command as an editor runs it: help, summary, JSON, init."""

from __future__ import annotations

import json

from tests.conftest import run_publish


def test_help_teaches_the_commands():
    result = run_publish("--help")
    assert result.returncode == 0
    for word in ("build", "init", "publish build issues/"):
        assert word in result.stdout
    build_help = run_publish("build", "--help").stdout
    assert "email.eml" in build_help and "--json" in build_help


def test_build_prints_a_short_summary(tmp_path):
    result = run_publish("build", "issues/2025-01-ai-art.md", "--out", str(tmp_path / "o"))
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "Pixels & Prose #1" in out
    assert "of Gmail's 102 KB clip limit" in out
    assert "2 video" in out and "1 youtube" in out
    assert "No warnings." in out
    assert result.stderr == ""


def test_build_json_summary(tmp_path):
    result = run_publish("build", "issues/2025-02-video-models.md", "--json",
                         "--out", str(tmp_path / "o"))
    summary = json.loads(result.stdout)
    assert summary["lang"] == "zh"
    assert summary["html_bytes"] == (tmp_path / "o" / "email.html").stat().st_size
    assert summary["embeds_swapped"] == {"video": 1, "demo": 1, "audio": 1}
    assert summary["images"] >= 3


def test_init_scaffolds_a_newsletter_that_builds(tmp_path):
    folder = tmp_path / "my-letter"
    result = run_publish("init", str(folder), "--name", "Tide Tables", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    for path in ("publish.toml", "email_templates/issue.mjml.j2", "email_templates/strings/zh.toml",
                 "issues/2025-01-ai-art.md", "subscribers/main.csv"):
        assert (folder / path).is_file(), path
    built = run_publish("build", "issues/2025-01-ai-art.md", "--json", cwd=folder)
    assert built.returncode == 0, built.stderr
    html = (folder / "build" / "2025-01-ai-art" / "email.html").read_text("utf-8")
    assert "Tide Tables" in html
    again = run_publish("init", str(folder), cwd=tmp_path)
    assert again.returncode == 2 and "already" in again.stderr


def test_edited_template_in_the_newsletter_folder_is_used(tmp_path):
    folder = tmp_path / "letter"
    run_publish("init", str(folder), cwd=tmp_path)
    template = folder / "email_templates" / "issue.mjml.j2"
    template.write_text(
        template.read_text("utf-8").replace("{{ why_received }}", "Custom footer words."),
        "utf-8")
    run_publish("build", "issues/2025-01-ai-art.md", cwd=folder)
    html = (folder / "build" / "2025-01-ai-art" / "email.html").read_text("utf-8")
    assert "Custom footer words." in html


def test_template_syntax_error_names_the_template_line(tmp_path):
    folder = tmp_path / "letter"
    run_publish("init", str(folder), cwd=tmp_path)
    template = folder / "email_templates" / "issue.mjml.j2"
    lines = template.read_text("utf-8").split("\n")
    lines[5] = "{% if %}"
    template.write_text("\n".join(lines), "utf-8")
    result = run_publish("build", "issues/2025-01-ai-art.md", cwd=folder)
    assert result.returncode == 2
    assert "issue.mjml.j2:6:" in result.stderr and "Traceback" not in result.stderr


def test_edited_template_strings_are_read_afresh_in_one_process(tmp_path):
    """The preview rebuilds in one long-lived process; a changed strings file must show."""
    from pipeline import build, settings

    folder = tmp_path / "letter"
    run_publish("init", str(folder), cwd=tmp_path)
    s = settings.load(folder, env={})
    issue = folder / "issues" / "2025-01-ai-art.md"
    assert "Unsubscribe" in build.render_issue(issue, s).text
    strings = folder / "email_templates" / "strings" / "en.toml"
    strings.write_text(strings.read_text("utf-8").replace('unsubscribe = "Unsubscribe"',
                                                          'unsubscribe = "Leave the list"'),
                       "utf-8")
    assert "Leave the list" in build.render_issue(issue, s).text
