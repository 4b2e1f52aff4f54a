"""The `ghost` service: posts through Ghost's Admin API, emailed by Ghost on publish.

Drafts are created from HTML (`?source=html`) with Ghost cards for embeds (`ghost_html`)
and images uploaded once per content hash. An update carries the `updated_at` last seen:
Ghost answers 409 when the post changed since, and a changed `updated_at` before the
update means it was edited in Ghost — refused without --force. `publish send` publishes
and emails it to one newsletter (`ghost_newsletter`, checked to exist before any write)
and a segment (`ghost_email_segment`); `--at` schedules it.

Auth: GHOST_ADMIN_API_KEY (`id:secret`, from Ghost's custom integration) signs a JWT
valid five minutes for each request (HS256, `kid` = id, `aud` = /admin/); neither the key
nor a token is ever printed.
"""

from __future__ import annotations

import hashlib
import re
import sqlite3
import time

from ..errors import InputError, PublishError
from ..http import AmbiguousRequest, Client, HttpError, Response
from ..redact import read_secret
from ..settings import Settings
from . import DraftContent, DraftRecord, EmailNotConfirmed, PushResult
from .ghost_html import to_ghost_html
from .media import image_bytes, image_type

KEY_FORMAT = re.compile(r"^([0-9a-f]{24}):([0-9a-f]{64})$")
SEGMENT = re.compile(r"^(all|(status|label|tier):-?[\w-]+(,(status|label|tier):-?[\w-]+)*)$")
AUTHOR = re.compile(r"^([^@\s]+@[^@\s]+\.[^@\s]+|[a-z0-9][a-z0-9-]*)$")
TOKEN_SECONDS = 300  # Ghost accepts tokens valid five minutes at most


