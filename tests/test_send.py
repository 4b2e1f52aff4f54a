"""`publish send`: the ledger's promises against a real Maildir and a real SMTP server."""

from __future__ import annotations

import email
import json
import mailbox
import os
import signal
import sqlite3
import subprocess
import sys
import time
from email import policy

import pytest

from pipeline import draft, send, settings, unsubscribe
from pipeline.errors import PublishError
from tests.conftest import copy_sample_newsletter, run_publish
from tests.smtp_server import SmtpServer

EN = "issues/2025-01-ai-art.md"
SECRET = "test-unsubscribe-secret-0123456789"


@pytest.fixture
def letter(tmp_path, monkeypatch):
    monkeypatch.setenv("PUBLISH_UNSUBSCRIBE_SECRET", SECRET)
    monkeypatch.setenv("PUBLISH_RETRY_BACKOFF", "0.05")
    return copy_sample_newsletter(tmp_path / "letter")


def write_list(folder, rows, name="main"):
    lines = ["email,name,status,created_at"]
    lines += [f"{e},{n},{s}," for e, n, s in rows]
    (folder / "subscribers" / f"{name}.csv").write_text("\n".join(lines) + "\n", "utf-8")


def load(folder, **env):
    overrides = {f"PUBLISH_{k.upper()}": v for k, v in env.items()}
    return settings.load(folder, env={**os.environ, **overrides})


def outbox_messages(folder):
    box = mailbox.Maildir(folder / "outbox", create=False)
    return [email.message_from_bytes(box.get_bytes(key), policy=policy.default)
            for key in box.iterkeys()]


def ledger(folder, send_id=1):
    db = sqlite3.connect(folder / ".publish" / "state.db")
    rows = db.execute("SELECT email, state, reason, attempts FROM recipients WHERE send_id = ?",
                      (send_id,)).fetchall()
    db.close()
    return {email: (state, reason, attempts) for email, state, reason, attempts in rows}


# the local outbox --------------------------------------------------------------------

def test_local_outbox_end_to_end(letter):
    # A greeting with the %%name%% merge tag shows each message is filled per recipient.
    greeting = {"PUBLISH_GREETING": "Hi %%name%%,"}
    assert run_publish("draft", EN, cwd=letter, env=greeting).returncode == 0
    result = run_publish("send", EN, "--yes", cwd=letter)
    assert result.returncode == 0, result.stderr
    assert "Sent      3" in result.stdout and "Skipped   1 (1 unsubscribed)" in result.stdout
    messages = outbox_messages(letter)
    to = sorted(m["To"].addresses[0].addr_spec for m in messages)
    assert to == ["ada@example.org", "grace@example.net", "linus@example.com"]
    key = SECRET.encode()
    for message in messages:
        address = message["To"].addresses[0].addr_spec
        header = message["List-Unsubscribe"]
        token = header.split("token=")[1].split(">")[0]
        assert unsubscribe.verify_token(key, token) == address
        assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        body = message.get_body("plain").get_content()
        name = message["To"].addresses[0].display_name
        assert f"Hi {name or 'there'}," in body
        assert token in message.get_body("html").get_content()
    again = run_publish("send", EN, "--yes", cwd=letter)
    assert again.returncode == 1 and "already sent" in again.stderr
    assert len(outbox_messages(letter)) == 3
    sends = json.loads(run_publish("sends", "--json", cwd=letter).stdout)
    assert sends[0]["counts"] == {"sent": 3, "skipped": 1} and sends[0]["status"] == "done"


