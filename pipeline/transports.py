"""Handing messages over: one at a time (a Maildir outbox, SMTP), or in batches (an API).

Each failure says what is known about the message, because the send ledger depends on it:
`Temporary` and `Rejected` mean the server did not take it; `InDoubt` means it may have;
`Fatal` stops the whole send (bad credentials, a server that stays down) with the message
not handed over; `Unexpected` stops it too, saying whether the message may have been.
A transport never lets any other exception out of `deliver`.
"""

from __future__ import annotations

import base64
import contextlib
import mailbox
import re
import smtplib
import ssl
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

_LEADING_DOT = re.compile(rb"(?m)^\.")


class DeliveryError(Exception):
    def __init__(self, response: str):
        super().__init__(response)
        self.response = response


class Temporary(DeliveryError):
    """Not delivered; worth trying again later (4xx, a connection lost before DATA)."""


class Unreachable(Temporary):
    """Could not connect at all; if it lasts, the send stops and can be resumed."""


class Throttled(Temporary):
    """The service asks us to slow down: every worker pauses before its next call."""


class Rejected(DeliveryError):
    """Not delivered, and trying again will not help (5xx)."""


class InDoubt(DeliveryError):
    """The connection dropped during DATA: the server may or may not have the message."""


class Fatal(DeliveryError):
    """Nothing more can be sent now (authentication failed, the server is unreachable)."""


class Unexpected(DeliveryError):
    """An error no rule covers: the send stops. `handed_over`: the server may have it."""

    def __init__(self, response: str, handed_over: bool):
        super().__init__(response)
        self.handed_over = handed_over


def describe(exc: BaseException) -> str:
    """One line for an error nothing else explains: its type and first line."""
    text = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def envelope_address(address: str) -> str:
    """The address as SMTP carries it: an internationalised domain in punycode (IDNA).

    A non-ASCII local part stays as it is; it needs a server offering SMTPUTF8.
    ValueError when the domain cannot be written in ASCII.
    """
    if address.isascii():
        return address
    import idna

    local, _, domain = address.rpartition("@")
    if not domain.isascii():
        try:
            domain = idna.encode(domain, uts46=True).decode("ascii")
        except idna.IDNAError as exc:
            raise ValueError(f"the domain of {address!r} cannot be written in ASCII: {exc}"
                             ) from None
    return f"{local}@{domain}"


class Transport(Protocol):
    def deliver(self, sender: str, recipient: str, data: bytes,
                while_waiting: Callable[[], None] | None = None) -> str:
        """Deliver one message; the server's answer, or one of the errors above.

        `while_waiting` runs once the message is handed over and before the answer is
        read, so the caller can prepare the next message while the server works.
        """
        ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class Entry:
    """One recipient's part of a batch call: the envelope address, the whole message when
    the transport takes messages, and the values that personalise a template when it
    takes a template (name, email, unsubscribe_url)."""

    address: str
    data: bytes | None
    fields: Mapping[str, str]
    recipient_id: int = 0  # the ledger's id, for a service that can carry it as a tag


@dataclass(frozen=True)
class Answer:
    """The service's answer for one entry of a batch: `sent` (with its id for the
    message), `failed` (refused; trying again will not help), `retry` (not taken now),
    `throttled` (not taken now: slow down) or `halt` (not taken, and nothing more can be
    sent now: the send stops)."""

    state: str
    response: str
    remote_id: str | None = None


class BatchTransport(Protocol):
    """A transport that takes up to `batch_size` recipients per call.

    `deliver_batch` returns one Answer per entry, in order, or raises one of the errors
    above for the call as a whole: `Temporary` (none taken; `Throttled` to slow down),
    `Rejected` (none will be), `InDoubt` (no answer: any may have been taken), `Fatal`,
    `Unexpected`. Any other exception is treated as `InDoubt` and stops the send.
    """

    batch_size: int

    def deliver_batch(self, sender: str, entries: Sequence[Entry]) -> list[Answer]: ...

    def close(self) -> None: ...


