"""Substack's private API as it behaves in the wild: two routes, two cookie names.

- Drafts live at `{publication}/api/v1/drafts`, but a publication on a custom domain is
  answered 403 there (or a Cloudflare challenge page); the same session works on
  `https://substack.com/api/v1/drafts?publication_id=N`. The first refusal switches to
  that route, and the state database remembers per publication which route worked.
- The session cookie has been called `substack.sid` and `connect.sid`: the value of
  SUBSTACK_SID is offered under both names, then under each alone if a host refuses the
  pair; the form that worked is remembered per host and named under --debug.

The cookie value is never logged, printed or put in an error.
"""

from __future__ import annotations

import logging
import sqlite3
from typing import Any
from urllib.parse import urlsplit

from .. import state
from ..errors import PublishError
from ..http import AuthError, Client, HttpError, NotJson, Response

log = logging.getLogger("pipeline.services.substack")

AUTH_HINT = ("session expired or not authorised — set SUBSTACK_SID to a fresh substack.sid "
             "(or connect.sid) cookie")
COOKIE_FORMS = ("both", "substack.sid", "connect.sid")
# Paths the publication host serves that the global host also serves for a publication.
MOVABLE = ("/drafts", "/image", "/subscriptions")


def _cookie(form: str, value: str) -> str:
    if form == "both":
        return f"substack.sid={value}; connect.sid={value}"
    return f"{form}={value}"


class Refused(PublishError):
    """The publication host refused a request the global route may carry (403, challenge)."""


class SubstackApi:
    """Requests to one publication, on whichever route and cookie name work for it."""

    def __init__(self, publication: str, account: str, cookie: str, *, timeout: float,
                 db: sqlite3.Connection, publication_id: str = ""):
        self.publication = publication
        self.db = db
        self.cookie = cookie
        self.pub = Client(f"{publication}/api/v1", timeout=timeout, auth_message=AUTH_HINT)
        self.glob = Client(f"{account}/api/v1", timeout=timeout, auth_message=AUTH_HINT)
        self.route = state.recall(db, "substack", publication, "route") or "publication"
        self.publication_id = publication_id or state.recall(
            db, "substack", publication, "publication_id") or ""
        self.notes: list[str] = []
        self._confirmed: dict[str, str] = {}  # host -> cookie form that worked this run
        self._profile: dict | None = None

    # cookies ------------------------------------------------------------------------
    def _send(self, client: Client, method: str, path: str, **kwargs) -> Response:
        """One request with the session cookie, trying its names until one is accepted."""
        host = client.host
        if host in self._confirmed:
            forms: tuple[str, ...] = (self._confirmed[host],)
        else:
            known = state.recall(self.db, "substack", host, "cookie")
            forms = ((known,) if known in COOKIE_FORMS else ()) + tuple(
                f for f in COOKIE_FORMS if f != known)
        for i, form in enumerate(forms):
            headers = {"Cookie": _cookie(form, self.cookie)}
            try:
                reply = client.request(method, path, headers=headers, **kwargs)
            except AuthError as exc:
                if exc.status == 401 and i + 1 < len(forms):
                    log.debug("%s refused the session cookie sent as %s; trying %s", host,
                              "substack.sid and connect.sid" if form == "both" else form,
                              forms[i + 1])
                    continue
                raise
            if host not in self._confirmed:
                self._confirmed[host] = form
                state.remember(self.db, "substack", host, "cookie", form)
                log.debug("%s accepted the session cookie as %s", host,
                          "substack.sid and connect.sid (both names)" if form == "both"
                          else form)
            return reply
        raise AssertionError("unreachable")  # pragma: no cover

    # identity -----------------------------------------------------------------------
    def profile(self) -> dict:
        if self._profile is None:
            body = self._send(self.glob, "GET", "/user/profile/self").body
            if not isinstance(body, dict):
                raise PublishError("Substack's profile answer is not what it should be; set "
                                   "substack_user_id and substack_publication_id")
            self._profile = body
        return self._profile

    def find_publication_id(self) -> str:
        """The publication's number, from the account's publications (custom domain or
        subdomain matching the publication URL)."""
        if self.publication_id:
            return self.publication_id
        host = urlsplit(self.publication).netloc.lower()
        for entry in self.profile().get("publicationUsers") or []:
            publication = entry.get("publication") if isinstance(entry, dict) else None
            if not isinstance(publication, dict) or "id" not in publication:
                continue
            names = {str(publication.get("custom_domain") or "").lower(),
                     f"{publication.get('subdomain')}.substack.com".lower()}
            if host in names:
                self.publication_id = str(publication["id"])
                state.remember(self.db, "substack", self.publication, "publication_id",
                               self.publication_id)
                return self.publication_id
        raise PublishError(f"cannot find the publication {host} among your Substack account's "
                           "publications; set substack_publication_id")

    # routes -------------------------------------------------------------------------
    def call(self, method: str, path: str, *, json: Any = None,
             params: dict | None = None) -> Response:
        """A request for the publication, on the route that works for it."""
        movable = path.startswith(MOVABLE)
        if movable and self.route == "global":
            return self._global(method, path, json=json, params=params)
        try:
            return self._send(self.pub, method, path, json=json, params=params)
        except (AuthError, NotJson) as exc:
            if not movable or not (isinstance(exc, NotJson) or exc.status == 403):
                raise
            why = ("a Cloudflare challenge page" if "Cloudflare" in str(exc)
                   else "an HTML page" if isinstance(exc, NotJson) else "403")
        log.debug("%s answered %s on %s; trying substack.com's route", self.pub.host, why, path)
        reply = self._global(method, path, json=json, params=params)
        self.route = "global"
        state.remember(self.db, "substack", self.publication, "route", "global")
        self.notes.append(f"{self.pub.host} refused drafts ({why}), as Substack does for "
                          "custom domains; using substack.com/api/v1/drafts?publication_id="
                          f"{self.find_publication_id()} (remembered)")
        return reply

    def _global(self, method: str, path: str, *, json: Any, params: dict | None) -> Response:
        query = dict(params or {})
        if not path.startswith("/image"):
            query["publication_id"] = self.find_publication_id()
        try:
            return self._send(self.glob, method, path, json=json, params=query)
        except NotJson as exc:
            raise HttpError(f"{exc}; Substack blocks this machine (both routes); try again "
                            "later or from another network", exc.status) from None
