"""Nothing leaked, nothing read from outside, nothing reset: the promises around secrets,
local files, other hosts and the state database."""

from __future__ import annotations

import os
import sqlite3

import pytest

from pipeline import draft, settings, state
from pipeline.errors import PublishError
from pipeline.http import Client, HttpError
from tests.conftest import copy_sample_newsletter, run_publish
from tests.smtp_server import SmtpServer
from tests.substack_server import SID, FakeSubstack, Fault

EN = "issues/2025-01-ai-art.md"
SENTINELS = {
    "SUBSTACK_SID": "SENTINEL-SID-7f3a9c",
    "SMTP_PASSWORD": "SENTINEL-PW-91c2e4",
    "PUBLISH_UNSUBSCRIBE_SECRET": "SENTINEL-KEY-5d8e0b-long-enough",
}


def test_secrets_never_appear_in_output_files_or_state(tmp_path):
    folder = copy_sample_newsletter(tmp_path / "letter")
    outputs = []
    with FakeSubstack() as substack, SmtpServer() as smtp:
        env = {**SENTINELS, "SUBSTACK_PUBLICATION_URL": substack.url,
               "SUBSTACK_API_URL": substack.url, "PUBLISH_SMTP_HOST": "127.0.0.1",
               "PUBLISH_SMTP_PORT": str(smtp.port), "PUBLISH_SMTP_SECURITY": "none",
               "PUBLISH_SMTP_USERNAME": "editor"}
        for args in (
            ["build", EN], ["check", EN], ["draft", EN], ["drafts"],
            ["send", EN, "--dry-run"], ["send", EN, "--test", "me@example.org"],
            ["send", EN, "--yes"], ["sends"], ["subscribers", "count"],
            ["--debug", "draft", EN, "--service", "substack"],           # 401: bad cookie
            ["draft", EN, "--service", "substack"],
            ["--debug", "send", EN, "--service", "smtp", "--yes"],       # no AUTH offered
            ["send", EN, "--service", "smtp", "--yes"],
        ):
            result = run_publish(*args, cwd=folder, env=env)
            outputs.append((args, result.returncode, result.stdout + result.stderr))
    failing = [a for a, code, _ in outputs if code != 0]
    assert ["--debug", "draft", EN, "--service", "substack"] in failing
    assert ["--debug", "send", EN, "--service", "smtp", "--yes"] in failing
    for args, _code, text in outputs:
        for name, secret in SENTINELS.items():
            assert secret not in text, f"{name} printed by publish {' '.join(args)}"
    for path in folder.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            for name, secret in SENTINELS.items():
                assert secret.encode() not in data, f"{name} found in {path}"


def test_images_outside_the_newsletter_folder_are_refused(tmp_path, substack):
    folder = copy_sample_newsletter(tmp_path / "letter")
    outside = tmp_path / "private.png"
    outside.write_bytes((folder / "assets" / "2025-01" / "cover.png").read_bytes())
    link = folder / "assets" / "2025-01" / "timeline.png"
    link.unlink()
    link.symlink_to(outside)
    s = settings.load(folder, env=dict(os.environ))
    with pytest.raises(PublishError, match="leads outside the newsletter folder"):
        draft.push(folder / EN, s, "substack")
    assert substack.images == {} and substack.drafts == {}


def test_session_cookie_never_goes_to_another_host():
    client = Client("http://127.0.0.1:9/api/v1", headers={"Cookie": "substack.sid=x"})
    with pytest.raises(HttpError, match="another host"):
        client.request("GET", "http://127.0.0.2:9/steal")
    with FakeSubstack() as publication, FakeSubstack() as elsewhere:
        publication.faults.append(Fault("GET", "/api/v1/drafts/1", status=302,
                                        headers={"Location": f"{elsewhere.url}/api/v1/x"}))
        client = Client(f"{publication.url}/api/v1",
                        headers={"Cookie": f"substack.sid={SID}"}, timeout=5)
        with pytest.raises(HttpError, match="redirected"):
            client.request("GET", "/drafts/1")
        assert elsewhere.requests == []


def test_an_older_state_database_is_migrated_with_a_backup(tmp_path):
    folder = tmp_path / ".publish"
    folder.mkdir()
    old = sqlite3.connect(folder / state.DB_NAME)
    old.executescript(state.MIGRATIONS[0])
    old.execute(f"PRAGMA application_id={state.APPLICATION_ID}")
    old.execute("PRAGMA user_version=1")
    old.execute("INSERT INTO drafts (issue, service, remote_id) VALUES ('issues/a.md', 'local', "
                "'local-1')")
    old.commit()
    old.close()
    db = state.connect(folder)
    assert db.execute("PRAGMA user_version").fetchone()[0] == state.SCHEMA_VERSION
    assert db.execute("SELECT remote_id FROM drafts").fetchone()[0] == "local-1"
    db.execute("SELECT count(*) FROM recipients").fetchone()
    db.close()
    backups = list(folder.glob("state.db.v1-*.bak"))
    assert len(backups) == 1
    backup = sqlite3.connect(backups[0])
    assert backup.execute("PRAGMA user_version").fetchone()[0] == 1
    backup.close()


