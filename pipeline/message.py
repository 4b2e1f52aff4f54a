"""MIME messages: multipart/alternative (text + HTML), UTF-8, with the headers bulk mail needs.

`MessageTemplate` does the expensive work once per issue; `render` then fills in one
recipient's values and headers in microseconds, so sending never re-renders an email.
"""

from __future__ import annotations

import binascii
import datetime as dt
import html
import os
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from email.header import Header
from email.utils import format_datetime, formataddr, make_msgid, parseaddr

from .errors import InputError
from .render import Email, split_tokens

_UNSAFE_HEADER = re.compile(r"[\r\n\x00-\x08\x0b\x0c\x0e-\x1f\x7f\u2028\u2029\x85]")
_ADDRESS = re.compile(r"^[^@\s<>\"(),;:\\\[\]]+@[^@\s<>\"(),;:\\\[\]]+$")


def safe_header(value: str, what: str) -> str:
    """Refuse header values that could smuggle in another header."""
    if _UNSAFE_HEADER.search(value):
        raise InputError(f"{what} contains a line break or control character: {value!r}")
    return value


def encode_header(value: str, name: str = "Subject") -> str:
    """A header value folded into lines of at most 78 characters (RFC 5322 allows 998):
    ASCII at its spaces, anything else (or an unbreakable run) as RFC 2047 encoded words."""
    if value.isascii() and value == value.strip() and "  " not in value:
        folded = Header(value, "us-ascii", maxlinelen=78, header_name=name,
                        continuation_ws=" ").encode(splitchars=" ", linesep="\r\n")
        if all(len(line) <= 78 for line in f"{name}: {folded}".split("\r\n")):
            return folded
    return Header(value, "utf-8", maxlinelen=78, header_name=name).encode(linesep="\r\n")


def mailbox(name: str, address: str, what: str) -> str:
    """`Name <address>` for a header, encoded when the name is not ASCII; checked first."""
    safe_header(name, f"{what} name")
    safe_header(address, f"{what} address")
    if not _ADDRESS.match(address):
        raise InputError(f"{what} '{address}' is not an email address")
    if not name:
        return address
    if address.isascii():
        return formataddr((name, address), charset="utf-8")
    # A UTF-8 address (RFC 6532, sent with SMTPUTF8), which formataddr refuses: the name
    # is encoded as formataddr would, the address written as it is.
    placeholder = "a@b"
    return formataddr((name, placeholder), charset="utf-8")[:-len(placeholder) - 2] + \
        f"<{address}>"


def list_id(name: str, sender_address: str) -> str:
    domain = sender_address.rpartition("@")[2] or "localhost"
    label = re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-") or "newsletter"
    return f"{encode_header(safe_header(name, 'newsletter name'), 'List-Id')} <{label}.{domain}>"


def _encoded_lines(data: bytes) -> bytes:
    """Base64 in 76-character CRLF lines (base64.encodebytes loops in Python per line)."""
    encoded = binascii.b2a_base64(data, newline=False)
    return b"\r\n".join([encoded[i:i + 76] for i in range(0, len(encoded), 76)]) + b"\r\n"


LINE_BYTES = 57  # what one 76-character line of base64 encodes


class EncodedBody:
    """A body part with `%%token%%` places, base64-encoded for one recipient at a time.

    `encode(values)` gives exactly the whole body filled in (`render.fill`), then encoded
    in 76-character lines, without encoding the whole body again: each line of base64
    holds 57 bytes of the body, so a literal piece of the body that starts at the same
    place in a line (a recipient's values before it shift it by their length) is always
    encoded the same. Those lines are encoded once per starting place (at most 57 variants
    of each piece, made when first needed); only the lines a recipient's own values touch
    are encoded per message.
    """

    def __init__(self, segments: list[str], *, escape: bool):
        self.literals = [part.encode("utf-8") for part in segments[0::2]]
        self.tokens = segments[1::2]
        self.escape = escape
        self.cache: list[dict[int, tuple[bytes, bytes, bytes | None]]] = [
            {} for _ in self.literals]

    def _split(self, index: int, start: int) -> tuple[bytes, bytes, bytes | None]:
        """Literal `index` after `start` bytes of a line: (the bytes that finish that line,
        the whole lines after them encoded, the bytes left over), or (all of it, b"", None)
        when it does not finish the line."""
        literal = self.literals[index]
        need = (LINE_BYTES - start) % LINE_BYTES
        if len(literal) < need:
            return literal, b"", None
        whole = (len(literal) - need) // LINE_BYTES * LINE_BYTES
        middle = _encoded_lines(literal[need:need + whole]) if whole else b""
        return literal[:need], middle, literal[need + whole:]

    def encode(self, values: Mapping[str, str]) -> bytes:
        out: list[bytes] = []
        pending = b""  # the start of the current line, not yet encoded (< 57 bytes)
        for index, cache in enumerate(self.cache):
            if index:
                value = values.get(self.tokens[index - 1], "")
                pending += (html.escape(value) if self.escape else value).encode("utf-8")
                if len(pending) >= LINE_BYTES:
                    whole = len(pending) // LINE_BYTES * LINE_BYTES
                    out.append(_encoded_lines(pending[:whole]))
                    pending = pending[whole:]
            start = len(pending)
            piece = cache.get(start)
            if piece is None:
                piece = cache[start] = self._split(index, start)
            head, middle, tail = piece
            if tail is None:
                pending += head
                continue
            if start:
                out.append(_encoded_lines(pending + head))
            if middle:
                out.append(middle)
            pending = tail
        if pending:
            out.append(_encoded_lines(pending))
        return b"".join(out) or b"\r\n"


