"""The `substack` service: drafts through the API that Substack's own editor uses.

The session cookie comes from SUBSTACK_SID only and is sent only to Substack's hosts
(routes and cookie names: `substack_api`).
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
from ..http import AmbiguousRequest, HttpError, error_text
from ..redact import check_secret, read_secret
from ..settings import Settings
from ..templates import strings as template_strings
from ..templates import templates_dir
from . import DraftContent, DraftRecord, EmailNotConfirmed, PushResult
from .media import image_bytes, image_type
from .prosemirror import Image, to_document
from .substack_api import SubstackApi

AUDIENCES = ("everyone", "only_paid", "founding", "only_free")



def fingerprint(title: str, subtitle: str, body) -> str:
    """A stable hash of a draft's visible content, however the server formats its JSON."""
    if isinstance(body, str):
        with contextlib.suppress(ValueError):
            body = json.loads(body)
    canonical = json.dumps([title or "", subtitle or "", body], sort_keys=True,
                           ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


class SubstackService:
    name = "substack"
    draft_store = "substack"
    per_recipient = False  # Substack sends to its own subscribers
    can_send_test = False  # no API for test emails: its editor previews the draft
    can_schedule = True  # Substack publishes it at the time itself (scheduled_release)
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
        if any(char in cookie for char in ";, =\t") or cookie.lower().startswith(
                ("substack.sid", "connect.sid")):
            raise InputError("SUBSTACK_SID must hold the cookie's value only (it starts "
                             "with s%3A or s:), not a name=value pair or several cookies")
        publication_id = settings.substack_publication_id.strip()
        if publication_id and not publication_id.isdigit():
            raise InputError(f"substack_publication_id must be a number, not "
                             f"{publication_id!r}")
        self.user_id = settings.substack_user_id.strip()
        if self.user_id and not self.user_id.isdigit():
            raise InputError(f"substack_user_id must be a number, not {self.user_id!r}")
        if settings.substack_audience not in AUDIENCES:
            raise InputError(f"setting 'substack_audience' must be one of "
                             f"{', '.join(AUDIENCES)}, not {settings.substack_audience!r}")
        self.api = SubstackApi(publication, settings.substack_api_url.rstrip("/"), cookie,
                               timeout=settings.http_timeout_seconds, db=db,
                               publication_id=publication_id)

    # the draft -----------------------------------------------------------------
    def _author_id(self) -> int:
        if not self.user_id:
            profile = self.api.profile()
            if "id" not in profile:
                raise PublishError("could not find your Substack user id; set substack_user_id")
            self.user_id = str(profile["id"])
        return int(self.user_id)

    def _section_id(self, content: DraftContent) -> int | None:
        """The section named in the front matter or the settings, checked to exist."""
        value, line = content.front_matter.get("section", (None, 0))
        where = (content.issue, line) if value is not None else (None, None)
        wanted = str(value if value is not None else self.settings.substack_section).strip()
        if not wanted:
            return None
        listing = self.api.call("GET", "/subscriptions").body
        publications = listing.get("publications", []) if isinstance(listing, dict) else []
        ours = self.api.publication_id
        host = urlsplit(self.publication).netloc
        sections: list[dict] = []
        for publication in publications:
            if isinstance(publication, dict) and (
                    str(publication.get("id")) == ours or host in {
                        publication.get("hostname"), publication.get("custom_domain")}):
                sections = [x for x in publication.get("sections") or [] if isinstance(x, dict)]
        for section in sections:
            if wanted in {str(section.get("id")), str(section.get("name", "")).strip()}:
                return int(section["id"])
        known = ", ".join(str(x.get("name")) for x in sections) or "none"
        label = "front matter 'section'" if where[0] else "setting 'substack_section'"
        raise InputError(f"{label}: no section {wanted!r} on this publication (sections: "
                         f"{known})", *where)

    def payload(self, content: DraftContent) -> tuple[dict, list[str]]:
        # Everything that can be refused is checked before the first upload or write.
        audience = content.choice("audience", self.settings.substack_audience, AUDIENCES,
                                  setting_name="substack_audience")
        section_id = self._section_id(content)
        bylines = [{"id": self._author_id(), "is_guest": False}]
        strings = template_strings(templates_dir(self.settings.root), content.lang)
        converted = to_document(content.fragment, self.upload_image,
                                subscribe_text=strings["subscribe_button"],
                                lang=content.lang.split("-")[0], where=content.issue)
        return {
            "draft_title": content.title,
            "draft_subtitle": content.subtitle,
            "draft_body": json.dumps(converted.doc, ensure_ascii=False),
            "draft_bylines": bylines,
            "audience": audience,
            "draft_section_id": section_id,
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
                reply = self.api.call("PUT", f"/drafts/{previous.remote_id}", json=payload)
                return PushResult(previous.remote_id, self.editor_url(previous.remote_id),
                                  created=False, pushed_body=self._pushed(reply.body, ours),
                                  warnings=warnings + self.api.notes)
        remote_id = None
        if previous is not None and previous.remote_id is None:
            # An earlier run began creating this draft and stopped: did the create land?
            remote_id = self._find(payload, ours)
        if remote_id is None:
            remote_id, reply_body = self._create(payload, ours)
        else:
            reply_body = None
        return PushResult(remote_id, self.editor_url(remote_id), created=True,
                          pushed_body=self._pushed(reply_body, ours),
                          warnings=warnings + self.api.notes)

    @staticmethod
    def _pushed(reply_body, ours: str) -> str:
        if isinstance(reply_body, dict) and "draft_body" in reply_body:
            return fingerprint(reply_body.get("draft_title"), reply_body.get("draft_subtitle"),
                               reply_body.get("draft_body"))
        return ours

    def _fetch(self, remote_id: str, *, force: bool) -> dict | None:
        try:
            return self.api.call("GET", f"/drafts/{remote_id}").body
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
            reply = self.api.call("POST", "/drafts", json=payload)
        except AmbiguousRequest as exc:
            found = self._find(payload, ours)
            if found is not None:
                return found, None
            try:
                reply = self.api.call("POST", "/drafts", json=payload)
            except AmbiguousRequest:
                raise PublishError(f"{exc}; the draft may exist on Substack — run again and "
                                   "publish will look for it before creating") from None
        if not isinstance(reply.body, dict) or "id" not in reply.body:
            raise PublishError("Substack did not return the new draft's id")
        return str(reply.body["id"]), reply.body

    def _find(self, payload: dict, ours: str) -> str | None:
        """The id of a draft with our title and body, if one exists on Substack."""
        for offset in range(0, 500, 50):
            listing = self.api.call(
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
        return image_bytes(self.settings, src)

    def upload_image(self, src: str) -> Image:
        data = self._image_bytes(src)
        kind = image_type(data)
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
        reply = self.api.call("POST", "/image", json={"image": data_uri}).body
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
    def _ready(self, remote_id: str) -> tuple[dict, str]:
        """The draft, checked publishable, with the email decision and the audience (the
        one pushed from the front matter or settings) written into it explicitly: the
        dashboard's `should_send_email` may decide over the publish request's `send`."""
        draft = self.api.call("GET", f"/drafts/{remote_id}").body
        if not isinstance(draft, dict):
            raise PublishError(f"Substack did not return draft {remote_id}")
        audience = draft.get("audience") or self.settings.substack_audience
        if audience not in AUDIENCES:
            raise PublishError(f"Substack draft {remote_id} has audience {audience!r}, which "
                               f"publish does not know ({', '.join(AUDIENCES)})")
        if draft.get("is_published"):
            return draft, audience
        bylines = draft.get("draft_bylines") or [{"id": self._author_id(), "is_guest": False}]
        self.api.call("PUT", f"/drafts/{remote_id}", json={
            "should_send_email": True, "audience": audience, "draft_bylines": bylines})
        check = self.api.call("GET", f"/drafts/{remote_id}/prepublish").body
        problems = check.get("errors") if isinstance(check, dict) else None
        if problems:
            raise PublishError(f"Substack will not publish draft {remote_id}: "
                               f"{error_text({'errors': problems})}")
        return draft, audience

    def publish(self, remote_id: str) -> tuple[str, bool]:
        """Publish the draft and email it to the publication's subscribers, exactly once.

        Returns a note and whether this call published it (False: it already was). A reply
        without `email_sent_at` raises after the fact: the post is public, the email is not
        confirmed, and the editor must hear it.
        """
        draft, audience = self._ready(remote_id)
        if draft.get("is_published"):
            when = draft.get("post_date") or "date unknown"
            return f"already published on Substack ({when}); nothing sent now", False
        try:
            reply = self.api.call("POST", f"/drafts/{remote_id}/publish",
                                  json={"send": True, "share_automatically": False}).body
        except AmbiguousRequest:
            reply = self.api.call("GET", f"/drafts/{remote_id}").body
            if not (isinstance(reply, dict) and reply.get("is_published")):
                raise
        reply = reply if isinstance(reply, dict) else {}
        url = reply.get("canonical_url")
        note = f"published on Substack to {audience}{': ' + url if url else ''}"
        if not reply.get("email_sent_at"):
            raise EmailNotConfirmed(f"{note}, but Substack's reply has no email_sent_at: the "
                                    "email may not have gone out; check the post's stats on "
                                    "Substack before sending anything again")
        return f"{note}; emailed at {reply['email_sent_at']}", True

    def schedule(self, remote_id: str, when: str) -> str:
        """Have Substack publish and email the draft at `when` (ISO time with zone)."""
        draft, audience = self._ready(remote_id)
        if draft.get("is_published"):
            raise PublishError(f"Substack draft {remote_id} is already published; it cannot "
                               "be scheduled")
        self.api.call("POST", f"/drafts/{remote_id}/scheduled_release", json={
            "trigger_at": when, "post_audience": "only_paid" if audience == "only_paid"
            else "only_founding" if audience == "founding" else "everyone",
            "email_audience": "only_free" if audience == "only_free" else "everyone"})
        return f"scheduled on Substack for {when}"

    def unschedule(self, remote_id: str) -> str:
        self.api.call("DELETE", f"/drafts/{remote_id}/scheduled_release")
        return "Substack will not publish it at the scheduled time; it is a draft again"
