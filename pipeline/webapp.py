"""`publish serve`: the part of the newsletter's web that must run (a Starlette ASGI app).

- `POST /unsubscribe?token=…` with the form field `List-Unsubscribe=One-Click` (RFC 8058, as
  Gmail and Yahoo send it): the reader is unsubscribed, durably, before the 200. No cookie,
  no login; a bad token is a 400 and changes nothing.
- `GET /unsubscribe?token=…`: a page with one button that makes that POST. A GET never
  unsubscribes: mail scanners and link previews fetch every link.
- `POST /subscribe` → a confirmation email with a signed link that expires → `GET /confirm`
  shows one button → `POST /confirm` makes the reader active. Rate-limited per address and
  per client, with a honeypot field; forms from another site are refused (Origin and
  Sec-Fetch-Site), and every change needs a token only the newsletter can sign.
- Everything else: the static site `publish site` built (`site_dir`).

Run it under a production ASGI server: `uvicorn --factory pipeline.webapp:create_app`.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from pathlib import Path
from urllib.parse import parse_qsl, quote, urlsplit

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from . import readers, signup, state, subscribers, webpages
from . import settings as settings_mod
from .errors import InputError
from .settings import Settings

MAX_BODY = 64 * 1024  # bytes: a form of ours is a few hundred
MAX_FIELDS = 20
HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
                               "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",  # the token in the address never leaves for another site
}


class Refused(Exception):
    """A request answered with a short page: the status and the key of its message."""

    def __init__(self, status: int, message: str, lang: str = ""):
        self.status, self.message, self.lang = status, message, lang


class SiteFiles(StaticFiles):
    """The built site; nothing hidden (dot files) and no error while it is not built yet."""

    async def check_config(self) -> None:
        return None

    async def get_response(self, path: str, scope) -> Response:
        if any(part.startswith(".") for part in Path(path).parts):
            raise HTTPException(404)
        if not os.path.isdir(self.directory or ""):
            raise HTTPException(404)
        return await super().get_response(path, scope)


class Web:
    """The app's state: settings, keys and one state-database connection per thread."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.keys = signup.verification_keys(settings)
        self.local = threading.local()
        self.mail_lock = threading.Lock()
        readers.ensure(self.db())
        name = settings.subscribe_list
        if not name or "/" in name or "\\" in name or name.startswith("."):
            raise InputError(f"setting 'subscribe_list' must be a list name, not {name!r}")
        from . import draft as draft_mod

        self.list_key = draft_mod.issue_key(subscribers.list_path(settings.root, name), settings)
        from . import services

        self.can_mail = services.service_class(settings.service).per_recipient
        self.per_address = int(settings.number("subscribe_per_address", 0, 1e6))
        self.per_client = int(settings.number("subscribe_per_client", 0, 1e6))

    def db(self) -> sqlite3.Connection:
        db = getattr(self.local, "db", None)
        if db is None:
            db = self.local.db = state.connect(self.settings.state_path)
        return db

    # pages -------------------------------------------------------------------------
    def page(self, request: Request, template: str, lang: str, *, status: int = 200,
             title: str, **context) -> HTMLResponse:
        s = webpages.strings(self.settings, lang)
        home = request.scope.get("root_path", "") + "/"
        html = webpages.render(self.settings, template, s["lang"], s, title=title, home=home,
                               subscribe_page=home + "subscribe/", feed=home + "feed.xml",
                               noindex=True, **context)
        return HTMLResponse(html, status_code=status, headers=HEADERS)

    def refused(self, request: Request, exc: Refused) -> HTMLResponse:
        lang = exc.lang or webpages.negotiate(self.settings,
                                              request.headers.get("accept-language", ""))
        s = webpages.strings(self.settings, lang)
        return self.page(request, "action.html.j2", lang, status=exc.status,
                         title=s["error_title"], paragraphs=[s[exc.message]], form=None)

    def lang_of(self, request: Request, given: str | None) -> str:
        if given is not None:
            try:
                webpages.language_name(self.settings, given)
            except InputError:
                raise Refused(400, "bad_language") from None
            return given
        return webpages.negotiate(self.settings, request.headers.get("accept-language", ""))

    # the unsubscribe ----------------------------------------------------------------
    async def unsubscribe_page(self, request: Request) -> Response:
        lang = self.lang_of(request, request.query_params.get("lang"))
        email = signup.unsubscribe_address(self.keys, request.query_params.get("token", ""))
        if email is None:
            raise Refused(400, "bad_token", lang)
        s = webpages.strings(self.settings, lang)
        action = "unsubscribe?" + str(request.url.query)
        return self.page(request, "action.html.j2", lang, title=s["unsubscribe_title"],
                         paragraphs=[s["unsubscribe_question"].format(
                             name=self.settings.name, email=email)],
                         form={"action": action, "button": s["unsubscribe_button"],
                               "fields": [("List-Unsubscribe", "One-Click"),
                                          ("from", "page")]})

    async def unsubscribe(self, request: Request) -> Response:
        query_lang = request.query_params.get("lang")
        lang = self.lang_of(request, query_lang)
        form = await read_form(request)
        token = request.query_params.get("token") or form.get("token", "")
        if form.get("List-Unsubscribe") != "One-Click":
            raise Refused(400, "no_one_click", lang)
        email = signup.unsubscribe_address(self.keys, token)
        if email is None:
            raise Refused(400, "bad_token", lang)
        source = "unsubscribe-page" if form.get("from") == "page" else "one-click"
        await run_in_threadpool(lambda: readers.unsubscribe(self.db(), email, source))
        s = webpages.strings(self.settings, lang)
        return self.page(request, "action.html.j2", lang, title=s["unsubscribed_title"],
                         paragraphs=[s["unsubscribed_text"].format(name=self.settings.name,
                                                                   email=email)], form=None)

    # double opt-in ------------------------------------------------------------------
    def same_origin(self, request: Request) -> None:
        """Forms that change something come from our own pages only (no CSRF)."""
        if request.headers.get("sec-fetch-site", "") == "cross-site":
            raise Refused(403, "forbidden")
        origin = request.headers.get("origin")
        if origin is None:
            return
        ours = {f"{request.url.scheme}://{request.headers.get('host', '')}".lower()}
        base = urlsplit(self.settings.base_url)
        ours.add(f"{base.scheme}://{base.netloc}".lower())
        if origin.lower().rstrip("/") not in ours:
            raise Refused(403, "forbidden")

    async def subscribe(self, request: Request) -> Response:
        self.same_origin(request)
        form = await read_form(request)
        lang = self.lang_of(request, form.get("lang") or None)
        s = webpages.strings(self.settings, lang)
        raw, name = form.get("email", ""), form.get("name", "").strip()
        if len(raw) > 320 or any(c in raw for c in "\r\n\0"):
            raise Refused(400, "bad_address", lang)
        if len(name) > 200 or any(ord(c) < 32 or 0x7F <= ord(c) < 0xA0 for c in name):
            raise Refused(400, "bad_request", lang)
        try:
            email = subscribers.normalize_email(raw)
        except ValueError:
            raise Refused(400, "bad_address", lang) from None
        if not self.can_mail:
            raise Refused(404, "not_found", lang)
        done = self.page(request, "action.html.j2", lang, title=s["check_inbox_title"],
                         paragraphs=[s["check_inbox_text"].format(email=email)], form=None)
        if form.get("website"):  # the honeypot: a person never sees it, a bot fills it
            return done
        client = request.client.host if request.client else "unknown"
        sent = await run_in_threadpool(self._send_confirmation, email, name, lang, s, client)
        if sent == "limited":
            raise Refused(429, "too_many", lang)
        if sent == "failed":
            raise Refused(503, "unavailable", lang)
        return done

    def _send_confirmation(self, email: str, name: str, lang: str, s: dict[str, str],
                           client: str) -> str:
        from . import services, transports

        db = self.db()
        if not readers.allow_signup(db, email, client, per_address=self.per_address,
                                    per_client=self.per_client):
            return "limited"
        if email.lower() in subscribers.suppressed(self.settings.root):
            return "sent"  # never mailed again; the page does not say so
        token = signup.make_confirm_token(signup.signing_key(self.settings), email, name, lang)
        link = f"{self.settings.base_url}confirm?token={quote(token)}"
        data = signup.confirmation_email(self.settings, s, email, link)
        try:
            transport = services.get(self.settings.service, self.settings, db).transport()
            if not hasattr(transport, "deliver"):  # a bulk API (SES) sends templates only
                transport.close()
                raise InputError(f"the {self.settings.service} service cannot send one "
                                 "message; confirmation emails need local or smtp")
            # One writer at a time: Maildir names made in the same microsecond by two
            # threads of one process would clash.
            with self.mail_lock:
                try:
                    transport.deliver(transports.envelope_address(self.settings.sender_address),
                                      transports.envelope_address(email), data)
                finally:
                    transport.close()
        except Exception as exc:  # the reader gets a 503 page; the operator the reason
            import logging

            from .redact import redact

            logging.getLogger("publish.web").error(redact(
                f"cannot send a confirmation email: {transports.describe(exc)}"))
            return "failed"
        return "sent"

    def _confirmation(self, request: Request, token: str) -> signup.Confirmation:
        found = signup.read_confirm_token(self.keys, token)
        if isinstance(found, str):
            raise Refused(400, "expired_token" if found == "expired" else "bad_token")
        try:
            webpages.language_name(self.settings, found.lang)
        except InputError:
            raise Refused(400, "bad_language") from None
        return found

    async def confirm_page(self, request: Request) -> Response:
        found = self._confirmation(request, request.query_params.get("token", ""))
        used = await run_in_threadpool(lambda: self.db().execute(
            "SELECT 1 FROM used_tokens WHERE nonce = ?", (found.nonce,)).fetchone())
        if used:
            raise Refused(400, "used_token", found.lang)
        s = webpages.strings(self.settings, found.lang)
        return self.page(request, "action.html.j2", found.lang, title=s["confirm_title"],
                         paragraphs=[s["confirm_question"].format(
                             email=found.email, name=self.settings.name)],
                         form={"action": "confirm", "button": s["confirm_button"],
                               "fields": [("token", request.query_params["token"])]})

    async def confirm(self, request: Request) -> Response:
        self.same_origin(request)
        form = await read_form(request)
        found = self._confirmation(request, form.get("token", ""))
        done = await run_in_threadpool(lambda: readers.confirm(
            self.db(), found.email, found.name, self.list_key, found.lang, found.nonce))
        if not done:
            raise Refused(400, "used_token", found.lang)
        s = webpages.strings(self.settings, found.lang)
        return self.page(request, "action.html.j2", found.lang, title=s["confirmed_title"],
                         paragraphs=[s["confirmed_text"].format(email=found.email,
                                                                name=self.settings.name)],
                         form=None)