def test_smtp_password_is_not_offered_without_starttls(tmp_path, monkeypatch):
    """With smtp_security = starttls (the default), a relay that cannot encrypt never
    sees the login: the send stops first, everyone still pending."""
    from pipeline import send

    folder = copy_sample_newsletter(tmp_path / "letter")
    with SmtpServer() as smtp:  # offers no STARTTLS
        for key, value in {"PUBLISH_UNSUBSCRIBE_SECRET": SENTINELS["PUBLISH_UNSUBSCRIBE_SECRET"],
                           "SMTP_PASSWORD": SENTINELS["SMTP_PASSWORD"],
                           "PUBLISH_SMTP_HOST": "127.0.0.1", "PUBLISH_SMTP_PORT": str(smtp.port),
                           "PUBLISH_SMTP_USERNAME": "editor"}.items():
            monkeypatch.setenv(key, value)
        s = settings.load(folder, env=dict(os.environ))
        draft.push(folder / EN, s)
        report, _ = send.Sender(folder / EN, s, send.SendOptions(service="smtp")).run()
        assert "does not offer STARTTLS" in report.stopped
        assert report.sent == 0 and report.pending == 3
        assert sum(smtp.recorder.received.values()) == 0


# the state database under attack: read-only, locked, damaged, on a full disk ---------------

def _can_mount() -> bool:
    import subprocess

    return os.geteuid() == 0 and subprocess.run(["which", "mount"], capture_output=True
                                                ).returncode == 0


@pytest.fixture
def tmpfs(tmp_path):
    """Mount small tmpfs folders (root only); unmounted afterwards."""
    import subprocess

    if not _can_mount():
        pytest.skip("mounting a tmpfs needs root")
    mounted = []

    def mount(name: str, size: str = "3m"):
        folder = tmp_path / name
        folder.mkdir()
        if subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                          capture_output=True).returncode != 0:
            pytest.skip("cannot mount a tmpfs here")
        mounted.append(folder)
        return folder

    yield mount
    for folder in reversed(mounted):
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def _letter_with_a_draft(tmp_path):
    folder = copy_sample_newsletter(tmp_path / "letter")
    assert run_publish("draft", EN, cwd=folder).returncode == 0
    return folder


def _one_line(result, code=1):
    assert result.returncode == code, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert "internal error" not in result.stderr
    return lines[0]


def test_a_read_only_state_database_still_lists_and_says_why_it_cannot_record(tmp_path):
    import subprocess

    folder = _letter_with_a_draft(tmp_path)
    state_dir = folder / ".publish"
    before = (state_dir / state.DB_NAME).read_bytes()
    if os.geteuid() == 0:
        if not _can_mount():
            pytest.skip("cannot make a read-only folder as root without mount")
        subprocess.run(["mount", "--bind", str(state_dir), str(state_dir)], check=True)
        subprocess.run(["mount", "-o", "remount,ro,bind", str(state_dir)], check=True)
    else:
        for path in (state_dir, *state_dir.iterdir()):
            path.chmod(0o555 if path.is_dir() else 0o444)
    try:
        drafts = run_publish("drafts", cwd=folder)
        assert drafts.returncode == 0, drafts.stderr
        assert "local-1" in drafts.stdout
        assert run_publish("sends", cwd=folder).returncode == 0
        for args in (["draft", EN], ["send", EN, "--yes"]):
            message = _one_line(run_publish(*args, cwd=folder))
            assert "read-only" in message and "move it aside" not in message
            assert "publish drafts" in message
    finally:
        if os.geteuid() == 0:
            subprocess.run(["umount", str(state_dir)], check=True)
        else:
            for path in (state_dir, *state_dir.iterdir()):
                path.chmod(0o755 if path.is_dir() else 0o644)
    assert (state_dir / state.DB_NAME).read_bytes() == before


