"""The `publish` command as an editor runs it: help, summary, JSON, init."""

from __future__ import annotations

import json

import pytest

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


# init only adds ------------------------------------------------------------------------------

def _tree(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_init_refuses_a_newsletter_configured_in_pyproject(tmp_path):
    folder = tmp_path / "py"
    folder.mkdir()
    (folder / "pyproject.toml").write_text('[project]\nname = "x"\n\n[tool.publish]\n'
                                           'name = "Py Letter"\n', "utf-8")
    (folder / "email_templates").mkdir()
    (folder / "email_templates" / "issue.mjml.j2").write_text("my own template", "utf-8")
    (folder / ".gitignore").write_text("secret.txt\n", "utf-8")
    before = _tree(folder)
    result = run_publish("init", str(folder), cwd=tmp_path)
    assert result.returncode == 2 and "already a newsletter" in result.stderr
    assert "pyproject.toml" in result.stderr
    assert _tree(folder) == before


def test_init_into_a_folder_with_files_keeps_every_one(tmp_path):
    folder = tmp_path / "busy"
    (folder / "email_templates" / "strings").mkdir(parents=True)
    (folder / "issues").mkdir()
    own = {
        "email_templates/issue.mjml.j2": b"my template",
        "email_templates/strings/en.toml": b'greeting = "Howdy"\n',
        "issues/2025-01-ai-art.md": b"---\ntitle: Mine\n---\nmine\n",
        "subscribers/main.csv": b"email\nreal@reader.example\n",
        ".gitignore": b"node_modules/\n/build\n",
    }
    for name, data in own.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    result = run_publish("init", str(folder), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    for name, data in own.items():
        if name == ".gitignore":
            text = (folder / name).read_bytes()
            assert text.startswith(data)  # only added to
            assert b".publish/" in text and b"outbox/" in text and b"subscribers/.lock" in text
            assert text.count(b"build") == 1  # "/build" already covered it
        else:
            assert (folder / name).read_bytes() == data, name
    assert (folder / "publish.toml").is_file() and "Kept" in result.stdout


@pytest.mark.parametrize("name", ["Back\\", 'Say "hi" \\o/', "Café 日本 ✉️", "O'Neil's, Inc.",
                                  "[brackets] = ok", "emoji 🎨"])
def test_init_writes_any_name_as_settings_every_command_accepts(tmp_path, name):
    folder = tmp_path / "n"
    result = run_publish("init", str(folder), "--name", name, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    from pipeline import settings

    s = settings.load(folder, env={})
    assert s.name == name
    built = run_publish("build", "issues/2025-01-ai-art.md", cwd=folder)
    assert built.returncode == 0, built.stderr
    from email import policy
    from email.parser import BytesParser

    eml = (folder / "build" / "2025-01-ai-art" / "email.eml").read_bytes()
    assert BytesParser(policy=policy.default).parsebytes(eml)["From"].addresses[0].display_name \
        == name
    assert run_publish("check", "issues/2025-01-ai-art.md", cwd=folder).returncode == 0


@pytest.mark.parametrize("name", ["two\nlines", "tab\there", "cr\rhere", "nul\x01", "", "  ",
                                  "ls\u2028x"])
def test_init_refuses_names_that_cannot_be_one_line(tmp_path, name):
    folder = tmp_path / "bad"
    result = run_publish("init", str(folder), "--name", name, cwd=tmp_path)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    assert not folder.exists()


# out of the box -------------------------------------------------------------------------------

def _env_without_secret():
    import os

    return {k: v for k, v in os.environ.items() if k != "PUBLISH_UNSUBSCRIBE_SECRET"}


def _run(*args, cwd, env):
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "pipeline.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def test_a_new_newsletter_builds_tests_and_sends_with_no_secret_typed(tmp_path):
    env = _env_without_secret()
    folder = tmp_path / "L"
    assert _run("init", "L", cwd=tmp_path, env=env).returncode == 0
    (folder / "subscribers" / "main.csv").write_text(
        "email,name,status,created_at\nreader@example.org,Reader,active,\n", "utf-8")
    outputs = []
    for args in (["build", "issues/2025-01-ai-art.md"], ["draft", "issues/2025-01-ai-art.md"],
                 ["send", "issues/2025-01-ai-art.md", "--test", "me@example.org"],
                 ["send", "issues/2025-01-ai-art.md", "--yes"]):
        result = _run(*args, cwd=folder, env=env)
        assert result.returncode == 0, (args, result.stderr)
        outputs.append(result.stdout + result.stderr)
    key_file = folder / ".publish" / "unsubscribe.key"
    assert key_file.stat().st_mode & 0o777 == 0o600
    key = key_file.read_text("ascii").strip()
    assert len(key) >= 32
    assert ".publish/" in (folder / ".gitignore").read_text("utf-8").splitlines()
    for text in outputs:
        assert key not in text
    for path in folder.rglob("*"):
        if path.is_file() and path != key_file:
            assert key.encode() not in path.read_bytes(), path
    # the links sent verify with the key made, and the same key is used on the next run
    from pipeline import unsubscribe

    mails = list((folder / "outbox" / "new").iterdir())
    assert len(mails) == 2
    import re

    tokens = {re.search(rb"token=([\w.-]+)", m.read_bytes()).group(1).decode() for m in mails}
    verified = {unsubscribe.verify_token(key.encode(), t) for t in tokens}
    assert verified == {"me@example.org", "reader@example.org"}


def test_the_environment_secret_wins_over_the_key_file(tmp_path):
    from pipeline import unsubscribe

    state = tmp_path / ".publish"
    made = unsubscribe.signing_key(state, env={})
    assert unsubscribe.signing_key(state, env={}) == made
    env_key = unsubscribe.signing_key(state, env={unsubscribe.KEY_VARIABLE: "x" * 20})
    assert env_key == b"x" * 20 != made
    with pytest.raises(Exception, match="at least 16"):
        unsubscribe.signing_key(state, env={unsubscribe.KEY_VARIABLE: "short"})


def test_racing_runs_make_one_key(tmp_path):
    import subprocess
    import sys

    code = ("import sys; from pathlib import Path; from pipeline import unsubscribe; "
            "sys.stdout.write(unsubscribe.signing_key(Path(sys.argv[1]), env={}).decode())")
    runs = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "s")],
                             stdout=subprocess.PIPE, text=True) for _ in range(6)]
    keys = {run.communicate(timeout=60)[0] for run in runs}
    assert len(keys) == 1 and len(keys.pop()) >= 32
    assert [p.name for p in (tmp_path / "s").iterdir()] == ["unsubscribe.key"]


