"""Substack as its users report it: custom-domain 403s, Cloudflare pages, two cookie names,
publishing that must say whether to email, and scheduling; against the loopback server."""

from __future__ import annotations

import datetime as dt
import json
import os

import pytest

from pipeline import draft, send, settings
from pipeline.errors import InputError, PublishError
from tests.conftest import copy_sample_newsletter, run_publish
from tests.substack_server import PUBLICATION_ID, SID, FakeSubstack

EN = "issues/2025-01-ai-art.md"


@pytest.fixture
def letter(tmp_path, monkeypatch):
    monkeypatch.setenv("PUBLISH_UNSUBSCRIBE_SECRET", "k" * 32)
    return copy_sample_newsletter(tmp_path / "letter")


def _env(server: FakeSubstack) -> dict[str, str]:
    return {"SUBSTACK_SID": SID, "SUBSTACK_PUBLICATION_URL": server.url,
            "SUBSTACK_API_URL": server.global_url}


def _load(folder, server, monkeypatch):
    for key, value in _env(server).items():
        monkeypatch.setenv(key, value)
    return settings.load(folder, env=dict(os.environ))


def _front(letter, extra: str) -> None:
    path = letter / EN
    text = path.read_text("utf-8")
    path.write_text(text.replace("---\n", "---\n" + extra, 1), "utf-8")


def _hosts(server, pattern: str = "/api/v1/drafts") -> list[str]:
    return [host for host, _, path, _ in server.log if path.startswith(pattern)]


# routes ---------------------------------------------------------------------------

def test_custom_domain_403_falls_back_to_the_global_route_and_remembers(letter):
    with FakeSubstack(custom_domain=True) as server:
        first = run_publish("draft", EN, "--service", "substack", cwd=letter, env=_env(server))
        assert first.returncode == 0, first.stderr
        assert "substack.com/api/v1/drafts?publication_id=777" in first.stderr
        assert len(server.drafts) == 1
        created = [q for h, m, p, q in server.log if m == "POST" and p == "/api/v1/drafts"]
        assert created[-1] == {"publication_id": [str(PUBLICATION_ID)]}
        tried_publication_host = _hosts(server).count("publication")

        (letter / EN).write_text((letter / EN).read_text("utf-8").replace(
            "Welcome to the first issue", "Welcome again to the first issue"), "utf-8")
        second = run_publish("draft", EN, "--service", "substack", cwd=letter,
                             env=_env(server))
        assert second.returncode == 0, second.stderr
        assert "Changed content" in second.stdout
        # Remembered: the publication host is not asked about drafts again.
        assert _hosts(server).count("publication") == tried_publication_host
        assert len(server.drafts) == 1


def test_cloudflare_challenge_page_is_one_line_and_never_dumped(letter, tmp_path):
    with FakeSubstack(challenge=True) as server:
        result = run_publish("draft", EN, "--service", "substack", cwd=letter,
                             env=_env(server))
        assert result.returncode == 0, result.stderr
        assert "Cloudflare challenge page" in result.stderr
        assert "<" not in result.stdout + result.stderr
        assert len(server.drafts) == 1

    other = copy_sample_newsletter(tmp_path / "other")
    with FakeSubstack(challenge="everywhere") as server:
        result = run_publish("draft", EN, "--service", "substack", cwd=other,
                             env=_env(server))
        assert result.returncode == 1
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and "Cloudflare challenge page" in lines[0]
        assert "<" not in lines[0] and "xxxx" not in lines[0]
        assert server.drafts == {}


@pytest.mark.parametrize("accepts", [frozenset({"connect.sid"}), frozenset({"substack.sid"})])
def test_either_cookie_name_works_and_debug_says_which(letter, accepts):
    with FakeSubstack(accepts=accepts, strict_cookies=True) as server:
        result = run_publish("--debug", "draft", EN, "--service", "substack", cwd=letter,
                             env=_env(server))
        assert result.returncode == 0, result.stderr
        name = next(iter(accepts))
        assert f"accepted the session cookie as {name}" in result.stderr
        assert "test-session" not in result.stdout + result.stderr  # the value: never
        before = len(server.cookies_seen)
        again = run_publish("draft", EN, "--service", "substack", "--force", cwd=letter,
                            env=_env(server))
        assert again.returncode == 0, again.stderr
        # The name that worked is remembered: the next run offers it alone, first time.
        assert all(c.startswith(f"{name}=") for c in server.cookies_seen[before:])


