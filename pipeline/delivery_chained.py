"""Delivery with one ledger commit per message: a message's answer and the next claim together.

`Delivery` commits twice a message: the claim before handing it over, the answer after.
Here, when a message ends (sent, refused, in doubt) and the same connection's next
message is already made, its answer and the next recipient's claim are one transaction
(`ledger.settle_and_claim`). The in-doubt window does not grow: after that commit the
next recipient is claimed but not yet handed over, as after a lone claim, so a crash at
any point leaves at most one recipient per connection in doubt. Everything else (retries,
a stop, a rate limit, a message that cannot be made) goes through `Delivery`'s own path.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Callable

from . import ledger, transports
from .delivery import MAX_ATTEMPTS, Delivery, Job, Stop


class ChainedDelivery(Delivery):
    """`Delivery`, recording each answer in the same commit as the next claim."""

    def _worker(self, db: sqlite3.Connection, transport: transports.Transport) -> None:
        job = self._next(db)
        claimed = False  # whether `job`'s recipient is already ours (`sending`)
        while job is not None:
            if self.stop.is_set():
                if claimed:  # claimed with the last answer, never handed over: not an attempt
                    ledger.settle_many(db, [ledger.Outcome(job.recipient_id, "pending",
                                                           counted=False)])
                return
            following: list[Job | None] = []

            def render_next(following: list[Job | None] = following) -> None:
                # Made while the server handles this message (see Delivery._worker).
                if not following:
                    with contextlib.suppress(Exception):
                        following.append(self._next(db))

            ended = self._hand_over(db, transport, job, render_next, claimed)
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

    def _count(self) -> None:
        with self.lock:
            self.done += 1

    def _record(self, db: sqlite3.Connection, ended: ledger.Outcome,
                upcoming: Job | None) -> bool:
        """Record `ended`; claim `upcoming` in the same commit when it is ready to go now.
        Returns whether it was claimed."""
        if (upcoming is None or upcoming.error or upcoming.refused or self.limiter.interval
                or self.stop.is_set()):
            ledger.settle_many(db, [ended])
            return False
        return ledger.settle_and_claim(db, ended, upcoming.recipient_id, upcoming.message_id)

    def _hand_over(self, db: sqlite3.Connection, transport: transports.Transport, job: Job,
                   while_waiting: Callable[[], None], claimed: bool) -> ledger.Outcome | None:
        """Hand one message over, in up to MAX_ATTEMPTS attempts, as `Delivery._deliver_one`
        does (`claimed`: the first attempt's claim is already made). A plain ending (sent,
        refused, in doubt) is returned, to be recorded with the next claim; any other is
        recorded here (None returned), or raises Stop."""
        if job.error or job.refused:
            self._deliver_one(db, transport, job, while_waiting)
            return None
        for attempt in range(1, MAX_ATTEMPTS + 1):
            if not claimed:
                self.limiter.wait()
                if self.stop.is_set() or not ledger.claim(db, job.recipient_id,
                                                          job.message_id):
                    return None
            claimed = False
            try:
                answer = transport.deliver(self.sender, job.address, job.data, while_waiting)
            except transports.InDoubt as exc:
                return ledger.Outcome(job.recipient_id, "in_doubt", exc.response)
            except transports.Rejected as exc:
                return ledger.Outcome(job.recipient_id, "failed", exc.response)
            except transports.Temporary as exc:
                if not self._again(db, job, exc, attempt):
                    return None
                continue
            except (transports.Fatal, transports.Unexpected) as exc:
                self._stop_on(db, job, exc)
            except Exception as exc:  # a transport that broke its promise may have sent it
                reason = f"unexpected error while sending: {transports.describe(exc)}"
                ledger.settle(db, job.recipient_id, "in_doubt", reason)
                raise Stop(f"{reason} (to {job.address})", exc) from None
            return ledger.Outcome(job.recipient_id, "sent", answer)
        return None

    def _again(self, db: sqlite3.Connection, job: Job, exc: transports.Temporary,
               attempt: int) -> bool:
        """After a failure for now: whether to try again (after the back-off); the
        recipient recorded as `Delivery._deliver_one` records it."""
        if isinstance(exc, transports.Unreachable) and attempt == MAX_ATTEMPTS:
            ledger.settle(db, job.recipient_id, "pending", exc.response)
            raise Stop(f"{exc.response}; stopped, run the same command to continue") from None
        if attempt == MAX_ATTEMPTS:
            ledger.settle(db, job.recipient_id, "failed",
                          f"{exc.response} (gave up after {attempt} attempts)")
            return False
        ledger.settle(db, job.recipient_id, "pending", exc.response)
        return not self.stop.wait(self.backoff * 2 ** (attempt - 1))

    def _stop_on(self, db: sqlite3.Connection, job: Job,
                 exc: transports.Fatal | transports.Unexpected) -> None:
        """Fatal or Unexpected: record the recipient as Delivery does, and stop the send."""
        if isinstance(exc, transports.Unexpected):
            ledger.settle(db, job.recipient_id, "in_doubt" if exc.handed_over else "pending",
                          exc.response)
            raise Stop(f"{exc.response} (to {job.address})", exc) from None
        ledger.settle(db, job.recipient_id, "pending", exc.response)
        raise Stop(exc.response) from None
