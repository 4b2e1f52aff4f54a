"""Delivery: workers that claim a recipient, hand its message over and settle it in the ledger.

The main thread reads pending recipients from the ledger into a queue; each worker (one
per connection) renders a message, claims the recipient, hands the message to its
transport and settles the outcome, rendering the next message while the server answers.
One rate limit is shared by all. Ctrl-C, a transport that cannot go on, or any error in a
worker sets one stop: every worker finishes the message in hand and records it, and the
first reason given is the one reported.
"""

from __future__ import annotations

import contextlib
import queue
import signal
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from . import ledger, state, transports
from .errors import PublishError

MAX_ATTEMPTS = 3


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
        if not self.interval:
            return
        with self.lock:
            now = time.monotonic()
            at = max(self.next, now)
            self.next = at + self.interval * count
        if at > now:
            self.stop.wait(at - now)


def start(*, batch_size: int = 1, **options) -> Delivery:
    """The delivery loop for a transport: one message per call, or `batch_size` per call."""
    if batch_size > 1:
        from .delivery_batch import BatchDelivery

        return BatchDelivery(batch_size=batch_size, **options)
    return Delivery(**options)


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
        self.work: queue.Queue = queue.Queue(maxsize=connections * 64)
        self.fed = threading.Event()  # every pending recipient is in the queue
        self.lock = threading.Lock()
        self.halting = threading.RLock()  # re-entrant: SIGTERM's handler may interrupt halt
        self.done = 0
        self.total = 0
        self.reasons: list[str] = []
        self.error: BaseException | None = None  # what stopped it, for --debug

    # the main thread -----------------------------------------------------------------
    def run(self, db: sqlite3.Connection) -> str:
        """Deliver to every pending recipient; returns why it stopped early, or ''."""
        self.total = ledger.counts(db, self.send_id)[0]["pending"]
        threads = [threading.Thread(target=self._work, daemon=True, name=f"send-{n}")
                   for n in range(self.connections)]
        for thread in threads:
            thread.start()
        with self._stopped_by_sigterm():
            self._run(db, threads)
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

    def _run(self, db: sqlite3.Connection, threads: list[threading.Thread]) -> None:
        try:
            try:
                self._feed(db)
            except (sqlite3.Error, PublishError) as exc:
                self.halt(str(_explained(exc, db)), exc)
            self.fed.set()
            self._wait(threads)
        except KeyboardInterrupt:
            self.halt("interrupted (Ctrl-C); run the same command to continue")
            # Each worker finishes and records the message in flight; a second Ctrl-C
            # leaves at once (a message then in flight is found in doubt next time).
            with contextlib.suppress(KeyboardInterrupt):
                self._wait(threads)

    def halt(self, reason: str, error: BaseException | None = None) -> None:
        """Stop every worker after the message in hand; the first reason is the one kept."""
        with self.halting:
            if not self.reasons:
                self.reasons.append(reason)
                self.error = error
        self.stop.set()

    def _feed(self, db: sqlite3.Connection) -> None:
        last_id = 0
        while not self.stop.is_set():
            batch = ledger.pending(db, self.send_id, last_id, 500)
            if not batch:
                return
            for row in batch:
                last_id = row[0]
                while True:
                    if self.stop.is_set():
                        return
                    try:
                        self.work.put(row, timeout=0.2)
                        break
                    except queue.Full:
                        self.progress(self.done, self.total)

    def _wait(self, threads: list[threading.Thread]) -> None:
        while any(thread.is_alive() for thread in threads):
            for thread in threads:
                thread.join(timeout=0.2)
            self.progress(self.done, self.total)

    # the workers -----------------------------------------------------------------------
    def _next(self) -> Job | None:
        """The next recipient's message; None when there is no more work or a stop."""
        while True:
            try:
                row = self.work.get(timeout=0.2)
            except queue.Empty:
                if self.stop.is_set() or (self.fed.is_set() and self.work.empty()):
                    return None
                continue
            return self._prepare(row)

    def _prepare(self, row: tuple) -> Job:
        """Never raises: a failure becomes part of the job, acted on when its turn comes."""
        recipient_id, address, name = row
        try:
            return self.prepare(recipient_id, address, name)
        except Exception as exc:
            return Job(recipient_id, address, "", None, error=transports.describe(exc))

    def _work(self) -> None:
        """One worker: its own database connection and transport, any failure a stop."""
        db = transport = None
        try:
            db = state.connect(self.state_dir)
            transport = self.make_transport()
            self._worker(db, transport)
        except Stop as stop:
            self.halt(stop.reason, stop.cause)
        except BaseException as exc:
            self.halt(str(_explained(exc, db)), exc)
        finally:
            if transport is not None:
                with contextlib.suppress(Exception):
                    transport.close()
            if db is not None:
                with contextlib.suppress(Exception):
                    db.close()

    def _worker(self, db: sqlite3.Connection, transport: transports.Transport) -> None:
        """Take recipients from the queue, one message per call, until none is left."""
        job = self._next()
        while job is not None and not self.stop.is_set():
            following: list[Job] = []

            def render_next(following: list[Job] = following) -> None:
                # Runs while the server handles the current message.
                if not following:
                    with contextlib.suppress(queue.Empty):
                        following.append(self._prepare(self.work.get_nowait()))

            self._deliver_one(db, transport, job, render_next)
            with self.lock:
                self.done += 1
            job = following[0] if following else self._next()

    def _deliver_one(self, db: sqlite3.Connection, transport: transports.Transport, job: Job,
                     while_waiting: Callable[[], None]) -> None:
        """Hand one message over and settle the recipient; raises Stop to end the send."""
        if job.error:
            raise Stop(f"cannot make the message to {job.address}: {job.error}")
        if job.refused:
            ledger.settle(db, job.recipient_id, "failed", job.refused)
            return
        for attempt in range(1, MAX_ATTEMPTS + 1):
            self.limiter.wait()
            if self.stop.is_set() or not ledger.claim(db, job.recipient_id, job.message_id):
                return
            try:
                answer = transport.deliver(self.sender, job.address, job.data, while_waiting)
            except transports.InDoubt as exc:
                ledger.settle(db, job.recipient_id, "in_doubt", exc.response)
                return
            except transports.Rejected as exc:
                ledger.settle(db, job.recipient_id, "failed", exc.response)
                return
            except transports.Unexpected as exc:
                outcome = "in_doubt" if exc.handed_over else "pending"
                ledger.settle(db, job.recipient_id, outcome, exc.response)
                raise Stop(f"{exc.response} (to {job.address})", exc) from None
            except transports.Fatal as exc:
                ledger.settle(db, job.recipient_id, "pending", exc.response)
                raise Stop(exc.response) from None
            except transports.Temporary as exc:
                if isinstance(exc, transports.Unreachable) and attempt == MAX_ATTEMPTS:
                    ledger.settle(db, job.recipient_id, "pending", exc.response)
                    raise Stop(f"{exc.response}; stopped, run the same command to continue"
                               ) from None
                if attempt == MAX_ATTEMPTS:
                    ledger.settle(db, job.recipient_id, "failed",
                                  f"{exc.response} (gave up after {attempt} attempts)")
                    return
                ledger.settle(db, job.recipient_id, "pending", exc.response)
                if self.stop.wait(self.backoff * 2 ** (attempt - 1)):
                    return
                continue
            except Exception as exc:  # a transport that broke its promise may have sent it
                reason = f"unexpected error while sending: {transports.describe(exc)}"
                ledger.settle(db, job.recipient_id, "in_doubt", reason)
                raise Stop(f"{reason} (to {job.address})", exc) from None
            ledger.settle(db, job.recipient_id, "sent", answer)
            return


def _explained(exc: BaseException, db: sqlite3.Connection | None) -> str:
    """One line for an error that stopped a worker."""
    if isinstance(exc, sqlite3.Error):
        return str(state.explain(exc, db))
    if isinstance(exc, PublishError):
        return str(exc)
    return f"unexpected error in a send worker: {transports.describe(exc)}"
