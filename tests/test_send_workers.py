"""Attacks on one ledger commit per message (a message's answer with the next claim):
SIGKILL inside that commit, just after it, and after a message's data before its reply;
Ctrl-C to the whole process group. Real `publish` processes, a real SMTP server on
loopback, the real state database."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline import draft
from tests.conftest import ROOT, copy_sample_newsletter, run_publish
from tests.smtp_server import SmtpServer
from tests.test_send import EN, SECRET, load, smtp_env, write_list
from tests.test_send import ledger as ledger_rows
from tests.test_send_attacks import _wait_for

# `publish send`, SIGKILLed by itself at one step of a connection's N-th message
# (KILL_STEP, KILL_AFTER): just before the transaction that records an answer with the
# next claim (the next envelope already out), inside it, or just after that commit (the
# next message not yet handed over). The real
# functions run; the kill only lands between them.
KILLED_AT_STEP = """
import os, signal, sys
from pipeline import cli, ledger_recipients as lr, state
step, after = os.environ["KILL_STEP"], int(os.environ["KILL_AFTER"])
calls, chains = [0], [0]

def die():
    os.kill(os.getpid(), signal.SIGKILL)

real_connect, real_chain = state.connect, lr.settle_and_claim

def connect(*args, **kwargs):
    db = real_connect(*args, **kwargs)
    claimed = [False]

    def statement(sql):  # SQLite calls this before it runs each statement
        if sql.startswith("UPDATE recipients SET state = 'sending'") and db.in_transaction:
            claimed[0] = True
        elif sql == "COMMIT" and claimed[0]:
            claimed[0] = False
            calls[0] += 1
            if step == "in-commit" and calls[0] == after:
                die()

    db.set_trace_callback(statement)
    return db

def settle_and_claim(*args):
    chains[0] += 1
    if step == "before-commit" and chains[0] == after:
        die()
    moved = real_chain(*args)
    if step == "after-commit" and calls[0] == after:
        die()
    return moved

