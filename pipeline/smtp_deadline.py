"""Limits on making an SMTP connection: a time for all of it, not only for each of its
waits, and a size for each reply read meanwhile."""

from __future__ import annotations

import contextlib
import smtplib
import socket
import threading

# No SMTP reply comes near this; a server sending more (a greeting continued without end,
# say) is not answering, and what it sends must not pile up in memory.
REPLY_LIMIT = 64 * 1024


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


class _CountedReplies:
    """The file smtplib reads replies from, counting each reply's bytes (`reply_starts`
    before each): past REPLY_LIMIT the read fails, as a lost connection does."""

    def __init__(self, raw):
        self._raw, self._count = raw, 0

    def reply_starts(self) -> None:
        self._count = 0

    def readline(self, size: int = -1) -> bytes:
        line = self._raw.readline(size)
        self._count += len(line)
        if self._count > REPLY_LIMIT:
            raise smtplib.SMTPResponseException(500, b"Reply too long.")
        return line

    def __getattr__(self, name: str):
        return getattr(self._raw, name)  # peek, read1, close as the file's own


class _Watched:
    """An smtplib connection whose socket its Deadline shuts when the time is up, and
    whose replies are held to REPLY_LIMIT."""

    def __init__(self, *args, deadline: Deadline, **kwargs):
        self.deadline = deadline  # before smtplib's constructor connects
        super().__init__(*args, **kwargs)

    def _get_socket(self, host, port, timeout):
        sock = super()._get_socket(host, port, timeout)
        self.deadline.watch(sock)
        return sock

    def getreply(self):
        if self.file is None:  # smtplib makes it on first use, the same way
            self.file = _CountedReplies(self.sock.makefile("rb"))
        if isinstance(self.file, _CountedReplies):
            self.file.reply_starts()
        return super().getreply()


class WatchedSMTP(_Watched, smtplib.SMTP):
    pass


class WatchedSMTPSSL(_Watched, smtplib.SMTP_SSL):
    pass
