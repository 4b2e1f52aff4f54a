"""Limits on making an SMTP connection: a time for all of it, not only for each of its
waits, and a size for each reply read meanwhile."""

from __future__ import annotations

import contextlib
import os
import smtplib
import socket
import threading

# No SMTP reply comes near this; a server sending more (a greeting continued without end,
# say) is not answering, and what it sends must not pile up in memory.
REPLY_LIMIT = 64 * 1024


class Deadline:
    """Making a connection (connect, TLS, greeting, EHLO, STARTTLS, login) in `seconds`.

    Each of those waits has the transport's timeout, but a server that trickles its words
    a byte at a time meets every one of them and would hold the connection forever. When
    the time is up the socket is shut, which ends whatever wait smtplib or TLS is in. The
    socket is shut through a duplicate of its descriptor, taken when it is made: TLS wraps
    it in new socket objects (the descriptor stays), and the duplicate keeps the number
    from being given to another socket before `end`.
    """

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.expired = False
        self._fd: int | None = None
        self._ended = False
        self._lock = threading.Lock()
        # A daemon: a pending deadline must never keep an interrupted send from exiting.
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True
        self._timer.start()

    def watch(self, sock: socket.socket) -> None:
        with self._lock:
            if self._ended or self._fd is not None:
                return
            self._fd = os.dup(sock.fileno())
            if self.expired:
                self._shut()

    def _expire(self) -> None:
        with self._lock:
            if not self._ended:
                self.expired = True
                self._shut()

    def _shut(self) -> None:
        if self._fd is None:
            return
        handle = socket.socket(fileno=self._fd)
        try:
            with contextlib.suppress(OSError):
                handle.shutdown(socket.SHUT_RDWR)
        finally:
            handle.detach()  # the duplicate is closed by `end`, not here

    def end(self) -> None:
        self._timer.cancel()
        with self._lock:
            self._ended = True
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None


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


class WatchedSMTP(smtplib.SMTP):
    """An smtplib connection whose socket its Deadline shuts when the time is up, and
    whose replies are held to REPLY_LIMIT."""

    def __init__(self, *args, deadline: Deadline, **kwargs):
        self.deadline = deadline  # before smtplib's constructor connects
        super().__init__(*args, **kwargs)

    def _get_socket(self, host, port, timeout):
        sock = super()._get_socket(host, port, timeout)  # the plain socket, before any TLS
        self.deadline.watch(sock)
        return sock

    def getreply(self):
        if self.file is None:  # smtplib makes it on first use, the same way
            self.file = _CountedReplies(self.sock.makefile("rb"))
        if isinstance(self.file, _CountedReplies):
            self.file.reply_starts()
        return super().getreply()


class WatchedSMTPSSL(smtplib.SMTP_SSL, WatchedSMTP):
    """TLS from the first byte; SMTP_SSL wraps the socket WatchedSMTP made and watches,
    so the handshake is within the deadline too."""

    def __init__(self, *args, deadline: Deadline, **kwargs):
        self.deadline = deadline  # SMTP_SSL calls SMTP's constructor, not WatchedSMTP's
        super().__init__(*args, **kwargs)