state.connect, lr.settle_and_claim = connect, settle_and_claim
sys.argv = ["publish"] + sys.argv[1:]
cli.main()
"""


@pytest.fixture
def letter(tmp_path, monkeypatch):
    monkeypatch.setenv("PUBLISH_UNSUBSCRIBE_SECRET", SECRET)
    monkeypatch.setenv("PUBLISH_RETRY_BACKOFF", "0.05")
    return copy_sample_newsletter(tmp_path / "letter")


def _readers(letter: Path, count: int) -> list[str]:
    addresses = [f"reader{n}@example.org" for n in range(count)]
    write_list(letter, [(a, "", "active") for a in addresses])
    draft.push(letter / EN, load(letter))
    return addresses


def _send(letter: Path, env: dict, *extra: str, script: str | None = None,
          group: bool = False) -> subprocess.Popen:
    command = (["-c", script] if script else ["-m", "pipeline.cli"])
    return subprocess.Popen(
        [sys.executable, *command, "send", EN, "--service", "smtp", "--yes", *extra],
        cwd=letter, env={**os.environ, **env, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=group)


def _resume_and_check(letter: Path, smtp: SmtpServer, addresses: list[str],
                      connections: int) -> dict:
    """Resume; each reader got the issue once, but for at most one in doubt per connection."""
    resumed = run_publish("send", EN, "--service", "smtp", "--yes", "--json",
                          "--connections", str(connections), cwd=letter, env=smtp_env(smtp))
    assert resumed.returncode == 0, resumed.stderr
    report = json.loads(resumed.stdout)
    received = smtp.recorder.received
    in_doubt = set(report["in_doubt"])
    assert len(in_doubt) <= connections
    assert all(received[a] == 1 for a in addresses if a not in in_doubt)
    assert all(received[a] <= 1 for a in in_doubt)
    assert report["sent"] + len(in_doubt) == len(addresses)
    return report


@pytest.mark.parametrize("connections", [1, 3])
@pytest.mark.parametrize("step", ["in-commit", "after-commit"])
def test_sigkill_in_and_after_the_one_commit_leaves_one_in_doubt_per_connection(
        letter, step, connections):
    addresses = _readers(letter, 60)
    with SmtpServer() as smtp:
        proc = _send(letter, {**smtp_env(smtp), "KILL_STEP": step, "KILL_AFTER": "7"},
                     "--connections", str(connections), script=KILLED_AT_STEP)
        proc.communicate(timeout=120)
        assert proc.returncode == -signal.SIGKILL
        taken = sum(smtp.recorder.received.values())
        assert 0 < taken < len(addresses)
        rows = ledger_rows(letter)
        left = [e for e, (state, *_) in rows.items() if state in ("sending", "in_doubt")]
        # At most one per connection: the message whose answer was not recorded (inside
        # the commit: that reader has it) or the next one, claimed and not sent (after).
        assert 1 <= len(left) <= connections
        got = {smtp.recorder.received[e] for e in left}
        if connections == 1:
            assert got == ({1} if step == "in-commit" else {0})
        _resume_and_check(letter, smtp, addresses, connections)


@pytest.mark.parametrize("connections", [1, 3])
def test_sigkill_after_the_next_envelope_before_the_commit(letter, connections):
    """The next message's MAIL, RCPT and DATA go out before the commit that claims it;
    killed there, the server has that envelope and no data: nobody gets that message, its
    reader is still pending, and only the message whose answer was lost is in doubt."""
    addresses = _readers(letter, 60)
    with SmtpServer() as smtp:
        enveloped: list[str] = []
        real_rcpt = smtp.recorder.handle_RCPT

        async def handle_rcpt(server, session, envelope, address, rcpt_options):
            enveloped.append(address)
            return await real_rcpt(server, session, envelope, address, rcpt_options)

        smtp.recorder.handle_RCPT = handle_rcpt
        proc = _send(letter, {**smtp_env(smtp), "KILL_STEP": "before-commit",
                              "KILL_AFTER": "7"},
                     "--connections", str(connections), script=KILLED_AT_STEP)
        proc.communicate(timeout=120)
        assert proc.returncode == -signal.SIGKILL
        rows = ledger_rows(letter)
        left = [e for e, (state, *_) in rows.items() if state in ("sending", "in_doubt")]
        assert 1 <= len(left) <= connections
        assert all(smtp.recorder.received[e] <= 1 for e in left)
        if connections == 1:  # the other connections may be anywhere in a message
            assert smtp.recorder.received[left[0]] == 1  # sent, its answer not recorded
            following = addresses[addresses.index(left[0]) + 1]
            _wait_for(lambda: following in enveloped, "the next envelope")
            assert smtp.recorder.received[following] == 0
            assert rows[following][0] == "pending"
        _resume_and_check(letter, smtp, addresses, connections)


@pytest.mark.parametrize("connections", [1, 4])
def test_killing_everything_after_the_data_before_the_reply(letter, connections):
    """SIGKILL to the whole process group while the server holds the 50th message, before
    its reply: at most one reader per connection in doubt, nobody sent twice on resume."""
    addresses = _readers(letter, 150)
    with SmtpServer() as smtp:
        box: list[subprocess.Popen] = []

        def kill_all(recipient: str, total: int) -> None:
            if total == 50:
                os.killpg(box[0].pid, signal.SIGKILL)

        smtp.recorder.on_message = kill_all
        box.append(_send(letter, smtp_env(smtp), "--connections", str(connections),
                         group=True))
        box[0].communicate(timeout=120)
        assert box[0].returncode == -signal.SIGKILL
        report = _resume_and_check(letter, smtp, addresses, connections)
        assert report["in_doubt"]  # the 50th at least: taken, never answered


def test_ctrl_c_to_the_whole_group_stops_every_worker_cleanly(letter):
    """Ctrl-C in a terminal reaches the whole process group: every connection finishes
    and records its message in hand and gives back the one it claimed ahead; nothing in
    doubt, and the report adds up to the list."""
    addresses = _readers(letter, 1500)
    with SmtpServer(delay=0.002) as smtp:
        proc = _send(letter, smtp_env(smtp), "--connections", "4", "--json", group=True)
        _wait_for(lambda: sum(smtp.recorder.received.values()) >= 100, "100 messages")
        os.killpg(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 130, err
        report = json.loads(out)
        assert "Ctrl-C" in report["stopped"] and "Traceback" not in err
        assert report["in_doubt"] == []
        assert report["sent"] == sum(smtp.recorder.received.values())
        assert report["sent"] + report["pending"] == len(addresses)
        rows = ledger_rows(letter)
        assert not [e for e, (s, *_) in rows.items() if s in ("sending", "in_doubt")]
        # A reader claimed ahead and given back was never tried: no attempt counted.
        assert {a for s, _, a in rows.values() if s == "pending"} == {0}
        _resume_and_check(letter, smtp, addresses, 4)


def test_an_answer_is_recorded_before_the_next_reader_is_retried(letter):
    """The server takes the 3rd message, hangs up before its reply and stops listening:
    that reader is in doubt, and the next one's envelope never goes out (no connection).
    The answer in hand is recorded before the back-off, not after the retries, so a kill
    during them can never leave two readers of one connection in doubt."""
    addresses = _readers(letter, 6)
    with SmtpServer() as smtp:
        smtp.recorder.drop_during_data.add(addresses[2])

        def stop_listening(recipient: str, total: int) -> None:
            if recipient == addresses[2]:
                smtp.controller.server.close()  # connections from now on are refused

        smtp.recorder.on_message = stop_listening
        # back-offs of 30 and 60 s: the retries outlast the wait below by far
        proc = _send(letter, {**smtp_env(smtp), "PUBLISH_RETRY_BACKOFF": "30"},
                     "--connections", "1")
        try:
            _wait_for(lambda: ledger_rows(letter).get(addresses[2], ("",))[0] == "in_doubt",
                      "the dropped message recorded in doubt during the back-off",
                      timeout=20)
            assert proc.poll() is None, "recorded only when the send ended"
            rows = ledger_rows(letter)
            assert rows[addresses[3]][0] == "pending"  # not claimed: its envelope never went
        finally:
            proc.kill()
            proc.communicate(timeout=60)
