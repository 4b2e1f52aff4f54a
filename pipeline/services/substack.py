"""The `substack` service: drafts through the API that Substack's own editor uses.

The session cookie comes from SUBSTACK_SID only and is sent only to the publication host.
Creating is never blindly repeated: when a create may have gone through (a timeout, a
5xx), the drafts are listed and ours is recognised by title and body before trying again.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import sqlite3
from urllib.parse import unquote, urlsplit

from ..errors import InputError, PublishError
from ..http import AmbiguousRequest, Client, HttpError, error_text
from ..redact import check_secret, read_secret
from ..settings import Settings
from ..templates import strings as template_strings
from ..templates import templates_dir
from . import DraftContent, DraftRecord, PushResult
from .prosemirror import Image, to_document

AUTH_HINT = "session expired or not authorised — set SUBSTACK_SID to a fresh substack.sid cookie"
MAX_IMAGE_BYTES = 10 * 1024 * 1024
IMAGE_TYPES = {b"\x89PNG": "image/png", b"\xff\xd8\xff": "image/jpeg", b"GIF8": "image/gif",
               b"RIFF": "image/webp"}


def fingerprint(title: str, subtitle: str, body) -> str:
    """A stable hash of a draft's visible content, however the server formats its JSON."""
    if isinstance(body, str):
        with contextlib.suppress(ValueError):
            body = json.loads(body)
    canonical = json.dumps([title or "", subtitle or "", body], sort_keys=True,
                           ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _image_type(data: bytes) -> str | None:
    for magic, kind in IMAGE_TYPES.items():
        if data.startswith(magic):
            return kind
    return None


class SubstackService:
    name = "substack"
    draft_store = "substack"
    per_recipient = False  # Substack sends to its own subscribers
    can_send_test = False  # no API for test emails: its editor previews the draft
    can_schedule = False
    reaches_readers = True

    def __init__(self, settings: Settings, db: sqlite3.Connection,
                 env: dict[str, str] | None = None):
        env = os.environ if env is None else env
        self.settings = settings
        self.db = db
        sid = read_secret("SUBSTACK_SID", env, strip=True)
        if not sid:
            raise InputError("SUBSTACK_SID is not set: copy the substack.sid cookie of a "
                             "logged-in browser session into that environment variable")
        publication = settings.substack_publication_url.strip().rstrip("/")
        if not publication:
            raise InputError("no Substack publication: set substack_publication_url in "
                             "publish.toml or SUBSTACK_PUBLICATION_URL")
        if urlsplit(publication).scheme not in {"https", "http"}:
            raise InputError(f"substack_publication_url must be an https URL, not {publication!r}")
        self.publication = publication
        # The cookie as the browser holds it, URL-decoded: it must make one clean header.
        cookie = check_secret("SUBSTACK_SID", unquote(sid), ascii_only=True)
        timeout = settings.http_timeout_seconds
        self.api = Client(f"{publication}/api/v1", headers={"Cookie": f"substack.sid={cookie}"},
                          timeout=timeout, auth_message=AUTH_HINT)
        account = settings.substack_api_url.rstrip("/")
        self.account_api = Client(f"{account}/api/v1",
                                  headers={"Cookie": f"substack.sid={cookie}"},
                                  timeout=timeout, auth_message=AUTH_HINT)
        self.user_id = settings.substack_user_id.strip()

    # the draft -----------------------------------------------------------------
    def _author_id(self) -> int:
        if not self.user_id:
            profile = self.account_api.request("GET", "/user/profile/self").body
            if not isinstance(profile, dict) or "id" not in profile:
                raise PublishError("could not find your Substack user id; set substack_user_id")
            self.user_id = str(profile["id"])
        if not self.user_id.isdigit():
            raise InputError(f"substack_user_id must be a number, not {self.user_id!r}")
        return int(self.user_id)

    def payload(self, content: DraftContent) -> tuple[dict, list[str]]:
        strings = template_strings(templates_dir(self.settings.root), content.lang)
        converted = to_document(content.fragment, self.upload_image,
                                subscribe_text=strings["subscribe_button"],
                                lang=content.lang.split("-")[0], where=content.issue)
        return {
            "draft_title": content.title,
            "draft_subtitle": content.subtitle,
            "draft_body": json.dumps(converted.doc, ensure_ascii=False),
            "draft_bylines": [{"id": self._author_id(), "is_guest": False}],
            "audience": self.settings.substack_audience,
            "draft_section_id": None,
            "section_chosen": True,
            "write_comment_permissions": "everyone",
        }, converted.warnings

    def editor_url(self, remote_id: str) -> str:
        return f"{self.publication}/publish/post/{remote_id}"

    def push_draft(self, content: DraftContent, previous: DraftRecord | None, *,
                   force: bool) -> PushResult:
        payload, warnings = self.payload(content)
        ours = fingerprint(payload["draft_title"], payload["draft_subtitle"],
                           payload["draft_body"])
        if previous is not None and previous.remote_id:
            remote = self._fetch(previous.remote_id, force=force)
            if remote is not None:
                if remote.get("is_published") or remote.get("post_date"):
                    raise PublishError(f"Substack draft {previous.remote_id} is already "
                                       "published; it cannot be updated as a draft")
                theirs = fingerprint(remote.get("draft_title"), remote.get("draft_subtitle"),
                                     remote.get("draft_body"))
                if theirs != previous.pushed_body and not force:
                    raise PublishError(
                        f"Substack draft {previous.remote_id} was edited on Substack since the "
                        "last push; run again with --force to overwrite those edits")
                reply = self.api.request("PUT", f"/drafts/{previous.remote_id}", json=payload)
                return PushResult(previous.remote_id, self.editor_url(previous.remote_id),
                                  created=False, pushed_body=self._pushed(reply.body, ours),
                                  warnings=warnings)
        remote_id = None
        if previous is not None and previous.remote_id is None:
            # An earlier run began creating this draft and stopped: did the create land?
            remote_id = self._find(payload, ours)
        if remote_id is None:
            remote_id, reply_body = self._create(payload, ours)
        else:
            reply_body = None
        return PushResult(remote_id, self.editor_url(remote_id), created=True,
                          pushed_body=self._pushed(reply_body, ours), warnings=warnings)

    @staticmethod
    def _pushed(reply_body, ours: str) -> str:
        if isinstance(reply_body, dict) and "draft_body" in reply_body:
            return fingerprint(reply_body.get("draft_title"), reply_body.get("draft_subtitle"),
                               reply_body.get("draft_body"))
        return ours

    def _fetch(self, remote_id: str, *, force: bool) -> dict | None:
        try:
            return self.api.request("GET", f"/drafts/{remote_id}").body
        except HttpError as exc:
            if exc.status != 404:
                raise
            if not force:
                raise PublishError(f"Substack draft {remote_id} no longer exists (deleted on "
                                   "Substack?); run again with --force to create a new one"
                                   ) from None
            return None

    def _create(self, payload: dict, ours: str) -> tuple[str, dict | None]:
        try:
            reply = self.api.request("POST", "/drafts", json=payload)
        except AmbiguousRequest as exc:
            found = self._find(payload, ours)
            if found is not None:
                return found, None
            try:
                reply = self.api.request("POST", "/drafts", json=payload)
            except AmbiguousRequest:
                raise PublishError(f"{exc}; the draft may exist on Substack — run again and "
                                   "publish will look for it before creating") from None
        if not isinstance(reply.body, dict) or "id" not in reply.body:
            raise PublishError("Substack did not return the new draft's id")
        return str(reply.body["id"]), reply.body

    def _find(self, payload: dict, ours: str) -> str | None:
        """The id of a draft with our title and body, if one exists on Substack."""
        for offset in range(0, 500, 50):
            listing = self.api.request(
                "GET", "/drafts", params={"filter": "draft", "offset": offset, "limit": 50}
            ).body
            posts = listing.get("posts", []) if isinstance(listing, dict) else listing
            if not isinstance(posts, list):
                return None
            for post in posts:
                if post.get("draft_title") == payload["draft_title"] and fingerprint(
                        post.get("draft_title"), post.get("draft_subtitle"),
                        post.get("draft_body")) == ours:
                    return str(post["id"])
            if len(posts) < 50:
                return None
        return None

    # images --------------------------------------------------------------------
    def _image_bytes(self, src: str) -> bytes:
        """The image's bytes: from the newsletter folder when it lives there, else over HTTP."""
        base = self.settings.base_url
        if src.startswith(base):
            relative = unquote(urlsplit(src).path[len(urlsplit(base).path):])
            root = self.settings.root.resolve()
            candidate = root / relative
            if candidate.is_file() or candidate.is_symlink():
                local = candidate.resolve()
                if not local.is_relative_to(root):
                    raise PublishError(f"image {relative} leads outside the newsletter folder "
                                       f"({root}); refused")
                return local.read_bytes()
        scheme = urlsplit(src).scheme
        if scheme not in {"http", "https"}:
            raise PublishError(f"cannot upload image {src[:60]}: not an http(s) URL")
        import requests

        try:
            with requests.Session() as session:  # no cookie: images are public
                session.max_redirects = 5
                reply = session.get(src, timeout=self.settings.http_timeout_seconds,
                                    stream=True)
                reply.raise_for_status()
                data = reply.raw.read(MAX_IMAGE_BYTES + 1, decode_content=True)
        except requests.RequestException as exc:
            raise PublishError(f"cannot fetch image {src}: {type(exc).__name__}") from None
        if len(data) > MAX_IMAGE_BYTES:
            raise PublishError(f"image {src} is over 10 MB")
        return data

    def upload_image(self, src: str) -> Image:
        data = self._image_bytes(src)
        kind = _image_type(data)
        if kind is None:
            raise PublishError(f"{src} is not a PNG, JPEG, GIF or WebP image")
        digest = hashlib.sha256(data).hexdigest()
        row = self.db.execute(
            "SELECT url, width, height, bytes FROM uploads "
            "WHERE service = ? AND target = ? AND sha256 = ?",
            (self.name, self.publication, digest),
        ).fetchone()
        if row is not None:
            return Image(row["url"], row["width"], row["height"], row["bytes"], kind)
        data_uri = f"data:{kind};base64,{base64.b64encode(data).decode('ascii')}"
        reply = self.api.request("POST", "/image", json={"image": data_uri}).body
        if not isinstance(reply, dict) or not reply.get("url"):
            raise PublishError(f"Substack did not accept image {src}")
        image = Image(str(reply["url"]), reply.get("imageWidth"), reply.get("imageHeight"),
                      reply.get("bytes") or len(data), reply.get("contentType") or kind)
        self.db.execute(
            "INSERT OR REPLACE INTO uploads VALUES (?, ?, ?, ?, ?, ?, ?)",
            (self.name, self.publication, digest, image.url, image.width, image.height,
             image.bytes),
        )
        return image

    # sending -------------------------------------------------------------------------
    def publish(self, remote_id: str) -> tuple[str, bool]:
        """Publish the draft and email it to the publication's subscribers, exactly once.

        Returns a note and whether this call published it (False: it already was).
        """
        draft = self.api.request("GET", f"/drafts/{remote_id}").body
        if isinstance(draft, dict) and draft.get("is_published"):
            when = draft.get("post_date") or "date unknown"
            return f"already published on Substack ({when}); nothing sent now", False
        check = self.api.request("GET", f"/drafts/{remote_id}/prepublish").body
        problems = check.get("errors") if isinstance(check, dict) else None
        if problems:
            raise PublishError(f"Substack will not publish draft {remote_id}: "
                               f"{error_text({'errors': problems})}")
        try:
            reply = self.api.request("POST", f"/drafts/{remote_id}/publish",
                                     json={"send": True, "share_automatically": False}).body
        except AmbiguousRequest:
            draft = self.api.request("GET", f"/drafts/{remote_id}").body
            if not (isinstance(draft, dict) and draft.get("is_published")):
                raise
            reply = draft
        url = reply.get("canonical_url") if isinstance(reply, dict) else None
        return f"published on Substack{': ' + url if url else ''}", True