class GhostService:
    name = "ghost"
    draft_store = "ghost"
    per_recipient = False  # Ghost emails its own members
    reaches_readers = True
    can_schedule = True

    def __init__(self, settings: Settings, db: sqlite3.Connection):
        self.settings = settings
        self.db = db
        key = read_secret("GHOST_ADMIN_API_KEY", strip=True, ascii_only=True)
        if not key:
            raise InputError("GHOST_ADMIN_API_KEY is not set: add a custom integration in "
                             "Ghost (Settings → Integrations) and copy its Admin API key")
        match = KEY_FORMAT.match(key)
        if not match:
            raise InputError("GHOST_ADMIN_API_KEY is not an Admin API key (24 hex digits, a "
                             "colon, 64 hex digits); the Content API key will not do")
        self.key_id, self.secret = match.group(1), bytes.fromhex(match.group(2))
        site = settings.ghost_url.strip().rstrip("/")
        if not site:
            raise InputError("no Ghost site: set ghost_url in publish.toml or GHOST_URL")
        if not site.startswith(("https://", "http://")):
            raise InputError(f"ghost_url must be an https URL, not {site!r}")
        self.site = site
        segment = settings.ghost_email_segment.strip()
        if not SEGMENT.match(segment):
            raise InputError(f"setting 'ghost_email_segment' must be all or a member filter "
                             f"such as status:free or status:-free, not {segment!r}")
        self.segment = segment
        self.authors = [a.strip() for a in settings.ghost_authors.split(",") if a.strip()]
        for author in self.authors:
            if not AUTHOR.match(author):
                raise InputError(f"setting 'ghost_authors': {author!r} is neither an email "
                                 "nor a staff user's slug")
        self.api = Client(f"{site}/ghost/api/admin", headers={"Accept-Version": "v5.0"},
                          timeout=settings.http_timeout_seconds,
                          auth_message="Ghost refused GHOST_ADMIN_API_KEY; check the key and "
                          "that the integration still exists")

    # requests ------------------------------------------------------------------------
    def _token(self) -> str:
        import jwt

        now = int(time.time())
        return jwt.encode({"iat": now, "exp": now + TOKEN_SECONDS, "aud": "/admin/"},
                          self.secret, algorithm="HS256",
                          headers={"kid": self.key_id, "typ": "JWT"})

    def _call(self, method: str, path: str, **kwargs) -> Response:
        return self.api.request(method, path,
                                headers={"Authorization": f"Ghost {self._token()}"}, **kwargs)

    @staticmethod
    def _post(body) -> dict:
        posts = body.get("posts") if isinstance(body, dict) else None
        if not posts or not isinstance(posts[0], dict) or "id" not in posts[0]:
            raise PublishError("Ghost's answer holds no post")
        return posts[0]

    # drafts --------------------------------------------------------------------------
    def _tags(self, content: DraftContent) -> list[dict]:
        value, line = content.front_matter.get("tags", (None, 0))
        if value is None:
            return []
        value = [value] if isinstance(value, str) else value
        if not isinstance(value, list) or not all(isinstance(t, str) and t.strip()
                                                  for t in value):
            raise InputError("front matter 'tags': must be a list of tag names",
                             content.issue, line)
        return [{"name": tag.strip()} for tag in value]

    def payload(self, content: DraftContent) -> dict:
        tags = self._tags(content)  # refused before any upload
        post = {"title": content.title, "custom_excerpt": content.subtitle or None,
                "html": to_ghost_html(content.fragment, self.upload_image),
                "status": "draft", "tags": tags}
        if self.authors:
            post["authors"] = [{"email": a} if "@" in a else {"slug": a}
                               for a in self.authors]
        return post

    def editor_url(self, remote_id: str) -> str:
        return f"{self.site}/ghost/#/editor/post/{remote_id}"

    def push_draft(self, content: DraftContent, previous: DraftRecord | None, *,
                   force: bool) -> PushResult:
        post = self.payload(content)
        if previous is not None and previous.remote_id:
            remote = self._fetch(previous.remote_id, force=force)
            if remote is not None:
                return self._update(previous, remote, post, force=force)
        found = self._find(post) if previous is not None else None
        created = found or self._create(post)
        return PushResult(created["id"], self.editor_url(created["id"]), created=True,
                          pushed_body=str(created.get("updated_at") or ""))

    def _update(self, previous: DraftRecord, remote: dict, post: dict, *,
                force: bool) -> PushResult:
        remote_id = previous.remote_id or ""
        if remote.get("status") != "draft":
            raise PublishError(f"Ghost post {remote_id} is {remote.get('status')}, not a "
                               "draft; it cannot be updated as a draft")
        if remote.get("updated_at") != previous.pushed_body and not force:
            raise PublishError(f"Ghost post {remote_id} was edited in Ghost since the last "
                               "push; run again with --force to overwrite those edits")
        try:
            reply = self._call("PUT", f"/posts/{remote_id}/", params={"source": "html"},
                               json={"posts": [{**post, "updated_at": remote["updated_at"]}]})
        except HttpError as exc:
            if exc.status != 409:
                raise
            raise PublishError(f"Ghost post {remote_id} was edited in Ghost while publish "
                               "updated it; run again (add --force to overwrite)") from None
        updated = self._post(reply.body)
        return PushResult(remote_id, self.editor_url(remote_id), created=False,
                          pushed_body=str(updated.get("updated_at") or ""))

    def _fetch(self, remote_id: str, *, force: bool) -> dict | None:
        try:
            return self._post(self._call("GET", f"/posts/{remote_id}/").body)
        except HttpError as exc:
            if exc.status != 404:
                raise
            if not force:
                raise PublishError(f"Ghost post {remote_id} no longer exists (deleted in "
                                   "Ghost?); run again with --force to create a new one"
                                   ) from None
            return None

    def _create(self, post: dict) -> dict:
        try:
            return self._post(self._call("POST", "/posts/", params={"source": "html"},
                                         json={"posts": [post]}).body)
        except AmbiguousRequest as exc:
            found = self._find(post)
            if found is not None:
                return found
            raise PublishError(f"{exc}; the draft may exist in Ghost — run again and "
                               "publish will look for it before creating") from None

    def _find(self, post: dict) -> dict | None:
        """A draft with our title made in the last day, if a create we lost landed."""
        listing = self._call("GET", "/posts/", params={
            "filter": "status:draft", "limit": 50, "order": "created_at desc"}).body
        for candidate in (listing or {}).get("posts", []) if isinstance(listing, dict) else []:
            if isinstance(candidate, dict) and candidate.get("title") == post["title"]:
                return candidate
        return None

    # images --------------------------------------------------------------------------
    def upload_image(self, src: str) -> str:
        data = image_bytes(self.settings, src)
        kind = image_type(data)
        if kind is None:
            raise PublishError(f"{src} is not a PNG, JPEG, GIF or WebP image")
        digest = hashlib.sha256(data).hexdigest()
        row = self.db.execute("SELECT url FROM uploads WHERE service = ? AND target = ? AND "
                              "sha256 = ?", (self.name, self.site, digest)).fetchone()
        if row is not None:
            return row["url"]
        name = f"{digest[:16]}.{kind.split('/')[1]}"
        reply = self._call("POST", "/images/upload/",
                           files={"file": (name, data, kind), "purpose": (None, "image"),
                                  "ref": (None, digest[:16])}).body
        images = reply.get("images") if isinstance(reply, dict) else None
        if not images or not isinstance(images[0], dict) or not images[0].get("url"):
            raise PublishError(f"Ghost did not accept image {src}")
        url = str(images[0]["url"])
        self.db.execute("INSERT OR REPLACE INTO uploads VALUES (?, ?, ?, ?, ?, ?, ?)",
                        (self.name, self.site, digest, url, None, None, len(data)))
        return url

    # sending -------------------------------------------------------------------------
    def newsletter(self) -> str:
        """The newsletter's slug: the setting, checked to exist, or the site's first."""
        body = self._call("GET", "/newsletters/", params={"filter": "status:active",
                                                          "limit": "all"}).body
        active = [n for n in (body or {}).get("newsletters", []) if isinstance(n, dict)]
        wanted = self.settings.ghost_newsletter.strip()
        slugs = [str(n.get("slug")) for n in active]
        if wanted:
            if wanted not in slugs:
                raise InputError(f"setting 'ghost_newsletter': no active newsletter {wanted!r} "
                                 f"on {self.site} (newsletters: {', '.join(slugs) or 'none'})")
            return wanted
        if not slugs:
            raise PublishError(f"{self.site} has no active newsletter to email the post to")
        return sorted(active, key=lambda n: n.get("sort_order", 0))[0]["slug"]

    def _draft_for_sending(self, remote_id: str) -> dict:
        return self._post(self._call("GET", f"/posts/{remote_id}/").body)

    def publish(self, remote_id: str) -> tuple[str, bool]:
        """Publish the post and have Ghost email it to the newsletter, exactly once."""
        post = self._draft_for_sending(remote_id)
        if post.get("status") in {"published", "sent"}:
            return f"already {post['status']} on Ghost; nothing sent now", False
        newsletter = self.newsletter()  # an unknown slug is refused before any write
        params = {"newsletter": newsletter, "email_segment": self.segment}
        try:
            reply = self._post(self._call("PUT", f"/posts/{remote_id}/", params=params, json={
                "posts": [{"status": "published", "updated_at": post["updated_at"]}]}).body)
        except AmbiguousRequest:
            reply = self._draft_for_sending(remote_id)
            if reply.get("status") not in {"published", "sent"}:
                raise
        url = reply.get("url") or ""
        note = f"published on Ghost{': ' + url if url else ''}"
        if not reply.get("newsletter") and not reply.get("email"):
            raise EmailNotConfirmed(f"{note}, but Ghost's reply names no newsletter or email: "
                                    "the email may not have gone out; check the post in Ghost")
        return f"{note}; emailed to {newsletter} ({self.segment})", True

    def schedule(self, remote_id: str, when: str) -> str:
        post = self._draft_for_sending(remote_id)
        if post.get("status") != "draft":
            raise PublishError(f"Ghost post {remote_id} is {post.get('status')}; only a "
                               "draft can be scheduled")
        newsletter = self.newsletter()
        reply = self._call("PUT", f"/posts/{remote_id}/", params={
            "newsletter": newsletter, "email_segment": self.segment}, json={"posts": [{
                "status": "scheduled", "published_at": when,
                "updated_at": post["updated_at"]}]})
        self._saw(remote_id, reply.body)
        return f"scheduled on Ghost for {when}, to be emailed to {newsletter}"

    def unschedule(self, remote_id: str) -> str:
        post = self._draft_for_sending(remote_id)
        reply = self._call("PUT", f"/posts/{remote_id}/", json={"posts": [{
            "status": "draft", "updated_at": post["updated_at"]}]})
        self._saw(remote_id, reply.body)
        return "Ghost will not publish it at the scheduled time; it is a draft again"

    def _saw(self, remote_id: str, body) -> None:
        """Our own change moved `updated_at`: remember it, so it is not taken for an edit."""
        self.db.execute("UPDATE drafts SET pushed_body = ? WHERE service = ? AND remote_id = ?",
                        (str(self._post(body).get("updated_at") or ""), self.name, remote_id))
