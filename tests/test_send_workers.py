"""Attacks on the send's workers: one ledger commit per message (an answer with the next
claim), and a process per connection for SMTP. SIGKILL at each step of a message, the
parent killed under its workers, a worker killed, Ctrl-C to the whole process group.
Real `publish` processes, a real SMTP server on loopback, the real state database."""

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

# `publish send`, SIGKILLed by itself at one step of its N-th message (KILL_STEP,
# KILL_AFTER): inside the transaction that records an answer with the next claim, just
# after that commit (the next message not yet handed over). The real functions run; the
# kill only lands between them.
KILLED_AT_STEP = """
import os, signal, sys
from pipeline import cli, ledger_recipients as lr
step, after = os.environ["KILL_STEP"], int(os.environ["KILL_AFTER"])
calls = [0]

def die():  # only the first worker to get here (each process counts its own calls)
    try:
        os.close(os.open(os.environ["KILL_FLAG"], os.O_CREAT | os.O_EXCL))
    except FileExistsError:
        return
    os.kill(os.getpid(), signal.SIGKILL)

real_claim, real_chain = lr.claim, lr.settle_and_claim

def claim(db, *args):
    moved = real_claim(db, *args)
    if step == "in-commit" and db.in_transaction:
        calls[0] += 1
        if calls[0] == after:
            die()
    return moved

def settle_and_claim(*args):
    moved = real_chain(*args)
    calls[0] += step == "after-commit"
    if step == "after-commit" and calls[0] == after:
        die()
    return moved

lr.claim, lr.settle_and_claim = claim, settle_and_claim
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


def _workers(pid: int) -> list[int]:
    """The worker processes of a `publish send` (its children)."""
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(n) for n in text.split()]


def _gone(pid: int) -> bool:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return True
    return fields[0] in ("Z", "X")  # exited, not yet reaped by whoever adopted it


needs_proc = pytest.mark.skipif(not Path("/proc/self/task").is_dir(),
                                reason="reads worker processes from /proc (Linux)")


@pytest.mark.parametrize("connections", [1, 3])
@pytest.mark.parametrize("step", ["in-commit", "after-commit"])
def test_sigkill_at_each_step_of_the_one_commit_puts_one_in_doubt(letter, step, connections):
    addresses = _readers(letter, 60)
    with SmtpServer() as smtp:
        proc = _send(letter, {**smtp_env(smtp), "KILL_STEP": step, "KILL_AFTER": "7",
                                          "KILL_FLAG": str(letter / "killed")},
                     "--connections", str(connections), script=KILLED_AT_STEP)
        _, err = proc.communicate(timeout=120)
        # One connection: the process itself died. More: one worker died, reported as such.
        if connections == 1:
            assert proc.returncode == -signal.SIGKILL
        else:
            assert proc.returncode == 1, err
            assert "worker for connection" in err and "SIGKILL" in err
            assert "Traceback" not in err and len(err.strip().splitlines()) <= 3
        taken = sum(smtp.recorder.received.values())
        assert 0 < taken < len(addresses)
        rows = ledger_rows(letter)
        left = [e for e, (state, *_) in rows.items() if state in ("sending", "in_doubt")]
        assert len(left) == 1  # the killed connection's message, nobody else's
        # in-commit: the answer was not recorded, so the reader who has it is the one in
        # doubt. after-commit: the next reader is claimed and has not been sent anything.
        assert smtp.recorder.received[left[0]] == (1 if step == "in-commit" else 0)
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


@needs_proc
def test_parent_killed_its_workers_stop_and_send_nothing_more(letter):
    addresses = _readers(letter, 1500)
    with SmtpServer(delay=0.002) as smtp:
        proc = _send(letter, smtp_env(smtp), "--connections", "4")
        _wait_for(lambda: sum(smtp.recorder.received.values()) >= 100, "100 messages")
        workers = _workers(proc.pid)
        assert len(workers) == 4
        proc.kill()
        proc.communicate(timeout=60)
        _wait_for(lambda: all(_gone(w) for w in workers), "the workers ending")
        taken = sum(smtp.recorder.received.values())
        assert taken < len(addresses)  # they stopped: the rest was never sent
        rows = ledger_rows(letter)
        # Each worker finished the message in hand and recorded it; nothing is left
        # claimed but the one each had claimed ahead with its last answer.
        assert sum(s == "sent" for s, *_ in rows.values()) == taken
        assert sum(s == "sending" for s, *_ in rows.values()) <= 4
        assert sum(smtp.recorder.received.values()) == taken
        _resume_and_check(letter, smtp, addresses, 4)


@needs_proc
def test_a_worker_killed_is_one_clear_line_and_the_send_resumes(letter, monkeypatch):
    monkeypatch.setenv("SMTP_PASSWORD", "hunter2-secret-worker")
    addresses = _readers(letter, 1500)
    with SmtpServer(delay=0.002) as smtp:
        proc = _send(letter, smtp_env(smtp), "--connections", "3", "--json")
        _wait_for(lambda: sum(smtp.recorder.received.values()) >= 100, "100 messages")
        workers = _workers(proc.pid)
        assert len(workers) == 3
        for pid in workers:  # the secret reached them in memory, not on a command line
            assert b"hunter2" not in Path(f"/proc/{pid}/cmdline").read_bytes()
        os.kill(workers[1], signal.SIGKILL)
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 1, err
        report = json.loads(out)
        assert "send worker for connection 2 died (killed by signal 9 (SIGKILL))" in (
            report["stopped"])
        assert "Traceback" not in err
        assert report["sent"] + len(report["in_doubt"]) + report["pending"] == len(addresses)
        assert len(report["in_doubt"]) <= 1
        _resume_and_check(letter, smtp, addresses, 3)


def test_ctrl_c_to_the_whole_group_stops_every_worker_cleanly(letter):
    """Ctrl-C in a terminal reaches every process of the group: the workers leave it to
    the parent, which stops them; each records its message in hand, nothing in doubt."""
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
        _resume_and_check(letter, smtp, addresses, 4)
