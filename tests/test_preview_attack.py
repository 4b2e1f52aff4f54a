"""Attacks on `publish preview`: other web pages, DNS rebinding, malformed requests.

The promise: while the preview runs, no other site can send a test copy, push a draft or
read the unpublished issue, and no request, however malformed, gets a traceback or holds
a handler.
"""

from __future__ import annotations

import http.server
import mailbox
import os
import shutil
import socket
import threading
import time
from urllib.parse import urlencode

import pytest

from pipeline import preview, settings, state
from tests.conftest import copy_sample_newsletter

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run"]
EN = "issues/2025-01-ai-art.md"
SECRET = "preview-attack-secret-0123456789"


@pytest.fixture
def served(tmp_path, monkeypatch):
    monkeypatch.setenv("PUBLISH_UNSUBSCRIBE_SECRET", SECRET)
    monkeypatch.setattr(preview, "READ_TIMEOUT", 1.0)
    folder = copy_sample_newsletter(tmp_path / "letter")
    running = preview.start(folder / EN, settings.load(folder, env={}))
    yield folder, running
    running.stop()


def _port(running) -> int:
    return running.server.server_address[1]


def _raw(running, request: bytes, wait: float = 10.0) -> bytes:
    """Send raw bytes to the preview and return everything it answers before closing."""
    with socket.create_connection(("127.0.0.1", _port(running)), timeout=wait) as sock:
        sock.sendall(request)
        chunks = []
        while True:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                break
            if not chunk:
                break
            chunks.append(chunk)
    return b"".join(chunks)


def _status(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


def _sent(folder) -> int:
    outbox = folder / "outbox"
    return len(list(mailbox.Maildir(outbox, create=False).iterkeys())) if outbox.exists() else 0


def _drafts(folder) -> int:
    path = folder / ".publish"
    if not (path / state.DB_NAME).exists():
        return 0
    db = state.connect(path)
    try:
        return db.execute("SELECT count(*) FROM drafts").fetchone()[0]
    finally:
        db.close()


def _post(running, host: str, headers: dict[str, str], body: bytes) -> bytes:
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    return _raw(running, (f"POST /send-test HTTP/1.1\r\nHost: {host}\r\n{head}"
                          f"Content-Type: application/x-www-form-urlencoded\r\n"
                          f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
                          ).encode() + body)


def test_other_hosts_get_403_for_every_route(served):
    _folder, running = served
    port = _port(running)
    for host in ("evil.example", f"evil.example:{port}", f"127.0.0.1:{port + 1}",
                 f"localhost.evil.example:{port}", f"127.0.0.1.nip.io:{port}", "", "[::1]"):
        for path in ("/", "/email.eml", "/email.html", "/state.json", "/headers.txt"):
            line = f"Host: {host}\r\n" if host else ""
            answer = _raw(running, f"GET {path} HTTP/1.1\r\n{line}Connection: close\r\n\r\n"
                          .encode())
            assert _status(answer) == 403, (host, path, answer[:200])
            assert b"Pixels" not in answer and b"preview-token" not in answer
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"LOCALHOST:{port}"):
        answer = _raw(running, f"GET /email.eml HTTP/1.1\r\nHost: {host}\r\n"
                               "Connection: close\r\n\r\n".encode())
        assert _status(answer) == 200 and b"Subject:" in answer


def test_sending_needs_the_token_and_the_preview_origin(served):
    folder, running = served
    port = _port(running)
    host = f"127.0.0.1:{port}"
    body = urlencode({"address": "attacker@example.org"}).encode()
    own = f"http://127.0.0.1:{port}"
    for headers in (
        {},                                                     # no token
        {"Origin": own},                                        # no token, own origin
        {"X-Preview-Token": "guess", "Origin": own},            # wrong token
        {"X-Preview-Token": running.token[:-1], "Origin": own},  # almost right
        {"X-Preview-Token": running.token, "Origin": "http://127.0.0.1:1"},  # another site
        {"X-Preview-Token": running.token, "Origin": "null"},
        {"X-Preview-Token": running.token, "Sec-Fetch-Site": "cross-site"},
        {"X-Preview-Token": running.token, "Sec-Fetch-Site": "same-site"},
    ):
        answer = _post(running, host, headers, body)
        assert _status(answer) == 403, (headers, answer[:200])
    answer = _post(running, "evil.example", {"X-Preview-Token": running.token}, body)
    assert _status(answer) == 403
    assert _sent(folder) == 0 and _drafts(folder) == 0
    answer = _post(running, host, {"X-Preview-Token": running.token, "Origin": own,
                                   "Sec-Fetch-Site": "same-origin"}, body)
    assert _status(answer) == 200 and b'"ok": true' in answer, answer
    assert _sent(folder) == 1


