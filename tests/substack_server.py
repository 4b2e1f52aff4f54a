"""A Substack-compatible API on loopback, as strict as the real one is reported to be.

It rejects a missing cookie, an HTML body, bylines given as bare ids, and node types or
marks that Substack's editor does not know. Faults can be queued per route to test
retries: a status with headers, or a slow answer that still carries the request out.

Two hosts share one state: `url` is the publication's own host, `global_url` is
substack.com, which serves drafts only with `?publication_id=`. As reported in the wild,
a publication on a custom domain (`custom_domain=True`) is answered 403 on its own host's
drafts, or (`challenge=True`) a Cloudflare challenge page; `accepts` is the set of cookie
names a host takes the session under, and `strict_cookies` refuses a request offering
the session under a name the host does not take. A publish must say `send` explicitly;
the email goes out when `send` is true and the draft's `should_send_email` is too.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import struct
import threading
import time
from dataclasses import dataclass, field
from http.server import ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from tests.json_api import JsonApiHandler

SID = "s%3Atest-session.signature"
USER_ID = 4242
PUBLICATION_ID = 777
SECTIONS = [{"id": 31, "name": "Deep dives"}, {"id": 32, "name": "周报"}]
CHALLENGE_PAGE = ("<!DOCTYPE html><html><head><title>Just a moment...</title></head><body>"
                  "<div id=\"cf-chl-widget\">Checking your browser</div>" + "x" * 4000
                  + "</body></html>")

NODE_TYPES = {
    "doc", "paragraph", "text", "heading", "blockquote", "bullet_list", "ordered_list",
    "list_item", "horizontal_rule", "hard_break", "highlighted_code_block", "captionedImage",
    "image2", "caption", "youtube2", "subscribeWidget", "ctaCaption", "footnoteAnchor",
    "footnote", "button", "paywall",
}
MARK_TYPES = {"strong", "em", "code", "strikethrough", "link", "superscript", "subscript"}


def png_size(data: bytes) -> tuple[int, int] | None:
    if data.startswith(b"\x89PNG\r\n\x1a\n") and data[12:16] == b"IHDR":
        return struct.unpack(">II", data[16:24])
    return None


def check_node(node, path="doc") -> str | None:
    """The first reason the editor would choke on this node, or None."""
    if not isinstance(node, dict):
        return f"not a node at {path}: {node!r}"
    if node.get("type") not in NODE_TYPES:
        return f"unknown node type at {path}: {node.get('type')}"
    if node["type"] == "text":
        if not isinstance(node.get("text"), str) or not node["text"]:
            return f"empty text node at {path}"
        for mark in node.get("marks", []):
            if mark.get("type") not in MARK_TYPES:
                return f"unknown mark at {path}: {mark.get('type')}"
            if mark["type"] == "link" and not mark.get("attrs", {}).get("href"):
                return f"link without href at {path}"
    if node["type"] == "image2" and not str(node.get("attrs", {}).get("src", "")).startswith(
            "http"):
        return f"image2 without an uploaded src at {path}"
    for i, child in enumerate(node.get("content", [])):
        problem = check_node(child, f"{path}.{node['type']}[{i}]")
        if problem:
            return problem
    return None


@dataclass
class Fault:
    method: str
    path: str  # a regex matched against the request path
    status: int = 0  # 0: answer normally after `delay`
    headers: dict = field(default_factory=dict)
    delay: float = 0.0


class FakeSubstack:
    """Run with `with FakeSubstack() as server:`; `server.url` is its base URL."""

    def __init__(self, *, custom_domain: bool = False, challenge: bool = False,
                 accepts: frozenset[str] = frozenset({"substack.sid", "connect.sid"}),
                 strict_cookies: bool = False, email_works: bool = True):
        self.custom_domain = custom_domain
        self.challenge = challenge
        self.accepts = accepts
        self.strict_cookies = strict_cookies
        self.email_works = email_works
        self.log: list[tuple[str, str, str, dict]] = []  # (host, method, path, query)
        self.publish_bodies: list = []
        self.drafts: dict[int, dict] = {}
        self.images: dict[str, bytes] = {}
        self.requests: list[tuple[str, str]] = []
        self.faults: list[Fault] = []
        self.published: list[int] = []
        self.lock = threading.Lock()
        self.next_id = 1000
        self.cookies_seen: list[str] = []
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler("publication"))
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.global_httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler("global"))
        self.global_url = f"http://127.0.0.1:{self.global_httpd.server_address[1]}"

    def __enter__(self):
        for httpd in (self.httpd, self.global_httpd):
            threading.Thread(target=httpd.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc):
        for httpd in (self.httpd, self.global_httpd):
            httpd.shutdown()
            httpd.server_close()

    def writes(self) -> int:
        """Requests that could change anything (every method but GET)."""
        return sum(1 for _, method, _, _ in self.log if method != "GET")

    def _session_ok(self, cookie_header: str) -> bool:
        offered = {}
        for part in cookie_header.split(";"):
            name, _, value = part.strip().partition("=")
            if name:
                offered[name] = value.replace("s:", "s%3A", 1)
        good = [n for n in offered if n in self.accepts and offered[n] == SID]
        if self.strict_cookies and any(n not in self.accepts for n in offered):
            return False
        return bool(good)

    def count(self, method: str, pattern: str) -> int:
        return sum(1 for m, p in self.requests if m == method and re.fullmatch(pattern, p))

    def edit(self, draft_id: int, **fields) -> None:
        """Change a draft as someone in Substack's editor would."""
        with self.lock:
            self.drafts[draft_id].update(fields)

    # request handling ------------------------------------------------------------
    def _take_fault(self, method: str, path: str) -> Fault | None:
        with self.lock:
            for fault in self.faults:
                if fault.method == method and re.fullmatch(fault.path, path):
                    self.faults.remove(fault)
                    return fault
        return None

    def _handler(self, host: str):
        server = self

        class Handler(JsonApiHandler):
            methods = ("GET", "POST", "PUT", "DELETE")

            def _body(self):
                raw = self._raw_body()
                try:
                    return json.loads(raw or b"null")
                except ValueError:
                    return raw.decode("latin-1")

            def _route(self, method):
                parts = urlsplit(self.path)
                path = parts.path
                query = parse_qs(parts.query)
                with server.lock:
                    server.requests.append((method, path))
                    server.log.append((host, method, path, query))
                    server.cookies_seen.append(self.headers.get("Cookie", ""))
                body = self._body() if method in {"POST", "PUT"} else None
                fault = server._take_fault(method, path)
                if fault and fault.status:
                    return self._send(fault.status, {"errors": [{"msg": "injected fault"}]},
                                      fault.headers)
                drafts = path.startswith(("/api/v1/drafts", "/api/v1/image"))
                if drafts and (server.challenge == "everywhere" or
                               (host == "publication" and server.challenge)):
                    return self._send(403, CHALLENGE_PAGE)
                if not server._session_ok(self.headers.get("Cookie", "")):
                    return self._send(401, {"errors": [{"msg": "Not authorized"}]})
                if host == "publication" and drafts and server.custom_domain:
                    return self._send(403, {"errors": [{"msg": "Not authorized"}]})
                if host == "global" and path.startswith("/api/v1/drafts") and \
                        query.get("publication_id") != [str(PUBLICATION_ID)]:
                    return self._send(400, {"errors": [{"param": "publication_id",
                                                        "msg": "Invalid value"}]})
                status, reply = server.dispatch(method, path, query, body)
                if fault and fault.delay:
                    time.sleep(fault.delay)  # carried out, answered too late
                return self._send(status, reply)

        return Handler

    def dispatch(self, method, path, query, body):
        if method == "GET" and path == "/api/v1/user/profile/self":
            return 200, {"id": USER_ID, "name": "Test Author", "publicationUsers": [
                {"is_primary": False, "publication": {"id": 1, "subdomain": "someone-else"}},
                {"is_primary": True, "publication": {
                    "id": PUBLICATION_ID, "subdomain": "test",
                    "custom_domain": urlsplit(self.url).netloc}}]}
        if method == "GET" and path == "/api/v1/subscriptions":
            return 200, {"publications": [
                {"id": 1, "hostname": "someone-else.substack.com",
                 "sections": [{"id": 99, "name": "Not ours"}]},
                {"id": PUBLICATION_ID, "hostname": urlsplit(self.url).netloc,
                 "sections": SECTIONS}]}
        if method == "POST" and path == "/api/v1/image":
            return self._image(body)
        if path == "/api/v1/drafts":
            if method == "POST":
                return self._save(None, body)
            if method == "GET":
                offset = int(query.get("offset", ["0"])[0])
                limit = int(query.get("limit", ["25"])[0])
                with self.lock:
                    posts = [d for d in self.drafts.values() if not d["is_published"]]
                return 200, posts[offset:offset + limit]
        match = re.fullmatch(r"/api/v1/drafts/(\d+)(/prepublish|/publish|/scheduled_release)?",
                             path)
        if match:
            draft_id = int(match.group(1))
            if draft_id not in self.drafts:
                return 404, {"errors": [{"msg": "Post not found"}]}
            action = match.group(2)
            if method == "GET" and not action:
                return 200, self.drafts[draft_id]
            if method == "PUT" and not action:
                return self._save(draft_id, body)
            if method == "GET" and action == "/prepublish":
                return 200, {"errors": []}
            if method == "POST" and action == "/publish":
                return self._publish(draft_id, body)
            if action == "/scheduled_release" and method in {"POST", "DELETE"}:
                return self._schedule(draft_id, body if method == "POST" else None)
        return 404, {"error": "Not found"}

    def _publish(self, draft_id, body):
        with self.lock:
            self.publish_bodies.append(body)
            draft = self.drafts[draft_id]
            if draft["is_published"]:
                return 400, {"errors": [{"msg": "Post is already published"}]}
            if not isinstance(body, dict) or not isinstance(body.get("send"), bool):
                # The real default is to email: this server wants it said.
                return 400, {"errors": [{"param": "send", "msg": "say whether to email"}]}
            draft["is_published"] = True
            draft["post_date"] = "2025-01-15T10:00:00.000Z"
            emailed = body["send"] and draft.get("should_send_email", True) \
                and self.email_works
            draft["email_sent_at"] = "2025-01-15T10:00:05.000Z" if emailed else None
            draft["canonical_url"] = f"https://test.substack.com/p/{draft_id}"
            self.published.append(draft_id)
            return 200, dict(draft)

    def _schedule(self, draft_id, body):
        import datetime as dt

        with self.lock:
            draft = self.drafts[draft_id]
            if body is None:
                draft["trigger_at"] = None
                return 200, {}
            if draft["is_published"]:
                return 400, {"errors": [{"msg": "Post is already published"}]}
            when = body.get("trigger_at") if isinstance(body, dict) else None
            try:
                parsed = dt.datetime.fromisoformat(str(when))
            except ValueError:
                return 400, {"errors": [{"param": "trigger_at", "msg": "Invalid value"}]}
            if parsed.tzinfo is None or parsed <= dt.datetime.now(dt.UTC):
                return 400, {"errors": [{"param": "trigger_at", "msg": "must be future"}]}
            draft["trigger_at"] = when
            draft["scheduled_audience"] = (body.get("post_audience"),
                                           body.get("email_audience"))
            return 200, {"trigger_at": when}

    def _image(self, body):
        uri = body.get("image", "") if isinstance(body, dict) else ""
        match = re.fullmatch(r"data:(image/[a-z]+);base64,(.+)", uri, re.S)
        if not match:
            return 400, {"errors": [{"param": "image", "msg": "Invalid value"}]}
        data = base64.b64decode(match.group(2))
        size = png_size(data)
        if size is None:
            return 400, {"errors": [{"param": "image", "msg": "Failed to process image"}]}
        digest = hashlib.sha256(data).hexdigest()[:16]
        with self.lock:
            self.images[digest] = data
        return 200, {"id": len(self.images), "url": f"https://substack-post-media.example/{digest}.png",
                     "imageWidth": size[0], "imageHeight": size[1], "bytes": len(data),
                     "contentType": match.group(1)}

    def _save(self, draft_id, body):
        if not isinstance(body, dict):
            return 400, {"errors": [{"msg": "Invalid JSON"}]}
        if draft_id is not None and "draft_body" not in body:
            return self._update_fields(draft_id, body)
        bylines = body.get("draft_bylines")
        if not isinstance(bylines, list) or not bylines:
            return 400, {"errors": [{"param": "draft_bylines", "msg": "Invalid value"}]}
        for i, byline in enumerate(bylines):
            if not isinstance(byline, dict) or byline.get("id") != USER_ID \
                    or not isinstance(byline.get("is_guest"), bool):
                return 400, {"errors": [{"param": f"draft_bylines[{i}].id",
                                         "msg": "Invalid value"}]}
        raw = body.get("draft_body")
        if not isinstance(raw, str) or raw.lstrip().startswith("<"):
            return 400, {"errors": [{"param": "draft_body", "msg": "Invalid value"}]}
        try:
            doc = json.loads(raw)
        except ValueError:
            return 400, {"errors": [{"param": "draft_body", "msg": "Invalid JSON"}]}
        problem = check_node(doc)
        if problem or doc.get("type") != "doc":
            return 400, {"errors": [{"param": "draft_body", "msg": problem or "not a doc"}]}
        with self.lock:
            if draft_id is None:
                self.next_id += 1
                draft_id = self.next_id
                self.drafts[draft_id] = {"id": draft_id, "is_published": False,
                                         "post_date": None}
            draft = self.drafts[draft_id]
            draft.update({key: body[key] for key in ("draft_title", "draft_subtitle",
                                                     "audience", "draft_section_id")
                          if key in body})
            # Stored re-serialised, as a real server would: key order and spacing change.
            draft["draft_body"] = json.dumps(doc, sort_keys=True)
            draft["draft_bylines"] = bylines
            return 200, dict(draft)

    def _update_fields(self, draft_id, body):
        """A partial PUT: only the keys sent change; bylines, when sent, must be valid."""
        bylines = body.get("draft_bylines", [{"id": USER_ID, "is_guest": False}])
        if not isinstance(bylines, list) or not bylines or any(
                not isinstance(b, dict) or b.get("id") != USER_ID for b in bylines):
            return 400, {"errors": [{"param": "draft_bylines", "msg": "Invalid value"}]}
        if "audience" in body and body["audience"] not in {"everyone", "only_paid",
                                                           "founding", "only_free"}:
            return 400, {"errors": [{"param": "audience", "msg": "Invalid value"}]}
        with self.lock:
            draft = self.drafts[draft_id]
            for key in ("should_send_email", "audience", "draft_section_id"):
                if key in body:
                    draft[key] = body[key]
            return 200, dict(draft)