def test_unsubscribe_link_token_unsubscribes_that_reader(letter):
    draft.push(letter / EN, load(letter))
    send.Sender(letter / EN, load(letter), send.SendOptions()).run()
    message = next(m for m in outbox_messages(letter)
                   if m["To"].addresses[0].addr_spec == "grace@example.net")
    token = message["List-Unsubscribe"].split("token=")[1].split(">")[0]
    result = run_publish("subscribers", "unsubscribe", "--token", token, cwd=letter)
    assert result.returncode == 0, result.stderr
    assert "grace@example.net: marked unsubscribed" in result.stdout
    assert "grace@example.net" in (letter / "subscribers" / "suppressed.csv").read_text()
    forged = unsubscribe.make_token(b"another-newsletter-secret-0000", "ada@example.org")
    refused = run_publish("subscribers", "unsubscribe", "--token", forged, cwd=letter)
    assert refused.returncode == 2 and "not a token made with" in refused.stderr
    assert "ada@example.org" not in (letter / "subscribers" / "suppressed.csv").read_text()


def test_suppressed_address_is_never_sent_to(letter):
    (letter / "subscribers" / "suppressed.csv").write_text("email\nGrace@Example.NET\n", "utf-8")
    draft.push(letter / EN, load(letter))
    report, _ = send.Sender(letter / EN, load(letter), send.SendOptions()).run()
    assert report.sent == 2 and report.skipped == {"suppressed": 1, "unsubscribed": 1}
    sent_to = {m["To"].addresses[0].addr_spec for m in outbox_messages(letter)}
    assert sent_to == {"ada@example.org", "linus@example.com"}


def test_test_copy_and_dry_run_record_nothing(letter):
    draft.push(letter / EN, load(letter))
    result = run_publish("send", EN, "--test", "editor@example.org", cwd=letter)
    assert result.returncode == 0, result.stderr
    [message] = outbox_messages(letter)
    assert str(message["Subject"]).startswith("[TEST] Pixels & Prose #1")
    dry = run_publish("send", EN, "--dry-run", cwd=letter)
    assert "Would send issues/2025-01-ai-art.md to 3 subscriber(s)" in dry.stdout
    assert "skip 1 unsubscribed" in dry.stdout
    assert len(outbox_messages(letter)) == 1
    assert send.list_sends(load(letter)) == []


def test_refuses_a_draft_older_than_the_markdown(letter):
    s = load(letter)
    with pytest.raises(PublishError, match="has no draft yet"):
        send.Sender(letter / EN, s, send.SendOptions()).run()
    draft.push(letter / EN, s)
    path = letter / EN
    path.write_text(path.read_text("utf-8").replace("Welcome to", "Welcome again to"), "utf-8")
    with pytest.raises(PublishError, match=r"changed since its draft was pushed.*--redraft"):
        send.Sender(letter / EN, s, send.SendOptions()).run()
    report, _ = send.Sender(letter / EN, s, send.SendOptions(redraft=True)).run()
    assert report.sent == 3
    assert all("Welcome again" in m.get_body("plain").get_content()
               for m in outbox_messages(letter))


def test_check_errors_stop_the_send_unless_ignored(letter):
    path = letter / EN
    path.write_text(path.read_text("utf-8").replace("See you next month.", "See you TK."),
                    "utf-8")
    draft.push(path, load(letter))
    with pytest.raises(PublishError, match=r"finds 1 error.*placeholder.*--ignore-check"):
        send.Sender(path, load(letter), send.SendOptions()).run()
    assert not (letter / "outbox").exists()
    report, _ = send.Sender(path, load(letter), send.SendOptions(ignore_check=True)).run()
    assert report.sent == 3


@pytest.mark.parametrize("setting, value", [
    ("postal_address", "Your street address, City, Country"),
    ("sender", "Letters <newsletter@example.com>"),
    ("base_url", "https://example.com/"),
])
def test_a_send_refuses_each_placeholder_the_build_calls_an_error(letter, setting, value):
    """The send reads placeholders without importing the build: the same settings, the
    same words as the build's own error findings, for a service that reaches readers."""
    from pipeline.build import placeholder_findings
    from pipeline.errors import InputError

    s = load(letter, **{setting: value})
    errors = [f for f in placeholder_findings(s, "smtp") if f.severity == "error"]
    assert errors
    with pytest.raises(InputError) as refused:
        send.Sender(letter / EN, s, send.SendOptions(service="smtp")).plan()
    assert str(refused.value).startswith(f"{errors[0].message}; {errors[0].hint}")
    assert not [f for f in placeholder_findings(s, "local") if f.severity == "error"]
    draft.push(letter / EN, s)
    assert send.Sender(letter / EN, s, send.SendOptions()).run()[0].sent == 3  # local


