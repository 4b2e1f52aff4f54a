"""Attacks on one thread driving every SMTP connection (`delivery_loop`): SIGKILL at each
kind of step the loop waits for. (A stalled connection, half a reply then silence, Ctrl-C
in every connection's wait and STARTTLS, which run on the loop as well, are in
`test_send_connections.py`.) Real `publish` processes, a real server on loopback, the real
state database."""

from __future__ import annotations

import json
import signal

import pytest

from tests.conftest import copy_sample_newsletter, run_publish
from tests.smtp_server import SmtpServer
from tests.test_send import EN, SECRET, smtp_env
from tests.test_send import ledger as ledger_rows
from tests.test_send_workers import _readers, _send


@pytest.fixture
def letter(tmp_path, monkeypatch):
    monkeypatch.setenv("PUBLISH_UNSUBSCRIBE_SECRET", SECRET)
    monkeypatch.setenv("PUBLISH_RETRY_BACKOFF", "0.05")
    return copy_sample_newsletter(tmp_path / "letter")


# `publish send` SIGKILLed by itself when the loop is about to wait for the KILL_AFTER-th
# time for a KILL_KIND of step: a reply (read), a connection being made (call), a back-off
# (sleep); the real loop runs, the kill only lands between its steps.
KILLED_IN_LOOP = """
import os, signal, sys
from pipeline import cli, delivery_loop
kind, after = os.environ["KILL_KIND"], int(os.environ["KILL_AFTER"])
seen = [0]
real_wait = delivery_loop.SmtpLoop._wait

def wait(self, connection, request):
    if request[0] == kind:
        seen[0] += 1
        if seen[0] == after:
            os.kill(os.getpid(), signal.SIGKILL)
    return real_wait(self, connection, request)

delivery_loop.SmtpLoop._wait = wait
sys.argv = ["publish"] + sys.argv[1:]
cli.main()
"""


@pytest.mark.parametrize("kind, after", [("read", 1), ("read", 23), ("read", 90),
                                         ("call", 2), ("sleep", 1)])
def test_sigkill_at_each_kind_of_step_leaves_one_in_doubt_per_connection(letter, kind,
                                                                          after):
    connections = 3
    addresses = _readers(letter, 60)
    with SmtpServer() as smtp:
        # a refusal to try again later: a back-off (a "sleep" step) mid-send
        smtp.recorder.rcpt_faults[addresses[10]] = ["451 4.3.0 try again later"]
        proc = _send(letter, {**smtp_env(smtp), "KILL_KIND": kind, "KILL_AFTER": str(after)},
                     "--json", "--connections", str(connections), script=KILLED_IN_LOOP)
        proc.communicate(timeout=120)
        assert proc.returncode == -signal.SIGKILL
        rows = ledger_rows(letter)
        left = [e for e, (state, *_) in rows.items() if state in ("sending", "in_doubt")]
        assert len(left) <= connections
        assert all(smtp.recorder.received[e] <= 1 for e in left)
        resumed = run_publish("send", EN, "--service", "smtp", "--yes", "--json",
                              "--connections", str(connections), cwd=letter,
                              env=smtp_env(smtp))
        assert resumed.returncode == 0, resumed.stderr
        report = json.loads(resumed.stdout)
        in_doubt = set(report["in_doubt"])
        assert in_doubt == set(left)
        assert all(smtp.recorder.received[a] == 1 for a in addresses if a not in in_doubt)
        assert report["sent"] + len(in_doubt) == len(addresses)
