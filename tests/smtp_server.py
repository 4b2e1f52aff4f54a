"""A real SMTP server on loopback (aiosmtpd) that records what it receives and misbehaves
on chosen recipients: temporary (4xx) or permanent (5xx) refusals, a dropped connection
during DATA after the message was taken, or any reply at all (garbled ones too) after it.
It can offer SMTPUTF8 and AUTH (PLAIN, LOGIN), and call a hook as each message arrives.
"""

from __future__ import annotations

import email
import socket
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from email import policy

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Recorder:
    def __init__(self, delay: float = 0.0, pipelining: bool = True):
        self.pipelining = pipelining
        self.lock = threading.Lock()
        self.received: Counter = Counter()  # recipient -> messages taken
        self.messages: dict[str, list[bytes]] = defaultdict(list)
        self.peers: set = set()
        self.rcpt_faults: dict[str, list[str]] = {}  # recipient -> replies to give, in order
        self.data_faults: dict[str, list[str]] = {}
        self.drop_during_data: set[str] = set()
        self.mail_faults: list[str] = []  # replies to MAIL FROM, in order, for any sender
        self.replies_after_data: dict[str, str] = {}  # recipient -> reply once it is stored
        self.on_message: Callable[[str, int], None] | None = None  # (recipient, total taken)
        self.logins: list[tuple[bytes, bytes]] = []
        self.delay = delay

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        session.host_name = hostname
        if self.pipelining:  # aiosmtpd reads commands one by one, so it can take them
            responses.insert(-1, "250-PIPELINING")
        return responses

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        with self.lock:
            if self.mail_faults:
                return self.mail_faults.pop(0)
        envelope.mail_from = address
        return "250 OK"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        with self.lock:
            replies = self.rcpt_faults.get(address)
            if replies:
                return replies.pop(0)
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        if self.delay:
            time.sleep(self.delay)
        recipient = envelope.rcpt_tos[0]
        with self.lock:
            replies = self.data_faults.get(recipient)
            if replies:
                return replies.pop(0)
            self.peers.add(session.peer)
            self.received[recipient] += 1
            self.messages[recipient].append(envelope.original_content or envelope.content)
            dropped = recipient in self.drop_during_data
            if dropped:
                self.drop_during_data.discard(recipient)
            reply = self.replies_after_data.pop(recipient, "250 Message accepted for delivery")
            total = sum(self.received.values())
        if self.on_message is not None:
            self.on_message(recipient, total)
        if dropped:
            server.transport.close()  # taken, but the client never hears the 250
        return reply

    def authenticate(self, server, session, envelope, mechanism, auth_data):
        self.logins.append((auth_data.login, auth_data.password))
        return AuthResult(success=(auth_data.login, auth_data.password) == self.credentials,
                          handled=False)

    def parsed(self, recipient: str):
        return [email.message_from_bytes(raw, policy=policy.default)
                for raw in self.messages[recipient]]


class SmtpServer:
    """`with SmtpServer() as smtp:` — `smtp.port`, `smtp.recorder`."""

    def __init__(self, port: int | None = None, delay: float = 0.0, pipelining: bool = True,
                 smtputf8: bool = False, credentials: tuple[str, str] | None = None):
        self.port = port or free_port()
        self.recorder = Recorder(delay, pipelining)
        extra: dict = {"enable_SMTPUTF8": smtputf8}
        if credentials is not None:  # AUTH without TLS: loopback only, for the tests
            self.recorder.credentials = tuple(c.encode("utf-8") for c in credentials)
            extra.update(authenticator=self.recorder.authenticate, auth_require_tls=False)
        self.controller = Controller(self.recorder, hostname="127.0.0.1", port=self.port,
                                     ready_timeout=10, **extra)

    def __enter__(self):
        self.controller.start()
        return self

    def __exit__(self, *exc):
        self.controller.stop()
