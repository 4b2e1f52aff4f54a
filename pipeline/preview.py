"""`publish preview`: the email in a browser, desktop and mobile, rebuilt when a file changes.

A small HTTP server on 127.0.0.1 that serves only its own routes (no files from disk), so
nothing outside the preview can be reached. The email is served as its own document, not
an `iframe srcdoc`, so quirks-mode bugs show as they would in a mail client.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from . import build
from .errors import PublishError
from .settings import SETTINGS_FILE, Settings

PAGE = Path(__file__).with_name("preview_page.html")


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
        # Stamped before the first build, so a save during it is not missed.
        self._last = self._stamp()
        self.rebuild()

    def watched(self) -> list[Path]:
        from .templates import templates_dir

        folder = templates_dir(self.settings.root, self.settings.templates_dir)
        paths = [self.issue, self.settings.root / SETTINGS_FILE,
                 self.settings.root / "pyproject.toml"]
        return paths + sorted(p for p in folder.rglob("*") if p.is_file())

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
                "can_send_test": self.settings.service in ("local", "smtp"),
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


def _handler(preview: Preview):
    class Handler(BaseHTTPRequestHandler):
        server_version = "publish-preview"

        def log_message(self, *args) -> None:
            pass

        def _send(self, status: int, body: bytes, content_type: str,
                  extra: dict | None = None) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.send_header("X-Content-Type-Options", "nosniff")
            for key, value in (extra or {}).items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            path = urlsplit(self.path).path
            snap = preview.snapshot
            if path == "/":
                self._send(200, PAGE.read_bytes(), "text/html; charset=utf-8")
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
                since = int(parse_qs(urlsplit(self.path).query).get("since", ["0"])[0] or 0)
                version = preview.wait_for_change(since, timeout=20)
                self._send(200, json.dumps({"version": version}).encode(), "application/json")
            else:
                self._send(404, b"not found", "text/plain")

        def do_POST(self) -> None:
            if urlsplit(self.path).path != "/send-test":
                return self._send(404, b"not found", "text/plain")
            length = min(int(self.headers.get("Content-Length") or 0), 2048)
            form = parse_qs(self.rfile.read(length).decode("utf-8", "replace"))
            address = (form.get("address") or [""])[0].strip()
            try:
                answer = {"ok": True, "message": f"sent to {address}: "
                          f"{preview.send_test(address)}"}
            except PublishError as exc:
                answer = {"ok": False, "message": str(exc)}
            self._send(200, json.dumps(answer).encode(), "application/json")

    return Handler


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address) -> None:
        import sys

        if not isinstance(sys.exc_info()[1], ConnectionError):  # a closed tab is not an error
            super().handle_error(request, client_address)


@dataclass
class Running:
    preview: Preview
    server: ThreadingHTTPServer
    threads: list[threading.Thread]

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
    try:
        server = _Server(("127.0.0.1", port), _handler(preview))
    except OSError as exc:
        raise PublishError(f"cannot listen on 127.0.0.1:{port}: {exc.strerror}") from None
    threads = [threading.Thread(target=server.serve_forever, daemon=True),
               threading.Thread(target=preview.watch, daemon=True)]
    for thread in threads:
        thread.start()
    return Running(preview, server, threads)
