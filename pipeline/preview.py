"""`publish preview`: the email in a browser, desktop and mobile, rebuilt when a file changes.

A small HTTP server on 127.0.0.1 that serves only its own routes (no files from disk), so
nothing outside the preview can be reached, and only to its own page: other sites and
DNS-rebound names get a 403, and sending needs a token that only the page holds. The
email is served as its own document, not an `iframe srcdoc`, so quirks-mode bugs show as
they would in a mail client.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import re
import secrets
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from . import build, htmltree_parse, services
from .errors import PublishError
from .settings import SETTINGS_FILE, Settings

PAGE = Path(__file__).with_name("preview_page.html")


def _can_send_test(service: str) -> bool:
    """Whether the preview offers "send a test": the service says so (unknown: no)."""
    try:
        return services.capabilities(service).can_send_test
    except PublishError:
        return False


@dataclass
class Snapshot:
    """The latest build, as the browser sees it."""

    version: int = 0
    html: str = ""
    text: str = ""
    eml: bytes = b""
    summary: dict = field(default_factory=dict)
    error: str = ""
    built_in: float = 0.0


class Preview:
    """Builds the issue, watches its files, and tells waiting browsers when it changed."""

    def __init__(self, issue: Path, settings: Settings):
        self.issue = issue
        self.settings = settings
        self.snapshot = Snapshot()
        self.changed = threading.Condition()
        self.stopping = threading.Event()
        htmltree_parse.WARM = True  # each save parses the same fragment, a little changed
        # Stamped before the first build, so a save during it is not missed.
        self._last = self._stamp()
        self.rebuild()

    def watched(self) -> list[Path]:
        from .templates import templates_dir

        folder = templates_dir(self.settings.root, self.settings.templates_dir)
        own = self.settings.root / self.settings.templates_dir  # its tokens and partials
        paths = [self.issue, self.settings.root / SETTINGS_FILE,
                 self.settings.root / "pyproject.toml"]
        return paths + sorted({p for f in (folder, own) if f.is_dir()
                               for p in f.rglob("*") if p.is_file()})

    def _stamp(self) -> tuple:
        stamps = []
        for path in self.watched():
            try:
                stat = path.stat()
                stamps.append((str(path), stat.st_mtime_ns, stat.st_size))
            except OSError:
                stamps.append((str(path), None, None))
        return tuple(stamps)

    def rebuild(self) -> None:
        from . import settings as settings_mod

        started = time.perf_counter()
        snapshot = Snapshot(**{**self.snapshot.__dict__})
        try:
            self.settings = settings_mod.load(self.settings.root)
            built = build.render_issue(self.issue, self.settings)
            snapshot.html, snapshot.text = built.html, built.text
            snapshot.eml = build.preview_eml(built, self.settings)
            snapshot.summary = {
                "title": built.issue.title,
                "from": self.settings.sender,
                "subject": built.email.subject,
                "preheader": built.email.preheader,
                "html_bytes": built.html_bytes,
                "clip_bytes": 102 * 1024,
                "warnings": built.warnings,
                "findings": [f.as_dict() for f in built.findings],
                "can_send_test": _can_send_test(self.settings.service),
            }
            snapshot.error = ""
        except PublishError as exc:
            snapshot.error = str(exc)
        except Exception as exc:  # keep serving; show what broke
            snapshot.error = f"{type(exc).__name__}: {exc}"
        snapshot.built_in = time.perf_counter() - started
        with self.changed:
            snapshot.version = self.snapshot.version + 1
            self.snapshot = snapshot
            self.changed.notify_all()

    def watch(self, interval: float = 0.05) -> None:
        while not self.stopping.wait(interval):
            current = self._stamp()
            if current != self._last:
                self._last = current
                self.rebuild()

    def wait_for_change(self, version: int, timeout: float) -> int:
        with self.changed:
            self.changed.wait_for(lambda: self.snapshot.version != version or
                                  self.stopping.is_set(), timeout=timeout)
            return self.snapshot.version

    def headers(self) -> str:
        head, _, _ = self.snapshot.eml.partition(b"\r\n\r\n")
        return head.decode("ascii", "replace").replace("\r\n", "\n")

    def send_test(self, address: str) -> str:
        from .send import Sender, SendOptions

        sender = Sender(self.issue, self.settings, SendOptions(redraft=True))
        return sender.send_test(address)


MAX_BODY = 2048
TOKEN_HEADER = "X-Preview-Token"
READ_TIMEOUT = 15.0  # seconds a client may pause mid-request before it is dropped


class _Refused(Exception):
    """A request the preview will not serve: answered with `status` and one line."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def page_with_token(page: bytes, token: str) -> bytes:
    """The preview page with the run's token in a meta tag, for the page's own POSTs."""
    tag = f'<meta name="preview-token" content="{token}">'.encode("ascii")
    match = re.search(rb"<head(?:\s[^>]*)?>", page, re.IGNORECASE)
    if match is None:
        return tag + page
    return page[:match.end()] + tag + page[match.end():]


