"""`--service buttondown` against a strict loopback Buttondown: drafts that never send by
themselves, updates in place, edits noticed, one send, scheduling, keys never shown."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from tests.buttondown_server import KEY, FakeButtondown
from tests.conftest import copy_sample_newsletter, run_publish

EN = "issues/2025-01-ai-art.md"
ZH = "issues/2025-02-video-models.md"


@pytest.fixture
def letter(tmp_path, monkeypatch):
    monkeypatch.setenv("PUBLISH_UNSUBSCRIBE_SECRET", "k" * 32)
    return copy_sample_newsletter(tmp_path / "letter")


@pytest.fixture
def buttondown():
    with FakeButtondown() as server:
        yield server


def _env(server, key=KEY):
    return {"BUTTONDOWN_API_KEY": key, "BUTTONDOWN_API_URL": server.url}


def _publish(letter, server, *args, key=KEY):
    return run_publish(*args, cwd=letter, env=_env(server, key))


def _no_request_ever_omitted_draft_status(server) -> None:
    creates = [body for method, path, body in server.log
               if method == "POST" and path == "/v1/emails"]
    assert creates and all(body.get("status") == "draft" for body in creates)
    assert server.created_without_status == 0


def test_draft_is_created_once_updated_in_place_and_never_sent_by_itself(letter, buttondown):
    first = _publish(letter, buttondown, "draft", EN, "--service", "buttondown")
    assert first.returncode == 0, first.stderr
    assert len(buttondown.emails) == 1
    email = next(iter(buttondown.emails.values()))
    assert email["status"] == "draft"
    assert email["subject"].startswith("Pixels & Prose #1")
    assert email["body"].startswith("<!-- buttondown-editor-mode: fancy -->")
    assert "<table" in email["body"] or "<p" in email["body"]

    path = letter / EN
    path.write_text(path.read_text("utf-8").replace("Welcome to the first issue",
                                                    "Welcome back to the first issue"), "utf-8")
    second = _publish(letter, buttondown, "draft", EN, "--service", "buttondown")
    assert second.returncode == 0, second.stderr
    assert "Changed content" in second.stdout
    assert len(buttondown.emails) == 1 and "Welcome back" in email["body"]
    assert buttondown.count("PATCH", r"/v1/emails/[\w-]+") == 1
    assert email["status"] == "draft"
    assert _publish(letter, buttondown, "draft", ZH, "--service", "buttondown").returncode == 0
    assert len(buttondown.emails) == 2
    _no_request_ever_omitted_draft_status(buttondown)
    # Every update says draft too: nothing but `publish send` moves an email out of draft.
    patches = [body for method, _, body in buttondown.log if method == "PATCH"]
    assert all(body.get("status") == "draft" for body in patches)


def test_edit_on_buttondown_is_refused_without_force(letter, buttondown):
    assert _publish(letter, buttondown, "draft", EN, "--service", "buttondown").returncode == 0
    email_id = next(iter(buttondown.emails))
    buttondown.edit(email_id, subject="Retitled on Buttondown")
    path = letter / EN
    path.write_text(path.read_text("utf-8").replace("Welcome to the first issue",
                                                    "Welcome again to the first issue"), "utf-8")
    refused = _publish(letter, buttondown, "draft", EN, "--service", "buttondown")
    assert refused.returncode == 1 and "edited on Buttondown" in refused.stderr
    assert buttondown.emails[email_id]["subject"] == "Retitled on Buttondown"
    forced = _publish(letter, buttondown, "draft", EN, "--service", "buttondown", "--force")
    assert forced.returncode == 0, forced.stderr
    assert buttondown.emails[email_id]["subject"].startswith("Pixels & Prose #1")


def test_send_once_and_never_twice(letter, buttondown):
    assert _publish(letter, buttondown, "draft", EN, "--service", "buttondown").returncode == 0
    email_id = next(iter(buttondown.emails))
    sent = _publish(letter, buttondown, "send", EN, "--service", "buttondown", "--yes")
    assert sent.returncode == 0, sent.stderr
    assert buttondown.emails[email_id]["status"] == "about_to_send"
    requests = len(buttondown.log)
    again = _publish(letter, buttondown, "send", EN, "--service", "buttondown", "--yes")
    assert again.returncode == 1 and "already published" in again.stderr
    assert len(buttondown.log) == requests  # refused before any request
    _no_request_ever_omitted_draft_status(buttondown)


def test_sent_elsewhere_is_not_sent_again(letter, buttondown):
    assert _publish(letter, buttondown, "draft", EN, "--service", "buttondown").returncode == 0
    email_id = next(iter(buttondown.emails))
    buttondown.edit(email_id, status="sent")
    result = _publish(letter, buttondown, "send", EN, "--service", "buttondown", "--yes")
    assert result.returncode == 1 and "already sent on Buttondown" in result.stderr
    assert buttondown.count("PATCH", r"/v1/emails/[\w-]+") == 0


def test_schedule_and_unschedule(letter, buttondown):
    assert _publish(letter, buttondown, "draft", EN, "--service", "buttondown").returncode == 0
    email = next(iter(buttondown.emails.values()))
    at = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=5)).replace(microsecond=0)
    result = _publish(letter, buttondown, "send", EN, "--service", "buttondown", "--at",
                      at.isoformat(), "--yes")
    assert result.returncode == 0, result.stderr
    assert email["status"] == "scheduled"
    assert dt.datetime.fromisoformat(email["publish_date"]) == at
    listing = json.loads(_publish(letter, buttondown, "sends", "--json").stdout)
    assert listing[0]["service"] == "buttondown" and listing[0]["status"] == "scheduled"
    twice = _publish(letter, buttondown, "send", EN, "--service", "buttondown", "--at",
                     (at + dt.timedelta(hours=1)).isoformat(), "--yes")
    assert twice.returncode == 1 and "--unschedule" in twice.stderr
    off = _publish(letter, buttondown, "send", EN, "--service", "buttondown", "--unschedule")
    assert off.returncode == 0, off.stderr
    assert email["status"] == "draft" and email["publish_date"] is None
    path = letter / EN
    path.write_text(path.read_text("utf-8").replace("Welcome to the first issue",
                                                    "Welcome later to the first issue"), "utf-8")
    again = _publish(letter, buttondown, "draft", EN, "--service", "buttondown")
    assert again.returncode == 0, again.stderr  # our own schedule is not taken for an edit
    assert "Welcome later" in email["body"]


@pytest.mark.parametrize("key, code, message", [
    ("", 2, "BUTTONDOWN_API_KEY is not set"),
    ("Token 5a2e9c1e", 2, "not a Buttondown API key"),
    ("5a2e9c1e-3f4b-4c8d-9e0f-SECRETSECRET", 2, "not a Buttondown API key"),
    ("00000000-0000-4000-8000-000000000000", 1, "Buttondown refused BUTTONDOWN_API_KEY"),
])
def test_bad_keys_are_one_line_and_never_shown(letter, buttondown, key, code, message):
    result = _publish(letter, buttondown, "draft", EN, "--service", "buttondown", key=key)
    assert result.returncode == code
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    if key:
        assert key not in result.stdout + result.stderr
    if code == 2:
        assert buttondown.log == []  # refused before any request
    assert buttondown.emails == {}


def test_past_time_is_refused_before_any_request(letter, buttondown):
    assert _publish(letter, buttondown, "draft", EN, "--service", "buttondown").returncode == 0
    requests = len(buttondown.log)
    result = _publish(letter, buttondown, "send", EN, "--service", "buttondown", "--at",
                      "2001-01-01T00:00Z", "--yes")
    assert result.returncode == 2 and "in the past" in result.stderr
    assert len(buttondown.log) == requests


def test_a_schedule_whose_time_passed_is_not_sent_again(letter, buttondown):
    import sqlite3
    import time

    assert _publish(letter, buttondown, "draft", EN, "--service", "buttondown").returncode == 0
    at = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=5)).isoformat()
    assert _publish(letter, buttondown, "send", EN, "--service", "buttondown", "--at", at,
                    "--yes").returncode == 0
    db = sqlite3.connect(letter / ".publish" / "state.db")
    db.execute("UPDATE scheduled SET due_at = ?", (time.time() - 60,))  # the time came
    db.commit()
    db.close()
    requests = len(buttondown.log)
    result = _publish(letter, buttondown, "send", EN, "--service", "buttondown", "--yes")
    assert result.returncode == 1 and "has published it; nothing sent now" in result.stderr
    assert len(buttondown.log) == requests
    assert "sent by the service" in _publish(letter, buttondown, "sends").stdout
