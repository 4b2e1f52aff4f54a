"""HTTP with the care a publication's session deserves: timeouts, bounded retries, no leaks.

- 429 is retried for any method after `Retry-After` (the server did not act on it).
- 5xx and dropped connections are retried with backoff only for idempotent methods; for a
  POST they raise AmbiguousRequest, so the caller can look before it tries again.
- Redirects are not followed, so the session cookie never travels to another host.
- Error messages name the method and path, never headers or cookies; a header value with
  a control character is refused before any request, naming the header only.
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from .errors import PublishError

IDEMPOTENT = {"GET", "HEAD", "PUT", "DELETE", "OPTIONS"}
MAX_RETRY_AFTER = 120.0


class HttpError(PublishError):
    def __init__(self, message: str, status: int | None = None, body: Any = None):
        super().__init__(message)
        self.status = status
        self.body = body


class AuthError(HttpError):
    pass


class AmbiguousRequest(HttpError):
    """The request may or may not have been carried out (a POST that timed out, say)."""


class NotJson(HttpError):
    """An HTML page came back where the API answers JSON: a Cloudflare challenge or block
    page, a login page, a proxy's error page. Never retried blindly, never shown."""


def looks_like_html(body: Any) -> bool:
    if not isinstance(body, str):
        return False
    head = body.lstrip()[:1000].lower()
    return head.startswith(("<!doctype html", "<html", "<head", "<body")) or (
        "<html" in head and "</" in body.lower())


def cloudflare_block(body: Any) -> bool:
    """Cloudflare's short text answers ("error code: 1010") and its challenge pages."""
    text = str(body or "")[:5000].lower()
    return "error code: 10" in text or "cf-chl" in text or "just a moment" in text \
        or "attention required" in text


@dataclass
class Response:
    status: int
    body: Any  # parsed JSON, or text


def _retry_after(value: str | None, default: float) -> float:
    if not value:
        return default
    try:
        return min(float(value), MAX_RETRY_AFTER)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value).timestamp()
        return max(0.0, min(when - time.time(), MAX_RETRY_AFTER))
    except (TypeError, ValueError):
        return default


def error_text(body: Any) -> str:
    """One readable line from a service's error body (`{"errors":[{"msg":…}]}` and friends)."""
    if isinstance(body, dict):
        if isinstance(body.get("errors"), list):
            parts = []
            for item in body["errors"]:
                if isinstance(item, dict):
                    msg = str(item.get("msg") or item.get("message") or item)
                    param = item.get("param")
                    parts.append(f"{msg} ({param})" if param else msg)
                else:
                    parts.append(str(item))
            return "; ".join(parts)
        for key in ("error", "message", "msg"):
            if body.get(key):
                return str(body[key])
    if looks_like_html(body):
        return "an HTML page"  # never dumped into a one-line error
    text = " ".join(str(body or "").split())
    return text[:200]


def _header_safe(value: str) -> bool:
    """A header value HTTP can carry as is: printable ASCII (and spaces) only."""
    return all(" " <= char <= "~" or char == "\t" for char in value)


