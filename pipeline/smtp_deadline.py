"""A time limit for making an SMTP connection as a whole, not only for each of its waits."""

from __future__ import annotations

import contextlib
import smtplib
import socket
import threading


class Deadline:
    """Making a connection (connect, greeting, EHLO, STARTTLS, login) in `seconds` in all.

    Each of those waits has the transport's timeout, but a server that trickles its words
    a byte at a time, or continues its greeting without end, meets every one of them and
    would hold the connection forever. When the time is up the socket is shut, which ends
    whatever wait smtplib is in.
    """

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.expired = False
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()
        # A daemon: a pending deadline must never keep an interrupted send from exiting.
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True
        self._timer.start()

    def watch(self, sock: socket.socket) -> None:
        with self._lock:
            self._sock = sock
            if self.expired:
                self._shut()

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            self._shut()

    def _shut(self) -> None:
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.shutdown(socket.SHUT_RDWR)

    def end(self) -> None:
        self._timer.cancel()


class _Watched:
    """An smtplib connection whose socket its Deadline shuts when the time is up."""

    def __init__(self, *args, deadline: Deadline, **kwargs):
        self.deadline = deadline  # before smtplib's constructor connects
        super().__init__(*args, **kwargs)

    def _get_socket(self, host, port, timeout):
        sock = super()._get_socket(host, port, timeout)
        self.deadline.watch(sock)
        return sock


class WatchedSMTP(_Watched, smtplib.SMTP):
    pass


class WatchedSMTPSSL(_Watched, smtplib.SMTP_SSL):
    pass
