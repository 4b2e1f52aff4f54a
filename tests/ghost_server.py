"""Ghost's Admin API on loopback, written from its reference, refusing what Ghost refuses.

- Every request needs `Authorization: Ghost <JWT>`: HS256, signed with the hex-decoded
  secret of the key named by `kid`, `aud` exactly "/admin/", `iat` and `exp` present,
  valid now, and at most five minutes long (Ghost's maxAge). Anything else: 401.
- HTML is read only with `?source=html` (Ghost silently drops it otherwise: here, 400).
- An update must carry the post's current `updated_at`, else 409 UpdateCollisionError.
- Publishing with `?newsletter=` needs an active newsletter's slug and a valid segment;
  scheduling needs a future `published_at`; authors must exist.
- `/images/upload/` takes a multipart `file` that is really an image.
"""

from __future__ import annotations

import datetime as dt
import email.parser
import email.policy
import hashlib
import json
import re
import secrets
import threading
from http.server import ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from tests.json_api import JsonApiHandler

KEY_ID = "6748592f4b9b7700010f6564"
SECRET = "b1b5b9c1d4e5f6a7b8c9d0e1f2a3b4c5d6e7f8a9b0c1d2e3f4a5b6c7d8e9f0a1"
KEY = f"{KEY_ID}:{SECRET}"
NEWSLETTERS = [{"id": "n1", "slug": "weekly", "name": "Weekly", "status": "active",
                "sort_order": 0},
               {"id": "n2", "slug": "announcements", "name": "Announcements",
                "status": "active", "sort_order": 1},
               {"id": "n3", "slug": "old-letter", "name": "Old", "status": "archived",
                "sort_order": 2}]
AUTHORS = {"editor@letter.example": "editor", "mara@letter.example": "mara-lind"}
SEGMENTS = re.compile(r"^(all|(status|label|tier):-?[\w-]+(,(status|label|tier):-?[\w-]+)*)$")
IMAGE_MAGIC = (b"\x89PNG", b"\xff\xd8\xff", b"GIF8", b"RIFF")


def _stamp() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _error(status: int, kind: str, message: str):
    return status, {"errors": [{"type": kind, "message": message}]}


