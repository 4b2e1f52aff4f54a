"""The ledger's invariants, attacked with real processes on the real state database:
claims by two processes at once (one at a time and in batches) never hand the same
recipient out twice; a process killed between claim and settle leaves exactly what it
claimed in doubt; settling is all or nothing and never moves a settled row."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from pipeline import ledger, state
from tests.conftest import ROOT

KEY = ledger.SendKey("issues/x.md", "local", "subscribers/main.csv")


def open_with(folder: Path, count: int) -> int:
    """A new send of `count` pending recipients; its id."""
    rows = [(f"r{n}@example.org", f"r{n}@example.org", f"Reader {n}", "pending", "")
            for n in range(count)]
    db = state.connect(folder)
    try:
        opened = ledger.open_send(db, KEY, new_content=lambda: ledger.Content("r", "s", "h", "t"),
                                  audience=lambda: rows, current_revision=None)
        ledger.finish(db, opened.send_id, "interrupted")  # release the lock for the children
        return opened.send_id
    finally:
        db.close()


# A worker in its own process: waits for the start file, then claims (a batch of `size`,
# or one at a time when size is 1) and settles until nobody is left; prints what it got.
WORKER = """
import json, os, sys, time
from pathlib import Path
from pipeline import ledger, state
folder, send_id, size, start = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
db = state.connect(folder)
open(start + '.' + str(os.getpid()), 'w').close()
while not os.path.exists(start):
    time.sleep(0.001)
got = []
while True:
    if size == 1:
        rows = ledger.pending(db, send_id, 0, 1)
        if not rows:
            break
        if not ledger.claim(db, rows[0][0], f'<{rows[0][0]}@x>'):
            continue
        claimed = [rows[0][0]]
    else:
        claimed = [row.id for row in ledger.claim_batch(db, send_id, size, f'b{os.getpid()}')]
        if not claimed:
            break
    got += claimed
    ledger.settle_many(db, [ledger.Outcome(i, 'sent', 'ok', remote_id=f'{os.getpid()}-{i}')
                            for i in claimed])
