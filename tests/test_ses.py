"""`publish send --service ses` against a real SES v2 emulator on loopback.

The emulator is the npm package `aws-ses-v2-local` (SendBulkEmail with inline templates,
replacement data and headers; GetAccount from AWS_SES_ACCOUNT). Per-entry failures,
throttling and a call held open (a kill or a timeout during a call) come from the proxy in
tests/ses_server.py, which answers them per the SES v2 API reference and forwards the rest.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from urllib.parse import parse_qs, urlsplit

import pytest

from pipeline import unsubscribe
from pipeline.render import personalize
from tests.conftest import copy_sample_newsletter, run_publish
from tests.ses_server import Emulator, SesProxy, account, aws_env, node_missing
from tests.test_send import SECRET, write_list

pytestmark = pytest.mark.skipif(node_missing(), reason="aws-ses-v2-local not installed "
                                "(.ci/run installs it)")

TINY = "issues/tiny.md"
# Braces and backslashes the template language must not read as its own.
TRICKY = "Literal {{not a variable}}, \\{{escaped}}, }}}} and {{{{raw}}}}."


@pytest.fixture(scope="module")
def emulator():
    server = Emulator()
    yield server
    server.stop()


@pytest.fixture
def ses(emulator):
    import urllib.request

    urllib.request.urlopen(urllib.request.Request(emulator.url + "/clear-store", method="POST"),
                           timeout=10).close()
    proxy = SesProxy(emulator)
    yield proxy
    proxy.stop()


@pytest.fixture
def letter(tmp_path):
    folder = copy_sample_newsletter(tmp_path / "letter")
    (folder / TINY).write_text(
        "---\ntitle: \"A short one {{about}} braces\"\ndate: 2025-02-01\nlang: en\n---\n\n"
        f"Hello there. {TRICKY}\n", "utf-8")
    return folder


def env_for(proxy: SesProxy, **more: str) -> dict[str, str]:
    return {**aws_env(proxy), "PUBLISH_UNSUBSCRIBE_SECRET": SECRET,
            "PUBLISH_RETRY_BACKOFF": "0.05", "PUBLISH_GREETING": "Hi %%name%%,", **more}


def publish(letter, proxy, *args: str, **more: str):
    return run_publish(*args, cwd=letter, env=env_for(proxy, **more))


def send_ses(letter, proxy, *more: str, **env: str):
    result = publish(letter, proxy, "send", TINY, "--service", "ses", "--yes", "--json", *more,
                     **env)
    assert result.stdout, result.stderr
    return result, json.loads(result.stdout)


def readers(count: int) -> list[tuple[str, str, str]]:
    return [(f"reader{n}@example.org", f"Reader {n}", "active") for n in range(count)]


def received(emulator: Emulator) -> Counter:
    return Counter(address for mail in emulator.emails() for address in mail["destination"]["to"])


def ledger_rows(letter) -> dict[str, tuple[str, str, str | None]]:
    db = sqlite3.connect(letter / ".publish" / "state.db")
    try:
        return {e: (s, r, m) for e, s, r, m in db.execute(
            "SELECT email, state, reason, remote_id FROM recipients")}
    finally:
        db.close()


def header(mail: dict, name: str) -> str:
    return next((h["value"] for h in mail.get("headers") or [] if h["name"] == name), "")


def test_ten_thousand_recipients_in_bulk_each_once_with_their_own_unsubscribe_link(
        letter, ses, emulator):
    write_list(letter, readers(10000))
    assert publish(letter, ses, "draft", TINY).returncode == 0
    result, report = send_ses(letter, ses, "--connections", "4")
    assert result.returncode == 0, result.stderr
    assert report["sent"] == 10000 and not report["in_doubt"] and not report["failed"]
    mails = emulator.emails()
    assert Counter(m["destination"]["to"][0] for m in mails) == Counter(
        {f"reader{n}@example.org": 1 for n in range(10000)})
    assert len(ses.calls) == 200 and all(len(c["BulkEmailEntries"]) == 50 for c in ses.calls)
    assert {c["ConfigurationSetName"] for c in ses.calls} == {"newsletter-events"}
    key = SECRET.encode()
    db = sqlite3.connect(letter / ".publish" / "state.db")
    subject, html, text = db.execute("SELECT subject, html, text FROM sends").fetchone()
    db.close()
    assert TRICKY.replace("\\", "") in text  # as Markdown reads it
    for mail in mails[::97]:  # a spread of them, read whole
        address = mail["destination"]["to"][0]
        number = address.removeprefix("reader").partition("@")[0]
        link = header(mail, "List-Unsubscribe").strip("<>").split(">")[0]
        token = parse_qs(urlsplit(link).query)["token"][0]
        assert unsubscribe.verify_token(key, token) == address
        assert header(mail, "List-Unsubscribe-Post") == "List-Unsubscribe=One-Click"
        assert header(mail, "List-Id").endswith(">")
        # Exactly the email publish froze, filled in for this reader: nothing in it was
        # read as template syntax.
        values = {"name": f"Reader {number}", "email": address, "unsubscribe_url": link}
        assert mail["body"]["text"] == personalize(text, values, escape=False)
        assert mail["body"]["html"] == personalize(html, values, escape=True)
        assert mail["subject"] == subject and "{{about}}" in subject
        assert f"Hi Reader {number}," in mail["body"]["text"]
    # Each reader's row holds the MessageId SES gave that reader's message. (Compared
    # reader by reader: the emulator draws its ids at random from 9e8 numbers, so two of
    # 10,000 are the same about one run in twenty.)
    rows = ledger_rows(letter)
    assert {email: m for email, (_, _, m) in rows.items()} == {
        mail["destination"]["to"][0]: mail["messageId"] for mail in mails}
    assert all(m for _, _, m in rows.values())


def test_a_call_that_fails_for_some_entries(letter, ses, emulator):
    write_list(letter, readers(120))
    ses.entry_status = {"reader3@example.org": ["MESSAGE_REJECTED"],
                        "reader7@example.org": ["TRANSIENT_FAILURE"],
                        "reader9@example.org": ["INVALID_PARAMETER"],
                        "reader60@example.org": ["TRANSIENT_FAILURE"] * 3}
    assert publish(letter, ses, "draft", TINY).returncode == 0
    result, report = send_ses(letter, ses)
    assert result.returncode == 0, result.stderr
    failed = {f["email"]: f["reason"] for f in report["failed"]}
    assert set(failed) == {"reader3@example.org", "reader9@example.org", "reader60@example.org"}
    assert "MESSAGE_REJECTED" in failed["reader3@example.org"]
    assert "gave up after 3 attempts" in failed["reader60@example.org"]
    assert report["sent"] == 117
    got = received(emulator)
    assert set(got.values()) == {1} and len(got) == 117 and "reader7@example.org" in got
    assert ledger_rows(letter)["reader7@example.org"][0] == "sent"


def test_throttling_slows_down_and_loses_no_one(letter, ses, emulator):
    write_list(letter, readers(150))
    ses.throttle_calls = 2
    ses.entry_status = {"reader120@example.org": ["ACCOUNT_THROTTLED"] * 4}
    assert publish(letter, ses, "draft", TINY).returncode == 0
    result, report = send_ses(letter, ses)
    assert result.returncode == 0, result.stderr
    assert report["sent"] == 150 and not report["failed"]
    assert Counter(received(emulator).values()) == {1: 150}
    assert len(ses.calls) == 3 + 2 + 4  # three calls, two throttled, four for reader120


def test_sigkill_during_a_call_then_resume_sends_no_one_twice(letter, ses, emulator):
    write_list(letter, readers(200))
    assert publish(letter, ses, "draft", TINY).returncode == 0
    ses.hold = threading.Event()
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline.cli", "send", TINY, "--service", "ses", "--yes",
         "--json"], cwd=letter, env={**__import__("os").environ, **env_for(ses)},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert ses.held.wait(60), "no call was made"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    ses.hold.set()
    ses.hold = None
    held = {e["Destination"]["ToAddresses"][0] for e in ses.calls[-1]["BulkEmailEntries"]}
    assert len(held) == 50
    result, report = send_ses(letter, ses)
    assert result.returncode == 0, result.stderr
    assert set(report["in_doubt"]) == held
    assert report["sent"] == 150
    assert Counter(received(emulator).values()) == {1: 200}  # the held call's 50 were sent once
    again = publish(letter, ses, "send", TINY, "--service", "ses", "--yes")
    assert again.returncode == 1 and "already sent" in again.stderr
    assert Counter(received(emulator).values()) == {1: 200}


def test_a_call_with_no_answer_leaves_its_recipients_in_doubt(letter, ses, emulator):
    write_list(letter, readers(100))
    assert publish(letter, ses, "draft", TINY).returncode == 0
    ses.hold, ses.hold_calls = threading.Event(), 1
    _, report = send_ses(letter, ses, PUBLISH_HTTP_TIMEOUT="1")
    first = {e["Destination"]["ToAddresses"][0] for e in ses.calls[0]["BulkEmailEntries"]}
    assert set(report["in_doubt"]) == first and report["sent"] == 50
    ses.hold.set()
    time.sleep(0.2)
    assert Counter(received(emulator).values()) == {1: 100}


def test_a_send_over_the_daily_quota_is_refused_unless_asked(letter, tmp_path):
    small = Emulator(account(max_rate=20, max_24h=100, sent=90))
    proxy = SesProxy(small)
    try:
        write_list(letter, readers(20))
        assert publish(letter, proxy, "draft", TINY).returncode == 0
        refused = publish(letter, proxy, "send", TINY, "--service", "ses", "--yes")
        assert refused.returncode == 1
        assert "24-hour quota has 10 left" in refused.stderr and "Traceback" not in refused.stderr
        assert small.emails() == []
        listed = json.loads(publish(letter, proxy, "sends", "--json").stdout)
        assert listed == []  # refused before anything was recorded
        result, report = send_ses(letter, proxy, "--yes-over-quota", "--rate", "1000")
        assert result.returncode == 0, result.stderr
        assert report["sent"] == 20
    finally:
        proxy.stop()
        small.stop()


def test_a_test_copy_goes_through_ses_and_records_nothing(letter, ses, emulator):
    write_list(letter, readers(3))
    assert publish(letter, ses, "draft", TINY).returncode == 0
    result = publish(letter, ses, "send", TINY, "--service", "ses", "--test", "me@example.net")
    assert result.returncode == 0, result.stderr
    [mail] = emulator.emails()
    assert mail["destination"]["to"] == ["me@example.net"]
    assert mail["subject"].startswith("[TEST] ")
    assert json.loads(publish(letter, ses, "sends", "--json").stdout) == []


def test_credentials_never_appear_in_output_or_state(letter, ses):
    write_list(letter, readers(5))
    assert publish(letter, ses, "draft", TINY).returncode == 0
    result, _ = send_ses(letter, ses)
    secret = aws_env(ses)["AWS_SECRET_ACCESS_KEY"]
    assert secret not in result.stdout + result.stderr
    assert secret.encode() not in (letter / ".publish" / "state.db").read_bytes()


def test_no_ses_emulator_needed_to_refuse_a_missing_configuration_set(letter, ses):
    write_list(letter, readers(2))
    assert publish(letter, ses, "draft", TINY).returncode == 0
    result = publish(letter, ses, "send", TINY, "--service", "ses", "--yes",
                     PUBLISH_SES_CONFIGURATION_SET="")
    assert result.returncode == 2 and "ses_configuration_set" in result.stderr
    assert ses.calls == []





@pytest.mark.parametrize("answer", [(200, b"<html>proxy error</html>"),
                                    (500, b'{"message": "InternalFailure"}'),
                                    (200, b'{"BulkEmailEntryResults": []}')],
                         ids=["garbage", "5xx", "too-few-results"])
def test_an_answer_that_cannot_be_read_leaves_the_call_in_doubt_and_stops(
        letter, ses, emulator, answer):
    write_list(letter, readers(80))
    assert publish(letter, ses, "draft", TINY).returncode == 0
    ses.replace_answer = answer
    result, report = send_ses(letter, ses)
    first = {e["Destination"]["ToAddresses"][0] for e in ses.calls[0]["BulkEmailEntries"]}
    assert set(report["in_doubt"]) == first
    assert result.returncode == 1 and report["stopped"] and len(ses.calls) == 1
    assert "Traceback" not in result.stderr and report["sent"] == 0
    ses.replace_answer = None
    resumed, again = send_ses(letter, ses)
    assert resumed.returncode == 0, resumed.stderr
    assert again["sent"] == 30 and set(again["in_doubt"]) == first
    assert Counter(received(emulator).values()) == {1: 80}  # nobody twice


def test_a_paused_account_stops_the_send_with_everyone_left_pending(letter, ses, emulator):
    write_list(letter, readers(60))
    ses.entry_status = {"reader10@example.org": ["ACCOUNT_SENDING_PAUSED"]}
    assert publish(letter, ses, "draft", TINY).returncode == 0
    result, report = send_ses(letter, ses)
    assert result.returncode == 1 and "ACCOUNT_SENDING_PAUSED" in report["stopped"]
    assert report["pending"] >= 1 and not report["in_doubt"]
    resumed, again = send_ses(letter, ses)
    assert resumed.returncode == 0, resumed.stderr
    assert again["sent"] == 60 and Counter(received(emulator).values()) == {1: 60}