def test_no_confirmation_without_a_terminal(letter):
    draft.push(letter / EN, load(letter))
    result = run_publish("send", EN, cwd=letter)
    assert result.returncode == 2 and "--yes" in result.stderr
    assert not (letter / "outbox").exists()


def test_header_injection_through_a_name_is_refused_and_reported(letter):
    write_list(letter, [("ok@example.org", "Ok", "active"),
                        ("evil@example.org", '"Eve\r\nBcc: victim@example.com"', "active")])
    draft.push(letter / EN, load(letter))
    report, _ = send.Sender(letter / EN, load(letter), send.SendOptions()).run()
    assert report.sent == 1
    assert [e for e, _ in report.failed] == ["evil@example.org"]
    assert "line break" in report.failed[0][1]
    assert [m["To"].addresses[0].addr_spec for m in outbox_messages(letter)] == ["ok@example.org"]


def test_a_second_send_of_the_same_issue_is_refused_while_one_runs(letter, monkeypatch):
    from tests.smtp_server import free_port

    port = free_port()
    monkeypatch.setenv("PUBLISH_SMTP_HOST", "127.0.0.1")
    monkeypatch.setenv("PUBLISH_SMTP_PORT", str(port))
    monkeypatch.setenv("PUBLISH_SMTP_SECURITY", "none")
    s = load(letter)
    draft.push(letter / EN, s)
    options = send.SendOptions(service="smtp")
    first, _ = send.Sender(letter / EN, s, options).run()  # no server yet: stops, all pending
    assert first.pending == 3 and first.stopped
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        db = sqlite3.connect(letter / ".publish" / "state.db")
        db.execute("UPDATE sends SET lock_pid = ?, lock_host = ?",
                   (sleeper.pid, os.uname().nodename))
        db.commit()
        db.close()
        with pytest.raises(PublishError, match=f"running \\(pid {sleeper.pid}\\)"):
            send.Sender(letter / EN, s, options).run()
        with pytest.raises(PublishError, match="being sent right now"):
            draft.push(letter / EN, s, force=True)
    finally:
        sleeper.kill()
        sleeper.wait()
    with SmtpServer(port=port) as smtp:  # the lock's process is gone: the send goes on
        report, _ = send.Sender(letter / EN, s, options).run()
    assert report.sent == 3 and sum(smtp.recorder.received.values()) == 3


# SMTP ----------------------------------------------------------------------------------

def smtp_env(server):
    return {"PUBLISH_SMTP_HOST": "127.0.0.1", "PUBLISH_SMTP_PORT": str(server.port),
            "PUBLISH_SMTP_SECURITY": "none"}


def test_smtp_end_to_end_with_two_connections(letter, monkeypatch):
    addresses = [f"reader{n}@example.org" for n in range(200)]
    write_list(letter, [(a, f"Reader {n}", "active") for n, a in enumerate(addresses)])
    switch_interval = sys.getswitchinterval()
    with SmtpServer() as smtp:
        for key, value in smtp_env(smtp).items():
            monkeypatch.setenv(key, value)
        draft.push(letter / EN, load(letter))
        report, _ = send.Sender(letter / EN, load(letter),
                                send.SendOptions(service="smtp", connections=2)).run()
        recorder = smtp.recorder
    assert sys.getswitchinterval() == switch_interval  # the workers' quicker turns end
    assert report.sent == 200 and report.complete
    assert sorted(recorder.received) == sorted(addresses)
    assert set(recorder.received.values()) == {1}
    assert len({peer[1] for peer in recorder.peers}) == 2  # two client ports: two connections
    message = recorder.parsed("reader7@example.org")[0]
    assert message["To"].addresses[0].display_name == "Reader 7"


