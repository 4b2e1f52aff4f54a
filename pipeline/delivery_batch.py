"""Delivery in batches: for a transport that takes many recipients per call (an email API).

Each worker waits for the rate to allow a whole call, claims the next `batch_size` due
recipients in one step (`ledger.claim_batch`: all `sending` under one batch id before the
call), makes their entries, makes the call and settles every entry from the answer in one
transaction. A call with no answer leaves all of its recipients in doubt; entries the
service did not take now go back to `pending` with a retry time (exponential backoff), and
a throttled call pauses every worker. Stopping works as for `Delivery`.
"""

from __future__ import annotations

import sqlite3
import threading
import time
import uuid

from . import ledger, transports
from .delivery import MAX_ATTEMPTS, Delivery, Job, Stop
from .ledger import Outcome

MAX_WAIT = 1.0  # seconds between looks at the ledger while every recipient left waits
MAX_PAUSE = 60.0  # seconds: the longest pause after throttled calls


class BatchDelivery(Delivery):
    """Workers that claim, hand over and settle `batch_size` recipients per call."""

    def __init__(self, *, batch_size: int, **options):
        super().__init__(**options)
        self.batch_size = batch_size
        self.paused_until = 0.0  # monotonic: a throttled call pauses every worker
        self.throttled = 0  # throttled calls in a row: the pause doubles with each
        self.pause_lock = threading.Lock()

    def _worker(self, db: sqlite3.Connection, transport: transports.BatchTransport) -> None:
        while not self.stop.is_set():
            self._wait_out_pause()
            self.limiter.wait(self.batch_size)
            if self.stop.is_set():
                return
            claimed = ledger.claim_batch(db, self.send_id, self.batch_size, uuid.uuid4().hex)
            if not claimed:
                due = ledger.next_retry(db, self.send_id)
                if due is None:
                    return
                self.stop.wait(min(max(due - time.time(), 0.01), MAX_WAIT))
                continue
            outcomes, stop = self._deliver_batch(transport, claimed)
            ledger.settle_many(db, outcomes)
            with self.lock:
                self.done += sum(item.state != "pending" for item in outcomes)
            if stop is not None:
                raise stop

    def _wait_out_pause(self) -> None:
        with self.pause_lock:
            left = self.paused_until - time.monotonic()
        if left > 0:
            self.stop.wait(left)

    def _throttle(self, rows: list[ledger.Claimed], reason: str) -> list[Outcome]:
        """The service asks us to slow down: every worker pauses (longer each time in a
        row), and these recipients wait, without it counting as an attempt."""
        with self.pause_lock:
            self.throttled += 1
            pause = min(self.backoff * 2 ** (self.throttled - 1), MAX_PAUSE)
            self.paused_until = max(self.paused_until, time.monotonic() + pause)
        return [Outcome(row.id, "pending", reason, retry_at=time.time() + pause,
                        counted=False) for row in rows]

    def _deliver_batch(self, transport: transports.BatchTransport,
                       claimed: list[ledger.Claimed]) -> tuple[list[Outcome], Stop | None]:
        """Make one call for the claimed recipients: how each ends, and whether to stop."""
        jobs = [self._prepare(row[:3]) for row in claimed]
        broken = next((job for job in jobs if job.error), None)
        if broken is not None:  # nothing handed over: all of them stay to send
            return ([Outcome(row.id, "pending", "not sent: the send stopped") for row in claimed],
                    Stop(f"cannot make the message to {broken.address}: {broken.error}"))
        outcomes = [Outcome(job.recipient_id, "failed", job.refused) for job in jobs
                    if job.refused]
        sendable = [(row, job) for row, job in zip(claimed, jobs, strict=True)
                    if not job.refused]
        if not sendable:
            return outcomes, None
        entries = [transports.Entry(job.address, job.data, job.fields, job.recipient_id)
                   for _, job in sendable]
        try:
            answers = transport.deliver_batch(self.sender, entries)
            if len(answers) != len(entries):
                raise transports.InDoubt(f"the service answered {len(answers)} of "
                                         f"{len(entries)} entries")
        except transports.DeliveryError as exc:
            settled, stop = self._whole_call(exc, sendable)
            return outcomes + settled, stop
        except Exception as exc:  # a transport that broke its promise may have sent them
            reason = f"unexpected error while sending: {transports.describe(exc)}"
            return (outcomes + [Outcome(row.id, "in_doubt", reason) for row, _ in sendable],
                    Stop(reason, exc))
        throttled = [(row, answer.response) for (row, _), answer
                     in zip(sendable, answers, strict=True) if answer.state == "throttled"]
        if throttled:
            outcomes += self._throttle([row for row, _ in throttled], throttled[0][1])
        else:
            with self.pause_lock:
                self.throttled = 0
        halted = next((answer.response for answer in answers if answer.state == "halt"), "")
        for (row, _), answer in zip(sendable, answers, strict=True):
            if answer.state == "throttled":
                continue
            if answer.state == "halt":
                outcomes.append(Outcome(row.id, "pending", answer.response))
            elif answer.state == "sent":
                outcomes.append(Outcome(row.id, "sent", answer.response, answer.remote_id))
            elif answer.state == "failed":
                outcomes.append(Outcome(row.id, "failed", answer.response))
            else:
                outcomes.append(self._later(row, answer.response))
        return outcomes, Stop(f"{halted}; run the same command to continue") if halted else None

    def _later(self, row: ledger.Claimed, reason: str) -> Outcome:
        """Not taken now: back to pending with exponential backoff, failed after the last
        attempt."""
        if row.attempts >= MAX_ATTEMPTS:
            return Outcome(row.id, "failed", f"{reason} (gave up after {row.attempts} attempts)")
        delay = self.backoff * 2 ** (row.attempts - 1)
        return Outcome(row.id, "pending", reason, retry_at=time.time() + delay)

    def _whole_call(self, exc: transports.DeliveryError,
                    sendable: list[tuple[ledger.Claimed, Job]]
                    ) -> tuple[list[Outcome], Stop | None]:
        """Every recipient of a call that failed as a whole, and whether the send stops."""
        rows = [row for row, _ in sendable]
        text = exc.response
        if isinstance(exc, transports.InDoubt):
            return [Outcome(row.id, "in_doubt", text) for row in rows], None
        if isinstance(exc, transports.Rejected):
            return [Outcome(row.id, "failed", text) for row in rows], None
        if isinstance(exc, transports.Unexpected):
            state = "in_doubt" if exc.handed_over else "pending"
            return [Outcome(row.id, state, text) for row in rows], Stop(text, exc)
        if isinstance(exc, transports.Fatal):
            return [Outcome(row.id, "pending", text) for row in rows], Stop(text)
        if isinstance(exc, transports.Throttled):
            return self._throttle(rows, text), None
        if isinstance(exc, transports.Unreachable) and \
                min(row.attempts for row in rows) >= MAX_ATTEMPTS:
            return ([Outcome(row.id, "pending", text) for row in rows],
                    Stop(f"{text}; stopped, run the same command to continue"))
        return [self._later(row, text) for row in rows], None
