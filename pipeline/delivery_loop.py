"""One thread driving every SMTP connection of a send: no lock hand-offs, no wake-ups.

With a thread per connection, each message wakes its thread and hands the interpreter
lock over several times; here every connection is the same steps as a worker's
(`ChainedDelivery._overlapped_steps`: the ledger's claim before anything goes, the answer
committed with the next claim while the server reads the next envelope, the retries, the
back-offs, the rate), but its waits are for a selector: a socket to read or write (each
with the transport's timeout: a server that stops answering fails that step with
TimeoutError, as a blocking socket would), a back-off or the rate (timers: one
connection's wait never holds up the others), or a new connection, made on a short-lived
thread (connecting, greeting, STARTTLS and logging in stay blocking there). One database
connection for all; each connection keeps its own at most one message in doubt.
"""

from __future__ import annotations

import collections
import contextlib
import selectors
import socket
import sqlite3
import threading
import time
from concurrent.futures import Future
from typing import Any

from . import transports
from .transports import CALL, READ, SLEEP, WRITE

STOP_CHECK = 0.05  # seconds between looks at the stop while a connection sleeps
_EVENTS = {READ: selectors.EVENT_READ, WRITE: selectors.EVENT_WRITE}


class _Connection:
    """One connection's steps and what they wait for."""

    __slots__ = ("closing", "kind", "registered", "sock", "steps", "transport", "until")

    def __init__(self, steps: transports.Steps, transport: Any):
        self.steps, self.transport = steps, transport
        self.kind: str | None = None  # READ, WRITE, SLEEP, CALL or None (running)
        self.until: float | None = None  # when the wait ends (a timeout, a timer)
        self.sock: Any = None  # the socket registered with the selector, if any
        self.registered = 0  # its events
        self.closing = False  # its steps are over; these are the transport's QUIT


class SmtpLoop:
    """Drive `delivery`'s steps for each transport until all have ended."""

    def __init__(self, delivery: Any, db: sqlite3.Connection, made: list):
        self.delivery, self.db = delivery, db
        self.connections = [_Connection(delivery._overlapped_steps(db, t), t) for t in made]
        self.selector = selectors.DefaultSelector()
        self.finished: collections.deque = collections.deque()  # (connection, Future)
        self.waker, self.wakeup = socket.socketpair()
        self.waker.setblocking(False)
        self.wakeup.setblocking(False)

    def run(self) -> None:
        for connection in self.connections:
            connection.transport.blocking = False
        self.selector.register(self.waker, selectors.EVENT_READ, None)
        try:
            for connection in list(self.connections):
                self._step(connection, None, None)
            while self.connections:
                self._turn()
        finally:
            # Steps left (the loop failed): their own endings record what they hold while
            # the database is still open, not at garbage collection after it is closed.
            for connection in self.connections:
                with contextlib.suppress(Exception):
                    connection.steps.close()
            self.selector.close()
            self.waker.close()
            self.wakeup.close()

    def _turn(self) -> None:
        """Wait for the first socket, timer or connection made; move whatever is ready."""
        now = time.monotonic()
        timeout = None
        for connection in self.connections:
            if connection.until is not None:
                left = connection.until - now
                if connection.kind is SLEEP:
                    left = min(left, STOP_CHECK)
                timeout = left if timeout is None else min(timeout, left)
        events = self.selector.select(None if timeout is None else max(timeout, 0.0))
        for key, _ in events:
            if key.data is None:
                with contextlib.suppress(OSError):
                    self.waker.recv(4096)
            elif key.data.kind in _EVENTS:
                self._step(key.data, None, None)
        while self.finished:
            connection, future = self.finished.popleft()
            try:
                result = future.result()
            except BaseException as exc:
                self._step(connection, None, exc)
            else:
                self._step(connection, result, None)
        now = time.monotonic()
        stopped = self.delivery.stop.is_set()
        for connection in list(self.connections):
            if connection.kind is SLEEP and (stopped or connection.until <= now):
                self._step(connection, stopped, None)  # True: stopped, as Event.wait
            elif connection.kind in _EVENTS and connection.until is not None \
                    and connection.until <= now:
                self._step(connection, None, TimeoutError("timed out"))

    def _step(self, connection: _Connection, value: Any, error: BaseException | None) -> None:
        """Resume one connection's steps with `value` (or `error`) until its next wait."""
        connection.kind = connection.until = None
        try:
            if error is not None:
                request = connection.steps.throw(error)
            else:
                request = connection.steps.send(value)
        except StopIteration:
            self._ended(connection)
            return
        except BaseException as exc:
            self._ended(connection, exc)
            return
        try:
            self._wait(connection, request)
        except Exception as exc:  # a socket the selector refuses: that connection's failure
            self._step(connection, None, exc)

    def _wait(self, connection: _Connection, request: tuple) -> None:
        kind = connection.kind = request[0]
        if kind in _EVENTS:
            sock, timeout, events = request[1], request[2], _EVENTS[kind]
            if connection.sock is not sock:
                self._unregister(connection)
                self.selector.register(sock, events, connection)
                connection.sock, connection.registered = sock, events
            elif connection.registered != events:
                self.selector.modify(sock, events, connection)
                connection.registered = events
            connection.until = None if timeout is None else time.monotonic() + timeout
            return
        self._unregister(connection)
        if kind is SLEEP:
            connection.until = request[1]
        elif kind is CALL:
            # A daemon thread, as the threaded workers are: a second Ctrl-C leaves at once
            # even while a connection is being made.
            threading.Thread(target=self._call, args=(connection, request[1]),
                             name="send-connect", daemon=True).start()
        else:
            raise ValueError(f"not a step: {request!r}")

    def _call(self, connection: _Connection, call: Any) -> None:
        """On the connecting thread: make the call, hand its result to the loop, wake it."""
        future: Future = Future()
        try:
            future.set_result(call())
        except BaseException as exc:
            future.set_exception(exc)
        self.finished.append((connection, future))
        with contextlib.suppress(OSError):
            self.wakeup.send(b"\0")

    def _unregister(self, connection: _Connection) -> None:
        if connection.sock is not None:
            with contextlib.suppress(KeyError, ValueError, OSError):
                self.selector.unregister(connection.sock)
            connection.sock, connection.registered = None, 0

    def _ended(self, connection: _Connection, error: BaseException | None = None) -> None:
        """A connection's steps are over (or failed: the whole send stops, as a worker's
        failure does); its transport says QUIT, as steps too, then it is gone."""
        from .delivery import Stop, _explained

        self._unregister(connection)
        if connection.closing:  # what QUIT met does not matter (as Transport.close)
            self.connections.remove(connection)
            return
        if error is not None:
            if isinstance(error, Stop):
                self.delivery.halt(error.reason, error.cause)
            else:
                self.delivery.halt(str(_explained(error, self.db)), error)
        connection.closing = True
        connection.steps = connection.transport.close_steps()
        self._step(connection, None, None)


def drive(delivery: Any, db: sqlite3.Connection, made: list) -> None:
    """Run every transport in `made` on this thread (see `Delivery._work`)."""
    SmtpLoop(delivery, db, made).run()


def on_loop(transport: Any) -> bool:
    """Whether a transport can be driven here: it has steps and a socket to wait on."""
    return hasattr(transport, "deliver_steps") and hasattr(transport, "close_steps") \
        and hasattr(transport, "blocking")