def open_maildir(folder: Path) -> mailbox.Maildir:
    """The Maildir at `folder`, made if missing; safe when several processes make it at
    once (mailbox's own `create=True` fails in the one that comes second)."""
    for part in ("tmp", "new", "cur"):
        (folder / part).mkdir(parents=True, exist_ok=True)
    return mailbox.Maildir(folder, create=False)


class MaildirTransport:
    """The local outbox: a Maildir any mail client can open. Writes are atomic (tmp -> new)."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.box: mailbox.Maildir | None = None

    def deliver(self, sender: str, recipient: str, data: bytes,
                while_waiting: Callable[[], None] | None = None) -> str:
        try:
            if self.box is None:
                self.box = open_maildir(self.folder)
            key = self.box.add(data)  # tmp/ then a rename into new/: all or nothing
        except OSError as exc:
            raise Fatal(f"cannot write to the outbox: {exc.strerror or describe(exc)}"
                        ) from None
        except Exception as exc:
            raise Unexpected(f"cannot write to the outbox: {describe(exc)}", False) from None
        if while_waiting is not None:
            while_waiting()
        return f"stored {key}"

    def close(self) -> None:
        pass


class SmtpTransport:
    """One reused SMTP connection; reconnects when the server closes it."""

    def __init__(self, host: str, port: int, *, security: str = "starttls", username: str = "",
                 password: str = "", timeout: float = 30.0, local_hostname: str | None = None):
        self.host, self.port, self.security = host, port, security
        self.username, self.password, self.timeout = username, password, timeout
        self.local_hostname = local_hostname
        self.conn: smtplib.SMTP | None = None

    def _connect(self) -> smtplib.SMTP:
        context = ssl.create_default_context()
        where = f"{self.host}:{self.port}"
        try:
            if self.security == "ssl":
                conn: smtplib.SMTP = smtplib.SMTP_SSL(
                    self.host, self.port, timeout=self.timeout, context=context,
                    local_hostname=self.local_hostname)
            else:
                conn = smtplib.SMTP(self.host, self.port, timeout=self.timeout,
                                    local_hostname=self.local_hostname)
            conn.ehlo()  # MAIL FROM is refused before a greeting
        except (OSError, smtplib.SMTPException, UnicodeError) as exc:
            reason = getattr(exc, "strerror", None) or type(exc).__name__
            raise Unreachable(f"cannot connect to {where}: {reason}") from None
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
            raise Fatal(f"{where}: {type(exc).__name__} while securing the connection"
                        ) from None
        except Fatal:
            conn.close()
            raise
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
                while_waiting: Callable[[], None] | None = None) -> str:
        handed_over = False

        def handing_over() -> None:
            nonlocal handed_over
            handed_over = True

        try:
            return self._deliver(sender, recipient, data, while_waiting, handing_over)
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
                 handing_over: Callable[[], None]) -> str:
        try:
            sender, recipient = envelope_address(sender), envelope_address(recipient)
        except ValueError as exc:
            raise Rejected(str(exc)) from None
        if self.conn is None:
            self.conn = self._connect()
        conn = self.conn
        options = ""
        if not (sender + recipient).isascii() or not data.isascii():
            if not conn.has_extn("smtputf8"):
                if not sender.isascii():
                    raise Fatal(f"{self.host} cannot take the non-ASCII sender {sender!r} "
                                "(it does not offer SMTPUTF8)")
                raise Rejected(f"{self.host} cannot take a non-ASCII address (it does not "
                               "offer SMTPUTF8)")
            options = " SMTPUTF8"
        commands = [f"MAIL FROM:<{sender}>{options}", f"RCPT TO:<{recipient}>", "DATA"]
        try:
            replies = _envelope(conn, commands)
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
                    self._end_empty_data()
                self._reset()
                raise self._refusal(code, reply, _verb(command))
        if len(replies) < 3:
            self._reset()
            raise Temporary("server did not answer DATA")
        try:
            # Dot-stuffing (RFC 5321 4.5.2); the regex is slow, and our messages rarely need it.
            payload = _LEADING_DOT.sub(b"..", data) if data.startswith(b".") or b"\n." in data \
                else data
            if not payload.endswith(b"\r\n"):
                payload += b"\r\n"
            handing_over()
            conn.send(payload + b".\r\n")
            if while_waiting is not None:
                while_waiting()
            code, reply = _read_reply(conn)
        except (smtplib.SMTPException, OSError) as exc:
            self._drop()
            raise InDoubt(f"connection lost during DATA: {type(exc).__name__}") from None
        if 200 <= code < 300:
            return _text(code, reply)
        if 400 <= code < 600:
            self._reset()
            raise self._refusal(code, reply, "DATA")
        # Not a refusal we can read: the server may well have stored the message.
        self._drop()
        raise InDoubt(f"unreadable reply to DATA: {_text(code, reply)}")

    def _end_empty_data(self) -> None:
        """A server that said 354 after refusing MAIL or RCPT gets an empty message to end it."""
        with contextlib.suppress(smtplib.SMTPException, OSError):
            self.conn.send(b".\r\n")
            _read_reply(self.conn)

    @staticmethod
    def _refusal(code: int, reply: bytes, stage: str) -> DeliveryError:
        text = f"{_text(code, reply)} ({stage})"
        if code == 421:
            return Temporary(text)
        if code in (530, 535):
            return Fatal(text)
        return Temporary(text) if 400 <= code < 500 else Rejected(text)

    def _reset(self) -> None:
        try:
            if self.conn is not None:
                self.conn.rset()
        except (smtplib.SMTPException, OSError):
            self._drop()

    def _drop(self) -> None:
        if self.conn is not None:
            with contextlib.suppress(Exception):
                self.conn.close()
        self.conn = None

    def close(self) -> None:
        if self.conn is not None:
            with contextlib.suppress(smtplib.SMTPException, OSError):
                self.conn.quit()
            self._drop()


def _envelope(conn: smtplib.SMTP, commands: list[str]) -> list[tuple[int, bytes]]:
    """MAIL, RCPT and DATA: in one round trip when the server pipelines (RFC 2920), else
    one at a time until one is refused. The replies read."""
    if conn.has_extn("pipelining"):
        conn.send("".join(c + "\r\n" for c in commands).encode("utf-8"))
        return [_read_reply(conn) for _ in commands]
    replies = []
    for command in commands:
        conn.send((command + "\r\n").encode("utf-8"))
        replies.append(_read_reply(conn))
        if replies[-1][0] not in (250, 251, 354):
            break
    return replies


def _read_reply(conn: smtplib.SMTP) -> tuple[int, bytes]:
    """smtplib's `getreply`, except that a reply without a proper code comes back whole,
    with code -1 (smtplib cuts off its first four characters)."""
    if conn.file is None:
        conn.file = conn.sock.makefile("rb")
    lines = []
    while True:
        line = conn.file.readline(smtplib._MAXLINE + 1)
        if not line:
            conn.close()
            raise smtplib.SMTPServerDisconnected("Connection unexpectedly closed")
        if len(line) > smtplib._MAXLINE:
            conn.close()
            raise smtplib.SMTPResponseException(500, b"Line too long.")
        code, separator = line[:3], line[3:4]
        if not (len(code) == 3 and code.isdigit() and separator in (b" ", b"-", b"\r", b"\n",
                                                                       b"")):
            return -1, line.strip()
        lines.append(line[4:].strip(b" \t\r\n"))
        if separator != b"-":
            return int(code), b"\n".join(lines)


def _verb(command: str) -> str:
    return command.split(":")[0].split()[0]


def _text(code: int, reply: bytes) -> str:
    """A server's reply for the ledger: the code when it had one, and the words."""
    words = reply.decode("utf-8", "replace").strip()
    return f"{code} {words}" if code > 0 else words or "(empty reply)"
