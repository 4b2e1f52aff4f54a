"""Attacks on the send's promises: sends started together, faults at every step, a full
disk, a locked database, odd addresses, servers that answer garbage. Real processes, a real
SMTP server on loopback, the real state database."""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from pipeline import draft, ledger, send, state
from tests.conftest import ROOT, copy_sample_newsletter, run_publish
from tests.smtp_server import SmtpServer
from tests.test_send import EN, SECRET, load, smtp_env, write_list
from tests.test_send import ledger as ledger_rows


@pytest.fixture
def letter(tmp_path, monkeypatch):
    monkeypatch.setenv("PUBLISH_UNSUBSCRIBE_SECRET", SECRET)
    monkeypatch.setenv("PUBLISH_RETRY_BACKOFF", "0.05")
    return copy_sample_newsletter(tmp_path / "letter")


# Imports publish, then waits for the start file: every process leaves the line together.
AT_THE_LINE = (
    "import os, sys, time\n"
    "from pipeline import cli\n"
    "start = sys.argv[1]\n"
    "open(start + '.' + str(os.getpid()), 'w').close()\n"
    "while not os.path.exists(start):\n"
    "    time.sleep(0.001)\n"
    "sys.argv = ['publish'] + sys.argv[2:]\n"
    "cli.main()\n"
)


