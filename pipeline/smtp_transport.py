"""SMTP: one reused connection per worker, the envelope pipelined when the server allows.

What each failure means for the ledger is as `transports` describes: a message is only
ever `InDoubt` once its content may have reached the server.
"""

from __future__ import annotations

import base64
import contextlib
import re
import smtplib
import ssl
import time
from collections.abc import Callable

from .smtp_deadline import REPLY_LIMIT, Deadline, WatchedSMTP, WatchedSMTPSSL
from .transports import (
    CALL,
    READ,
    WRITE,
    DeliveryError,
    Fatal,
    InDoubt,
    Rejected,
    Steps,
    Temporary,
    Unexpected,
    Unreachable,
    Withdrawn,
    describe,
    envelope_address,
    run_blocking,
)

_LEADING_DOT = re.compile(rb"(?m)^\.")


class SmtpTransport:
    """One reused SMTP connection; reconnects when the server closes it."""

    # `deliver` takes `on_envelope`: the caller's last word before the data may go.
    announces_envelope = True

    def __init__(self, host: str, port: int, *, security: str = "starttls", username: str = "",
                 password: str = "", timeout: float = 30.0, local_hostname: str | None = None):
        self.host, self.port, self.security = host, port, security
        self.username, self.password, self.timeout = username, password, timeout
        self.local_hostname = local_hostname
        self.conn: smtplib.SMTP | None = None
        self.inbuf = bytearray()  # what the server said that is not read yet
        self.blocking = True  # False: waits are steps, for a loop to drive (`deliver_steps`)

    def _connect(self) -> smtplib.SMTP:
        """A connection made, secured and logged in: within the timeout at each step and
        twice the timeout in all (`Deadline`)."""
        deadline = Deadline(2 * self.timeout)
        try:
            return self._make(deadline)
        finally:
            deadline.end()

    def _make(self, deadline: Deadline) -> smtplib.SMTP:
        # Loading the system's certificates takes a while: only for a TLS connection.
        context = ssl.create_default_context() if self.security != "none" else None
        where = f"{self.host}:{self.port}"

        def why(exc: BaseException) -> str:
            if deadline.expired:
                return f"not done within {deadline.seconds:g} s"
            return getattr(exc, "strerror", None) or type(exc).__name__

        try:
            if self.security == "ssl":
                conn: smtplib.SMTP = WatchedSMTPSSL(
                    self.host, self.port, timeout=self.timeout, context=context,
                    local_hostname=self.local_hostname, deadline=deadline)
            else:
                conn = WatchedSMTP(self.host, self.port, timeout=self.timeout,
                                    local_hostname=self.local_hostname, deadline=deadline)
            conn.ehlo()  # MAIL FROM is refused before a greeting
        except (OSError, smtplib.SMTPException, UnicodeError) as exc:
            raise Unreachable(f"cannot connect to {where}: {why(exc)}") from None
        try:
            if self.security == "starttls":
                if not conn.has_extn("starttls"):
                    raise Fatal(f"{where} does not offer STARTTLS; set smtp_security to 'ssl' "
                                "or 'none'")
                conn.starttls(context=context)
                conn.ehlo()
            if self.username:
                if not conn.has_extn("auth"):
                    raise Fatal(f"{where} does not offer SMTP AUTH; unset smtp_username or "
                                "use smtp_security 'starttls'")
                self._login(conn)
        except smtplib.SMTPAuthenticationError as exc:
            conn.close()
            raise Fatal(f"SMTP login refused ({exc.smtp_code}); check smtp_username and "
                        "SMTP_PASSWORD") from None
        except (ssl.SSLError, smtplib.SMTPException, OSError) as exc:
            conn.close()
            if deadline.expired:
                raise Unreachable(f"cannot connect to {where}: {why(exc)}") from None
            raise Fatal(f"{where}: {type(exc).__name__} while securing the connection"
                        ) from None
        except Fatal:
            conn.close()
            raise
        if deadline.expired:  # made just as the time was up: its socket is shut
            conn.close()
            raise Unreachable(f"cannot connect to {where}: {why(TimeoutError())}")
        return conn

    def _login(self, conn: smtplib.SMTP) -> None:
        """Log in; credentials that are not ASCII go as UTF-8 (RFC 4616), which smtplib
        cannot do, through AUTH PLAIN or LOGIN."""
        if (self.username + self.password).isascii():
            conn.login(self.username, self.password)
            return
        offered = conn.esmtp_features.get("auth", "").upper().split()
        user, password = self.username.encode("utf-8"), self.password.encode("utf-8")
        if "PLAIN" in offered:
            token = base64.b64encode(b"\0" + user + b"\0" + password).decode("ascii")
            code, reply = conn.docmd("AUTH", "PLAIN " + token)
        elif "LOGIN" in offered:
            code, reply = conn.docmd("AUTH", "LOGIN")
            for value in (user, password):
                if code != 334:
                    break
                code, reply = conn.docmd(base64.b64encode(value).decode("ascii"))
        else:
            raise Fatal(f"{self.host}:{self.port} offers no way to log in with a non-ASCII "
                        "user name or password (AUTH PLAIN or LOGIN)")
        if code != 235:
            raise smtplib.SMTPAuthenticationError(code, reply)

    def deliver(self, sender: str, recipient: str, data: bytes,
                while_waiting: Callable[[], None] | None = None,
                on_envelope: Callable[[], bool] | None = None) -> str:
        """As `transports.Transport.deliver`. `on_envelope` runs once MAIL, RCPT and DATA
        are on their way (pipelined; else before them), while the server reads them, and
        before anything of the message leaves: False withdraws the message (the connection
        is dropped, its transaction unfinished: `Withdrawn`); what it raises is raised."""
        return run_blocking(self.deliver_steps(sender, recipient, data, while_waiting,
                                               on_envelope))

    def deliver_steps(self, sender: str, recipient: str, data: bytes,
                      while_waiting: Callable[[], None] | None = None,
                      on_envelope: Callable[[], bool] | None = None) -> Steps:
        """`deliver` as steps (see `transports.run_blocking`): on a non-blocking socket
        (`blocking` False) each wait for the server is a step, so one thread can drive
        many connections (`delivery_loop`)."""
        handed_over = False

        def handing_over() -> None:
            nonlocal handed_over
            handed_over = True

        try:
            return (yield from self._deliver(sender, recipient, data, while_waiting,
                                             handing_over, on_envelope))
        except _CallerFailed as failed:
            raise failed.__cause__ from None
        except DeliveryError:
            raise
        except Exception as exc:
            self._drop()
            reason = describe(exc)
            if self.password:
                reason = reason.replace(self.password, "[SMTP_PASSWORD]")
            raise Unexpected(f"unexpected error while sending: {reason}", handed_over
                             ) from None

    def _deliver(self, sender: str, recipient: str, data: bytes,
                 while_waiting: Callable[[], None] | None,
                 handing_over: Callable[[], None],
                 on_envelope: Callable[[], bool] | None = None) -> Steps:
        try:
            sender, recipient = envelope_address(sender), envelope_address(recipient)
        except ValueError as exc:
            raise Rejected(str(exc)) from None
        options = "" if (sender + recipient).isascii() and data.isascii() else " SMTPUTF8"
        commands = _commands(sender, recipient, options)
        if self.conn is None:
            self._attach((yield (CALL, self._connect)))
        conn = self.conn
        if options and not conn.has_extn("smtputf8"):
            if not sender.isascii():
                raise Fatal(f"{self.host} cannot take the non-ASCII sender {sender!r} "
                            "(it does not offer SMTPUTF8)")
            raise Rejected(f"{self.host} cannot take a non-ASCII address (it does not "
                           "offer SMTPUTF8)")
        try:
            replies = yield from self._envelope(commands,
                                                on_envelope and self._checked(on_envelope))
        except (smtplib.SMTPException, OSError) as exc:
            self._drop()
            raise Temporary(f"connection lost before DATA: {type(exc).__name__}") from None
        for (code, reply), command in zip(replies, commands, strict=False):
            if code not in (250, 251, 354):
                if not 400 <= code < 600:
                    # A reply we cannot read: leave the transaction unfinished, so nothing
                    # the server may have accepted is ever completed.
                    self._drop()
                    raise Temporary(f"unreadable reply to {_verb(command)}: "
                                    f"{_text(code, reply)}")
                if replies[-1][0] == 354 and len(replies) == 3:
                    yield from self._end_empty_data()
                yield from self._reset()
                raise self._refusal(code, reply, _verb(command))
        if len(replies) < 3:
            yield from self._reset()
            raise Temporary("server did not answer DATA")
        try:
            # Dot-stuffing (RFC 5321 4.5.2); our messages rarely need it.
            payload = _LEADING_DOT.sub(b"..", data) if _needs_dot_stuffing(data) else data
            ending = b".\r\n" if payload.endswith(b"\r\n") else b"\r\n.\r\n"
            handing_over()
            yield from self._send(payload + ending)
            if while_waiting is not None:
                while_waiting()
            code, reply = yield from self._read_reply()
        except (smtplib.SMTPException, OSError) as exc:
            self._drop()
            raise InDoubt(f"connection lost during DATA: {type(exc).__name__}") from None
        if 200 <= code < 300:
            return _text(code, reply)
        if 400 <= code < 600:
            yield from self._reset()
            raise self._refusal(code, reply, "DATA")
        # Not a refusal we can read: the server may well have stored the message.
        self._drop()
        raise InDoubt(f"unreadable reply to DATA: {_text(code, reply)}")

    def _attach(self, conn: smtplib.SMTP) -> None:
        """Take over a connection smtplib opened: what it read past its last reply is
        kept, every reply from now on is read here, on a non-blocking socket unless
        `blocking`."""
        sock = conn.sock
        sock.setblocking(False)
        if conn.file is not None:
            with contextlib.suppress(OSError):
                ahead = conn.file.peek(smtplib._MAXLINE)
                self.inbuf += conn.file.read1(len(ahead)) if ahead else b""
        if self.blocking:
            sock.settimeout(self.timeout)
        self.conn = conn

    def _checked(self, on_envelope: Callable[[], bool]) -> Callable[[], None]:
        """`on_envelope`, the transaction abandoned (connection dropped) unless it says yes."""
        def check() -> None:
            try:
                going_on = on_envelope()
            except BaseException as exc:
                self._drop()
                raise _CallerFailed() from exc
            if not going_on:
                self._drop()
                raise Withdrawn("withdrawn after its envelope; nothing handed over")
        return check

    def _envelope(self, commands: list[str],
                  sent: Callable[[], None] | None = None) -> Steps:
        """MAIL, RCPT and DATA: in one round trip when the server pipelines (RFC 2920),
        else one at a time until one is refused. The replies read; `sent` runs once the
        commands are on their way (before the first, without pipelining)."""
        if self.conn.has_extn("pipelining"):
            yield from self._send("".join(c + "\r\n" for c in commands).encode("utf-8"))
            if sent is not None:
                sent()
            replies = []
            for _ in commands:
                replies.append((yield from self._read_reply()))
            return replies
        if sent is not None:
            sent()
        replies = []
        for command in commands:
            yield from self._send((command + "\r\n").encode("utf-8"))
            replies.append((yield from self._read_reply()))
            if replies[-1][0] not in (250, 251, 354):
                break
        return replies

    def _end_empty_data(self) -> Steps:
        """A server that said 354 after refusing MAIL or RCPT gets an empty message to end it."""
        with contextlib.suppress(smtplib.SMTPException, OSError):
            yield from self._send(b".\r\n")
            yield from self._read_reply()

    @staticmethod
    def _refusal(code: int, reply: bytes, stage: str) -> DeliveryError:
        text = f"{_text(code, reply)} ({stage})"
        if code == 421:
            return Temporary(text)
        if code in (530, 535):
            return Fatal(text)
        return Temporary(text) if 400 <= code < 500 else Rejected(text)

    def _reset(self) -> Steps:
        try:
            if self.conn is not None:
                yield from self._send(b"rset\r\n")
                yield from self._read_reply()
        except (smtplib.SMTPException, OSError):
            self._drop()

    def _send(self, data: bytes) -> Steps:
        """All of `data` out; on a non-blocking socket, waiting for room as needed."""
        sock = self.conn.sock if self.conn is not None else None
        if sock is None:
            raise smtplib.SMTPServerDisconnected("please run connect() first")
        if self.blocking:
            sock.sendall(data)
            return
        view = memoryview(data)
        while view:
            try:
                view = view[sock.send(view):]
            except (BlockingIOError, ssl.SSLWantWriteError):
                yield (WRITE, sock, self.timeout)
            except ssl.SSLWantReadError:
                yield (READ, sock, self.timeout)

    def _read_reply(self) -> Steps:
        """A reply (code, text) as smtplib's `getreply` reads it, except that a reply
        without a proper code comes back whole, with code -1 (smtplib cuts off its first
        four characters)."""
        deadline = time.monotonic() + self.timeout  # for the whole reply, however it trickles
        lines, size = [], 0
        while True:
            line = yield from self._read_line(deadline)
            size += len(line)
            if size > REPLY_LIMIT:
                self.conn.close()
                raise smtplib.SMTPResponseException(500, b"Reply too long.")
            code, separator = line[:3], line[3:4]
            if not (len(code) == 3 and code.isdigit()
                    and separator in (b" ", b"-", b"\r", b"\n", b"")):
                return -1, line.strip()
            lines.append(line[4:].strip(b" \t\r\n"))
            if separator != b"-":
                return int(code), b"\n".join(lines)

    def _read_line(self, deadline: float) -> Steps:
        """One line from the server (the rest of what came kept for the next), by
        `deadline` (time.monotonic)."""
        buffer = self.inbuf
        while True:
            end = buffer.find(b"\n", 0, smtplib._MAXLINE + 1)
            if end >= 0:
                line = bytes(buffer[:end + 1])
                del buffer[:end + 1]
                return line
            if len(buffer) > smtplib._MAXLINE:
                self.conn.close()
                raise smtplib.SMTPResponseException(500, b"Line too long.")
            chunk = yield from self._receive(deadline)
            if not chunk:
                if buffer:  # the last words before the server hung up
                    line = bytes(buffer)
                    buffer.clear()
                    return line
                self.conn.close()
                raise smtplib.SMTPServerDisconnected("Connection unexpectedly closed")
            buffer += chunk

    def _receive(self, deadline: float) -> Steps:
        sock = self.conn.sock
        if sock is None:
            raise smtplib.SMTPServerDisconnected("please run connect() first")
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no whole reply within {self.timeout:g} s")
            if self.blocking:
                sock.settimeout(left)
                try:
                    return sock.recv(65536)
                finally:
                    sock.settimeout(self.timeout)
            try:
                return sock.recv(65536)
            except (BlockingIOError, ssl.SSLWantReadError):
                yield (READ, sock, left)
            except ssl.SSLWantWriteError:
                yield (WRITE, sock, left)

    def _drop(self) -> None:
        if self.conn is not None:
            with contextlib.suppress(Exception):
                self.conn.close()
        self.conn = None
        self.inbuf.clear()

    def close(self) -> None:
        run_blocking(self.close_steps())

    def close_steps(self) -> Steps:
        """QUIT, as smtplib says it, and the connection closed whatever the answer."""
        if self.conn is not None:
            with contextlib.suppress(smtplib.SMTPException, OSError):
                yield from self._send(b"quit\r\n")
                yield from self._read_reply()
            self._drop()


class _CallerFailed(Exception):
    """What `on_envelope` raised, carried past the transport's own error handling."""


def _commands(sender: str, recipient: str, options: str) -> list[str]:
    return [f"MAIL FROM:<{sender}>{options}", f"RCPT TO:<{recipient}>", "DATA"]


def _needs_dot_stuffing(data: bytes) -> bool:
    """Whether a line of `data` starts with a dot. `b"\\n." in data` steps through the
    whole message byte by byte; finding its dots is a memchr, faster for a message with
    few of them (base64 has none)."""
    if data.startswith(b"."):
        return True
    at = data.find(b".")
    for _ in range(64):
        if at < 0:
            return False
        if data[at - 1] == 10:  # a line feed
            return True
        at = data.find(b".", at + 1)
    return b"\n." in data


def _verb(command: str) -> str:
    return command.split(":")[0].split()[0]


def _text(code: int, reply: bytes) -> str:
    """A server's reply for the ledger: the code when it had one, and the words."""
    words = reply.decode("utf-8", "replace").strip()
    return f"{code} {words}" if code > 0 else words or "(empty reply)"