@dataclass(frozen=True)
class Recipient:
    email: str
    name: str = ""


class MessageTemplate:
    """An issue's email ready to be addressed: one call to `render` per recipient."""

    def __init__(self, email: Email, *, sender: str, list_name: str,
                 unsubscribe_mailto: str = "", subject_prefix: str = "", name_fallback: str = ""):
        sender_name, sender_address = parseaddr(safe_header(sender, "sender"))
        if "@" not in sender_address:
            raise InputError(f"sender '{sender}' has no email address (setting 'sender')")
        self.email = email
        self.sender = mailbox(sender_name, sender_address, "sender")
        self.domain = sender_address.rpartition("@")[2]
        self.subject_text = safe_header(subject_prefix + email.subject, "subject")
        self.subject = encode_header(self.subject_text)
        self.list_id = list_id(list_name, sender_address)
        self.mailto = safe_header(unsubscribe_mailto, "unsubscribe address")
        self.name_fallback = name_fallback
        self.boundary = f"=_publish_{os.urandom(12).hex()}"  # as secrets.token_hex
        self.text_segments = split_tokens(email.text)
        self.html_segments = split_tokens(email.html)
        self.date = (0, "")  # (second, Date header)
        self.text_body = EncodedBody(self.text_segments, escape=False)
        self.html_body = EncodedBody(self.html_segments, escape=True)
        self.part_heads = [
            (f"--{self.boundary}\r\nContent-Type: text/{subtype}; charset=\"utf-8\"\r\n"
             "Content-Transfer-Encoding: base64\r\n\r\n").encode("ascii")
            for subtype in ("plain", "html")
        ]

    def _now(self) -> str:
        """The Date header for now: made once a second (thousands of messages share it)."""
        second = int(time.time())
        if second != self.date[0]:
            self.date = (second, format_datetime(dt.datetime.fromtimestamp(second, dt.UTC)))
        return self.date[1]

    def render(self, recipient: Recipient, unsubscribe_url: str, *,
               message_id: str | None = None, date: dt.datetime | None = None) -> bytes:
        """The complete message for one recipient, CRLF line endings, base64 bodies."""
        to = mailbox(recipient.name, recipient.email, "recipient")
        values = {
            "unsubscribe_url": safe_header(unsubscribe_url, "unsubscribe URL"),
            "email": recipient.email,
            "name": recipient.name or self.name_fallback,
        }
        targets = []
        if unsubscribe_url.startswith("https://"):
            targets.append(f"<{unsubscribe_url}>")
        if self.mailto:
            targets.append(f"<mailto:{self.mailto}>")
        headers = [
            f"From: {self.sender}",
            f"To: {to}",
            f"Subject: {self.subject}",
            f"Date: {format_datetime(date) if date else self._now()}",
            f"Message-ID: {message_id or make_msgid(domain=self.domain)}",
            "MIME-Version: 1.0",
        ]
        if targets:
            headers.append(f"List-Unsubscribe: {', '.join(targets)}")
        if unsubscribe_url.startswith("https://"):
            headers.append("List-Unsubscribe-Post: List-Unsubscribe=One-Click")
        headers += [
            f"List-Id: {self.list_id}",
            f'Content-Type: multipart/alternative; boundary="{self.boundary}"',
        ]
        return b"".join((
            # UTF-8 only when an address is not ASCII (RFC 6532; sent with SMTPUTF8).
            ("\r\n".join(headers) + "\r\n\r\n").encode("utf-8"),
            self.part_heads[0], self.text_body.encode(values),
            self.part_heads[1], self.html_body.encode(values),
            f"--{self.boundary}--\r\n".encode("ascii"),
        ))