async def read_form(request: Request) -> dict[str, str]:
    """The form fields of a small body (urlencoded or multipart); 413 past MAX_BODY."""
    length = request.headers.get("content-length")
    if length is not None:
        if not length.isdigit():
            raise Refused(400, "bad_request")
        if int(length) > MAX_BODY:
            raise Refused(413, "too_large")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY:
            raise Refused(413, "too_large")
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    try:
        if kind == "multipart/form-data":
            request._body = bytes(body)
            form = await request.form(max_files=0, max_fields=MAX_FIELDS)
            return {k: v for k, v in form.items() if isinstance(v, str)}
        pairs = parse_qsl(bytes(body).decode("utf-8"), keep_blank_values=True,
                          max_num_fields=MAX_FIELDS, strict_parsing=False)
    except Exception:  # any malformed body is the client's fault
        raise Refused(400, "bad_request") from None
    return dict(pairs)


def create_app(root: str | Path | None = None) -> Starlette:
    """The app for the newsletter at `root` (default: found from the current folder)."""
    settings = settings_mod.load(Path(root) if root else None)
    web = Web(settings)

    def guarded(handler):
        async def endpoint(request: Request) -> Response:
            try:
                return await handler(request)
            except Refused as exc:
                return web.refused(request, exc)
        return endpoint

    async def on_http_error(request: Request, exc: HTTPException) -> Response:
        key = {404: "not_found", 405: "bad_request", 413: "too_large"}.get(exc.status_code,
                                                                           "bad_request")
        return web.refused(request, Refused(exc.status_code, key))

    async def on_error(request: Request, exc: Exception) -> Response:
        import logging
        import traceback

        from .redact import redact

        logging.getLogger("publish.web").error(redact("".join(traceback.format_exception(exc))))
        return HTMLResponse("<!doctype html><title>Error</title><p>Something went wrong; "
                            "the change was not made. Please try again later.</p>",
                            status_code=500, headers=HEADERS)

    routes = [
        Route("/unsubscribe", guarded(web.unsubscribe_page), methods=["GET"]),
        Route("/unsubscribe", guarded(web.unsubscribe), methods=["POST"]),
        Route("/subscribe", guarded(web.subscribe), methods=["POST"]),
        Route("/confirm", guarded(web.confirm_page), methods=["GET"]),
        Route("/confirm", guarded(web.confirm), methods=["POST"]),
        Mount("/", SiteFiles(directory=settings.root / settings.site_dir, html=True,
                             check_dir=False)),
    ]
    app = Starlette(routes=routes, exception_handlers={HTTPException: on_http_error,
                                                      Exception: on_error})
    app.state.web = web
    return app
