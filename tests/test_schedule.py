"""Scheduled self-sends: `publish send --at`, `publish due` from cron (several at once),
`--unschedule`, and `publish sends` listing them; against the real local outbox."""

from __future__ import annotations

import datetime as dt
import json
import mailbox
import os
import sqlite3
import subprocess
import sys
import time

import pytest

from pipeline import schedule, send, settings
from pipeline.errors import InputError, PublishError
from tests.conftest import ROOT, copy_sample_newsletter, run_publish

EN = "issues/2025-01-ai-art.md"
ACTIVE = 3  # active subscribers in the sample list


@pytest.fixture
def letter(tmp_path, monkeypatch):
    monkeypatch.setenv("PUBLISH_UNSUBSCRIBE_SECRET", "k" * 32)
    folder = copy_sample_newsletter(tmp_path / "letter")
    assert run_publish("draft", EN, cwd=folder).returncode == 0
    return folder


def _outbox(folder) -> list[str]:
    box = mailbox.Maildir(folder / "outbox", create=True)
    return sorted(box[key]["To"] for key in box.iterkeys())


def _schedule_in_the_past(folder, minutes_ago: float = 1.0, **options) -> None:
    """Scheduled earlier for a time that has now come (as if the clock moved on)."""
    due = time.time() - 60 * minutes_ago
    at = dt.datetime.fromtimestamp(due, dt.UTC).isoformat()
    schedule.schedule(folder / EN, settings.load(folder), send.SendOptions(**options), at,
                      now=due - 3600)


def test_send_at_is_recorded_and_listed_then_due_starts_it_once(letter):
    at = (dt.datetime.now(dt.UTC) + dt.timedelta(days=1)).isoformat(timespec="minutes")
    result = run_publish("send", EN, "--at", at, "--yes", cwd=letter)
    assert result.returncode == 0, result.stderr
    assert "publish due" in result.stdout
    listing = run_publish("sends", cwd=letter)
    assert "scheduled; `publish due` starts it" in listing.stdout
    assert "subscribers/main.csv via local" in listing.stdout
    early = run_publish("due", cwd=letter)
    assert early.returncode == 0 and early.stdout == ""  # quiet for cron
    assert _outbox(letter) == []
    # Scheduling the same send twice is refused; so is a send now.
    twice = run_publish("send", EN, "--at", at, "--yes", cwd=letter)
    assert twice.returncode == 1 and "--unschedule" in twice.stderr
    now = run_publish("send", EN, "--yes", cwd=letter)
    assert now.returncode == 1 and "--unschedule" in now.stderr
    assert _outbox(letter) == []

    # Later (the time has come): the same record, moved into the past.
    db = sqlite3.connect(letter / ".publish" / "state.db")
    db.execute("UPDATE scheduled SET due_at = ?", (time.time() - 7200,))
    db.commit()
    db.close()
    due = run_publish("due", cwd=letter)
    assert due.returncode == 0, due.stderr
    assert "120 min late" in due.stdout and "Sent      3" in due.stdout
    assert len(_outbox(letter)) == ACTIVE
    assert run_publish("due", cwd=letter).stdout == ""
    assert len(_outbox(letter)) == ACTIVE
    listing = json.loads(run_publish("sends", "--json", cwd=letter).stdout)
    assert listing[0]["status"] == "scheduled: done" and listing[0]["id"] == listing[1]["id"]
    assert listing[1]["counts"] == {"sent": 3, "skipped": 1}


def test_a_due_run_that_died_is_resumed_by_the_next_one(letter):
    _schedule_in_the_past(letter, minutes_ago=30)
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    db = sqlite3.connect(letter / ".publish" / "state.db")
    # As if a `publish due` claimed it and was killed before sending anything.
    db.execute("UPDATE scheduled SET status = 'started', started_pid = ?, started_at = ?",
               (int(gone), time.time()))
    db.commit()
    db.close()
    due = run_publish("due", cwd=letter)
    assert due.returncode == 0, due.stderr
    assert "Resumed" in due.stdout and "30 min late" in due.stdout
    assert len(_outbox(letter)) == ACTIVE
    assert run_publish("due", cwd=letter).stdout == ""
    assert len(_outbox(letter)) == ACTIVE


