"""Unsubscribe links that cannot be forged: the address signed with the newsletter's key.

A token is `base64url(email).base64url(hmac-sha256(key, email))[:22]`; the unsubscribe
page (or `publish subscribers unsubscribe --token TOKEN`) verifies it in constant time.

The key is `PUBLISH_UNSUBSCRIBE_SECRET` when the environment sets it; otherwise a key
generated once into the state folder (`.publish/unsubscribe.key`, mode 0600, ignored by
git), so a new newsletter signs its links with no secret to type.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import os
import secrets
from pathlib import Path

from . import redact
from .errors import InputError, PublishError

KEY_VARIABLE = "PUBLISH_UNSUBSCRIBE_SECRET"
KEY_FILE = "unsubscribe.key"
MIN_KEY = 16


def key_from_env(env: dict[str, str] | None = None) -> bytes:
    value = redact.read_secret(KEY_VARIABLE, env)
    if len(value) < MIN_KEY:
        raise InputError(f"{KEY_VARIABLE} must hold a secret of at least {MIN_KEY} characters "
                         "to sign unsubscribe links (generate one with: openssl rand -hex 32)")
    return value.encode("utf-8")


def _read_key_file(path: Path) -> bytes:
    try:
        value = path.read_bytes().strip()
    except OSError as exc:
        raise PublishError(f"cannot read the unsubscribe signing key: {exc.strerror}",
                           path) from None
    if len(value) < MIN_KEY:
        raise PublishError("the unsubscribe signing key is shorter than "
                           f"{MIN_KEY} characters; delete the file to make a new one "
                           "(links in mail already sent then stop working)", path)
    redact.register(KEY_FILE, value.decode("utf-8", "replace"))  # never shown, like the others
    return value


def _create_key_file(path: Path) -> None:
    """Write a new random key, readable by the owner only; the first of racing runs wins."""
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f".{KEY_FILE}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(secrets.token_hex(32).encode("ascii") + b"\n")
            handle.flush()
            os.fsync(handle.fileno())
        with contextlib.suppress(FileExistsError):  # another run made it first: use theirs
            os.link(staging, path)  # atomic, and never replaces an existing key
    finally:
        staging.unlink(missing_ok=True)


def signing_key(state_dir: Path, env: dict[str, str] | None = None) -> bytes:
    """The key that signs unsubscribe tokens: the environment's, else the state folder's."""
    env = os.environ if env is None else env
    if env.get(KEY_VARIABLE):
        return key_from_env(env)
    path = Path(state_dir) / KEY_FILE
    if not path.exists():
        try:
            _create_key_file(path)
        except OSError as exc:
            import errno

            advice = ("free some space" if exc.errno == errno.ENOSPC else
                      "make the folder writable")
            raise PublishError(f"cannot create the unsubscribe signing key: {exc.strerror}; "
                               f"{advice}, or set {KEY_VARIABLE}", path) from None
    return _read_key_file(path)


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
