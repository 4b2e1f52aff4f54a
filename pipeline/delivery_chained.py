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

from . import ledger, transports
from .delivery import Delivery, Job


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

            ended = self._attempt(db, transport, job, render_next, claimed)
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
