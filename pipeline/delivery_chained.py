"""Delivery with one ledger commit per message: a message's answer and the next claim together.

`Delivery` commits twice a message: the claim before handing it over, the answer after.
Here, when a message ends (sent, refused, in doubt) and the same connection's next
message is already made, its answer and the next recipient's claim are one transaction
(`ledger.settle_and_claim`). With a transport that announces the envelope (SMTP), that
commit runs while the server reads the next message's envelope, and the next message's
data only leaves once it has landed: a crash before it leaves an envelope without data,
which no server delivers. The in-doubt window does not grow: after that commit the next
recipient is claimed but not yet handed over, as after a lone claim, so a crash at any
point leaves at most one recipient per connection in doubt. Everything else (retries, a
stop, a rate limit, a message that cannot be made) goes through `Delivery`'s own path.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Callable

from . import delivery_loop, ledger, transports
from .delivery import Delivery, Job

LOOP_FROM = 2  # connections from which one thread drives them all (delivery_loop)


class ChainedDelivery(Delivery):
    """`Delivery`, recording each answer in the same commit as the next claim."""

    def _workers(self) -> list[Callable[[], None]]:
        """One thread for all the connections when the transport can be driven so (SMTP,
        LOOP_FROM connections or more); else a thread per connection."""
        if self.connections < LOOP_FROM:
            return super()._workers()
        try:
            probe = self.make_transport()
        except Exception:  # each worker meets it again, and stops the send with it
            return super()._workers()
        with contextlib.suppress(Exception):
            probe.close()
        if not (getattr(probe, "announces_envelope", False)
                and delivery_loop.on_loop(probe)):
            return super()._workers()
        return [lambda: self._work(self.connections, drive=self._drive)]

    def _drive(self, db: sqlite3.Connection, made: list) -> None:
        delivery_loop.drive(self, db, made)

    def _worker(self, db: sqlite3.Connection, transport: transports.Transport) -> None:
        if getattr(transport, "announces_envelope", False):
            self._worker_overlapped(db, transport)
            return
        job = self._next(db)
        claimed = False  # whether `job`'s recipient is already ours (`sending`)
        while job is not None:
            if self.stop.is_set():
                if claimed:  # claimed with the last answer, never handed over: not an attempt
                    ledger.settle_many(db, [ledger.Outcome(job.recipient_id, "pending",
                                                           counted=False)])
                return
            following: list[Job | None] = []
            ended = self._attempt(db, transport, job, self._render_into(db, following),
                                  claimed)
            self._count()
            upcoming = following[0] if following else None
            if ended is None:  # already recorded
                job, claimed = upcoming if following else self._next(db), False
                continue
            try:
                if not following:
                    upcoming = self._next(db)
            except BaseException:
                ledger.settle_many(db, [ended])
                raise
            job, claimed = upcoming, self._record(db, ended, upcoming)

    def _worker_overlapped(self, db: sqlite3.Connection,
                           transport: transports.Transport) -> None:
        """As `_worker`, the commit made while the server reads the next envelope."""
        transports.run_blocking(self._overlapped_steps(db, transport), self.stop)

    def _overlapped_steps(self, db: sqlite3.Connection,
                          transport: transports.Transport) -> transports.Steps:
        """One connection's messages, each answer committed with the next claim, as steps
        (see `transports.run_blocking`; `delivery_loop` drives several on one thread)."""
        job = self._next(db)
        unrecorded: ledger.Outcome | None = None  # the last answer, not yet in the ledger
        try:
            while job is not None and not self.stop.is_set():
                following: list[Job | None] = []
                chain = None
                if unrecorded is not None:
                    if self._may_chain(job):
                        chain = _Chain(db, unrecorded, job)
                    else:
                        ledger.settle_many(db, [unrecorded])
                    unrecorded = None
                try:
                    ended = yield from self._attempt_steps(
                        db, transport, job, self._render_into(db, following),
                        on_envelope=chain)
                finally:
                    if chain is not None:
                        chain.settle_if_not_yet()
                if chain is not None and chain.error is not None:
                    raise chain.error
                self._count()
                unrecorded = ended
                job = following[0] if following else self._next(db)
        finally:
            if unrecorded is not None:
                ledger.settle_many(db, [unrecorded])

    def _render_into(self, db: sqlite3.Connection, following: list[Job | None]):
        def render_next() -> None:
            # Made while the server handles this message (see Delivery._worker).
            if not following:
                with contextlib.suppress(Exception):
                    following.append(self._next(db))
        return render_next

    def _count(self) -> None:
        with self.lock:
            self.done += 1

    def _may_chain(self, upcoming: Job) -> bool:
        """Whether `upcoming` may be claimed with the last answer: ready to go now."""
        return not (upcoming.error or upcoming.refused or self.limiter.interval
                    or self.stop.is_set())

    def _record(self, db: sqlite3.Connection, ended: ledger.Outcome,
                upcoming: Job | None) -> bool:
        """Record `ended`; claim `upcoming` in the same commit when it is ready to go now.
        Returns whether it was claimed."""
        if upcoming is None or not self._may_chain(upcoming):
            ledger.settle_many(db, [ended])
            return False
        return ledger.settle_and_claim(db, ended, upcoming.recipient_id, upcoming.message_id)


class _Chain:
    """The last answer and the next claim, committed when the transport calls it (the next
    envelope out, its data not); whatever happens, the answer is recorded once."""

    def __init__(self, db: sqlite3.Connection, ended: ledger.Outcome, upcoming: Job):
        self.db, self.ended, self.upcoming = db, ended, upcoming
        self.done = False
        self.error: BaseException | None = None  # what the commit raised

    def __call__(self) -> bool:
        """Commit; whether the next recipient is ours (False: do not send it)."""
        self.done = True
        try:
            return ledger.settle_and_claim(self.db, self.ended, self.upcoming.recipient_id,
                                           self.upcoming.message_id)
        except BaseException as exc:
            self.error = exc
            return False

    def settle_if_not_yet(self) -> None:
        """The answer alone, when the transport never got as far as the envelope."""
        if not self.done:
            self.done = True
            ledger.settle_many(self.db, [self.ended])
