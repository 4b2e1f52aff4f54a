"""What the loopback API servers (Substack, Ghost, Buttondown) share: a request handler
that answers JSON (or an HTML page, as a challenge page would), reads a request body and
routes the methods the API knows to `_route(method)`; any other method is a 501."""

from __future__ import annotations

import json
from http.server import BaseHTTPRequestHandler


class JsonApiHandler(BaseHTTPRequestHandler):
    methods: tuple[str, ...] = ("GET", "POST", "PUT")

    def log_message(self, *args):
        pass

    def _send(self, status, body, headers=None):
        """Answer `body`: a str is sent as an HTML page, anything else as JSON."""
        html = isinstance(body, str)
        data = body.encode() if html else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/html" if html else "application/json")
        self.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    def _raw_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _route(self, method: str) -> None:
        raise NotImplementedError

    def _method(self, method: str) -> None:
        if method in self.methods:
            self._route(method)
        else:
            self.send_error(501, f"Unsupported method ({method!r})")

    def do_GET(self):
        self._method("GET")

    def do_POST(self):
        self._method("POST")

    def do_PUT(self):
        self._method("PUT")

    def do_PATCH(self):
        self._method("PATCH")

    def do_DELETE(self):
        self._method("DELETE")