def _handler(preview: Preview, token: str):
    class Handler(BaseHTTPRequestHandler):
        """Serves the preview to its own page only.

        Every request must name the server as 127.0.0.1:PORT or localhost:PORT in `Host`
        (a DNS-rebound name is refused) and, when it says where it comes from (`Origin`,
        `Sec-Fetch-Site`), come from the preview itself. A request that changes anything
        (sending a test copy) must also carry the run's token, which only the preview page
        holds. Anything else gets a 403; malformed requests a 400 or 413, never a hang.
        """

        server_version = "publish-preview"
        timeout = READ_TIMEOUT
        body_read = False

        def log_message(self, *args) -> None:
            pass

        def _send(self, status: int, body: bytes, content_type: str,
                  extra: dict | None = None) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.send_header("X-Content-Type-Options", "nosniff")
            self.send_header("Content-Security-Policy", "frame-ancestors 'self'")
            self.send_header("Referrer-Policy", "no-referrer")
            for key, value in (extra or {}).items():
                self.send_header(key, value)
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _refuse(self, status: int, message: str) -> None:
            self.close_connection = True
            if self.command == "POST" and not self.body_read:
                self._drain()
            self._send(status, (message + "\n").encode("utf-8"), "text/plain; charset=utf-8")

        def _origins(self) -> set[str]:
            port = self.server.server_address[1]
            return {f"127.0.0.1:{port}", f"localhost:{port}"}

        def _guard(self, changes_state: bool) -> None:
            hosts = self._origins()
            host = (self.headers.get("Host") or "").strip().lower()
            if host not in hosts:
                raise _Refused(403, "forbidden: the preview answers only to "
                               f"http://127.0.0.1:{self.server.server_address[1]}/")
            origin = self.headers.get("Origin")
            if origin is not None and origin.strip().lower() not in {f"http://{h}"
                                                                     for h in hosts}:
                raise _Refused(403, "forbidden: a request from another site")
            site = (self.headers.get("Sec-Fetch-Site") or "").strip().lower()
            mode = (self.headers.get("Sec-Fetch-Mode") or "").strip().lower()
            if site in {"cross-site", "same-site"} and (changes_state or mode != "navigate"):
                raise _Refused(403, "forbidden: a request from another site")
            if changes_state:
                given = (self.headers.get(TOKEN_HEADER) or "").encode("utf-8", "replace")
                if not hmac.compare_digest(given, token.encode("ascii")):
                    raise _Refused(403, "forbidden: missing or wrong preview token")

        def _serve(self, method) -> None:
            self.body_read = False
            try:
                method()
            except _Refused as refused:
                self._refuse(refused.status, refused.message)
            except (ConnectionError, TimeoutError):
                self.close_connection = True
            except Exception as exc:  # one line for the page, the server keeps running
                self._refuse(500, f"internal error: {type(exc).__name__}")

        def do_GET(self) -> None:
            self._serve(self._get)

        def do_HEAD(self) -> None:
            self._serve(self._get)

        def do_POST(self) -> None:
            self._serve(self._post)

        def _get(self) -> None:
            self._guard(changes_state=False)
            url = urlsplit(self.path)
            path = url.path
            snap = preview.snapshot
            if path == "/":
                self._send(200, page_with_token(PAGE.read_bytes(), token),
                           "text/html; charset=utf-8")
            elif path == "/email.html":
                self._send(200, snap.html.encode("utf-8"), "text/html; charset=utf-8")
            elif path == "/email.txt":
                self._send(200, snap.text.encode("utf-8"), "text/plain; charset=utf-8")
            elif path == "/email.eml":
                name = f"{preview.issue.stem}.eml"
                self._send(200, snap.eml, "message/rfc822",
                           {"Content-Disposition": f'attachment; filename="{name}"'})
            elif path == "/headers.txt":
                self._send(200, preview.headers().encode("utf-8"), "text/plain; charset=utf-8")
            elif path == "/state.json":
                body = {"version": snap.version, "error": snap.error, **snap.summary,
                        "built_in": round(snap.built_in, 3)}
                self._send(200, json.dumps(body).encode(), "application/json")
            elif path == "/changes":
                since = _since(url.query)
                version = preview.wait_for_change(since, timeout=20)
                self._send(200, json.dumps({"version": version}).encode(), "application/json")
            else:
                self._send(404, b"not found", "text/plain")

        def _post(self) -> None:
            self._guard(changes_state=True)
            if urlsplit(self.path).path != "/send-test":
                raise _Refused(404, "not found")
            form = parse_qs(self._body().decode("utf-8", "replace"), max_num_fields=8)
            address = (form.get("address") or [""])[0].strip()
            try:
                answer = {"ok": True, "message": f"sent to {address}: "
                          f"{preview.send_test(address)}"}
            except PublishError as exc:
                answer = {"ok": False, "message": str(exc)}
            self._send(200, json.dumps(answer).encode(), "application/json")

        def _body(self) -> bytes:
            """The request body, at most MAX_BODY bytes, with a Content-Length we can trust."""
            if self.headers.get("Transfer-Encoding"):
                raise _Refused(400, "bad request: send a Content-Length, not chunks")
            lengths = self.headers.get_all("Content-Length") or []
            if len(lengths) != 1 or not lengths[0].strip().isdigit():
                raise _Refused(400, "bad request: Content-Length must be one whole number")
            length = int(lengths[0])
            if length > MAX_BODY:
                raise _Refused(413, f"request too large: at most {MAX_BODY} bytes")
            self.body_read = True
            try:
                body = self.rfile.read(length)
            except TimeoutError:
                body = b""
            if len(body) != length:
                raise _Refused(400, "bad request: the body is shorter than its Content-Length "
                               "(or stopped coming)")
            return body

        def _drain(self) -> None:
            """Read a small refused body, so the client sees our answer, not a reset."""
            self.body_read = True
            length = (self.headers.get("Content-Length") or "").strip()
            if length.isdigit() and int(length) <= MAX_BODY:
                with contextlib.suppress(OSError):
                    self.rfile.read(int(length))

    return Handler