print(json.dumps(got))
"""


def run_together(folder: Path, send_id: int, sizes: list[int]) -> list[list[int]]:
    start = folder.parent / f"start-{time.monotonic_ns()}"
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, str(folder), str(send_id),
                               str(size), str(start)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(ROOT)}) for size in sizes]
    deadline = time.monotonic() + 60
    while len(list(folder.parent.glob(start.name + ".*"))) < len(sizes):
        assert time.monotonic() < deadline, "the workers did not get ready"
        time.sleep(0.01)
    start.touch()
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        results.append(json.loads(out))
    return results


@pytest.mark.parametrize("sizes", [[50, 50], [1, 7], [1, 1]], ids=["batches", "mixed", "single"])
def test_two_processes_claiming_at_once_never_get_the_same_recipient(tmp_path, sizes):
    folder = tmp_path / ".publish"
    send_id = open_with(folder, 1500)
    claims = run_together(folder, send_id, sizes)
    everyone = Counter(i for got in claims for i in got)
    assert len(everyone) == 1500 and set(everyone.values()) == {1}
    db = state.connect(folder)
    try:
        rows = db.execute("SELECT id, state, remote_id, attempts FROM recipients "
                          "WHERE send_id = ?", (send_id,)).fetchall()
    finally:
        db.close()
    assert {row["state"] for row in rows} == {"sent"}
    assert {row["attempts"] for row in rows} == {1}
    # Each recipient settled by the process that claimed it, and only by it.
    owner = {i: n for n, got in enumerate(claims) for i in got}
    pids = {n: {row["remote_id"].split("-")[0] for row in rows if owner[row["id"]] == n}
            for n in range(len(sizes))}
    assert all(len(p) <= 1 for p in pids.values())
    assert len(set.union(*pids.values())) == sum(len(p) for p in pids.values())


CLAIM_THEN_WAIT = """
import sys, time
from pathlib import Path
from pipeline import ledger, state
db = state.connect(Path(sys.argv[1]))
rows = ledger.claim_batch(db, int(sys.argv[2]), 50, 'the-call')
print(' '.join(str(row.id) for row in rows), flush=True)
time.sleep(120)  # "during the call": killed here
"""


def test_a_process_killed_between_claim_and_settle_leaves_its_batch_in_doubt(tmp_path):
    folder = tmp_path / ".publish"
    send_id = open_with(folder, 120)
    proc = subprocess.Popen([sys.executable, "-c", CLAIM_THEN_WAIT, str(folder), str(send_id)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    claimed = [int(i) for i in proc.stdout.readline().split()]
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert len(claimed) == 50
    db = state.connect(folder)
    try:
        assert ledger.in_doubt(db, send_id) == [f"r{n}@example.org" for n in range(50)]
        opened = ledger.open_send(db, KEY, new_content=lambda: pytest.fail("created anew"),
                                  audience=lambda: pytest.fail("frozen anew"),
                                  current_revision=None, retry_failed=True)
        assert opened.counts == {"in_doubt": 50, "pending": 70}
        assert "50 recipient(s)" in opened.notes[0] and "in doubt" in opened.notes[0]
        in_doubt = {row["id"] for row in db.execute(
            "SELECT id FROM recipients WHERE send_id = ? AND state = 'in_doubt' "
            "AND batch_id = 'the-call'", (send_id,))}
        assert in_doubt == set(claimed)
        # Never handed out again: the next claims reach only the 70 never claimed.
        again = ledger.claim_batch(db, send_id, 500, "next")
        assert not {row.id for row in again} & set(claimed) and len(again) == 70
        ledger.finish(db, send_id, "")
    finally:
        db.close()


def test_settling_is_all_or_nothing_and_never_moves_a_settled_row(tmp_path):
    folder = tmp_path / ".publish"
    send_id = open_with(folder, 3)
    db = state.connect(folder)
    try:
        rows = ledger.claim_batch(db, send_id, 3, "one")
        with pytest.raises(ValueError):
            ledger.settle_many(db, [ledger.Outcome(rows[0].id, "sent", "250 ok", "m-1"),
                                    ledger.Outcome(rows[1].id, "delivered?", "")])
        assert ledger.counts(db, send_id)[0] == {"sending": 3}
        ledger.settle_many(db, [ledger.Outcome(rows[0].id, "sent", "250 ok", "m-1"),
                                ledger.Outcome(rows[1].id, "failed", "550 no such user"),
                                ledger.Outcome(rows[2].id, "in_doubt", "no answer")])
        ledger.settle(db, rows[0].id, "failed", "late bounce")
        ledger.settle(db, rows[2].id, "sent", "a late answer")
        states = dict(db.execute("SELECT remote_id, state FROM recipients WHERE "
                                 "send_id = ? AND remote_id IS NOT NULL", (send_id,)))
        assert states == {"m-1": "sent"}
        assert ledger.counts(db, send_id)[0] == {"sent": 1, "failed": 1, "in_doubt": 1}
    finally:
        db.close()


def test_a_recipient_put_back_to_wait_is_not_claimed_before_its_time(tmp_path):
    folder = tmp_path / ".publish"
    send_id = open_with(folder, 2)
    db = state.connect(folder)
    try:
        first, second = ledger.claim_batch(db, send_id, 2, "one")
        later = time.time() + 3600
        ledger.settle_many(db, [
            ledger.Outcome(first.id, "pending", "454 throttled", retry_at=later, counted=False),
            ledger.Outcome(second.id, "pending", "451 try again", retry_at=time.time() - 1)])
        [due] = ledger.claim_batch(db, send_id, 10, "two")
        assert due.id == second.id and due.attempts == 2  # a second real attempt
        assert ledger.next_retry(db, send_id) == pytest.approx(later)
        assert ledger.claim_batch(db, send_id, 10, "three") == []
        assert ledger.pending(db, send_id, 0, 10) == []
        attempts = db.execute("SELECT attempts FROM recipients WHERE id = ?",
                              (first.id,)).fetchone()[0]
        assert attempts == 0  # being asked to wait is not an attempt
    finally:
        db.close()


def _states(folder: Path, send_id: int) -> dict[str, str]:
    db = state.connect(folder)
    try:
        return {r["email"]: r["state"] for r in db.execute(
            "SELECT email, state FROM recipients WHERE send_id = ?", (send_id,))}
    finally:
        db.close()


def test_an_answer_and_the_next_claim_are_recorded_together_or_not_at_all(tmp_path):
    """`settle_and_claim`: the claim refused by the database (here a trigger, as a full disk
    would) takes the answer with it, leaving the first reader `sending` (in doubt next
    time) and the second pending; a row no longer pending is not claimed, the answer is."""
    send_id = open_with(tmp_path, 3)
    db = state.connect(tmp_path)
    try:
        first, second, third = [r[0] for r in ledger.pending(db, send_id, 0, 3)]
        assert ledger.claim(db, first, "<1@x>")
        db.execute(f"CREATE TRIGGER refuse BEFORE UPDATE OF state ON recipients "
                   f"WHEN NEW.id = {second} BEGIN SELECT RAISE(ABORT, 'disk full'); END")
        with pytest.raises(Exception, match="disk full"):
            ledger.settle_and_claim(db, ledger.Outcome(first, "sent", "250 ok"), second,
                                    "<2@x>")
        assert not db.in_transaction
        assert _states(tmp_path, send_id) == {
            "r0@example.org": "sending", "r1@example.org": "pending",
            "r2@example.org": "pending"}
        db.execute("DROP TRIGGER refuse")
        assert ledger.claim(db, third, "<3@x>")  # another connection took it meanwhile
        assert not ledger.settle_and_claim(db, ledger.Outcome(first, "sent", "250 ok"),
                                           third, "<3b@x>")
        assert ledger.settle_and_claim(db, ledger.Outcome(third, "failed", "550 no"),
                                       second, "<2@x>")
        assert _states(tmp_path, send_id) == {
            "r0@example.org": "sent", "r1@example.org": "sending",
            "r2@example.org": "failed"}
        with pytest.raises(ValueError):
            ledger.settle_and_claim(db, ledger.Outcome(second, "sending", ""), first, "<x>")
        assert not db.in_transaction
    finally:
        db.close()