def test_a_locked_state_database_names_who_holds_it(tmp_path):
    import subprocess
    import sys

    folder = _letter_with_a_draft(tmp_path)
    (folder / EN).write_text((folder / EN).read_text("utf-8") + "\nOne more line.\n", "utf-8")
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sqlite3, sys, time; db = sqlite3.connect(sys.argv[1], "
         "isolation_level=None); db.execute('BEGIN IMMEDIATE'); "
         "db.execute('UPDATE drafts SET title = title'); print('held', flush=True); "
         "time.sleep(60)", str(folder / ".publish" / state.DB_NAME)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        message = _one_line(run_publish("draft", EN, cwd=folder))
        assert "locked" in message and f"process {holder.pid}" in message
        assert run_publish("drafts", cwd=folder).returncode == 0  # readers are not blocked
    finally:
        holder.kill()
        holder.wait()
    assert run_publish("draft", EN, cwd=folder).returncode == 0


def test_a_damaged_page_is_one_line_and_the_file_is_left_as_it_was(tmp_path):
    folder = _letter_with_a_draft(tmp_path)
    path = folder / ".publish" / state.DB_NAME
    db = sqlite3.connect(path)
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    data = bytearray(path.read_bytes())
    page = 4096
    for offset in range(2 * page, len(data), page):
        data[offset:offset + 64] = b"\xa5" * 64
    path.write_bytes(bytes(data))
    for args in (["drafts"], ["sends"], ["draft", EN], ["send", EN, "--yes"]):
        result = run_publish(*args, cwd=folder)
        if result.returncode == 0:
            continue  # a page the command does not read
        message = _one_line(result)
        assert "damaged" in message or "not a publish state database" in message, message
    assert path.read_bytes() == bytes(data)


def test_a_full_disk_under_the_state_folder_says_so(tmp_path, tmpfs):
    folder = _letter_with_a_draft(tmp_path)
    small = tmpfs("state", "3m")
    env = {"PUBLISH_STATE_DIR": str(small)}
    assert run_publish("draft", EN, cwd=folder, env=env).returncode == 0
    stats = os.statvfs(small)
    with open(small / "filler", "wb") as handle:
        handle.write(b"\0" * max(0, stats.f_bavail * stats.f_frsize - 16 * 1024))
    message = _one_line(run_publish("send", EN, "--yes", cwd=folder, env=env))
    assert "full" in message, message
    assert "no transaction" not in message
    listing = run_publish("sends", cwd=folder, env=env)
    assert listing.returncode == 0, listing.stderr
    (small / "filler").unlink()
    assert run_publish("send", EN, "--yes", cwd=folder, env=env).returncode == 0
    assert len(list((folder / "outbox" / "new").iterdir())) == 3


def test_the_describer_shows_the_cause_behind_a_failed_rollback(tmp_path):
    try:
        try:
            raise sqlite3.OperationalError("database or disk is full")
        except sqlite3.OperationalError:
            raise sqlite3.OperationalError("cannot rollback - no transaction is active") \
                from None
    except sqlite3.OperationalError as exc:
        exc.__context__ = exc.__context__ or sqlite3.OperationalError("database or disk is full")
        message = str(state.describe(exc, tmp_path / "state.db"))
    assert "full" in message and "rollback" not in message


# Sentinels a shell or a browser's cookie store can hand over: line breaks (raw and
# URL-encoded), NUL (URL-encoded; the environment cannot hold a raw one), non-ASCII.
MALFORMED = {
    "lf": {"SUBSTACK_SID": "SENTINEL-SID-lf%0ATAIL-sid7f3a",
           "SMTP_PASSWORD": "SENTINEL-PW-lf\nTAIL-pw91c2",
           "PUBLISH_UNSUBSCRIBE_SECRET": "SENTINEL-KEY-lf\nTAIL-key5d8e0b"},
    "crlf": {"SUBSTACK_SID": "SENTINEL-SID-crlf%0D%0ATAIL-sid7f3a",
             "SMTP_PASSWORD": "SENTINEL-PW-crlf\r\nTAIL-pw91c2",
             "PUBLISH_UNSUBSCRIBE_SECRET": "SENTINEL-KEY-crlf\r\nTAIL-key5d8e0b"},
    "nul": {"SUBSTACK_SID": "SENTINEL-SID-nul%00TAIL-sid7f3a",
            "SMTP_PASSWORD": "SENTINEL-PW-nul\x7fTAIL-pw91c2",
            "PUBLISH_UNSUBSCRIBE_SECRET": "SENTINEL-KEY-nul\x1bTAIL-key5d8e0b"},
    "non-ascii": {"SUBSTACK_SID": "SENTINEL-SID-é-TAIL-sid7f3a",
                  "SMTP_PASSWORD": "SENTINEL-PW-ü-TAIL-pw91c2",
                  "PUBLISH_UNSUBSCRIBE_SECRET": "SENTINEL-KEY-ß\u2028TAIL-key5d8e0b"},
}


def _pieces(secret: str) -> list[str]:
    """The parts of a sentinel that identify it, whatever escaping a message applies."""
    import re

    return [p for p in re.split(r"[^A-Za-z0-9-]+|%0[0AD]", secret) if len(p) >= 6]


@pytest.mark.parametrize("kind", sorted(MALFORMED))
def test_malformed_secrets_are_named_and_never_shown(tmp_path, kind):
    sentinels = MALFORMED[kind]
    folder = copy_sample_newsletter(tmp_path / "letter")
    with FakeSubstack() as substack, SmtpServer() as smtp:
        env = {**sentinels, "SUBSTACK_PUBLICATION_URL": substack.url,
               "SUBSTACK_API_URL": substack.url, "PUBLISH_SMTP_HOST": "127.0.0.1",
               "PUBLISH_SMTP_PORT": str(smtp.port), "PUBLISH_SMTP_SECURITY": "none",
               "PUBLISH_SMTP_USERNAME": "editor"}
        assert run_publish("draft", EN, cwd=folder, env=env).returncode == 0
        expected = {
            ("--debug", "draft", EN, "--service", "substack"): "SUBSTACK_SID",
            ("draft", EN, "--service", "substack"): "SUBSTACK_SID",
            ("--debug", "send", EN, "--service", "smtp", "--yes"): None,
            ("send", EN, "--test", "me@example.org"): None,
            ("send", EN, "--yes"): None,
        }
        for args, variable in expected.items():
            result = run_publish(*args, cwd=folder, env=env)
            text = result.stdout + result.stderr
            for name, secret in sentinels.items():
                for piece in _pieces(secret):
                    assert piece not in text, f"{name} shown by publish {' '.join(args)}"
            if kind == "non-ascii" and variable is None:
                continue  # a non-ASCII unsubscribe secret is a fine secret
            assert result.returncode == 2, text
            assert "is malformed" in text, text
            if "--debug" not in args:
                assert "Traceback" not in text, text
            if variable:
                assert f"{variable} is malformed" in text
        assert substack.requests == []
        assert sum(smtp.recorder.received.values()) == 0


def test_redaction_hides_every_spelling_of_a_secret():
    from pipeline.redact import redact

    env = {"SUBSTACK_SID": "SENTINEL-SID-a%0Abcdef", "SMTP_PASSWORD": "pw-SENTINEL\x00zz9",
           "PUBLISH_UNSUBSCRIBE_SECRET": "ключ-SENTINEL-0123456789"}
    messages = [
        "InvalidHeader: Invalid leading whitespace, reserved character(s), or return "
        "character(s) in header value: 'substack.sid=SENTINEL-SID-a\\nbcdef'",
        "cookie SENTINEL-SID-a%0Abcdef", "b'pw-SENTINEL\\x00zz9'", "pw-SENTINEL\x00zz9",
        '{"key": "\\u043a\\u043b\\u044e\\u0447-SENTINEL-0123456789"}',
        "ключ-SENTINEL-0123456789", "%D0%BA%D0%BB%D1%8E%D1%87-SENTINEL-0123456789",
    ]
    for message in messages:
        shown = redact(message, env)
        assert "SENTINEL" not in shown, (message, shown)


def test_a_header_with_a_line_break_is_refused_without_its_value():
    with pytest.raises(HttpError) as caught:
        Client("http://127.0.0.1:9/api/v1", headers={"Cookie": "substack.sid=SECRET\r\nX: y"})
    assert "Cookie" in str(caught.value) and "SECRET" not in str(caught.value)


def test_a_server_that_echoes_the_cookie_does_not_get_it_printed(tmp_path):
    """A service whose error quotes the request's cookie back: the message is shown,
    the secret in it is not (with and without --debug)."""
    import http.server
    import json
    import threading

    class Echo(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def _echo(self):
            body = json.dumps({"error": f"bad session {self.headers.get('Cookie')}"}).encode()
            self.send_response(400)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = do_PUT = _echo

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Echo)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    folder = copy_sample_newsletter(tmp_path / "letter")
    env = {"SUBSTACK_SID": "s%3AECHOED-SENTINEL-4b1d.sig", "SUBSTACK_PUBLICATION_URL": url,
           "SUBSTACK_API_URL": url}
    try:
        for debug in ([], ["--debug"]):
            result = run_publish(*debug, "draft", EN, "--service", "substack", cwd=folder,
                                 env=env)
            text = result.stdout + result.stderr
            assert result.returncode == 1 and "bad session" in text, text
            assert "ECHOED-SENTINEL" not in text, text
            assert "[SUBSTACK_SID]" in text
    finally:
        server.shutdown()
        server.server_close()