def _since(query: str) -> int:
    """The `since` version of a /changes request; a 400 when it is not a small number."""
    values = parse_qs(query, max_num_fields=8).get("since", ["0"])
    text = values[0].strip() or "0"
    if len(values) != 1 or not text.isdigit() or len(text) > 12:
        raise _Refused(400, "bad request: since must be a version number")
    return int(text)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address) -> None:
        """A dropped or broken connection is the client's business: no traceback."""


@dataclass
class Running:
    preview: Preview
    server: ThreadingHTTPServer
    threads: list[threading.Thread]
    token: str = field(default="", repr=False)  # the run's secret for state-changing requests

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}/"

    def stop(self) -> None:
        self.preview.stopping.set()
        with self.preview.changed:
            self.preview.changed.notify_all()
        self.server.shutdown()
        self.server.server_close()
        for thread in self.threads:
            thread.join(timeout=5)


def start(issue: Path, settings: Settings, port: int = 0) -> Running:
    """Build, then serve on 127.0.0.1 and watch for changes, in background threads."""
    if not issue.is_file():
        from .errors import InputError

        raise InputError("no such file", issue)
    preview = Preview(issue, settings)
    token = secrets.token_urlsafe(32)
    try:
        server = _Server(("127.0.0.1", port), _handler(preview, token))
    except OSError as exc:
        raise PublishError(f"cannot listen on 127.0.0.1:{port}: {exc.strerror}") from None
    threads = [threading.Thread(target=server.serve_forever, daemon=True),
               threading.Thread(target=preview.watch, daemon=True)]
    for thread in threads:
        thread.start()
    return Running(preview, server, threads, token)