# scaffold placeholders ---------------------------------------------------------------------

def test_check_reports_scaffold_placeholders_as_warnings_for_the_local_outbox(tmp_path):
    folder = tmp_path / "L"
    run_publish("init", str(folder), cwd=tmp_path)
    result = run_publish("check", "issues/2025-01-ai-art.md", "--json", cwd=folder)
    assert result.returncode == 0, result.stderr
    found = {f["where"]: f["severity"] for f in json.loads(result.stdout)
             if f["rule"] == "placeholder-setting"}
    assert found == {"setting sender": "warning", "setting base_url": "warning",
                     "setting postal_address": "warning"}


def test_placeholders_are_errors_before_a_send_that_reaches_real_readers(tmp_path):
    from tests.smtp_server import SmtpServer

    folder = tmp_path / "L"
    run_publish("init", str(folder), cwd=tmp_path)
    (folder / "subscribers" / "main.csv").write_text(
        "email,name,status,created_at\nreader@example.org,Reader,active,\n", "utf-8")
    assert run_publish("draft", "issues/2025-01-ai-art.md", cwd=folder).returncode == 0
    with SmtpServer() as smtp:
        env = {"PUBLISH_SMTP_HOST": "127.0.0.1", "PUBLISH_SMTP_PORT": str(smtp.port),
               "PUBLISH_SMTP_SECURITY": "none"}
        check = run_publish("check", "issues/2025-01-ai-art.md", cwd=folder,
                            env={**env, "PUBLISH_SERVICE": "smtp"})
        assert check.returncode == 1 and "placeholder" in check.stdout
        send = run_publish("send", "issues/2025-01-ai-art.md", "--service", "smtp", "--yes",
                           cwd=folder, env=env)
        assert send.returncode == 2 and "placeholder" in send.stderr
        assert len(send.stderr.strip().splitlines()) == 1
        assert sum(smtp.recorder.received.values()) == 0
        assert "No sends yet." in run_publish("sends", cwd=folder).stdout
        real = {**env, "PUBLISH_SENDER": "Real <news@real-letter.test>",
                "PUBLISH_BASE_URL": "https://real-letter.test/",
                "PUBLISH_POSTAL_ADDRESS": "1 Real Street, Town"}
        assert run_publish("draft", "issues/2025-01-ai-art.md", cwd=folder,
                           env=real).returncode == 0
        send = run_publish("send", "issues/2025-01-ai-art.md", "--service", "smtp", "--yes",
                           cwd=folder, env=real)
        assert send.returncode == 0, send.stderr
        assert sum(smtp.recorder.received.values()) == 1
