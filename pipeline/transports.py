"""Handing messages over: one at a time (a Maildir outbox, SMTP), or in batches (an API).

This module holds what every transport shares, and the Maildir outbox; SMTP is in
`smtp_transport`.

Each failure says what is known about the message, because the send ledger depends on it:
`Temporary` and `Rejected` mean the server did not take it; `InDoubt` means it may have;
`Fatal` stops the whole send (bad credentials, a server that stays down) with the message
not handed over; `Unexpected` stops it too, saying whether the message may have been.
A transport never lets any other exception out of `deliver`.
"""

from __future__ import annotations

import mailbox
import select
import threading
import time
from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol


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


class Withdrawn(DeliveryError):
    """The caller withdrew the message after its envelope went out, before its data: the
    transaction was abandoned, nothing was handed over."""


class Unexpected(DeliveryError):
    """An error no rule covers: the send stops. `handed_over`: the server may have it."""

    def __init__(self, response: str, handed_over: bool):
        super().__init__(response)
        self.handed_over = handed_over


# What a step of a delivery waits for (see `run_blocking`, and `delivery_loop`, which drives
# many of them on one thread): (READ | WRITE, socket, timeout in seconds or None),
# (CALL, function): its result or what it raises, (SLEEP, monotonic time): True when a
# stop ended the wait early.
READ, WRITE, CALL, SLEEP = "read", "write", "call", "sleep"
Steps = Generator[tuple, Any, Any]


def run_blocking(steps: Steps, stop: threading.Event | None = None) -> Any:
    """Run `steps` on this thread, waiting where it waits; its result, or what it raises.
    A socket that stays silent past its timeout raises TimeoutError at that step."""
    result: Any = None
    error: BaseException | None = None
    while True:
        try:
            request = steps.throw(error) if error is not None else steps.send(result)
        except StopIteration as done:
            return done.value
        result = error = None
        kind = request[0]
        try:
            if kind is CALL:
                result = request[1]()
            elif kind is SLEEP:
                delay = max(request[1] - time.monotonic(), 0.0)
                result = stop.wait(delay) if stop is not None else time.sleep(delay)
            else:
                _wait_for_socket(kind, request[1], request[2])
        except BaseException as exc:  # given to the step that asked for it
            error = exc


def _wait_for_socket(kind: str, sock: Any, timeout: float | None) -> None:
    poller = select.poll()
    poller.register(sock, select.POLLIN if kind is READ else select.POLLOUT)
    if not poller.poll(None if timeout is None else timeout * 1000):
        raise TimeoutError("timed out")


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