def test_malformed_requests_get_400_or_413_never_a_traceback(served, capfd):
    _folder, running = served
    port = _port(running)
    host = f"Host: 127.0.0.1:{port}\r\nConnection: close\r\n"
    token = f"X-Preview-Token: {running.token}\r\n"
    for since in ("abc", "-1", "1.5", "9" * 5000, "1&since=2", "%00"):
        answer = _raw(running, f"GET /changes?since={since} HTTP/1.1\r\n{host}\r\n".encode())
        assert _status(answer) == 400, (since, answer[:200])
    for length in ("abc", "-1", " ", "1e3", "12, 12", "0x10"):
        answer = _raw(running, f"POST /send-test HTTP/1.1\r\n{host}{token}"
                               f"Content-Length: {length}\r\n\r\naddress=x".encode())
        assert _status(answer) == 400, (length, answer[:200])
    answer = _raw(running, f"POST /send-test HTTP/1.1\r\n{host}{token}Content-Length: 5\r\n"
                           "Content-Length: 6\r\n\r\naddress=x".encode())
    assert _status(answer) == 400
    answer = _raw(running, f"POST /send-test HTTP/1.1\r\n{host}{token}"
                           "Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n".encode())
    assert _status(answer) == 400
    answer = _raw(running, f"POST /send-test HTTP/1.1\r\n{host}{token}"
                           f"Content-Length: {10**9}\r\n\r\n".encode() + b"a" * 4096)
    assert _status(answer) == 413
    # a body shorter than announced: the handler gives up instead of waiting forever
    answer = _raw(running, f"POST /send-test HTTP/1.1\r\n{host}{token}"
                           "Content-Length: 2000\r\n\r\naddress=".encode())
    assert _status(answer) == 400
    # a client that sends half a request line and stops is dropped too
    with socket.create_connection(("127.0.0.1", port), timeout=10) as stuck:
        stuck.sendall(b"GET /sta")
        assert stuck.recv(100) == b""  # closed by the server, not left hanging
    answer = _raw(running, f"GET /state.json HTTP/1.1\r\n{host}\r\n".encode())
    assert _status(answer) == 200  # and it still serves
    err = capfd.readouterr().err
    assert "Traceback" not in err


@pytest.fixture
def browser():
    if CHROMIUM is None:
        if os.environ.get("CI"):
            pytest.fail("Chromium is missing: apt-get install chromium")
        pytest.skip("needs Debian's chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(
            executable_path=CHROMIUM,
            args=[*FLAGS, "--host-resolver-rules=MAP rebound.example 127.0.0.1"])
        yield chromium
        chromium.close()


EVIL_PAGE = """<!doctype html><title>evil</title><script>
async function attack(port) {
  const url = "http://127.0.0.1:" + port;
  const results = [];
  const tries = [
    () => fetch(url + "/send-test", {method: "POST", mode: "no-cors",
        body: "address=victim%40example.org"}),
    () => fetch(url + "/send-test", {method: "POST", mode: "no-cors",
        headers: {"Content-Type": "application/x-www-form-urlencoded"},
        body: new URLSearchParams({address: "victim@example.org"})}),
    () => fetch(url + "/send-test", {method: "POST",
        headers: {"X-Preview-Token": "guess"}, body: "address=victim%40example.org"}),
    () => fetch(url + "/email.eml").then((r) => r.text()),
    () => fetch("http://localhost:" + port + "/email.eml").then((r) => r.text()),
  ];
  for (const attempt of tries) {
    try { const r = await attempt(); results.push(typeof r === "string" ? r : "opaque"); }
    catch (e) { results.push("blocked"); }
  }
  const form = document.createElement("form");
  form.method = "POST"; form.action = url + "/send-test"; form.target = "sink";
  form.innerHTML = '<input name="address" value="victim@example.org">';
  document.body.appendChild(form);
  const frame = document.createElement("iframe"); frame.name = "sink";
  document.body.appendChild(frame);
  await new Promise((done) => { frame.onload = done; form.submit(); });
  return results;
}
</script>"""


class _EvilSite:
    """Another web page on another loopback origin, like any site the editor has open."""

    def __init__(self, host: str):
        self.host = host

    def __enter__(self):
        page = EVIL_PAGE.encode()

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                self.send_response(200)
                self.send_header("Content-Type", "text/html")
                self.send_header("Content-Length", str(len(page)))
                self.end_headers()
                self.wfile.write(page)

        self.server = http.server.ThreadingHTTPServer((self.host, 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://{self.host}:{self.server.server_address[1]}/"
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.parametrize("evil_host", ["127.0.0.2", "127.0.0.1"])  # cross-site, same-site
def test_a_page_on_another_origin_cannot_send_or_read(served, browser, evil_host):
    folder, running = served
    with _EvilSite(evil_host) as evil:
        page = browser.new_page()
        page.goto(evil.url)
        results = page.evaluate(f"attack({_port(running)})")
        # nor frame the preview to trick a click on "Send test" (clickjacking)
        page.evaluate(f"""() => new Promise((done) => {{
            const frame = document.createElement("iframe"); frame.src = "{running.url}";
            frame.onload = done; document.body.appendChild(frame); }})""")
        assert not [f for f in page.frames if f.url.startswith(running.url)]
    assert not any("Subject:" in r for r in results), results
    assert _sent(folder) == 0 and _drafts(folder) == 0
    # a DNS-rebound name that resolves to 127.0.0.1 reads nothing either
    rebound = page.goto(f"http://rebound.example:{_port(running)}/email.eml")
    assert rebound.status == 403 and "Subject:" not in rebound.text()
    rebound = page.goto(f"http://rebound.example:{_port(running)}/")
    assert rebound.status == 403 and running.token not in rebound.text()
    # the preview's own page still sends a test copy, with its token
    own = browser.new_page()
    own.goto(running.url)
    own.locator("#send-test input[name=address]").fill("editor@example.org")
    own.locator("#send-test button").click()
    deadline = time.monotonic() + 30
    while "sent to" not in own.locator("#send-result").inner_text() \
            and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "sent to editor@example.org" in own.locator("#send-result").inner_text()
    assert _sent(folder) == 1
