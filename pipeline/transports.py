"""Delivering one message at a time: into a Maildir outbox, or over SMTP.

Each failure says what is known about the message, because the send ledger depends on it:
`Temporary` and `Rejected` mean the server did not take it; `InDoubt` means it may have;
`Fatal` stops the whole send (bad credentials, a server that stays down).
"""

from __future__ import annotations

import contextlib
import mailbox
import re
import smtplib
import ssl
from collections.abc import Callable
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


class Rejected(DeliveryError):
    """Not delivered, and trying again will not help (5xx)."""


class InDoubt(DeliveryError):
    """The connection dropped during DATA: the server may or may not have the message."""


class Fatal(DeliveryError):
    """Nothing more can be sent now (authentication failed, the server is unreachable)."""


class Transport(Protocol):
    def deliver(self, sender: str, recipient: str, data: bytes,
                while_waiting: Callable[[], None] | None = None) -> str:
        """Deliver one message; the server's answer, or one of the errors above.

        `while_waiting` runs once the message is handed over and before the answer is
        read, so the caller can prepare the next message while the server works.
        """
        ...

    def close(self) -> None: ...


class MaildirTransport:
    """The local outbox: a Maildir any mail client can open. Writes are atomic (tmp -> new)."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.box: mailbox.Maildir | None = None

    def deliver(self, sender: str, recipient: str, data: bytes,
                while_waiting: Callable[[], None] | None = None) -> str:
        try:
            if self.box is None:
                self.box = mailbox.Maildir(self.folder, create=True)
            key = self.box.add(data)
        except OSError as exc:
            raise Fatal(f"cannot write to the outbox: {exc.strerror}") from None
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
        except (OSError, smtplib.SMTPException) as exc:
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
                conn.login(self.username, self.password)
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

    def deliver(self, sender: str, recipient: str, data: bytes,
                while_waiting: Callable[[], None] | None = None) -> str:
        if self.conn is None:
            self.conn = self._connect()
        conn = self.conn
        options = ""
        if not (sender + recipient).isascii():
            if not conn.has_extn("smtputf8"):
                raise Rejected(f"{self.host} cannot take non-ASCII addresses (no SMTPUTF8)")
            options = " SMTPUTF8"
        commands = [f"MAIL FROM:<{sender}>{options}", f"RCPT TO:<{recipient}>", "DATA"]
        try:
            if conn.has_extn("pipelining"):  # RFC 2920: one round trip for all three
                conn.send("".join(c + "\r\n" for c in commands).encode("utf-8"))
                replies = [conn.getreply() for _ in commands]
            else:
                replies = []
                for command in commands:
                    conn.putcmd(command)
                    replies.append(conn.getreply())
                    if replies[-1][0] not in (250, 251, 354):
                        break
        except (smtplib.SMTPServerDisconnected, OSError) as exc:
            self._drop()
            raise Temporary(f"connection lost before DATA: {type(exc).__name__}") from None
        for (code, reply), command in zip(replies, commands, strict=False):
            if code not in (250, 251, 354):
                if replies[-1][0] == 354 and len(replies) == 3:
                    self._end_empty_data()
                self._reset()
                raise self._refusal(code, reply, command.split(":")[0].split()[0])
        if len(replies) < 3:
            self._reset()
            raise Temporary("server did not answer DATA")
        try:
            # Dot-stuffing (RFC 5321 4.5.2); the regex is slow, and our messages rarely need it.
            payload = _LEADING_DOT.sub(b"..", data) if data.startswith(b".") or b"\n." in data \
                else data
            if not payload.endswith(b"\r\n"):
                payload += b"\r\n"
            conn.send(payload + b".\r\n")
            if while_waiting is not None:
                while_waiting()
            code, reply = conn.getreply()
        except (smtplib.SMTPServerDisconnected, TimeoutError, OSError) as exc:
            self._drop()
            raise InDoubt(f"connection lost during DATA: {type(exc).__name__}") from None
        if code != 250:
            self._reset()
            raise self._refusal(code, reply, "DATA")
        return f"{code} {reply.decode('utf-8', 'replace').strip()}"

    def _end_empty_data(self) -> None:
        """A server that said 354 after refusing MAIL or RCPT gets an empty message to end it."""
        with contextlib.suppress(smtplib.SMTPException, OSError):
            self.conn.send(b".\r\n")
            self.conn.getreply()

    @staticmethod
    def _refusal(code: int, reply: bytes, stage: str) -> DeliveryError:
        text = f"{code} {reply.decode('utf-8', 'replace').strip()} ({stage})"
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
            with contextlib.suppress(OSError):
                self.conn.close()
        self.conn = None

    def close(self) -> None:
        if self.conn is not None:
            with contextlib.suppress(smtplib.SMTPException, OSError):
                self.conn.quit()
            self._drop()