def test_a_host_taking_both_names_gets_both_at_once(letter):
    with FakeSubstack() as server:
        result = run_publish("--debug", "draft", EN, "--service", "substack", cwd=letter,
                             env=_env(server))
        assert result.returncode == 0, result.stderr
        assert "substack.sid and connect.sid (both names)" in result.stderr
        assert all("substack.sid=" in c and "connect.sid=" in c for c in server.cookies_seen)


# publishing -----------------------------------------------------------------------

def test_publish_says_send_and_sets_the_drafts_email_fields(letter, monkeypatch):
    with FakeSubstack() as server:
        s = _load(letter, server, monkeypatch)
        outcome = draft.push(letter / EN, s, "substack")
        # Someone unticked "send email" in the dashboard: publish sets it explicitly.
        server.edit(int(outcome.remote_id), should_send_email=False)
        report, _ = send.Sender(letter / EN, s, send.SendOptions(service="substack")).run()
        assert server.publish_bodies == [{"send": True, "share_automatically": False}]
        remote = server.drafts[int(outcome.remote_id)]
        assert remote["should_send_email"] is True and remote["audience"] == "everyone"
        assert remote["email_sent_at"] and "emailed at" in report.note


def test_publish_without_email_confirmation_is_loud_and_never_repeated(letter):
    with FakeSubstack(email_works=False) as server:
        env = _env(server)
        assert run_publish("draft", EN, "--service", "substack", cwd=letter,
                           env=env).returncode == 0
        result = run_publish("send", EN, "--service", "substack", "--yes", cwd=letter, env=env)
        assert result.returncode == 1
        assert "no email_sent_at" in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
        requests = len(server.log)
        again = run_publish("send", EN, "--service", "substack", "--yes", cwd=letter, env=env)
        assert again.returncode == 1 and "already published" in again.stderr
        assert len(server.log) == requests  # refused before any request
        assert len(server.published) == 1


def test_audience_and_section_from_front_matter(letter, monkeypatch):
    _front(letter, "audience: only_paid\nsection: 周报\n")
    with FakeSubstack() as server:
        s = _load(letter, server, monkeypatch)
        outcome = draft.push(letter / EN, s, "substack")
        remote = server.drafts[int(outcome.remote_id)]
        assert remote["audience"] == "only_paid" and remote["draft_section_id"] == 32
        send.Sender(letter / EN, s, send.SendOptions(service="substack")).run()
        assert server.drafts[int(outcome.remote_id)]["audience"] == "only_paid"


@pytest.mark.parametrize("front, message", [
    ("audience: paid_only\n", "front matter 'audience': must be one of everyone"),
    ("section: Nonexistent\n", "no section 'Nonexistent'"),
])
def test_bad_audience_or_section_is_refused_before_any_write(letter, front, message):
    _front(letter, front)
    with FakeSubstack() as server:
        result = run_publish("draft", EN, "--service", "substack", cwd=letter,
                             env=_env(server))
        assert result.returncode == 2, result.stderr
        assert message in result.stderr and f"{EN}:2:" in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
        assert server.writes() == 0 and server.drafts == {}
        if "audience" in front:
            assert server.log == []  # not even a lookup


def test_bad_audience_setting_is_refused_before_any_request(letter):
    with FakeSubstack() as server:
        result = run_publish("draft", EN, "--service", "substack", cwd=letter,
                             env={**_env(server), "PUBLISH_SUBSTACK_AUDIENCE": "paid"})
        assert result.returncode == 2 and "substack_audience" in result.stderr
        assert server.log == []