@pytest.mark.parametrize("pipelining", [True, False], ids=["pipelining", "one-by-one"])
def test_smtp_faults_are_retried_failed_or_in_doubt(letter, monkeypatch, pipelining):
    write_list(letter, [(a, "", "active") for a in (
        "fine@example.org", "full@example.org", "gone@example.org", "slow@example.org",
        "dropped@example.org", "busy@example.org")])
    with SmtpServer(pipelining=pipelining) as smtp:
        for key, value in smtp_env(smtp).items():
            monkeypatch.setenv(key, value)
        rec = smtp.recorder
        rec.rcpt_faults["gone@example.org"] = ["550 5.1.1 No such user"]
        rec.rcpt_faults["full@example.org"] = ["452 4.2.2 Mailbox full"] * 3
        rec.data_faults["slow@example.org"] = ["451 4.3.0 Try again later"]
        rec.rcpt_faults["busy@example.org"] = ["421 4.7.0 Too busy, closing"]
        rec.drop_during_data.add("dropped@example.org")
        draft.push(letter / EN, load(letter))
        report, _ = send.Sender(letter / EN, load(letter), send.SendOptions(service="smtp")).run()
        rows = ledger(letter)
        assert rows["fine@example.org"][0] == "sent"
        assert rows["slow@example.org"][0] == "sent" and rows["slow@example.org"][2] == 2, rows
        assert rows["busy@example.org"][0] == "sent"
        assert rows["gone@example.org"][0] == "failed" and "550" in rows["gone@example.org"][1]
        assert rows["full@example.org"][0] == "failed" and "gave up after 3" in \
            rows["full@example.org"][1]
        assert rows["dropped@example.org"][0] == "in_doubt"
        assert report.in_doubt == ["dropped@example.org"]
        assert rec.received["dropped@example.org"] == 1
        assert rec.received["gone@example.org"] == 0

        # Retrying failed recipients reaches only those; in doubt is never re-sent by it.
        rec.rcpt_faults.clear()
        retry, _ = send.Sender(letter / EN, load(letter),
                               send.SendOptions(service="smtp", retry_failed=True)).run()
        assert rec.received["gone@example.org"] == 1 and rec.received["full@example.org"] == 1
        assert rec.received["dropped@example.org"] == 1 and rec.received["fine@example.org"] == 1
        assert retry.sent == 5 and retry.in_doubt == ["dropped@example.org"]


def test_authentication_failure_stops_cleanly_and_resumes(letter, monkeypatch):
    write_list(letter, [(f"r{n}@example.org", "", "active") for n in range(5)])
    with SmtpServer() as smtp:
        for key, value in smtp_env(smtp).items():
            monkeypatch.setenv(key, value)
        smtp.recorder.mail_faults = ["530 5.7.0 Authentication required"]
        draft.push(letter / EN, load(letter))
        report, _ = send.Sender(letter / EN, load(letter), send.SendOptions(service="smtp")).run()
        assert "530" in report.stopped and report.pending == 5 and report.sent == 0
        report, _ = send.Sender(letter / EN, load(letter), send.SendOptions(service="smtp")).run()
        assert report.sent == 5 and report.complete
        assert set(smtp.recorder.received.values()) == {1}


def test_unreachable_server_stops_with_everyone_pending(letter, monkeypatch):
    from tests.smtp_server import free_port

    write_list(letter, [("a@example.org", "", "active")])
    monkeypatch.setenv("PUBLISH_SMTP_HOST", "127.0.0.1")
    monkeypatch.setenv("PUBLISH_SMTP_PORT", str(free_port()))
    monkeypatch.setenv("PUBLISH_SMTP_SECURITY", "none")
    draft.push(letter / EN, load(letter))
    result = run_publish("send", EN, "--service", "smtp", "--yes", cwd=letter)
    assert result.returncode == 1
    assert "cannot connect" in result.stderr and "Traceback" not in result.stderr
    assert ledger(letter)["a@example.org"][0] == "pending"