class Client:
    """A JSON client for one service host; `auth_header` is sent only to that host."""

    def __init__(self, base_url: str, *, headers: dict[str, str] | None = None,
                 timeout: float = 30.0, tries: int = 4, backoff: float = 0.5,
                 sleep: Callable[[float], None] = time.sleep,
                 auth_message: str = "not authorised"):
        import requests

        self.base_url = base_url.rstrip("/")
        self.host = urlsplit(self.base_url).netloc
        self.session = requests.Session()
        self.session.trust_env = False  # no proxies or .netrc credentials picked up silently
        self.headers = {"Accept": "application/json", "User-Agent": "publish-newsletter/0.1",
                        **(headers or {})}
        for name, value in self.headers.items():
            if not _header_safe(value):
                # Named, never quoted: the value may be a credential.
                raise HttpError(f"the {name} header for {self.host} holds a control "
                                "character or a character outside ASCII; refused")
        self.timeout = timeout
        self.tries = tries
        self.backoff = backoff
        self.sleep = sleep
        self.auth_message = auth_message

    def request(self, method: str, path: str, *, json: Any = None,
                params: dict | None = None, files: dict | None = None,
                headers: dict[str, str] | None = None) -> Response:
        import requests

        url = path if path.startswith("http") else f"{self.base_url}{path}"
        if urlsplit(url).netloc != self.host:
            raise HttpError(f"refusing to send credentials to another host: {urlsplit(url).netloc}")
        label = f"{method} {urlsplit(url).path}"
        attempt = 0
        while True:
            attempt += 1
            try:
                reply = self.session.request(
                    method, url, json=json, params=params, files=files,
                    headers={**self.headers, **(headers or {})},
                    timeout=(min(self.timeout, 10.0), self.timeout), allow_redirects=False,
                )
            except requests.exceptions.ConnectTimeout:
                failure = f"{label}: could not connect to {self.host} (timed out)"
                safe_to_retry = True  # nothing reached the server
            except requests.exceptions.ConnectionError as exc:
                never_sent = "NewConnectionError" in repr(exc) or "refused" in str(exc).lower()
                failure = f"{label}: connection to {self.host} failed"
                safe_to_retry = never_sent or method in IDEMPOTENT
                if not safe_to_retry:
                    raise AmbiguousRequest(failure) from None
            except requests.exceptions.Timeout:
                failure = f"{label}: no answer from {self.host} within {self.timeout:g} s"
                if method not in IDEMPOTENT:
                    raise AmbiguousRequest(failure) from None
                safe_to_retry = True
            except (requests.exceptions.RequestException, ValueError, UnicodeError) as exc:
                # Before anything was sent (a header or URL the library refuses); its
                # message may quote the request's headers, so only its kind is shown.
                raise HttpError(f"{label}: request refused by the HTTP library "
                                f"({type(exc).__name__})") from None
            else:
                response = self._handle(reply, label, method, attempt)
                if response is not None:
                    return response
                continue
            if not safe_to_retry or attempt >= self.tries:
                raise HttpError(failure)
            self.sleep(self.backoff * 2 ** (attempt - 1))

    def _handle(self, reply, label: str, method: str, attempt: int) -> Response | None:
        """The parsed response, or None after sleeping when the request should be retried."""
        try:
            body: Any = reply.json()
        except ValueError:
            body = reply.text
        status = reply.status_code
        # A proxy's HTML 502 may hide a request the origin carried out: that stays a 5xx
        # (retried, or ambiguous for a POST); a challenge or block page never reached it.
        if looks_like_html(body) and (status < 500 or cloudflare_block(body)):
            kind = "a Cloudflare challenge page" if cloudflare_block(body) else "an HTML page"
            raise NotJson(f"{label}: {status}: {self.host} answered with {kind} where JSON "
                          "was expected", status, None)
        if status < 300:
            return Response(status, body)
        if status in (401, 403):
            raise AuthError(f"{label}: {status}: {self.auth_message}", status, body)
        if 300 <= status < 400:
            where = urlsplit(reply.headers.get("Location", "")).netloc or "elsewhere"
            raise HttpError(f"{label}: redirected to {where}; check the service URL", status)
        if status == 429 and attempt < self.tries + 2:
            self.sleep(_retry_after(reply.headers.get("Retry-After"),
                                    self.backoff * 2 ** (attempt - 1)))
            return None
        if status >= 500:
            if method not in IDEMPOTENT:
                raise AmbiguousRequest(f"{label}: {status} from {self.host}", status, body)
            if attempt < self.tries:
                self.sleep(self.backoff * 2 ** (attempt - 1))
                return None
        detail = error_text(body)
        raise HttpError(f"{label}: {status}" + (f": {detail}" if detail else ""), status, body)
