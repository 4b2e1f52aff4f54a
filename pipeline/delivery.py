"""Delivery: workers that claim a recipient, hand its message over and settle it in the ledger.

Each worker (one per connection) takes the next pending recipient (read from the ledger in
list order, a few hundred at a time, shared by all workers), renders its message, claims
the recipient, hands the message to its transport and settles the outcome, rendering the
next message while the server answers. The main thread only waits and shows progress.
One rate limit is shared by all. Ctrl-C, a transport that cannot go on, or any error in a
worker sets one stop: every worker finishes the message in hand and records it, and the
first reason given is the one reported.
"""

from __future__ import annotations

import contextlib
import signal
import sqlite3
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from . import ledger, state, transports
from .errors import PublishError

MAX_ATTEMPTS = 3
READ_AHEAD = 500  # pending recipients read from the ledger at a time
SWITCH_INTERVAL = 0.0005  # seconds a worker holds the interpreter lock before a turn ends


@dataclass(frozen=True)
class Job:
    """One recipient's message, ready to hand over."""

    recipient_id: int
    address: str  # as the envelope carries it
    message_id: str
    data: bytes | None  # the whole message; None for a template transport, or when refused
    refused: str = ""  # why this recipient cannot be sent to: failed, never handed over
    error: str = ""  # an unexpected failure while making it: the send stops, still pending
    fields: Mapping[str, str] = field(default_factory=dict)  # a template's values


Preparer = Callable[[int, str, str], Job]  # (recipient id, email, name) -> Job


class Stop(Exception):
    """Raised in a worker to stop the whole send, with the reason people will read."""

    def __init__(self, reason: str, cause: BaseException | None = None):
        super().__init__(reason)
        self.reason = reason
        self.cause = cause


class RateLimit:
    """At most `per_second` messages a second across all workers (one token bucket, with
    room for one call's worth); waits end on a stop."""

    def __init__(self, per_second: float | None, stop: threading.Event):
        self.interval = 1.0 / per_second if per_second else 0.0
        self.next = time.monotonic()
        self.lock = threading.Lock()
        self.stop = stop

    def wait(self, count: int = 1) -> None:
        """Until `count` more messages may go."""
        delay = self.reserve(count)
        if delay:
            self.stop.wait(delay)

    def reserve(self, count: int = 1) -> float:
        """The seconds to wait before `count` more messages may go (they are counted)."""
        if not self.interval:
            return 0.0
        with self.lock:
            now = time.monotonic()
            at = max(self.next, now)
            self.next = at + self.interval * count
        return at - now


def start(*, batch_size: int = 1, **options) -> Delivery:
    """The delivery loop for a transport: one message per call, or `batch_size` per call."""
    if batch_size > 1:
        from .delivery_batch import BatchDelivery

        return BatchDelivery(batch_size=batch_size, **options)
    return Delivery(**options)


class EnvelopeCommit(Protocol):
    """The commit a transport makes once the next message's envelope is out, before its
    data (see delivery_chained): the last answer recorded with the next claim."""

    def __call__(self) -> bool: ...

    def settle_if_not_yet(self) -> None:
        """The last answer alone, when no envelope went out."""


