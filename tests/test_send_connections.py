"""Attacks on a send over several SMTP connections: a connection whose server stalls while
the others go on, a server that sends half a reply and stalls, a greeting or reply that
never ends (trickled or endless), Ctrl-C while every
connection waits (a slow rate, a back-off), STARTTLS on every connection. Real `publish`
processes, real servers on loopback, the real state database."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import signal
import socket
import ssl
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller

from tests.conftest import copy_sample_newsletter, run_publish
from tests.smtp_server import Recorder, SmtpServer, free_port
from tests.test_send import EN, SECRET, smtp_env
from tests.test_send import ledger as ledger_rows
from tests.test_send_attacks import _wait_for, long_wait
from tests.test_send_workers import _readers, _send


@pytest.fixture
def letter(tmp_path, monkeypatch):
    monkeypatch.setenv("PUBLISH_UNSUBSCRIBE_SECRET", SECRET)
    monkeypatch.setenv("PUBLISH_RETRY_BACKOFF", "0.05")
    return copy_sample_newsletter(tmp_path / "letter")


def test_a_stalled_connection_does_not_hold_up_the_others(letter):
    """The server sits on one message's DATA (no reply); the other connections deliver
    everyone else meanwhile (but the reader the stalled connection has already taken as
    its next), and the stalled one ends sent once the server answers."""
    addresses = _readers(letter, 30)
    stalled, release = addresses[1], threading.Event()
    with SmtpServer() as smtp:
        real_data = smtp.recorder.handle_DATA

        async def handle_data(server, session, envelope):
            if envelope.rcpt_tos == [stalled]:
                while not release.is_set():
                    await asyncio.sleep(0.01)  # this connection only; the server goes on
            return await real_data(server, session, envelope)

        smtp.recorder.handle_DATA = handle_data
        proc = _send(letter, smtp_env(smtp), "--json", "--connections", "3")
        try:
            _wait_for(lambda: sum(smtp.recorder.received.values()) == len(addresses) - 2,
                      "everyone else delivered while one connection waits", timeout=20)
            assert smtp.recorder.received[stalled] == 0 and proc.poll() is None
        finally:
            release.set()
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        assert json.loads(out)["sent"] == len(addresses)
        assert smtp.recorder.received == Counter({a: 1 for a in addresses})


class HalfReplyServer:
    """A plain SMTP server (PIPELINING) on a thread per connection that, once, answers a
    command with the first bytes of a reply and then says nothing more."""

    def __init__(self, stall_at: str, half: bytes):
        self.stall_at, self.half = stall_at, half  # "MAIL" or "DATA" (its final answer)
        self.port = free_port()
        self.received: Counter = Counter()
        self.stalled = threading.Event()
        self.quit = threading.Event()
        self.listener = socket.create_server(("127.0.0.1", self.port))
        self.threads: list[threading.Thread] = []

    def __enter__(self):
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self.quit.set()
        self.listener.close()

    def _accept(self):
        while not self.quit.is_set():
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _stall_here(self, conn: socket.socket, verb: str) -> bool:
        if verb != self.stall_at or self.stalled.is_set():
            return False
        self.stalled.set()
        conn.sendall(self.half)
        self.quit.wait(120)
        return True

    def _serve(self, conn: socket.socket):
        with conn, conn.makefile("rb") as lines:
            conn.sendall(b"220 half.example ESMTP\r\n")
            recipient = ""
            for line in lines:
                verb = line[:4].upper().decode()
                if verb == "EHLO":
                    conn.sendall(b"250-half.example\r\n250-PIPELINING\r\n250 8BITMIME\r\n")
                elif verb == "MAIL":
                    if self._stall_here(conn, "MAIL"):
                        return
                    conn.sendall(b"250 OK\r\n")
                elif verb == "RCPT":
                    recipient = line.split(b"<", 1)[1].split(b">", 1)[0].decode()
                    conn.sendall(b"250 OK\r\n")
                elif verb == "DATA":
                    conn.sendall(b"354 go on\r\n")
                    for data in lines:
                        if data == b".\r\n":
                            break
                    self.received[recipient] += 1
                    if self._stall_here(conn, "DATA"):
                        return
                    conn.sendall(b"250 2.0.0 queued\r\n")
                elif verb == "QUIT":
                    conn.sendall(b"221 bye\r\n")
                    return
                else:
                    conn.sendall(b"250 OK\r\n")


@pytest.mark.parametrize("stall_at, half", [("MAIL", b"25"), ("DATA", b"250-queued as\r\n2")])
def test_half_a_reply_then_silence_times_out_and_the_send_goes_on(letter, stall_at, half):
    """Half a reply, then nothing: that step times out (the send does not hang). Before
    DATA the message is tried again on a new connection and arrives once; after the data
    its reader is in doubt. Everyone else is sent to once."""
    addresses = _readers(letter, 12)
    with HalfReplyServer(stall_at, half) as server:
        env = {"PUBLISH_SMTP_HOST": "127.0.0.1", "PUBLISH_SMTP_PORT": str(server.port),
               "PUBLISH_SMTP_SECURITY": "none", "PUBLISH_HTTP_TIMEOUT": "1"}
        proc = _send(letter, env, "--json", "--connections", "3")
        out, err = proc.communicate(timeout=90)
        assert server.stalled.is_set()
        report = json.loads(out)
        assert "Traceback" not in err
        if stall_at == "MAIL":
            assert proc.returncode == 0, err
            assert report["sent"] == len(addresses) and not report["in_doubt"]
            assert server.received == Counter({a: 1 for a in addresses})
        else:
            [doubt] = report["in_doubt"]
            assert report["sent"] == len(addresses) - 1
            assert server.received == Counter({a: 1 for a in addresses})
            assert "TimeoutError" in ledger_rows(letter)[doubt][1]


class EndlessReplyServer(HalfReplyServer):
    """As HalfReplyServer, but the one reply (or the greeting) never ends: a byte every
    0.2 s (`slow`: every wait for the server is met), or continuation lines as fast as the
    socket takes them (`endless`)."""

    def __init__(self, stall_at: str, how: str):
        super().__init__(stall_at, b"")
        self.how = how

    def _stall_here(self, conn: socket.socket, verb: str) -> bool:
        if verb != self.stall_at or self.stalled.is_set():
            return False
        self.stalled.set()
        code = b"220-" if verb == "GREETING" else b"250-"
        try:
            if self.how == "slow":
                conn.sendall(code)
                while not self.quit.wait(0.2):
                    conn.sendall(b"x")
            else:
                while not self.quit.is_set():
                    conn.sendall(code + b"x" * 70 + b"\r\n")
        except OSError:
            pass  # the client gave up on it
        return True

    def _serve(self, conn: socket.socket):
        if self._stall_here(conn, "GREETING"):
            conn.close()
            return
        super()._serve(conn)


@pytest.mark.parametrize("connections", ["1", "3"])
@pytest.mark.parametrize("how", ["slow", "endless"])
@pytest.mark.parametrize("stall_at", ["GREETING", "DATA"])
def test_a_reply_that_never_ends_is_given_up_and_the_send_goes_on(letter, stall_at, how,
                                                                     connections):
    """A greeting or a reply to the data that never ends, trickled a byte at a time (each
    wait met) or continued without end: the send does not hang. A connection has twice
    `http_timeout` to be made, a reply `http_timeout` whole; the greeting's connection is
    made again and everyone is sent once; after the data, that reader is in doubt. An
    endless reply is cut at 64 KB, long before its time is up (here 40 s: a send still
    waiting at 30 s fails the test), so it does not pile up in memory meanwhile."""
    addresses = _readers(letter, 8)
    with EndlessReplyServer(stall_at, how) as server:
        env = {"PUBLISH_SMTP_HOST": "127.0.0.1", "PUBLISH_SMTP_PORT": str(server.port),
               "PUBLISH_SMTP_SECURITY": "none",
               "PUBLISH_HTTP_TIMEOUT": "1" if how == "slow" else "40"}
        proc = _send(letter, env, "--json", "--connections", connections)
        try:
            out, err = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
        assert server.stalled.is_set()
    assert "Traceback" not in err
    report = json.loads(out)
    assert server.received == Counter({a: 1 for a in addresses})
    if stall_at == "GREETING":
        assert proc.returncode == 0, err
        assert report["sent"] == len(addresses) and not report["in_doubt"]
    else:
        [doubt] = report["in_doubt"]
        assert report["sent"] == len(addresses) - 1
        why = ledger_rows(letter)[doubt][1]
        assert ("TimeoutError" if how == "slow" else "SMTPResponseException") in why, why


class TricklingTlsServer(HalfReplyServer):
    """Every connection is secured for real (TLS from the first byte for `ssl`; STARTTLS
    offered and taken for `starttls`), then the server's next reply (the greeting, or the
    EHLO after STARTTLS) trickles a byte every 0.2 s without end."""

    def __init__(self, security: str, certificate: Path):
        super().__init__("", b"")
        self.security = security
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.context.load_cert_chain(certificate / "cert.pem", certificate / "key.pem")

    def _serve(self, conn: socket.socket):
        with contextlib.suppress(OSError), conn:
            if self.security == "starttls":
                conn.sendall(b"220 tls.example ESMTP\r\n")
                with conn.makefile("rb", buffering=0) as lines:
                    for line in iter(lines.readline, b""):
                        if line.upper().startswith(b"EHLO"):
                            conn.sendall(b"250-tls.example\r\n250 STARTTLS\r\n")
                        elif line.upper().startswith(b"STARTTLS"):
                            conn.sendall(b"220 go ahead\r\n")
                            break
            secured = self.context.wrap_socket(conn, server_side=True)
            if self.security == "starttls":
                secured.recv(1024)  # EHLO, over TLS
            self.stalled.set()
            secured.sendall(b"2")
            while not self.quit.wait(0.2):
                secured.sendall(b"5")


@pytest.mark.parametrize("security", ["ssl", "starttls"])
def test_a_reply_trickled_over_tls_stops_the_send_with_everyone_pending(letter, certificate,
                                                                        security):
    """Over TLS (from the first byte, or after STARTTLS) the server trickles its next reply,
    each wait met: the connection is given up when its time is up (twice `http_timeout`),
    as an unreachable server; the send stops with one line, nothing sent, everyone
    pending, and does not hang."""
    addresses = _readers(letter, 4)
    with TricklingTlsServer(security, certificate) as server:
        env = {"PUBLISH_SMTP_HOST": "127.0.0.1", "PUBLISH_SMTP_PORT": str(server.port),
               "PUBLISH_SMTP_SECURITY": security, "PUBLISH_HTTP_TIMEOUT": "1",
               "SSL_CERT_FILE": str(certificate / "cert.pem")}
        proc = _send(letter, env, "--connections", "2")
        try:
            err = proc.communicate(timeout=60)[1]
        finally:
            if proc.poll() is None:
                proc.kill()
        assert server.stalled.is_set()
    assert proc.returncode == 1, err
    assert "Traceback" not in err and "not done within 2 s" in err, err
    assert {ledger_rows(letter)[a][0] for a in addresses} == {"pending"}


@pytest.fixture(scope="module")
def certificate(tmp_path_factory) -> Path:
    """A self-signed certificate for 127.0.0.1 (the client trusts it via SSL_CERT_FILE)."""
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command")
    folder = tmp_path_factory.mktemp("tls")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(folder / "key.pem"), "-out", str(folder / "cert.pem")],
                   check=True, capture_output=True)
    return folder


@pytest.mark.parametrize("security, connections", [("starttls", "3"), ("ssl", "1"),
                                                    ("ssl", "3")])
def test_tls_on_every_connection_delivers_each_message_whole(letter, certificate, security,
                                                              connections):
    """STARTTLS or TLS from the first byte (`ssl`), on one connection or three: every
    reader gets the message once, whole, over TLS."""
    addresses = _readers(letter, 40)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certificate / "cert.pem", certificate / "key.pem")
    recorder, port = Recorder(), free_port()
    secured: Counter = Counter()
    real_data = recorder.handle_DATA

    async def handle_data(server, session, envelope):
        secured[server.transport.get_extra_info("ssl_object") is not None] += 1
        return await real_data(server, session, envelope)

    recorder.handle_DATA = handle_data
    tls = ({"tls_context": context, "require_starttls": True} if security == "starttls"
           else {"ssl_context": context})
    controller = Controller(recorder, hostname="127.0.0.1", port=port, ready_timeout=10,
                            **tls)
    controller.start()
    try:
        env = {"PUBLISH_SMTP_HOST": "127.0.0.1", "PUBLISH_SMTP_PORT": str(port),
               "PUBLISH_SMTP_SECURITY": security,
               "SSL_CERT_FILE": str(certificate / "cert.pem")}
        proc = _send(letter, env, "--json", "--connections", connections)
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        assert json.loads(out)["sent"] == len(addresses)
        assert recorder.received == Counter({a: 1 for a in addresses})
        assert secured == Counter({True: len(addresses)})
        one = recorder.messages[addresses[0]][0]
        assert b"\r\n\r\n" in one and len(one) > 10_000
    finally:
        controller.stop()


@pytest.mark.parametrize("wait", ["rate", "backoff"])
def test_ctrl_c_ends_every_connections_wait_at_once(letter, wait):
    """Three connections, each in a long wait (a slow --rate, or one in a long
    back-off while the others finish): Ctrl-C ends the send at once, 130, nothing in
    doubt, and a resume reaches everyone else once."""
    addresses = _readers(letter, 8)
    with SmtpServer() as smtp:
        env, extra = long_wait(smtp, wait, addresses[1])
        proc = _send(letter, env, "--json", "--connections", "3", *extra)
        expected = 1 if wait == "rate" else len(addresses) - 1
        _wait_for(lambda: sum(smtp.recorder.received.values()) == expected, "the first ones")
        _wait_for(lambda: sum(1 for s, *_ in ledger_rows(letter).values() if s == "sent")
                  == expected, "their answers recorded")
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 130, err
        assert "Traceback" not in err and json.loads(out)["in_doubt"] == []
        rows = ledger_rows(letter)
        assert Counter(state for state, *_ in rows.values()) == Counter(
            {"sent": expected, "pending": len(addresses) - expected})
        resumed = run_publish("send", EN, "--service", "smtp", "--yes", "--connections", "3",
                              cwd=letter, env=smtp_env(smtp))
        assert resumed.returncode == 0, resumed.stderr
        assert smtp.recorder.received == Counter({a: 1 for a in addresses})


def test_a_second_ctrl_c_leaves_at_once_while_connections_are_being_made(letter):
    """A server that takes the connections and never greets: every connection is being
    made when the editor presses Ctrl-C twice; the send leaves at once (it does not wait
    out the connections' timeouts), nothing sent, at most each connection's reader in doubt
    (as any second Ctrl-C leaves it)."""
    addresses = _readers(letter, 6)
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)
    try:
        env = {"PUBLISH_SMTP_HOST": "127.0.0.1", "PUBLISH_SMTP_PORT": str(silent.getsockname()[1]),
               "PUBLISH_SMTP_SECURITY": "none", "PUBLISH_HTTP_TIMEOUT": "60"}
        proc = _send(letter, env, "--json", "--connections", "3")
        try:
            time.sleep(3)  # started, and waiting for the greetings
            assert proc.poll() is None, proc.communicate()
            proc.send_signal(signal.SIGINT)
            time.sleep(0.3)
            proc.send_signal(signal.SIGINT)
            started = time.monotonic()
            proc.communicate(timeout=30)
            waited = time.monotonic() - started
        finally:
            if proc.poll() is None:
                proc.kill()
        assert proc.returncode == 130
        assert waited < 20, f"waited {waited:.0f} s for the connections"
    finally:
        silent.close()
    states = [ledger_rows(letter)[a][0] for a in addresses]
    assert set(states) <= {"pending", "in_doubt"}  # nothing went: no server said a word
    assert states.count("in_doubt") <= 3, states  # at most the one each connection held