def test_concurrent_due_runs_start_each_send_exactly_once(letter):
    _schedule_in_the_past(letter)
    env = {**os.environ, "PUBLISH_UNSUBSCRIBE_SECRET": "k" * 32}
    runs = [subprocess.Popen([sys.executable, "-m", "pipeline.cli", "due", "--json"],
                             cwd=letter, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True) for _ in range(4)]
    outputs = [run.communicate(timeout=120) for run in runs]
    assert all(run.returncode == 0 for run in runs), outputs
    started = [item for out, _ in outputs for item in json.loads(out or "[]")]
    assert len(started) == 1 and started[0]["report"]["sent"] == ACTIVE
    assert len(_outbox(letter)) == ACTIVE
    assert len(set(_outbox(letter))) == ACTIVE


def test_unschedule_cancels_and_due_then_sends_nothing(letter):
    _schedule_in_the_past(letter)
    off = run_publish("send", EN, "--unschedule", cwd=letter)
    assert off.returncode == 0, off.stderr
    assert run_publish("due", cwd=letter).stdout == ""
    assert _outbox(letter) == []
    again = run_publish("send", EN, "--unschedule", cwd=letter)
    assert again.returncode == 2 and "not scheduled" in again.stderr


def test_a_draft_changed_after_scheduling_is_not_sent(letter):
    _schedule_in_the_past(letter)
    path = letter / EN
    path.write_text(path.read_text("utf-8").replace("Welcome to the first issue",
                                                    "Welcome, changed, to the first issue"),
                    "utf-8")
    assert run_publish("draft", EN, cwd=letter).returncode == 0
    due = run_publish("due", cwd=letter)
    assert due.returncode == 1
    assert "the draft changed after the send was scheduled" in due.stderr
    assert _outbox(letter) == []
    listing = json.loads(run_publish("sends", "--json", cwd=letter).stdout)
    assert listing[0]["status"] == "scheduled: failed"


def test_audience_is_read_when_the_send_starts(letter):
    _schedule_in_the_past(letter)
    csv = letter / "subscribers" / "main.csv"
    csv.write_text(csv.read_text("utf-8").replace("grace@example.net,Grace Hopper,active",
                                                  "grace@example.net,Grace Hopper,unsubscribed"),
                   "utf-8")
    assert run_publish("due", cwd=letter).returncode == 0
    assert len(_outbox(letter)) == ACTIVE - 1
    assert not any("grace" in to for to in _outbox(letter))