# scheduling -----------------------------------------------------------------------

def test_substack_schedule_list_and_unschedule(letter):
    with FakeSubstack() as server:
        env = _env(server)
        assert run_publish("draft", EN, "--service", "substack", cwd=letter,
                           env=env).returncode == 0
        remote_id = next(iter(server.drafts))
        at = (dt.datetime.now(dt.UTC) + dt.timedelta(days=2)).replace(microsecond=0)
        result = run_publish("send", EN, "--service", "substack", "--at",
                             at.isoformat(), "--yes", cwd=letter, env=env)
        assert result.returncode == 0, result.stderr
        assert server.drafts[remote_id]["trigger_at"] == at.isoformat().replace("+00:00", "Z")
        listing = run_publish("sends", cwd=letter, env=env)
        assert "scheduled; the service sends it" in listing.stdout and EN in listing.stdout
        scheduled = json.loads(run_publish("sends", "--json", cwd=letter, env=env).stdout)
        assert scheduled[0]["status"] == "scheduled" and scheduled[0]["by_service"]

        requests = len(server.log)
        now = run_publish("send", EN, "--service", "substack", "--yes", cwd=letter, env=env)
        assert now.returncode == 1 and "--unschedule" in now.stderr
        assert len(server.log) == requests and server.published == []

        off = run_publish("send", EN, "--service", "substack", "--unschedule", cwd=letter,
                          env=env)
        assert off.returncode == 0, off.stderr
        assert server.drafts[remote_id]["trigger_at"] is None
        assert server.count("DELETE", rf"/api/v1/drafts/{remote_id}/scheduled_release") == 1


@pytest.mark.parametrize("at, message", [
    ("2020-01-01T09:00+00:00", "in the past"),
    ("2030-03-31T02:30", "does not exist in Europe/Berlin"),
    ("2030-10-27T02:30", "happens twice in Europe/Berlin"),
    ("next tuesday", "not an ISO time"),
])
def test_bad_times_are_refused_before_any_request(letter, at, message):
    with FakeSubstack() as server:
        env = {**_env(server), "PUBLISH_TIMEZONE": "Europe/Berlin"}
        assert run_publish("draft", EN, "--service", "substack", cwd=letter,
                           env=env).returncode == 0
        requests = len(server.log)
        result = run_publish("send", EN, "--service", "substack", "--at", at, "--yes",
                             cwd=letter, env=env)
        assert result.returncode == 2, result.stderr
        assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
        assert len(server.log) == requests


def test_local_time_uses_the_timezone_setting(letter):
    from pipeline import schedule

    s = settings.load(letter, env={"PUBLISH_TIMEZONE": "Asia/Shanghai"})
    when = schedule.parse_when("2031-12-01T09:00", s)
    assert when == dt.datetime(2031, 12, 1, 1, 0, tzinfo=dt.UTC)
    with pytest.raises(InputError, match="no zone"):
        schedule.parse_when("2031-12-01T09:00", settings.load(letter, env={}))
    with pytest.raises(InputError, match="unknown time zone"):
        schedule.parse_when("2031-12-01T09:00",
                            settings.load(letter, env={"PUBLISH_TIMEZONE": "Mars/Olympus"}))
    with pytest.raises(PublishError):  # a zone with a path in it is not a zone
        schedule.parse_when("2031-12-01T09:00",
                            settings.load(letter, env={"PUBLISH_TIMEZONE": "../../etc/passwd"}))


@pytest.mark.parametrize("sid", ["substack.sid=s%3Aabc.def", "s%3Aabc; other=1", "s:abc def"])
def test_a_cookie_pasted_with_its_name_or_neighbours_is_refused_unsent(letter, sid):
    with FakeSubstack() as server:
        result = run_publish("draft", EN, "--service", "substack", cwd=letter,
                             env={**_env(server), "SUBSTACK_SID": sid})
        assert result.returncode == 2 and "value only" in result.stderr
        assert "abc" not in result.stderr
        assert server.log == []