class Delivery:
    """One run of the workers over a send's pending recipients, one message per call."""

    def __init__(self, *, state_dir: Path, send_id: int, sender: str,
                 transport: Callable[[], transports.Transport], prepare: Preparer,
                 connections: int = 1, rate: float | None = None, backoff: float = 1.0,
                 progress: Callable[[int, int], None] | None = None,
                 stop: threading.Event | None = None):
        self.state_dir, self.send_id, self.sender = state_dir, send_id, sender
        self.make_transport, self.prepare = transport, prepare
        self.connections, self.backoff = connections, backoff
        self.progress = progress or (lambda done, total: None)
        self.stop = stop or threading.Event()
        self.limiter = RateLimit(rate, self.stop)
        self.rows: deque[tuple] = deque()  # read from the ledger, not yet taken
        self.last_id = 0  # the last recipient read
        self.read_all = False  # every pending recipient has been read
        self.reading = threading.Lock()
        self.lock = threading.Lock()
        self.working = connections  # workers that have not ended yet
        self.ended = threading.Event()  # set each time a worker ends
        self.halting = threading.RLock()  # re-entrant: SIGTERM's handler may interrupt halt
        self.done = 0
        self.total = 0
        self.reasons: list[str] = []
        self.error: BaseException | None = None  # what stopped it, for --debug

    # the main thread -----------------------------------------------------------------
    def run(self, db: sqlite3.Connection) -> str:
        """Deliver to every pending recipient; returns why it stopped early, or ''."""
        self.total = ledger.counts(db, self.send_id)[0]["pending"]
        workers = self._workers()
        self.working = len(workers)
        threads = [threading.Thread(target=work, daemon=True, name=f"send-{n}")
                   for n, work in enumerate(workers)]
        for thread in threads:
            thread.start()
        with self._stopped_by_sigterm(), _quick_turns(self.connections):
            self._run()
        if self.reasons:
            return self.reasons[0]
        return "interrupted; run the same command to continue" if self.stop.is_set() else ""

    @contextlib.contextmanager
    def _stopped_by_sigterm(self) -> Iterator[None]:
        """SIGTERM (a service manager stopping us) stops the send like Ctrl-C, cleanly."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = signal.signal(signal.SIGTERM, lambda *_: self.halt(
            "stopped by SIGTERM; run the same command to continue"))
        try:
            yield
        finally:
            signal.signal(signal.SIGTERM, previous)

    def _run(self) -> None:
        try:
            self._wait()
        except KeyboardInterrupt:
            self.halt("interrupted (Ctrl-C); run the same command to continue")
            # Each worker finishes and records the message in flight; a second Ctrl-C
            # leaves at once (a message then in flight is found in doubt next time).
            with contextlib.suppress(KeyboardInterrupt):
                self._wait()

    def halt(self, reason: str, error: BaseException | None = None) -> None:
        """Stop every worker after the message in hand; the first reason is the one kept."""
        with self.halting:
            if not self.reasons:
                self.reasons.append(reason)
                self.error = error
        self.stop.set()

    def _take(self, db: sqlite3.Connection) -> tuple | None:
        """The next pending recipient (id, email, name) in list order, each given to one
        worker only; None when all have been taken or the send stops."""
        with self.reading:
            if not self.rows and not self.read_all and not self.stop.is_set():
                batch = ledger.pending(db, self.send_id, self.last_id, READ_AHEAD)
                if batch:
                    self.last_id = batch[-1][0]
                    self.rows.extend(batch)
                else:
                    self.read_all = True
            if not self.rows or self.stop.is_set():
                return None
            return self.rows.popleft()

    def _wait(self) -> None:
        """Until every worker has ended. Each says so itself: a Ctrl-C that lands inside
        Thread.join can leave a live thread looking finished."""
        while self.working:
            if self.ended.wait(0.2):
                self.ended.clear()
            self.progress(self.done, self.total)

    # the workers -----------------------------------------------------------------------
    def _next(self, db: sqlite3.Connection) -> Job | None:
        """The next recipient's message; None when there is no more work or a stop."""
        row = self._take(db)
        return None if row is None else self._prepare(row)

    def _prepare(self, row: tuple) -> Job:
        """Never raises: a failure becomes part of the job, acted on when its turn comes."""
        recipient_id, address, name = row
        try:
            return self.prepare(recipient_id, address, name)
        except Exception as exc:
            return Job(recipient_id, address, "", None, error=transports.describe(exc))

    def _workers(self) -> list[Callable[[], None]]:
        """What each thread runs: here one worker per connection."""
        return [self._work] * self.connections

    def _work(self, connections: int = 1,
              drive: Callable[[sqlite3.Connection, list], None] | None = None) -> None:
        """One worker: its own database connection and transport (or `connections` of
        them, all driven by `drive`), any failure a stop."""
        db = None
        made: list = []
        try:
            db = state.connect(self.state_dir)
            for _ in range(connections):
                made.append(self.make_transport())
            if drive is None:
                self._worker(db, made[0])
            else:
                drive(db, made)
        except Stop as stop:
            self.halt(stop.reason, stop.cause)
        except BaseException as exc:
            self.halt(str(_explained(exc, db)), exc)
        finally:
            for transport in made:
                with contextlib.suppress(Exception):
                    transport.close()
            if db is not None:
                with contextlib.suppress(Exception):
                    db.close()
            with self.lock:
                self.working -= 1
            self.ended.set()

    def _worker(self, db: sqlite3.Connection, transport: transports.Transport) -> None:
        """Take the next recipients, one message per call, until none is left."""
        job = self._next(db)
        while job is not None and not self.stop.is_set():
            following: list[Job | None] = []

            def render_next(following: list[Job | None] = following) -> None:
                # Runs while the server handles the current message. A failure to read
                # the ledger here must not cost the message in flight its answer: the
                # next recipient is then read again once this one is settled.
                if not following:
                    with contextlib.suppress(Exception):
                        following.append(self._next(db))

            self._deliver_one(db, transport, job, render_next)
            with self.lock:
                self.done += 1
            job = following[0] if following else self._next(db)

    def _deliver_one(self, db: sqlite3.Connection, transport: transports.Transport, job: Job,
                     while_waiting: Callable[[], None]) -> None:
        """Hand one message over and settle the recipient; raises Stop to end the send."""
        ended = self._attempt(db, transport, job, while_waiting)
        if ended is not None:
            ledger.settle(db, ended.recipient_id, ended.state, ended.reason)

    def _attempt(self, db: sqlite3.Connection, transport: transports.Transport, job: Job,
                 while_waiting: Callable[[], None], claimed: bool = False,
                 on_envelope: EnvelopeCommit | None = None) -> ledger.Outcome | None:
        """`_attempt_steps` on this thread."""
        return transports.run_blocking(
            self._attempt_steps(db, transport, job, while_waiting, claimed, on_envelope),
            self.stop)

    def _attempt_steps(self, db: sqlite3.Connection, transport: transports.Transport,
                       job: Job, while_waiting: Callable[[], None], claimed: bool = False,
                       on_envelope: EnvelopeCommit | None = None) -> transports.Steps:
        """Hand one message over in up to MAX_ATTEMPTS attempts (`claimed`: the first
        attempt's claim is already made; `on_envelope`: it is made by this, which the
        transport calls before the data goes, see `SmtpTransport.deliver`). A plain ending
        (sent, refused, in doubt) is returned for the caller to record; any other is
        recorded here (None returned), or raises Stop to end the send. Its waits (the
        rate, a back-off, a transport's own when it has `deliver_steps`) are steps, see
        `transports.run_blocking`."""
        if job.error:
            raise Stop(f"cannot make the message to {job.address}: {job.error}")
        if job.refused:
            ledger.settle(db, job.recipient_id, "failed", job.refused)
            return None
        stepwise = getattr(transport, "deliver_steps", None)
        for attempt in range(1, MAX_ATTEMPTS + 1):
            if not claimed and on_envelope is None:
                delay = self.limiter.reserve()
                if delay:
                    yield (transports.SLEEP, time.monotonic() + delay)
                if self.stop.is_set() or not ledger.claim(db, job.recipient_id,
                                                          job.message_id):
                    return None
            claimed = False
            try:
                if on_envelope is not None:
                    answer = yield from stepwise(self.sender, job.address, job.data,
                                                 while_waiting, on_envelope=on_envelope)
                elif stepwise is not None:
                    answer = yield from stepwise(self.sender, job.address, job.data,
                                                 while_waiting)
                else:
                    answer = transport.deliver(self.sender, job.address, job.data,
                                               while_waiting)
            except Exception as exc:
                ended, backoff = self._answered(db, job, exc, attempt, on_envelope)
                if backoff is None:
                    return ended
                on_envelope = None
                if (yield (transports.SLEEP, time.monotonic() + backoff)):
                    return None  # stopped during the back-off
                continue
            return ledger.Outcome(job.recipient_id, "sent", answer)
        return None

    def _answered(self, db: sqlite3.Connection, job: Job, exc: Exception, attempt: int,
                  on_envelope: EnvelopeCommit | None
                  ) -> tuple[ledger.Outcome | None, float | None]:
        """What a transport's error means for `job`: (a plain ending for the caller to
        record, None), (None, None) when recorded here, (None, seconds) to try again after
        a back-off, or Stop raised to end the send."""
        if isinstance(exc, transports.Withdrawn):
            return None, None
        if isinstance(exc, transports.InDoubt):
            return ledger.Outcome(job.recipient_id, "in_doubt", exc.response), None
        if isinstance(exc, transports.Rejected):
            return ledger.Outcome(job.recipient_id, "failed", exc.response), None
        if isinstance(exc, transports.Unexpected):
            outcome = "in_doubt" if exc.handed_over else "pending"
            ledger.settle(db, job.recipient_id, outcome, exc.response)
            raise Stop(f"{exc.response} (to {job.address})", exc) from None
        if isinstance(exc, transports.Fatal):
            ledger.settle(db, job.recipient_id, "pending", exc.response)
            raise Stop(exc.response) from None
        if isinstance(exc, transports.Temporary):
            if on_envelope is not None:  # no envelope went: the next attempt claims
                on_envelope.settle_if_not_yet()  # the answer in hand, before waiting
            if isinstance(exc, transports.Unreachable) and attempt == MAX_ATTEMPTS:
                ledger.settle(db, job.recipient_id, "pending", exc.response)
                raise Stop(f"{exc.response}; stopped, run the same command to continue"
                           ) from None
            if attempt == MAX_ATTEMPTS:
                ledger.settle(db, job.recipient_id, "failed",
                              f"{exc.response} (gave up after {attempt} attempts)")
                return None, None
            ledger.settle(db, job.recipient_id, "pending", exc.response)
            return None, self.backoff * 2 ** (attempt - 1)
        # a transport that broke its promise may have sent it
        reason = f"unexpected error while sending: {transports.describe(exc)}"
        ledger.settle(db, job.recipient_id, "in_doubt", reason)
        raise Stop(f"{reason} (to {job.address})", exc) from None


@contextlib.contextmanager
def _quick_turns(workers: int) -> Iterator[None]:
    """Workers take turns with the interpreter lock every 0.5 ms instead of 5 ms: a worker
    whose server has answered waits less for one that is making a message."""
    if workers < 2:
        yield
        return
    previous = sys.getswitchinterval()
    sys.setswitchinterval(min(previous, SWITCH_INTERVAL))
    try:
        yield
    finally:
        sys.setswitchinterval(previous)


def _explained(exc: BaseException, db: sqlite3.Connection | None) -> str:
    """One line for an error that stopped a worker."""
    if isinstance(exc, sqlite3.Error):
        return str(state.explain(exc, db))
    if isinstance(exc, PublishError):
        return str(exc)
    return f"unexpected error in a send worker: {transports.describe(exc)}"