def start_together(folder: Path, count: int, *args: str, env: dict) -> list:
    """`count` real `publish` processes released at the same instant; their results."""
    start = folder.parent / f"start-{time.monotonic_ns()}"
    procs = [subprocess.Popen([sys.executable, "-c", AT_THE_LINE, str(start), *args],
                              cwd=folder, env={**os.environ, **env, "PYTHONPATH": str(ROOT)},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(count)]
    deadline = time.monotonic() + 60
    while len(list(folder.parent.glob(start.name + ".*"))) < count:
        assert time.monotonic() < deadline, "the processes did not get ready"
        time.sleep(0.01)
    start.touch()
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        results.append(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
    return results


def sends_recorded(folder: Path) -> list[dict]:
    return json.loads(run_publish("sends", "--json", cwd=folder).stdout)


def one_clear_line(result) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    return lines[0]


def outbox_count(folder: Path) -> Counter:
    """Messages in the outbox by their To: address (read raw: it may be UTF-8)."""
    counts: Counter = Counter()
    for path in (folder / "outbox" / "new").iterdir():
        head = path.read_bytes().split(b"\r\n\r\n", 1)[0].decode("utf-8")
        [to] = [line[4:] for line in head.split("\r\n") if line.startswith("To: ")]
        counts[to.rpartition("<")[2].rstrip(">")] += 1
    return counts


# 1. sends started together -------------------------------------------------------------

@pytest.mark.parametrize("service", ["local", "smtp"])
def test_sends_started_together_reach_each_reader_once(letter, service):
    addresses = [f"reader{n}@example.org" for n in range(300)]
    write_list(letter, [(a, "", "active") for a in addresses])
    draft.push(letter / EN, load(letter))
    with SmtpServer(delay=0.001) as smtp:
        env = smtp_env(smtp) if service == "smtp" else {}
        results = start_together(letter, 5, "send", EN, "--service", service, "--yes",
                                 env=env)
        winners = [r for r in results if r.returncode == 0]
        refused = [r for r in results if r.returncode != 0]
        assert len(winners) == 1, [r.stderr for r in results]
        for result in refused:
            assert result.returncode == 1
            line = one_clear_line(result)
            assert "is running" in line or "already sent" in line, line
        assert len(sends_recorded(letter)) == 1  # a refused run recorded nothing
        resumed = run_publish("send", EN, "--service", service, "--yes", cwd=letter, env=env)
        assert resumed.returncode == 1 and "already sent" in one_clear_line(resumed)
        received = smtp.recorder.received if service == "smtp" else outbox_count(letter)
    assert sorted(received) == sorted(addresses)
    assert set(received.values()) == {1}


def test_sends_started_together_then_killed_resume_once(letter):
    """Together, the winner killed part-way, then several resumes together: still once."""
    addresses = [f"reader{n}@example.org" for n in range(600)]
    write_list(letter, [(a, "", "active") for a in addresses])
    draft.push(letter / EN, load(letter))
    with SmtpServer(delay=0.002) as smtp:
        smtp.recorder.on_message = lambda _, total: total == 150 and os.kill(
            winner_pid[0], signal.SIGKILL)
        winner_pid = [0]
        ready = threading.Event()

        def find_winner():  # the process holding the send's lock
            while not ready.is_set():
                with sqlite3.connect(letter / ".publish" / "state.db") as db:
                    with_lock = db.execute("SELECT lock_pid FROM sends").fetchone()
                if with_lock and with_lock[0]:
                    winner_pid[0] = with_lock[0]
                    return
                time.sleep(0.002)

        draft.push(letter / EN, load(letter))
        watcher = threading.Thread(target=find_winner)
        watcher.start()
        first = start_together(letter, 4, "send", EN, "--service", "smtp", "--yes",
                               env=smtp_env(smtp))
        ready.set()
        watcher.join()
        assert sorted(r.returncode for r in first) == [-signal.SIGKILL, 1, 1, 1], first
        smtp.recorder.on_message = None
        second = start_together(letter, 4, "send", EN, "--service", "smtp", "--yes",
                                "--json", env=smtp_env(smtp))
        [report] = [json.loads(r.stdout) for r in second if r.returncode == 0]
        received = smtp.recorder.received
    assert len(report["in_doubt"]) <= 1
    for address in addresses:
        assert received[address] == (received[address] if address in report["in_doubt"]
                                     else 1), address
    assert report["sent"] + len(report["in_doubt"]) == len(addresses)


def test_a_crash_between_claim_and_settle_leaves_the_reader_in_doubt(letter):
    """The ledger's crash rule, with a real process dying right after its claim."""
    write_list(letter, [("a@example.org", "", "active"), ("b@example.org", "", "active")])
    draft.push(letter / EN, load(letter))
    script = (
        "import os, sys\n"
        "from pipeline import ledger, state, settings\n"
        "from pathlib import Path\n"
        "db = state.connect(Path('.publish'))\n"
        "key = ledger.SendKey('x.md', 'local', 'main')\n"
        "content = ledger.Content('r', 's', 'h', 't')\n"
        "rows = [('a@example.org', 'a@example.org', '', 'pending', ''),\n"
        "        ('b@example.org', 'b@example.org', '', 'pending', '')]\n"
        "opened = ledger.open_send(db, key, new_content=lambda: content,\n"
        "                          audience=lambda: rows, current_revision=None)\n"
        "first = ledger.pending(db, opened.send_id, 0, 1)[0]\n"
        "assert ledger.claim(db, first[0], '<m@x>')\n"
        "os._exit(9)\n")
    crashed = subprocess.run([sys.executable, "-c", script], cwd=letter, capture_output=True,
                             text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert crashed.returncode == 9, crashed.stderr
    db = state.connect(letter / ".publish")
    try:
        key = ledger.SendKey("x.md", "local", "main")
        opened = ledger.open_send(db, key, new_content=lambda: pytest.fail("resumed"),
                                  audience=lambda: [], current_revision=None)
        assert opened.counts == {"in_doubt": 1, "pending": 1}
        assert "in doubt" in opened.notes[0]
        # Claimed by this run: a second claim of the same row is refused.
        row = ledger.pending(db, opened.send_id, 0, 1)[0]
        assert ledger.claim(db, row[0], "<1@x>") and not ledger.claim(db, row[0], "<2@x>")
    finally:
        db.close()


# 3. any error in a worker stops the send cleanly -----------------------------------------

NON_ASCII = ["user@bücher.de", "Café@example.org", "chloé@exämple.fr", "plain@example.org"]
NAMES = {"chloé@exämple.fr": "Chloé Dupont", "user@bücher.de": "Jürgen"}


def test_internationalised_addresses_in_the_local_outbox(letter):
    write_list(letter, [(a, NAMES.get(a, ""), "active") for a in NON_ASCII])
    draft.push(letter / EN, load(letter))
    result = run_publish("send", EN, "--yes", "--json", cwd=letter)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["sent"] == 4
    assert sorted(outbox_count(letter)) == sorted(
        ["user@xn--bcher-kva.de", "Café@example.org", "chloé@xn--exmple-cua.fr",
         "plain@example.org"])


@pytest.mark.parametrize("pipelining", [True, False], ids=["pipelining", "one-by-one"])
@pytest.mark.parametrize("smtputf8", [True, False], ids=["smtputf8", "ascii-only"])
def test_internationalised_addresses_over_smtp(letter, smtputf8, pipelining):
    write_list(letter, [(a, NAMES.get(a, ""), "active") for a in NON_ASCII])
    draft.push(letter / EN, load(letter))
    with SmtpServer(smtputf8=smtputf8, pipelining=pipelining) as smtp:
        result = run_publish("send", EN, "--service", "smtp", "--yes", "--json", cwd=letter,
                             env=smtp_env(smtp))
        received = smtp.recorder.received
        messages = smtp.recorder.messages
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert received["user@xn--bcher-kva.de"] == 1 and received["plain@example.org"] == 1
    if smtputf8:
        assert report["sent"] == 4 and not report["failed"]
        assert received["Café@example.org"] == 1 and received["chloé@xn--exmple-cua.fr"] == 1
        assert b"To: Caf\xc3\xa9@example.org" in messages["Café@example.org"][0]
        chloe = messages["chloé@xn--exmple-cua.fr"][0]
        assert "<chloé@xn--exmple-cua.fr>".encode() in chloe and b"Chlo=C3=A9" in chloe
    else:
        assert report["sent"] == 2 and report["pending"] == 0
        assert sorted(f["email"] for f in report["failed"]) == ["Café@example.org",
                                                               "chloé@exämple.fr"]
        assert all("SMTPUTF8" in f["reason"] for f in report["failed"])
        assert sum(received.values()) == 2


def test_a_non_ascii_sender_without_smtputf8_stops_with_everyone_pending(letter):
    write_list(letter, [("a@example.org", "", "active"), ("b@example.org", "", "active")])
    env = {"PUBLISH_SENDER": "Lëttres <lëttres@pixels-and-prose.example>"}
    draft.push(letter / EN, load(letter, sender=env["PUBLISH_SENDER"]))
    with SmtpServer() as smtp:
        result = run_publish("send", EN, "--service", "smtp", "--yes", cwd=letter,
                             env={**smtp_env(smtp), **env})
        assert result.returncode == 1
        assert "SMTPUTF8" in one_clear_line(result)
        assert sum(smtp.recorder.received.values()) == 0
    assert {s for s, *_ in ledger_rows(letter).values()} == {"pending"}
    with SmtpServer(smtputf8=True) as smtp:
        result = run_publish("send", EN, "--service", "smtp", "--yes", cwd=letter,
                             env={**smtp_env(smtp), **env})
        assert result.returncode == 0, result.stderr
        assert dict(smtp.recorder.received) == {"a@example.org": 1, "b@example.org": 1}


def test_a_test_copy_to_an_internationalised_address(letter):
    draft.push(letter / EN, load(letter))
    with SmtpServer() as smtp:
        result = run_publish("send", EN, "--service", "smtp", "--test", "Éditrice@bücher.de",
                             cwd=letter, env=smtp_env(smtp))
        assert result.returncode == 1 and "SMTPUTF8" in one_clear_line(result)
        result = run_publish("send", EN, "--service", "smtp", "--test", "editor@bücher.de",
                             cwd=letter, env=smtp_env(smtp))
        assert result.returncode == 0, result.stderr
        assert dict(smtp.recorder.received) == {"editor@xn--bcher-kva.de": 1}


def test_a_non_ascii_smtp_password_logs_in_as_utf8(letter, monkeypatch):
    write_list(letter, [("a@example.org", "", "active"), ("b@example.org", "", "active")])
    draft.push(letter / EN, load(letter))
    with SmtpServer(credentials=("lettres", "mot-de-passe-été-✓")) as smtp:
        env = {**smtp_env(smtp), "PUBLISH_SMTP_USERNAME": "lettres"}
        wrong = run_publish("send", EN, "--service", "smtp", "--yes", cwd=letter,
                            env={**env, "SMTP_PASSWORD": "mot-de-passe-éte-✗"})
        assert wrong.returncode == 1 and "login refused" in wrong.stderr
        assert "mot-de-passe" not in wrong.stderr + wrong.stdout
        assert sum(smtp.recorder.received.values()) == 0
        assert {s for s, *_ in ledger_rows(letter).values()} == {"pending"}
        right = run_publish("send", EN, "--service", "smtp", "--yes", cwd=letter,
                            env={**env, "SMTP_PASSWORD": "mot-de-passe-été-✓"})
        assert right.returncode == 0, right.stderr
        assert smtp.recorder.logins[-1] == (b"lettres", "mot-de-passe-été-✓".encode())
        assert dict(smtp.recorder.received) == {"a@example.org": 1, "b@example.org": 1}


@pytest.mark.parametrize("flag, env, what", [
    (["--rate", "1e-300"], {}, "--rate"),
    (["--rate", "nan"], {}, "--rate"),
    (["--rate", "inf"], {}, "--rate"),
    ([], {"PUBLISH_RETRY_BACKOFF": "-1"}, "retry_backoff"),
    ([], {"PUBLISH_RETRY_BACKOFF": "1e309"}, "retry_backoff"),
    ([], {"PUBLISH_SMTP_PORT": "inf"}, "smtp_port"),
    ([], {"PUBLISH_SMTP_PORT": "nan"}, "smtp_port"),
    ([], {"PUBLISH_SMTP_PORT": "70000"}, "smtp_port"),
    ([], {"PUBLISH_SMTP_PORT": "25.5"}, "smtp_port"),
    ([], {"PUBLISH_HTTP_TIMEOUT": "nan"}, "http_timeout"),
    ([], {"PUBLISH_HTTP_TIMEOUT": "-1"}, "http_timeout"),
    ([], {"PUBLISH_HTTP_TIMEOUT": "inf"}, "http_timeout"),
], ids=["rate-tiny", "rate-nan", "rate-inf", "backoff-negative", "backoff-huge", "port-inf",
        "port-nan", "port-huge", "port-fraction", "timeout-nan", "timeout-negative",
        "timeout-inf"])
def test_nonsense_rates_and_backoffs_are_refused_before_anything(letter, flag, env, what):
    write_list(letter, [("a@example.org", "", "active")])
    draft.push(letter / EN, load(letter))
    with SmtpServer() as smtp:
        smtp.recorder.data_faults["a@example.org"] = ["451 4.3.0 Try again later"]
        result = run_publish("send", EN, "--service", "smtp", "--yes", *flag, cwd=letter,
                             env={**smtp_env(smtp), **env})
        assert result.returncode == 2 and what in one_clear_line(result)
        assert sum(smtp.recorder.received.values()) == 0
    assert sends_recorded(letter) == []


def _start_send(letter, env, *extra):
    return subprocess.Popen(
        [sys.executable, "-m", "pipeline.cli", "send", EN, "--service", "smtp", "--yes",
         *extra], cwd=letter, env={**os.environ, **env}, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)


def _wait_for(condition, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"never happened: {what}"
        time.sleep(0.01)


def long_wait(smtp: SmtpServer, wait: str, refused: str) -> tuple[dict, list[str]]:
    """The environment and options of a send that soon waits long: by a slow --rate
    ("rate"), or by a retry back-off after the server asks `refused` to try later."""
    env = smtp_env(smtp)
    if wait == "rate":
        return env, ["--rate", "0.002"]  # the second message would wait 500 s
    env["PUBLISH_RETRY_BACKOFF"] = "3000"
    smtp.recorder.rcpt_faults[refused] = ["451 4.3.0 Try again later"]
    return env, []


@pytest.mark.parametrize("wait", ["rate", "backoff"])
def test_ctrl_c_ends_a_long_wait_at_once(letter, wait):
    """A slow --rate or a long retry backoff never keeps Ctrl-C waiting for it."""
    write_list(letter, [(f"r{n}@example.org", "", "active") for n in range(5)])
    draft.push(letter / EN, load(letter))
    with SmtpServer() as smtp:
        env, extra = long_wait(smtp, wait, "r1@example.org")
        proc = _start_send(letter, env, *extra)
        _wait_for(lambda: smtp.recorder.received["r0@example.org"] == 1, "first message")
        time.sleep(0.3)  # now in the long wait
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 130, err
        assert "Traceback" not in err
        rows = ledger_rows(letter)
        assert rows["r0@example.org"][0] == "sent"
        assert {rows[f"r{n}@example.org"][0] for n in range(1, 5)} == {"pending"}
        resumed = run_publish("send", EN, "--service", "smtp", "--yes", cwd=letter,
                              env=smtp_env(smtp))
        assert resumed.returncode == 0, resumed.stderr
        assert set(smtp.recorder.received.values()) == {1}
        assert len(smtp.recorder.received) == 5


HOLDER = (
    "import sqlite3, sys, time\n"
    "db = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
    "db.execute('BEGIN IMMEDIATE')\n"
    "print('held', flush=True)\n"
    "time.sleep(120)\n"
)


def hold_database(folder: Path) -> subprocess.Popen:
    holder = subprocess.Popen([sys.executable, "-c", HOLDER,
                               str(folder / ".publish" / "state.db")],
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    return holder


def test_a_database_held_by_another_process_is_named_and_nothing_recorded(letter):
    write_list(letter, [("a@example.org", "", "active")])
    draft.push(letter / EN, load(letter))
    holder = hold_database(letter)
    try:
        result = run_publish("send", EN, "--yes", cwd=letter)
    finally:
        holder.kill()
        holder.wait()
    assert result.returncode == 1
    line = one_clear_line(result)
    assert f"locked by process {holder.pid}" in line, line
    assert sends_recorded(letter) == [] and not (letter / "outbox").exists()
    assert run_publish("send", EN, "--yes", cwd=letter).returncode == 0
    assert outbox_count(letter) == {"a@example.org": 1}


def test_a_database_held_mid_send_stops_it_and_names_the_holder(letter):
    addresses = [f"r{n}@example.org" for n in range(40)]
    write_list(letter, [(a, "", "active") for a in addresses])
    draft.push(letter / EN, load(letter))
    holders: list[subprocess.Popen] = []
    with SmtpServer() as smtp:
        smtp.recorder.on_message = lambda _, total: total == 10 and holders.append(
            hold_database(letter))
        try:
            result = run_publish("send", EN, "--service", "smtp", "--yes", "--json",
                                 cwd=letter, env=smtp_env(smtp))
        finally:
            for holder in holders:
                holder.kill()
                holder.wait()
        assert result.returncode == 1, result.stderr
        report = json.loads(result.stdout)
        assert f"locked by process {holders[0].pid}" in report["stopped"]
        assert "Traceback" not in result.stderr
        # The reader whose 250 could not be recorded may have it: in doubt, never pending.
        assert report["sent"] == 9 and report["in_doubt"] == ["r9@example.org"]
        resumed = run_publish("send", EN, "--service", "smtp", "--yes", "--json", cwd=letter,
                              env=smtp_env(smtp))
        assert resumed.returncode == 0, resumed.stderr
        assert json.loads(resumed.stdout)["in_doubt"] == ["r9@example.org"]
        received = smtp.recorder.received
    assert sorted(received) == sorted(addresses) and set(received.values()) == {1}


# a full disk under the state folder (a small tmpfs; needs root) -------------------------

@pytest.fixture
def small_state_disk(letter):
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    target = letter / ".publish"
    target.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(target)],
                             capture_output=True)
    if mounted.returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    yield target
    subprocess.run(["umount", "-l", str(target)], check=False)


def fill(folder: Path) -> Path:
    """Fill the disk holding `folder` to the last byte; the filler, to delete later."""
    filler = folder / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:
        while True:
            os.write(fd, b"\0" * 65536)
    except OSError:
        pass
    finally:
        os.close(fd)
    return filler


def test_a_full_disk_while_recording_the_audience_records_nothing(letter, small_state_disk):
    write_list(letter, [(f"a-rather-long-address-to-fill-a-page-{n:05}@example.org", "",
                         "active") for n in range(5000)])
    draft.push(letter / EN, load(letter))
    filler = fill(small_state_disk)
    os.truncate(filler, filler.stat().st_size - 256 * 1024)  # room to start, not for 5,000
    result = run_publish("send", EN, "--yes", cwd=letter)
    assert result.returncode == 1
    assert "disk holding it is full" in one_clear_line(result)
    assert not (letter / "outbox").exists()
    filler.unlink()
    assert sends_recorded(letter) == []
    dry = run_publish("send", EN, "--dry-run", "--json", cwd=letter)
    assert dry.returncode == 0 and json.loads(dry.stdout)["will_send"] == 5000


def test_a_full_disk_mid_send_stops_it_cleanly_and_resumes(letter, small_state_disk):
    addresses = [f"r{n}@example.org" for n in range(300)]
    write_list(letter, [(a, "", "active") for a in addresses])
    draft.push(letter / EN, load(letter))
    fillers: list[Path] = []
    with SmtpServer() as smtp:
        smtp.recorder.on_message = lambda _, total: total == 50 and fillers.append(
            fill(small_state_disk))
        result = run_publish("send", EN, "--service", "smtp", "--yes", "--json", cwd=letter,
                             env=smtp_env(smtp))
        assert result.returncode == 1, result.stderr
        report = json.loads(result.stdout)
        assert "disk holding it is full" in report["stopped"]
        assert "Traceback" not in result.stderr
        received = smtp.recorder.received
        assert sum(received.values()) == report["sent"] + len(report["in_doubt"])
        assert len(report["in_doubt"]) <= 1
        fillers[0].unlink()
        resumed = run_publish("send", EN, "--service", "smtp", "--yes", "--json", cwd=letter,
                              env=smtp_env(smtp))
        assert resumed.returncode == 0, resumed.stdout + resumed.stderr + result.stdout
        in_doubt = set(json.loads(resumed.stdout)["in_doubt"])
    assert in_doubt == set(report["in_doubt"])
    assert sorted(received) == sorted(addresses) and set(received.values()) == {1}


# 5. replies a client cannot read ------------------------------------------------------

@pytest.mark.parametrize("reply", ["OK thanks", "25O done", "", "2", "999 what",
                                   "354 go on", "-1 nope"])
def test_an_unreadable_reply_to_data_leaves_the_reader_in_doubt(letter, monkeypatch, reply):
    write_list(letter, [("a@example.org", "", "active"), ("b@example.org", "", "active")])
    with SmtpServer() as smtp:
        for key, value in smtp_env(smtp).items():
            monkeypatch.setenv(key, value)
        smtp.recorder.replies_after_data["a@example.org"] = reply
        draft.push(letter / EN, load(letter))
        report, _ = send.Sender(letter / EN, load(letter), send.SendOptions(service="smtp")).run()
        assert report.in_doubt == ["a@example.org"] and report.sent == 1 and not report.failed
        retry, _ = send.Sender(letter / EN, load(letter),
                               send.SendOptions(service="smtp", retry_failed=True)).run()
        assert retry.in_doubt == ["a@example.org"]
        assert dict(smtp.recorder.received) == {"a@example.org": 1, "b@example.org": 1}


@pytest.mark.parametrize("pipelining", [True, False], ids=["pipelining", "one-by-one"])
def test_an_unreadable_reply_before_data_never_completes_a_message(letter, monkeypatch,
                                                                    pipelining):
    write_list(letter, [("a@example.org", "", "active"), ("b@example.org", "", "active")])
    with SmtpServer(pipelining=pipelining) as smtp:
        for key, value in smtp_env(smtp).items():
            monkeypatch.setenv(key, value)
        smtp.recorder.rcpt_faults["a@example.org"] = ["OK thanks"]
        draft.push(letter / EN, load(letter))
        report, _ = send.Sender(letter / EN, load(letter), send.SendOptions(service="smtp")).run()
        assert report.sent == 2 and report.complete
        assert dict(smtp.recorder.received) == {"a@example.org": 1, "b@example.org": 1}
        assert ledger_rows(letter)["a@example.org"][2] == 2  # retried once


# every fault code at RCPT and DATA --------------------------------------------------------

CODES = [421, 450, 451, 452, 500, 501, 502, 503, 504, 550, 551, 552, 553, 554]


@pytest.mark.parametrize("pipelining", [True, False], ids=["pipelining", "one-by-one"])
def test_every_fault_code_at_rcpt_and_data(letter, monkeypatch, pipelining):
    """A 4xx is retried and then sent once; a 5xx fails and --retry-failed sends it once."""
    readers = {f"c{code}-{stage}@example.org": (code, stage)
               for code in CODES for stage in ("rcpt", "data")}
    write_list(letter, [(a, "", "active") for a in readers])
    with SmtpServer(pipelining=pipelining) as smtp:
        for key, value in smtp_env(smtp).items():
            monkeypatch.setenv(key, value)
        for address, (code, stage) in readers.items():
            faults = smtp.recorder.rcpt_faults if stage == "rcpt" else \
                smtp.recorder.data_faults
            faults[address] = [f"{code} {code // 100}.0.0 fault"]
        draft.push(letter / EN, load(letter))
        report, _ = send.Sender(letter / EN, load(letter), send.SendOptions(service="smtp")).run()
        assert report.complete and not report.in_doubt
        temporary = {a for a, (code, _) in readers.items() if code < 500}
        assert {e for e, _ in report.failed} == set(readers) - temporary
        assert set(smtp.recorder.received) == temporary
        retry, _ = send.Sender(letter / EN, load(letter),
                               send.SendOptions(service="smtp", retry_failed=True)).run()
        assert retry.sent == len(readers) and retry.complete
        assert sorted(smtp.recorder.received) == sorted(readers)
        assert set(smtp.recorder.received.values()) == {1}


# 9. an empty audience; a dry run runs every check ------------------------------------

def test_a_send_with_nobody_to_send_to_is_refused_and_records_nothing(letter):
    write_list(letter, [("gone@example.org", "", "unsubscribed"),
                        ("not-an-email", "", "active")])
    draft.push(letter / EN, load(letter))
    for args in (["--yes"], ["--dry-run"]):
        result = run_publish("send", EN, *args, cwd=letter)
        assert result.returncode == 1
        assert "nobody to send" in one_clear_line(result)
    assert sends_recorded(letter) == [] and not (letter / "outbox").exists()
    write_list(letter, [("new@example.org", "", "active")])
    assert run_publish("send", EN, "--yes", cwd=letter).returncode == 0
    assert outbox_count(letter) == {"new@example.org": 1}


def _already_sent(letter, env):
    assert run_publish("send", EN, "--yes", cwd=letter, env=env).returncode == 0
    return "already sent"


def _stale_draft(letter, env):
    path = letter / EN
    path.write_text(path.read_text("utf-8") + "\nOne more line.\n", "utf-8")
    return "changed since its draft was pushed"


def _missing_smtp_password(letter, env):
    env.update({"PUBLISH_SERVICE": "smtp", "PUBLISH_SMTP_USERNAME": "someone",
                "SMTP_PASSWORD": ""})
    return "SMTP_PASSWORD"


def _check_error(letter, env):
    path = letter / EN
    path.write_text(path.read_text("utf-8").replace("See you next month.", "See you TK."),
                    "utf-8")
    draft.push(path, load(letter))
    return "publish check"


def _empty_list(letter, env):
    write_list(letter, [("gone@example.org", "", "bounced")])
    return "nobody to send"


def _another_send_running(letter, env):
    write_list(letter, [("a@example.org", "", "active")])
    db = state.connect(letter / ".publish")
    ledger.open_send(db, ledger.SendKey(EN, "local", "subscribers/main.csv"),
                     new_content=lambda: ledger.Content("r", "s", "h", "t"),
                     audience=lambda: [("a@example.org", "a@example.org", "", "pending", "")],
                     current_revision=None)
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    db.execute("UPDATE sends SET lock_pid = ?", (sleeper.pid,))
    db.close()
    env["_sleeper"] = sleeper
    return f"running (pid {sleeper.pid})"


@pytest.mark.parametrize("refusal", [_already_sent, _stale_draft, _missing_smtp_password,
                                     _check_error, _empty_list, _another_send_running],
                         ids=lambda f: f.__name__.strip("_"))
def test_dry_run_refuses_whatever_the_send_would(letter, refusal):
    draft.push(letter / EN, load(letter))
    env: dict = {}
    expected = refusal(letter, env)
    sleeper = env.pop("_sleeper", None)
    try:
        before = sends_recorded(letter)
        outbox_before = outbox_count(letter) if (letter / "outbox").exists() else Counter()
        dry = run_publish("send", EN, "--dry-run", cwd=letter, env=env)
        real = run_publish("send", EN, "--yes", cwd=letter, env=env)
    finally:
        if sleeper is not None:
            sleeper.kill()
            sleeper.wait()
    assert dry.returncode == real.returncode != 0
    assert expected in one_clear_line(dry) and one_clear_line(dry) == one_clear_line(real)
    assert sends_recorded(letter) == before
    after = outbox_count(letter) if (letter / "outbox").exists() else Counter()
    assert after == outbox_before


def test_dry_run_reports_what_a_resume_would_do(letter):
    write_list(letter, [(f"r{n}@example.org", "", "active") for n in range(5)]
               + [("gone@example.org", "", "unsubscribed")])
    draft.push(letter / EN, load(letter))
    with SmtpServer() as smtp:
        env = smtp_env(smtp)
        rec = smtp.recorder
        rec.on_message = lambda _, total: total == 2 and rec.mail_faults.append(
            "530 5.7.0 Authentication required")
        first = run_publish("send", EN, "--service", "smtp", "--yes", "--json", cwd=letter,
                            env=env)
        assert first.returncode == 1 and json.loads(first.stdout)["sent"] == 2
        before = sends_recorded(letter)
        dry = run_publish("send", EN, "--service", "smtp", "--dry-run", "--json", cwd=letter,
                          env=env)
        assert dry.returncode == 0, dry.stderr
        plan = json.loads(dry.stdout)
        assert plan["resuming"] == before[0]["id"] and plan["will_send"] == 3
        assert plan["skipped"] == {"unsubscribed": 1}
        assert sends_recorded(letter) == before and sum(rec.received.values()) == 2
        real = run_publish("send", EN, "--service", "smtp", "--yes", "--json", cwd=letter,
                           env=env)
        assert json.loads(real.stdout)["sent"] == 5
        assert len(rec.received) == 5 and set(rec.received.values()) == {1}


# what held: SIGKILL at random points, double Ctrl-C -------------------------------------

@pytest.mark.parametrize("connections", [1, 4])
def test_sigkill_at_random_points_then_resume_sends_each_once(letter, connections):
    rng = random.Random(1000 + connections)
    addresses = [f"sub{n}@example.org" for n in range(1200)]
    write_list(letter, [(a, "", "active") for a in addresses])
    draft.push(letter / EN, load(letter))
    with SmtpServer(delay=0.001) as smtp:
        args = ("--connections", str(connections))
        for _ in range(3):
            proc = _start_send(letter, smtp_env(smtp), *args)
            target = sum(smtp.recorder.received.values()) + rng.randint(1, 300)
            _wait_for(lambda t=target, p=proc: sum(smtp.recorder.received.values()) >= t
                      or p.poll() is not None, "messages")
            time.sleep(rng.random() * 0.05)
            proc.kill()
            proc.communicate(timeout=60)
        resumed = run_publish("send", EN, "--service", "smtp", "--yes", "--json", *args,
                              cwd=letter, env=smtp_env(smtp))
        assert resumed.returncode == 0, resumed.stderr
        report = json.loads(resumed.stdout)
        received = smtp.recorder.received
    in_doubt = set(report["in_doubt"])
    assert len(in_doubt) <= 3 * connections
    assert all(received[a] == 1 for a in addresses if a not in in_doubt)
    assert all(received[a] <= 1 for a in in_doubt)
    assert report["sent"] + len(in_doubt) == len(addresses)


def test_sigterm_stops_like_ctrl_c_and_resumes_once(letter):
    addresses = [f"sub{n}@example.org" for n in range(600)]
    write_list(letter, [(a, "", "active") for a in addresses])
    draft.push(letter / EN, load(letter))
    with SmtpServer(delay=0.002) as smtp:
        proc = _start_send(letter, smtp_env(smtp), "--connections", "2", "--json")
        _wait_for(lambda: sum(smtp.recorder.received.values()) >= 100, "100 messages")
        proc.terminate()
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 1, err
        assert "SIGTERM" in json.loads(out)["stopped"] and "Traceback" not in err
        rows = ledger_rows(letter)
        assert not [e for e, (s, *_) in rows.items() if s in ("sending", "in_doubt")]
        resumed = run_publish("send", EN, "--service", "smtp", "--yes", cwd=letter,
                              env=smtp_env(smtp))
        assert resumed.returncode == 0, resumed.stderr
        received = smtp.recorder.received
    assert sorted(received) == sorted(addresses) and set(received.values()) == {1}


def test_double_ctrl_c_leaves_no_duplicate(letter):
    addresses = [f"sub{n}@example.org" for n in range(800)]
    write_list(letter, [(a, "", "active") for a in addresses])
    draft.push(letter / EN, load(letter))
    with SmtpServer(delay=0.002) as smtp:
        proc = _start_send(letter, smtp_env(smtp), "--connections", "2")
        _wait_for(lambda: sum(smtp.recorder.received.values()) >= 100, "100 messages")
        proc.send_signal(signal.SIGINT)
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=60)
        assert proc.returncode == 130
        resumed = run_publish("send", EN, "--service", "smtp", "--yes", "--json", cwd=letter,
                              env=smtp_env(smtp))
        assert resumed.returncode == 0, resumed.stderr
        in_doubt = set(json.loads(resumed.stdout)["in_doubt"])
        received = smtp.recorder.received
    assert all(received[a] == 1 for a in addresses if a not in in_doubt)
    assert all(received[a] <= 1 for a in in_doubt)


@pytest.mark.parametrize("how", ["rename", "hard-link", "copy"])
def test_the_same_issue_under_another_name_is_not_sent_again(letter, how):
    write_list(letter, [("a@example.org", "", "active"), ("b@example.org", "", "active")])
    assert run_publish("draft", EN, cwd=letter).returncode == 0
    assert run_publish("send", EN, "--yes", cwd=letter).returncode == 0
    other = letter / "issues" / "renamed.md"
    if how == "rename":
        (letter / EN).rename(other)
    elif how == "hard-link":
        os.link(letter / EN, other)
    else:
        other.write_bytes((letter / EN).read_bytes())
    for args in (["--dry-run"], ["--yes"]):
        again = run_publish("send", "issues/renamed.md", "--redraft", *args, cwd=letter)
        assert again.returncode == 1 and EN in one_clear_line(again)
    assert outbox_count(letter) == {"a@example.org": 1, "b@example.org": 1}
    assert len(sends_recorded(letter)) == 1


def test_a_reader_on_two_lists_gets_the_issue_once(letter):
    write_list(letter, [("a@example.org", "", "active"), ("b@example.org", "", "active")])
    (letter / "subscribers" / "vip.csv").write_text(
        "email,name,status,created_at\nA@Example.org,A,active,\nc@example.org,C,active,\n",
        "utf-8")
    assert run_publish("draft", EN, cwd=letter).returncode == 0
    assert run_publish("send", EN, "--yes", cwd=letter).returncode == 0
    dry = run_publish("send", EN, "--list", "vip", "--dry-run", cwd=letter)
    assert dry.returncode == 0 and "to 1 subscriber" in dry.stdout, dry.stdout
    assert run_publish("send", EN, "--list", "vip", "--yes", cwd=letter).returncode == 0
    assert outbox_count(letter) == {"a@example.org": 1, "b@example.org": 1,
                                    "c@example.org": 1}
    again = run_publish("send", EN, "--subscribers", "subscribers/main.csv", "--yes",
                        cwd=letter)
    assert again.returncode == 1 and "already sent" in one_clear_line(again)
