"""Buttondown's API v1 on loopback, written from its reference and stricter than it.

The real API sends an email created without a status at once; this server refuses such
a create (400) and counts it in `created_without_status`, so a test can prove no request
ever omitted it. `Authorization: Token <KEY>` is required; statuses move only as the
real ones do (draft -> about_to_send | scheduled -> sent); `publish_date` must be a
future time with a zone; every change bumps `modification_date`.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import threading
import uuid
from http.server import ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from tests.json_api import JsonApiHandler

KEY = "5a2e9c1e-3f4b-4c8d-9e0f-1a2b3c4d5e6f"
STATUSES = {"draft", "about_to_send", "scheduled", "sent", "imported"}


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="microseconds")


class FakeButtondown:
    def __init__(self):
        self.emails: dict[str, dict] = {}
        self.log: list[tuple[str, str, object]] = []  # (method, path, body)
        self.created_without_status = 0
        self.lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def __enter__(self):
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()

    def count(self, method: str, pattern: str) -> int:
        return sum(1 for m, p, _ in self.log if m == method and re.fullmatch(pattern, p))

    def edit(self, email_id: str, **fields) -> None:
        """Change an email as someone in Buttondown's editor would."""
        with self.lock:
            self.emails[email_id].update(fields, modification_date=_now())

    def _handler(self):
        server = self

        class Handler(JsonApiHandler):
            methods = ("GET", "POST", "PATCH")

            def _route(self, method):
                parts = urlsplit(self.path)
                raw = self._raw_body()
                try:
                    body = json.loads(raw) if raw else None
                except ValueError:
                    return self._send(400, {"detail": "JSON parse error"})
                with server.lock:
                    server.log.append((method, parts.path, body))
                if self.headers.get("Authorization") != f"Token {KEY}":
                    return self._send(401, {"detail": "Invalid token."})
                status, reply = server.dispatch(method, parts.path, parse_qs(parts.query),
                                                body)
                return self._send(status, reply)

        return Handler

    def dispatch(self, method, path, query, body):
        if path == "/v1/emails" and method == "POST":
            return self._create(body)
        if path == "/v1/emails" and method == "GET":
            wanted = query.get("status", [None])[0]
            with self.lock:
                results = [e for e in self.emails.values()
                           if wanted is None or e["status"] == wanted]
            return 200, {"results": results, "count": len(results), "next": None}
        match = re.fullmatch(r"/v1/emails/([0-9a-f-]+)", path)
        if match and match.group(1) in self.emails:
            if method == "GET":
                return 200, dict(self.emails[match.group(1)])
            if method == "PATCH":
                return self._update(match.group(1), body)
        return 404, {"detail": "Not found."}

    def _create(self, body):
        if not isinstance(body, dict) or not body.get("subject"):
            return 400, {"subject": ["This field is required."]}
        if "status" not in body:
            with self.lock:
                self.created_without_status += 1
            return 400, {"status": ["Refused by the test server: the real API would send "
                                    "this email to every subscriber now."]}
        if body["status"] != "draft":
            return 400, {"status": ["Only drafts are created by publish."]}
        email_id = str(uuid.uuid4())
        now = _now()
        email = {"id": email_id, "subject": body["subject"], "body": body.get("body", ""),
                 "description": body.get("description", ""), "status": "draft",
                 "publish_date": None, "creation_date": now, "modification_date": now,
                 "absolute_url": f"https://buttondown.example/archive/{email_id}"}
        with self.lock:
            self.emails[email_id] = email
        return 201, dict(email)

    def _update(self, email_id, body):
        if not isinstance(body, dict):
            return 400, {"detail": "Expected an object."}
        with self.lock:
            email = self.emails[email_id]
            new_status = body.get("status", email["status"])
            if new_status not in STATUSES:
                return 400, {"status": [f'"{new_status}" is not a valid choice.']}
            if email["status"] in {"sent", "about_to_send"} and (
                    set(body) - {"status"} or new_status != email["status"]):
                return 400, {"detail": "This email has already been sent."}
            if new_status == "scheduled":
                when = body.get("publish_date") or email["publish_date"]
                try:
                    parsed = dt.datetime.fromisoformat(str(when))
                except ValueError:
                    return 400, {"publish_date": ["Datetime has wrong format."]}
                if parsed.tzinfo is None or parsed <= dt.datetime.now(dt.UTC):
                    return 400, {"publish_date": ["Must be in the future."]}
            for key in ("subject", "body", "description", "publish_date"):
                if key in body:
                    email[key] = body[key]
            email["status"] = new_status
            email["modification_date"] = _now()
            return 200, dict(email)
