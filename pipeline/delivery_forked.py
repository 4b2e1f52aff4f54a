"""Delivery over several connections, a process per connection (Linux: fork).

Threads share one interpreter lock, so a send over 4 connections made its messages on
one core. Here each connection is a forked worker process with its own database
connection and transport; it reads and claims only its own share of the pending
recipients (id modulo the number of workers), with `ChainedDelivery`'s worker loop, so
the ledger's claims are what they are with threads: one row, one claim, one worker.

The parent holds the send's lock the whole time and only waits, shows progress (each
worker counts its messages in a shared page) and reports. Each worker holds the read
end of one control pipe whose write end only the parent holds: the parent closes it to
stop them (Ctrl-C, SIGTERM, a worker's stop), and when the parent dies (even by SIGKILL)
the kernel closes it: every worker then finishes the message in hand, records it, and
sends nothing more. A worker that dies is reported as one line and stops the others; what
it left `sending` is in doubt, and the send resumes with the same command. Secrets reach
workers in memory (fork), never through argv or the environment.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import signal
import sqlite3
import threading
import time
from collections import deque

from . import ledger
from .delivery import READ_AHEAD, RateLimit
from .delivery_chained import ChainedDelivery

POLL = 0.1  # seconds between looks at the workers (progress, exits)


def available() -> bool:
    """Whether this system can run a worker per process (fork, as on Linux)."""
    return hasattr(os, "fork") and hasattr(os, "waitpid") and os.name == "posix"


class ForkedDelivery(ChainedDelivery):
    """One run over a send's pending recipients, a worker process per connection."""

    share: tuple[int, int] | None = None  # (k, n) in a worker: the rows it may take

    # the parent ------------------------------------------------------------------------
    def run(self, db: sqlite3.Connection) -> str:
        self.total = ledger.counts(db, self.send_id)[0]["pending"]
        page = mmap.mmap(-1, 8 * self.connections)  # shared with the workers: their counts
        counts = memoryview(page).cast("q")
        control, stop_all = os.pipe()
        workers: dict[int, tuple[int, int]] = {}  # pid -> (connection, its result pipe)
        with self._stopped_by_sigterm():
            try:
                for number in range(self.connections):
                    self._fork(number, control, stop_all, counts, workers)
            finally:
                os.close(control)
            try:
                self._watch(workers, counts, stop_all)
            except KeyboardInterrupt:
                self.halt("interrupted (Ctrl-C); run the same command to continue")
                try:
                    self._watch(workers, counts, stop_all)
                except KeyboardInterrupt:  # a second Ctrl-C: leave now (in flight: in doubt)
                    self._kill(workers)
            finally:
                self._kill(workers)  # only ever still running after an error of ours
                with contextlib.suppress(OSError):
                    os.close(stop_all)
        self.done = sum(counts)
        counts.release()
        page.close()
        if self.reasons:
            return self.reasons[0]
        return "interrupted; run the same command to continue" if self.stop.is_set() else ""

    def _fork(self, number: int, control: int, stop_all: int, counts: memoryview,
              workers: dict[int, tuple[int, int]]) -> None:
        result, answer = os.pipe()
        pid = os.fork()
        if pid == 0:  # the worker: never returns
            code = 70
            try:
                os.close(stop_all)
                os.close(result)
                for _, earlier in workers.values():
                    os.close(earlier)
                self._worker_process(number, control, answer, counts)
                code = 0
            finally:
                os._exit(code)
        os.close(answer)
        workers[pid] = (number, result)

    def _watch(self, workers: dict[int, tuple[int, int]], counts: memoryview,
               stop_all: int) -> None:
        """Until every worker has exited: progress, and each exit's reason."""
        stopping = False
        while workers:
            for pid in list(workers):
                ended, status = os.waitpid(pid, os.WNOHANG)
                if ended:
                    self._ended(*workers.pop(pid), status)
            if self.stop.is_set() and not stopping:
                stopping = True
                with contextlib.suppress(OSError):
                    os.close(stop_all)
            self.progress(sum(counts), self.total)
            if workers:
                time.sleep(POLL)

    def _ended(self, number: int, result: int, status: int) -> None:
        """A worker has exited: its stop reason, or a line saying how it died."""
        with os.fdopen(result, "rb") as pipe:
            reason = pipe.read().decode("utf-8", "replace")
        if reason:
            self.halt(reason)
        elif os.waitstatus_to_exitcode(status) != 0:
            code = os.waitstatus_to_exitcode(status)
            how = (f"killed by signal {-code} ({_signal_name(-code)})" if code < 0
                   else f"exit status {code}")
            self.halt(f"the send worker for connection {number + 1} died ({how}); what it "
                      "was sending is in doubt; run the same command to continue")

    @staticmethod
    def _kill(workers: dict[int, tuple[int, int]]) -> None:
        for pid, (_, result) in list(workers.items()):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(OSError):
                os.waitpid(pid, 0)
            with contextlib.suppress(OSError):
                os.close(result)
            workers.pop(pid)

    # a worker process ------------------------------------------------------------------
    def _worker_process(self, number: int, control: int, answer: int,
                        counts: memoryview) -> None:
        """Run one connection's worker; write why it stopped (or nothing) to `answer`."""
        parent = os.getppid()
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops us (control pipe)
        signal.signal(signal.SIGTERM, lambda *_: self.stop.set())
        self.stop = threading.Event()
        self.limiter = RateLimit(self.limiter.interval and 1 / (self.limiter.interval
                                                                * self.connections),
                                 self.stop)
        self.share, self.counts, self.slot = (number, self.connections), counts, number
        self.rows, self.last_id, self.read_all = deque(), 0, False
        self.reasons, self.error, self.working = [], None, 1
        self.reading, self.lock = threading.Lock(), threading.Lock()
        self.halting = threading.RLock()
        threading.Thread(target=self._until_told, args=(control,), daemon=True).start()
        if os.getppid() == parent:  # the parent may have died before the thread started
            self._work()
        with os.fdopen(answer, "wb") as pipe:
            pipe.write((self.reasons[0] if self.reasons else "").encode("utf-8"))

    def _until_told(self, control: int) -> None:
        """The control pipe ends (the parent closed it, or died): stop after this message."""
        with contextlib.suppress(OSError):
            while os.read(control, 64):
                pass
        self.stop.set()

    def _count(self) -> None:
        self.counts[self.slot] += 1

    def _take(self, db: sqlite3.Connection) -> tuple | None:
        """The next of this worker's own pending recipients (see `Delivery._take`)."""
        if not self.rows and not self.read_all and not self.stop.is_set():
            batch = ledger.pending(db, self.send_id, self.last_id, READ_AHEAD, self.share)
            if batch:
                self.last_id = batch[-1][0]
                self.rows.extend(batch)
            else:
                self.read_all = True
        if not self.rows or self.stop.is_set():
            return None
        return self.rows.popleft()


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return "unknown signal"
