"""Double opt-in: signed, expiring confirmation links, and the email that carries one.

A confirmation token is `c1.base64url(json).signature`, the signature an HMAC-SHA256 of the
payload with the newsletter's unsubscribe key, under its own label so that it can never
pass for an unsubscribe token (nor the other way round). It names the address, the name
given, the language, an expiry time and a random nonce; the nonce is recorded when the link
is used, so a link works once.

Key rotation: links are signed with the current key (`PUBLISH_UNSUBSCRIBE_SECRET`, else
`.publish/unsubscribe.key`) and verified with it or with any key listed, whitespace- or
comma-separated, in `PUBLISH_UNSUBSCRIBE_OLD_SECRETS`.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
import os
import re
import secrets
import time
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import format_datetime, formataddr, make_msgid, parseaddr

from . import redact, unsubscribe
from .settings import Settings

OLD_KEYS_VARIABLE = "PUBLISH_UNSUBSCRIBE_OLD_SECRETS"
CONFIRM_SECONDS = 48 * 3600
_LABEL = b"publish-confirm\0"
MAX_TOKEN = 2048  # characters; anything longer was not made here


def signing_key(settings: Settings) -> bytes:
    return unsubscribe.signing_key(settings.state_path)


def verification_keys(settings: Settings, env: dict[str, str] | None = None) -> list[bytes]:
    """The current key first, then the retired ones still accepted."""
    env = os.environ if env is None else env
    keys = [signing_key(settings)]
    if env.get(OLD_KEYS_VARIABLE):
        value = redact.read_secret(OLD_KEYS_VARIABLE, env)
        keys += [k.encode("utf-8") for k in re.split(r"[\s,]+", value)
                 if len(k) >= unsubscribe.MIN_KEY]
    return keys


def unsubscribe_address(keys: list[bytes], token: str) -> str | None:
    """The address an unsubscribe token was made for, under any accepted key, or None."""
    if not token or len(token) > MAX_TOKEN or not token.isascii():
        return None
    for key in keys:
        address = unsubscribe.verify_token(key, token)
        if address is not None:
            return address
    return None


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _sign(key: bytes, payload: str) -> str:
    return _b64(hmac.new(key, _LABEL + payload.encode("ascii"), hashlib.sha256).digest())[:32]


@dataclass(frozen=True)
class Confirmation:
    email: str
    name: str
    lang: str
    expires: float
    nonce: str


def make_confirm_token(key: bytes, email: str, name: str, lang: str,
                       now: float | None = None) -> str:
    now = time.time() if now is None else now
    payload = _b64(json.dumps({"e": email, "n": name, "l": lang,
                               "x": int(now + CONFIRM_SECONDS),
                               "k": secrets.token_urlsafe(12)},
                              ensure_ascii=False, separators=(",", ":")).encode("utf-8"))
    return f"c1.{payload}.{_sign(key, payload)}"


def read_confirm_token(keys: list[bytes], token: str,
                       now: float | None = None) -> Confirmation | str:
    """The confirmation a token carries, or why it is refused ('invalid' or 'expired')."""
    now = time.time() if now is None else now
    if not token or len(token) > MAX_TOKEN or not token.isascii():
        return "invalid"
    version, _, rest = token.partition(".")
    payload, _, signature = rest.partition(".")
    if version != "c1" or not payload or not signature:
        return "invalid"
    if not any(hmac.compare_digest(_sign(key, payload).encode(), signature.encode())
               for key in keys):
        return "invalid"
    try:
        data = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        found = Confirmation(str(data["e"]), str(data["n"]), str(data["l"]),
                             float(data["x"]), str(data["k"]))
    except (ValueError, KeyError, TypeError):
        return "invalid"
    if found.expires < now:
        return "expired"
    return found


def confirmation_email(settings: Settings, strings: dict[str, str], address: str,
                       link: str) -> bytes:
    """The message asking `address` to confirm: plain text and a small HTML part."""
    from html import escape

    from . import message, transports

    name, sender = parseaddr(message.safe_header(settings.sender, "sender"))
    mail = EmailMessage()
    mail["From"] = formataddr((name, sender))
    mail["To"] = transports.envelope_address(address) if address.isascii() else address
    mail["Subject"] = strings["confirm_subject"].format(name=settings.name)
    mail["Date"] = format_datetime(dt.datetime.now(dt.UTC))
    mail["Message-ID"] = make_msgid(domain=sender.rpartition("@")[2] or None)
    mail["Auto-Submitted"] = "auto-generated"
    body = strings["confirm_body"].format(name=settings.name)
    ignore = strings["confirm_ignore"]
    mail.set_content(f"{body}\n\n{link}\n\n{ignore}\n", charset="utf-8")
    mail.add_alternative(
        f'<!doctype html><html lang="{escape(strings["lang"])}"><body style="font-family:'
        f'sans-serif;line-height:1.5"><p>{escape(body)}</p><p><a href="{escape(link)}">'
        f'{escape(strings["confirm_button"])}</a></p><p style="color:#57606a">'
        f"{escape(ignore)}</p></body></html>", subtype="html", charset="utf-8")
    policy = mail.policy.clone(linesep="\r\n", utf8=not address.isascii())
    return mail.as_bytes(policy=policy)
