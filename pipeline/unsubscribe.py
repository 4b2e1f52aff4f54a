"""Unsubscribe links that cannot be forged: the address signed with a key from the environment.

A token is `base64url(email).base64url(hmac-sha256(key, email))[:22]`; the unsubscribe
page (or `publish subscribers unsubscribe --token TOKEN`) verifies it in constant time.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

from .errors import InputError
from .redact import read_secret

KEY_VARIABLE = "PUBLISH_UNSUBSCRIBE_SECRET"


def key_from_env(env: dict[str, str] | None = None) -> bytes:
    value = read_secret(KEY_VARIABLE, env)
    if len(value) < 16:
        raise InputError(f"{KEY_VARIABLE} must hold a secret of at least 16 characters to sign "
                         "unsubscribe links (generate one with: openssl rand -hex 32)")
    return value.encode("utf-8")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _signature(key: bytes, email: str) -> str:
    return _b64(hmac.new(key, email.lower().encode("utf-8"), hashlib.sha256).digest())[:22]


def make_token(key: bytes, email: str) -> str:
    return f"{_b64(email.lower().encode('utf-8'))}.{_signature(key, email)}"


def verify_token(key: bytes, token: str) -> str | None:
    """The address a token was made for, or None when it was not made with this key."""
    encoded, _, signature = token.partition(".")
    try:
        email = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)).decode("utf-8")
    except (ValueError, UnicodeDecodeError):
        return None
    if not hmac.compare_digest(_signature(key, email).encode(), signature.encode()):
        return None
    return email


def url(pattern: str, base_url: str, email: str, token: str) -> str:
    """The unsubscribe URL for one recipient, from the `unsubscribe_url` setting."""
    from urllib.parse import quote

    return pattern.format(base_url=base_url, token=token, email=quote(email, safe="@"))