class FakeGhost:
    def __init__(self):
        self.posts: dict[str, dict] = {}
        self.images: dict[str, bytes] = {}
        self.log: list[tuple[str, str, dict]] = []  # (method, path, query)
        self.tokens: list[str] = []
        self.edit_before_next_put: str | None = None  # someone saves in Ghost meanwhile
        self.lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def __enter__(self):
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()

    def writes(self) -> int:
        return sum(1 for method, _, _ in self.log if method != "GET")

    def count(self, method: str, pattern: str) -> int:
        return sum(1 for m, p, _ in self.log if m == method and re.fullmatch(pattern, p))

    def edit(self, post_id: str, **fields) -> None:
        """Change a post as someone in Ghost's editor would."""
        with self.lock:
            self.posts[post_id].update(fields, updated_at=_stamp())

    # auth ----------------------------------------------------------------------------
    def check_token(self, header: str) -> str | None:
        """Why Ghost would refuse this Authorization header, or None."""
        import jwt

        scheme, _, token = header.partition(" ")
        if scheme != "Ghost" or not token:
            return "Authorization header format is Authorization: Ghost [token]"
        try:
            head = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            return "Invalid token"
        if head.get("kid") != KEY_ID or head.get("alg") != "HS256":
            return "Unknown Admin API Key"
        try:
            claims = jwt.decode(token, bytes.fromhex(SECRET), algorithms=["HS256"],
                                audience="/admin/", options={"require": ["exp", "iat"]})
        except jwt.PyJWTError as exc:
            return f"Invalid token: {type(exc).__name__}"
        if claims["exp"] - claims["iat"] > 300:
            return "Invalid token: maxAge exceeded"
        self.tokens.append(token)
        return None

    # requests ------------------------------------------------------------------------
    def _handler(self):
        server = self

        class Handler(JsonApiHandler):
            methods = ("GET", "POST", "PUT")

            def _route(self, method):
                parts = urlsplit(self.path)
                query = {k: v[0] for k, v in parse_qs(parts.query).items()}
                raw = self._raw_body()
                with server.lock:
                    server.log.append((method, parts.path, query))
                problem = server.check_token(self.headers.get("Authorization", ""))
                if problem:
                    return self._send(*_error(401, "UnauthorizedError", problem))
                prefix = "/ghost/api/admin"
                if not parts.path.startswith(prefix):
                    return self._send(*_error(404, "NotFoundError", "Resource not found"))
                path = parts.path[len(prefix):]
                if path == "/images/upload/" and method == "POST":
                    return self._send(*server.upload(self.headers.get("Content-Type", ""),
                                                     raw))
                try:
                    body = json.loads(raw) if raw else None
                except ValueError:
                    return self._send(*_error(400, "BadRequestError", "Invalid JSON"))
                return self._send(*server.dispatch(method, path, query, body))

        return Handler

    def dispatch(self, method, path, query, body):
        if path == "/newsletters/" and method == "GET":
            return 200, {"newsletters": [n for n in NEWSLETTERS
                                         if query.get("filter") != "status:active"
                                         or n["status"] == "active"]}
        if path == "/posts/" and method == "POST":
            return self._create(query, body)
        if path == "/posts/" and method == "GET":
            wanted = query.get("filter", "").removeprefix("status:") or None
            with self.lock:
                found = [dict(p) for p in self.posts.values()
                         if wanted is None or p["status"] == wanted]
            return 200, {"posts": found, "meta": {"pagination": {"total": len(found)}}}
        match = re.fullmatch(r"/posts/([0-9a-f]{24})/", path)
        if match:
            post_id = match.group(1)
            if post_id not in self.posts:
                return _error(404, "NotFoundError", "Post not found.")
            if method == "GET":
                return 200, {"posts": [dict(self.posts[post_id])]}
            if method == "PUT":
                return self._update(post_id, query, body)
        return _error(404, "NotFoundError", "Resource not found")

    def _check_post(self, query, post) -> tuple[int, dict] | None:
        if "html" in post and query.get("source") != "html":
            return _error(400, "BadRequestError", "html is ignored without ?source=html")
        for author in post.get("authors") or []:
            if author.get("email") not in AUTHORS and author.get("slug") not in \
                    AUTHORS.values():
                return _error(422, "ValidationError", f"Author not found: {author}")
        if post.get("status", "draft") not in {"draft", "published", "scheduled"}:
            return _error(422, "ValidationError", "Validation error, cannot save post.")
        return None

    def _create(self, query, body):
        posts = body.get("posts") if isinstance(body, dict) else None
        if not posts or not isinstance(posts[0], dict) or not posts[0].get("title"):
            return _error(422, "ValidationError", "Validation (isEmpty) failed for title")
        post = posts[0]
        problem = self._check_post(query, post)
        if problem:
            return problem
        if post.get("status", "draft") != "draft":
            return _error(422, "ValidationError", "this server only takes drafts on create")
        post_id = secrets.token_hex(12)
        stamp = _stamp()
        stored = {"id": post_id, "uuid": secrets.token_hex(16), "title": post["title"],
                  "html": post.get("html") or "", "custom_excerpt": post.get("custom_excerpt"),
                  "status": "draft", "tags": post.get("tags") or [],
                  "authors": post.get("authors") or [{"slug": "editor"}],
                  "created_at": stamp, "updated_at": stamp, "published_at": None,
                  "newsletter": None, "email": None, "email_segment": "all",
                  "url": f"{self.url}/p/{post_id}/"}
        with self.lock:
            self.posts[post_id] = stored
        return 201, {"posts": [dict(stored)]}

    def _update(self, post_id, query, body):
        posts = body.get("posts") if isinstance(body, dict) else None
        if not posts or not isinstance(posts[0], dict):
            return _error(400, "BadRequestError", "No root key ('posts') provided.")
        post = posts[0]
        problem = self._check_post(query, post)
        if problem:
            return problem
        with self.lock:
            stored = self.posts[post_id]
            if self.edit_before_next_put == post_id:
                self.edit_before_next_put = None
                stored["title"] += " (edited in Ghost)"
                stored["updated_at"] = _stamp()
            if post.get("updated_at") != stored["updated_at"]:
                return _error(409, "UpdateCollisionError",
                              "Saving failed! Someone else is editing this post.")
            status = post.get("status", stored["status"])
            if status in {"published", "scheduled"} and "newsletter" in query:
                problem = self._email_target(stored, status, query)
                if problem:
                    return problem
            if status == "scheduled":
                when = post.get("published_at")
                try:
                    parsed = dt.datetime.fromisoformat(str(when).replace("Z", "+00:00"))
                except ValueError:
                    return _error(422, "ValidationError", "published_at is invalid")
                if parsed <= dt.datetime.now(dt.UTC):
                    return _error(422, "ValidationError",
                                  "Date must be at least 2 minutes in the future.")
                stored["published_at"] = when
            if status == "published" and stored["status"] != "published":
                stored["published_at"] = _stamp()
            for key in ("title", "html", "custom_excerpt", "tags", "authors"):
                if key in post:
                    stored[key] = post[key]
            stored["status"] = status
            stored["updated_at"] = _stamp()
            return 200, {"posts": [dict(stored)]}

    def _email_target(self, stored, status, query):
        slug = query["newsletter"]
        newsletter = next((n for n in NEWSLETTERS if n["slug"] == slug
                           and n["status"] == "active"), None)
        if newsletter is None:
            return _error(404, "NotFoundError", "The newsletter was not found.")
        segment = query.get("email_segment", "all")
        if not SEGMENTS.match(segment):
            return _error(400, "BadRequestError", "Invalid email_segment")
        if stored["email"] is not None:
            return _error(400, "BadRequestError", "This post has already been emailed.")
        stored["newsletter"] = dict(newsletter)
        stored["email_segment"] = segment
        if status == "published":
            stored["email"] = {"id": secrets.token_hex(12), "status": "pending",
                               "recipient_filter": segment}
        return None

    def upload(self, content_type: str, raw: bytes):
        if not content_type.startswith("multipart/form-data"):
            return _error(400, "BadRequestError", "Please select an image.")
        message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
            f"Content-Type: {content_type}\r\n\r\n".encode() + raw)
        fields = {part.get_param("name", header="content-disposition"): part
                  for part in message.iter_parts()}
        part = fields.get("file")
        data = part.get_payload(decode=True) if part is not None else b""
        if not data or not data.startswith(IMAGE_MAGIC):
            return _error(415, "UnsupportedMediaTypeError", "Please select a valid image.")
        digest = hashlib.sha256(data).hexdigest()[:16]
        with self.lock:
            self.images[digest] = data
        ref = fields["ref"].get_content().strip() if "ref" in fields else None
        return 201, {"images": [{"url": f"{self.url}/content/images/{digest}.png",
                                 "ref": ref}]}
