"""The `buttondown` service: drafts and sends through Buttondown's API v1.

An email created on Buttondown without `status` is sent to every subscriber at once, so
every create and every update here says `status: "draft"` (the only requests that do not
are the send and the schedule). The body is the email-safe HTML fragment, marked for
Buttondown's rich-text editor; images keep their public URLs. Edits made on Buttondown
are recognised by the email's `modification_date`, which is remembered after each push.
Auth: `Authorization: Token <BUTTONDOWN_API_KEY>`.
"""

from __future__ import annotations

import re
import sqlite3

from ..errors import InputError, PublishError
from ..http import AmbiguousRequest, Client, HttpError
from ..redact import read_secret
from ..settings import Settings
from . import DraftContent, DraftRecord, PushResult

KEY_FORMAT = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", re.I)
EDITOR_MODE = "<!-- buttondown-editor-mode: fancy -->\n"
SENT = {"about_to_send", "in_flight", "sent", "imported", "transactional"}


class ButtondownService:
    name = "buttondown"
    draft_store = "buttondown"
    per_recipient = False  # Buttondown sends to its own subscribers
    reaches_readers = True
    can_schedule = True

    def __init__(self, settings: Settings, db: sqlite3.Connection):
        self.settings = settings
        self.db = db
        key = read_secret("BUTTONDOWN_API_KEY", strip=True, ascii_only=True)
        if not key:
            raise InputError("BUTTONDOWN_API_KEY is not set: copy the API key from "
                             "Buttondown's settings (Programming → API) into it")
        if not KEY_FORMAT.match(key):
            raise InputError("BUTTONDOWN_API_KEY is not a Buttondown API key (36 characters, "
                             "like 1f0c…-…-…); copy it again from Buttondown's settings")
        base = settings.buttondown_api_url.strip().rstrip("/")
        if not base.startswith(("https://", "http://")):
            raise InputError(f"buttondown_api_url must be an https URL, not {base!r}")
        self.api = Client(f"{base}/v1", headers={"Authorization": f"Token {key}"},
                          timeout=settings.http_timeout_seconds,
                          auth_message="Buttondown refused BUTTONDOWN_API_KEY; check it")

    # drafts --------------------------------------------------------------------------
    @staticmethod
    def payload(content: DraftContent) -> dict:
        return {"subject": content.title, "body": EDITOR_MODE + content.fragment,
                "description": content.subtitle, "status": "draft"}

    @staticmethod
    def _url(email: dict) -> str:
        return str(email.get("absolute_url") or
                   f"https://buttondown.com/emails/{email.get('id')}")

    def push_draft(self, content: DraftContent, previous: DraftRecord | None, *,
                   force: bool) -> PushResult:
        payload = self.payload(content)
        if previous is not None and previous.remote_id:
            remote = self._fetch(previous.remote_id, force=force)
            if remote is not None:
                status = remote.get("status")
                if status != "draft":
                    raise PublishError(f"Buttondown email {previous.remote_id} is {status}, "
                                       "not a draft; it cannot be updated")
                if remote.get("modification_date") != previous.pushed_body and not force:
                    raise PublishError(
                        f"Buttondown email {previous.remote_id} was edited on Buttondown since "
                        "the last push; run again with --force to overwrite those edits")
                reply = self._email(self.api.request(
                    "PATCH", f"/emails/{previous.remote_id}", json=payload).body)
                return PushResult(previous.remote_id, self._url(reply), created=False,
                                  pushed_body=str(reply.get("modification_date") or ""))
        found = self._find(payload) if previous is not None else None
        reply = found or self._create(payload)
        return PushResult(str(reply["id"]), self._url(reply), created=True,
                          pushed_body=str(reply.get("modification_date") or ""))

    @staticmethod
    def _email(body) -> dict:
        if not isinstance(body, dict) or "id" not in body:
            raise PublishError("Buttondown's answer is not an email")
        return body

    def _fetch(self, remote_id: str, *, force: bool) -> dict | None:
        try:
            return self._email(self.api.request("GET", f"/emails/{remote_id}").body)
        except HttpError as exc:
            if exc.status != 404:
                raise
            if not force:
                raise PublishError(f"Buttondown email {remote_id} no longer exists (deleted "
                                   "on Buttondown?); run again with --force to create a new "
                                   "one") from None
            return None

    def _create(self, payload: dict) -> dict:
        assert payload["status"] == "draft"  # without it Buttondown sends at once
        try:
            return self._email(self.api.request("POST", "/emails", json=payload).body)
        except AmbiguousRequest as exc:
            found = self._find(payload)
            if found is not None:
                return found
            raise PublishError(f"{exc}; the draft may exist on Buttondown — run again and "
                               "publish will look for it before creating") from None

    def _find(self, payload: dict) -> dict | None:
        """A draft with our subject and body, if a create we lost the answer to landed."""
        listing = self.api.request("GET", "/emails", params={"status": "draft"}).body
        results = listing.get("results", []) if isinstance(listing, dict) else []
        for email in results:
            if isinstance(email, dict) and email.get("subject") == payload["subject"] \
                    and email.get("body") == payload["body"]:
                return email
        return None

    # sending -------------------------------------------------------------------------
    def publish(self, remote_id: str) -> tuple[str, bool]:
        """Send the draft to Buttondown's subscribers, exactly once."""
        remote = self._email(self.api.request("GET", f"/emails/{remote_id}").body)
        if remote.get("status") in SENT:
            return f"already {remote['status']} on Buttondown; nothing sent now", False
        if remote.get("status") == "scheduled":
            raise PublishError(f"Buttondown email {remote_id} is scheduled for "
                               f"{remote.get('publish_date')}; unschedule it first")
        try:
            reply = self._email(self.api.request(
                "PATCH", f"/emails/{remote_id}", json={"status": "about_to_send"}).body)
        except AmbiguousRequest:
            reply = self._email(self.api.request("GET", f"/emails/{remote_id}").body)
            if reply.get("status") not in SENT:
                raise
        if reply.get("status") not in SENT:
            raise PublishError(f"Buttondown did not accept the send (status "
                               f"{reply.get('status')!r})")
        return f"sent through Buttondown ({reply['status']}): {self._url(reply)}", True

    def schedule(self, remote_id: str, when: str) -> str:
        self._saw(remote_id, self.api.request("PATCH", f"/emails/{remote_id}", json={
            "status": "scheduled", "publish_date": when}).body)
        return f"scheduled on Buttondown for {when}"

    def unschedule(self, remote_id: str) -> str:
        self._saw(remote_id, self.api.request("PATCH", f"/emails/{remote_id}", json={
            "status": "draft", "publish_date": None}).body)
        return "Buttondown will not send it at the scheduled time; it is a draft again"

    def _saw(self, remote_id: str, body) -> None:
        """Our own change moved `modification_date`: remember it, not taken for an edit."""
        self.db.execute("UPDATE drafts SET pushed_body = ? WHERE service = ? AND remote_id = ?",
                        (str(self._email(body).get("modification_date") or ""), self.name,
                         remote_id))