def _kill_midway(letter, smtp, sig, after: int) -> subprocess.CompletedProcess | None:
    env = {**os.environ, **smtp_env(smtp)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline.cli", "send", EN, "--service", "smtp", "--yes"],
        cwd=letter, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while sum(smtp.recorder.received.values()) < after and time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        time.sleep(0.01)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def _subscribers_and_draft(letter, count: int) -> list[str]:
    addresses = [f"sub{n}@example.org" for n in range(count)]
    write_list(letter, [(a, "", "active") for a in addresses])
    draft.push(letter / EN, load(letter))
    return addresses


def test_killed_send_resumes_every_recipient_exactly_once_except_in_doubt(letter):
    addresses = _subscribers_and_draft(letter, 2000)
    with SmtpServer(delay=0.001) as smtp:
        killed = _kill_midway(letter, smtp, signal.SIGKILL, after=400)
        assert killed.returncode == -signal.SIGKILL
        first_run = sum(smtp.recorder.received.values())
        assert 400 <= first_run < 2000
        rows = ledger(letter)
        assert sum(1 for state, *_ in rows.values() if state == "sending") <= 1

        resumed = run_publish("send", EN, "--service", "smtp", "--yes", "--json", cwd=letter,
                              env=smtp_env(smtp))
        assert resumed.returncode == 0, resumed.stderr
        report = json.loads(resumed.stdout)
        in_doubt = set(report["in_doubt"])
        assert len(in_doubt) <= 1
        received = smtp.recorder.received
        for address in addresses:
            if address in in_doubt:
                assert received[address] <= 1
            else:
                assert received[address] == 1, address
        assert report["sent"] == 2000 - len(in_doubt)


def test_ctrl_c_finishes_the_message_in_flight_and_resumes(letter):
    addresses = _subscribers_and_draft(letter, 600)
    with SmtpServer(delay=0.002) as smtp:
        stopped = _kill_midway(letter, smtp, signal.SIGINT, after=100)
        assert stopped.returncode == 130, stopped.stderr
        assert "Ctrl-C" in stopped.stderr
        rows = ledger(letter)
        assert not [(e, state, rest) for e, (state, *rest) in rows.items()
                    if state in ("sending", "in_doubt")]
        resumed = run_publish("send", EN, "--service", "smtp", "--yes", cwd=letter,
                              env=smtp_env(smtp))
        assert resumed.returncode == 0, resumed.stderr
        assert set(smtp.recorder.received.values()) == {1}
        assert sorted(smtp.recorder.received) == sorted(addresses)


# Substack --------------------------------------------------------------------------

def test_substack_publish_once_and_already_published(letter, substack):
    outcome = draft.push(letter / EN, load(letter), "substack")
    with pytest.raises(Exception, match="do not apply"):
        send.Sender(letter / EN, load(letter),
                    send.SendOptions(service="substack", list_name="other"))
    report, _ = send.Sender(letter / EN, load(letter),
                            send.SendOptions(service="substack")).run()
    assert report.note.startswith("published on Substack")
    assert substack.published == [int(outcome.remote_id)]
    assert substack.count("GET", rf"/api/v1/drafts/{outcome.remote_id}/prepublish") == 1
    with pytest.raises(PublishError, match="already published"):
        send.Sender(letter / EN, load(letter), send.SendOptions(service="substack")).run()
    assert substack.published == [int(outcome.remote_id)]
    with pytest.raises(PublishError, match="already sent"):
        draft.push(letter / EN, load(letter), "substack", force=True)


def test_substack_draft_published_elsewhere_is_not_published_again(letter, substack):
    outcome = draft.push(letter / EN, load(letter), "substack")
    substack.edit(int(outcome.remote_id), is_published=True, post_date="2025-01-01")
    with pytest.raises(PublishError, match="already published on Substack"):
        send.Sender(letter / EN, load(letter), send.SendOptions(service="substack")).run()
    assert substack.published == []