def test_bad_times_record_nothing(letter):
    for at, message in (("yesterday", "not an ISO time"), ("2001-02-03T04:05Z", "in the past"),
                        ("2031-02-03", "give a time of day"),
                        ("2031-02-03T04:05", "has no zone")):
        result = run_publish("send", EN, "--at", at, "--yes", cwd=letter)
        assert result.returncode == 2 and message in result.stderr, (at, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1
    assert run_publish("sends", cwd=letter).stdout.strip() == "No sends yet."


def test_a_send_already_done_cannot_be_scheduled(letter):
    assert run_publish("send", EN, "--yes", cwd=letter).returncode == 0
    at = (dt.datetime.now(dt.UTC) + dt.timedelta(days=1)).isoformat()
    with pytest.raises(PublishError, match="already sent"):
        schedule.schedule(letter / EN, settings.load(letter), send.SendOptions(), at)


def test_due_with_no_state_database_is_quiet(tmp_path):
    folder = tmp_path / "empty"
    folder.mkdir()
    (folder / "publish.toml").write_text('name = "x"\n', "utf-8")
    result = run_publish("due", cwd=folder)
    assert result.returncode == 0 and result.stdout == "" and result.stderr == ""
    assert not (folder / ".publish").exists()


def test_parse_when_rejects_what_it_cannot_place(letter):
    s = settings.load(letter, env={"PUBLISH_TIMEZONE": "America/New_York"})
    # 2030-03-10 02:30 does not exist in New York; 2030-11-03 01:30 happens twice.
    with pytest.raises(InputError, match="does not exist"):
        schedule.parse_when("2030-03-10T02:30", s)
    with pytest.raises(InputError, match=r"happens twice.*-04:00.*-05:00"):
        schedule.parse_when("2030-11-03T01:30", s)
    assert schedule.parse_when("2030-11-03T01:30-05:00", s).hour == 6
    assert schedule.parse_when("2030-11-03T12:00Z", s).hour == 12
    assert ROOT.exists()


@pytest.mark.parametrize("flag", ["--dry-run", "--redraft", "--retry-failed",
                                  "--test=me@letter.example"])
def test_flags_that_do_not_go_with_at_record_nothing(letter, flag):
    at = (dt.datetime.now(dt.UTC) + dt.timedelta(days=1)).isoformat()
    result = run_publish("send", EN, "--at", at, flag, "--yes", cwd=letter)
    assert result.returncode == 2 and "does not go with --at" in result.stderr
    assert run_publish("sends", cwd=letter).stdout.strip() == "No sends yet."


def test_a_due_send_whose_issue_is_gone_fails_in_one_line(letter):
    _schedule_in_the_past(letter)
    (letter / EN).rename(letter / "issues" / "renamed.md")
    due = run_publish("due", cwd=letter)
    assert due.returncode == 1 and "no such file" in due.stderr
    assert len(due.stderr.strip().splitlines()) == 1
    assert _outbox(letter) == []
    assert run_publish("due", cwd=letter).stdout == ""  # failed for good, not retried


def test_two_schedules_at_once_record_one(letter):
    at = (dt.datetime.now(dt.UTC) + dt.timedelta(days=1)).isoformat()
    env = {**os.environ, "PUBLISH_UNSUBSCRIBE_SECRET": "k" * 32}
    runs = [subprocess.Popen([sys.executable, "-m", "pipeline.cli", "send", EN, "--at", at,
                              "--yes"], cwd=letter, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True) for _ in range(3)]
    results = [(run.wait(timeout=120), run.communicate()) for run in runs]
    assert sorted(code for code, _ in results) == [0, 1, 1], results
    assert all("--unschedule" in err for code, (_, err) in results if code)
    db = sqlite3.connect(letter / ".publish" / "state.db")
    assert db.execute("SELECT count(*) FROM scheduled").fetchone()[0] == 1


def test_a_due_send_killed_midway_is_resumed_and_nobody_gets_two(letter):
    import signal

    rows = ["email,name,status,created_at"] + [f"r{i}@letter.example,R{i},active,"
                                               for i in range(200)]
    (letter / "subscribers" / "main.csv").write_text("\n".join(rows) + "\n", "utf-8")
    _schedule_in_the_past(letter, rate=40.0)  # five seconds of sending
    env = {**os.environ, "PUBLISH_UNSUBSCRIBE_SECRET": "k" * 32}
    first = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "due"], cwd=letter,
                             env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while len(_outbox(letter)) < 20 and time.monotonic() < deadline:
        time.sleep(0.1)
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=30)
    sent_before = len(_outbox(letter))
    assert 0 < sent_before < 200
    second = run_publish("due", cwd=letter)
    assert second.returncode == 0, second.stderr
    assert "Resumed" in second.stdout
    delivered = _outbox(letter)
    assert len(delivered) == len(set(delivered))  # nobody twice
    db = sqlite3.connect(letter / ".publish" / "state.db")
    states = dict(db.execute("SELECT state, count(*) FROM recipients GROUP BY state"))
    sent, in_doubt = states.get("sent", 0), states.get("in_doubt", 0)
    # A message the kill caught between the outbox and the ledger is in doubt, not resent.
    assert sent <= len(delivered) <= sent + in_doubt and in_doubt <= 1
    assert sent + in_doubt == 200
    assert run_publish("due", cwd=letter).stdout == ""
