"""MIME messages: multipart/alternative (text + HTML), UTF-8, with the headers bulk mail needs."""

from __future__ import annotations

import re
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime, make_msgid, parseaddr

from .errors import InputError
from .render import Email, personalize

_UNSAFE_HEADER = re.compile(r"[\r\n\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def safe_header(value: str, what: str) -> str:
    """Refuse header values that could smuggle in another header."""
    if _UNSAFE_HEADER.search(value):
        raise InputError(f"{what} contains a line break or control character: {value!r}")
    return value


def list_id(name: str, sender_address: str) -> str:
    domain = sender_address.rpartition("@")[2] or "localhost"
    label = re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-") or "newsletter"
    return f"{safe_header(name, 'newsletter name')} <{label}.{domain}>"


def build(
    email: Email,
    *,
    sender: str,
    to: str,
    values: dict[str, str],
    list_name: str,
    unsubscribe_mailto: str = "",
    message_id: str | None = None,
    date=None,
    subject_prefix: str = "",
) -> bytes:
    """One complete message for one recipient; `values` fill the %%token%% placeholders."""
    import datetime as dt

    sender_name, sender_address = parseaddr(safe_header(sender, "sender"))
    if "@" not in sender_address:
        raise InputError(f"sender '{sender}' has no email address (setting 'sender')")
    to_name, to_address = parseaddr(safe_header(to, "recipient"))
    if "@" not in to_address:
        raise InputError(f"recipient '{to}' is not an email address")

    msg = EmailMessage(policy=SMTP)
    msg["Subject"] = safe_header(subject_prefix + email.subject, "subject")
    msg["From"] = Address(sender_name, addr_spec=sender_address)
    msg["To"] = Address(safe_header(to_name, "recipient name"), addr_spec=to_address)
    msg["Date"] = format_datetime(date or dt.datetime.now(dt.UTC))
    msg["Message-ID"] = message_id or make_msgid(domain=sender_address.rpartition("@")[2])
    unsubscribe = values.get("unsubscribe_url", "")
    targets = []
    if unsubscribe.startswith("https://"):
        targets.append(f"<{safe_header(unsubscribe, 'unsubscribe URL')}>")
    if unsubscribe_mailto:
        targets.append(f"<mailto:{safe_header(unsubscribe_mailto, 'unsubscribe address')}>")
    if targets:
        msg["List-Unsubscribe"] = ", ".join(targets)
    if unsubscribe.startswith("https://"):
        msg["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    msg["List-Id"] = list_id(list_name, sender_address)
    msg.set_content(personalize(email.text, values, escape=False), charset="utf-8")
    msg.add_alternative(personalize(email.html, values, escape=True), subtype="html",
                        charset="utf-8")
    return msg.as_bytes()
