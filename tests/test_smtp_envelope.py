"""The caller's last word between a message's envelope and its data (`on_envelope`): a
message withdrawn there, or whose commit failed there, never reaches the server, and the
transport goes on with the next one. A real SMTP server on loopback."""

from __future__ import annotations

import sqlite3

import pytest

from pipeline.smtp_transport import SmtpTransport
from pipeline.transports import Withdrawn
from tests.smtp_server import SmtpServer

SENDER = "letters@example.org"


def message(to: str) -> bytes:
    return (f"From: {SENDER}\r\nTo: {to}\r\nSubject: Grüße\r\n\r\nHallo, ça va?\r\n"
            ).encode()


@pytest.fixture(params=[True, False], ids=["pipelining", "one-by-one"])
def smtp(request):
    with SmtpServer(pipelining=request.param, smtputf8=True) as server:
        server.pipelining = request.param
        server.enveloped = []
        real_rcpt = server.recorder.handle_RCPT

        async def handle_rcpt(srv, session, envelope, address, rcpt_options):
            server.enveloped.append(address)
            return await real_rcpt(srv, session, envelope, address, rcpt_options)

        server.recorder.handle_RCPT = handle_rcpt
        yield server


def transport(smtp) -> SmtpTransport:
    return SmtpTransport("127.0.0.1", smtp.port, security="none", timeout=10)


def test_a_withdrawn_message_is_never_delivered_and_the_next_one_is(smtp):
    conn = transport(smtp)
    try:
        conn.deliver(SENDER, "first@example.org", message("first@example.org"))
        seen = []
        with pytest.raises(Withdrawn):
            conn.deliver(SENDER, "second@example.org", message("second@example.org"),
                         on_envelope=lambda: seen.append(1) or False)
        assert seen == [1]
        conn.deliver(SENDER, "third@example.org", message("third@example.org"),
                     on_envelope=lambda: True)
    finally:
        conn.close()
    assert smtp.recorder.received == {"first@example.org": 1, "third@example.org": 1}
    if not smtp.pipelining:  # asked before anything of that transaction went out
        assert "second@example.org" not in smtp.enveloped


def test_what_the_commit_raises_comes_out_as_it_was_and_nothing_is_sent(smtp):
    conn = transport(smtp)

    def failing_commit() -> bool:
        raise sqlite3.OperationalError("database or disk is full")

    try:
        with pytest.raises(sqlite3.OperationalError, match="disk is full"):
            conn.deliver(SENDER, "dünya@example.org", message("x"),
                         on_envelope=failing_commit)
        assert conn.conn is None  # the unfinished transaction was abandoned with it
        conn.deliver(SENDER, "after@example.org", message("after@example.org"))
    finally:
        conn.close()
    assert smtp.recorder.received == {"after@example.org": 1}


def test_the_envelope_comes_before_the_callers_word_only_when_pipelined(smtp):
    """Without PIPELINING nothing of the transaction goes before the caller's word."""
    conn = transport(smtp)
    try:
        conn.deliver(SENDER, "warm@example.org", message("warm@example.org"))
        before = list(smtp.enveloped)
        conn.deliver(SENDER, "next@example.org", message("next@example.org"),
                     on_envelope=lambda: before.append(len(smtp.enveloped)) or True)
    finally:
        conn.close()
    assert smtp.recorder.received["next@example.org"] == 1
    if not smtp.pipelining:
        assert before[-1] == 1  # only the first message's RCPT had been read
