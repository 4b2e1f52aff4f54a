"""What goes on the wire: each recipient's message is exactly what assembling it the plain
way gives (the whole body filled in, then base64-encoded), byte for byte, whatever the
names and addresses; and lines that start with a dot reach the server as they were."""

from __future__ import annotations

import binascii
import email
import re
import shutil
import sqlite3
from email import policy
from pathlib import Path

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from pipeline import ledger, render, settings
from pipeline.message import EncodedBody, MessageTemplate, Recipient, mailbox
from pipeline.send_content import Messages
from pipeline.smtp_transport import SmtpTransport
from tests.conftest import CORPUS, copy_sample_newsletter, run_publish
from tests.smtp_server import SmtpServer

SECRET = "wire-unsubscribe-secret-0123456789"
TOKENS = list(render.TOKENS)


def plain_base64(text: str) -> bytes:
    """The reference: the whole text encoded, then cut into 76-character CRLF lines."""
    encoded = binascii.b2a_base64(text.encode("utf-8"), newline=False)
    return b"".join(encoded[i:i + 76] + b"\r\n" for i in range(0, len(encoded), 76)) or b"\r\n"


def plain_message(t: MessageTemplate, recipient: Recipient, unsubscribe_url: str, *,
                  date: str, message_id: str) -> bytes:
    """A recipient's message assembled the straightforward way, as publish always made it:
    every header, then both parts filled in whole and base64-encoded whole."""
    values = {"unsubscribe_url": unsubscribe_url, "email": recipient.email,
              "name": recipient.name or t.name_fallback}
    targets = []
    if unsubscribe_url.startswith("https://"):
        targets.append(f"<{unsubscribe_url}>")
    if t.mailto:
        targets.append(f"<mailto:{t.mailto}>")
    headers = [f"From: {t.sender}", f"To: {mailbox(recipient.name, recipient.email, 'r')}",
               f"Subject: {t.subject}", f"Date: {date}", f"Message-ID: {message_id}",
               "MIME-Version: 1.0"]
    if targets:
        headers.append(f"List-Unsubscribe: {', '.join(targets)}")
    if unsubscribe_url.startswith("https://"):
        headers.append("List-Unsubscribe-Post: List-Unsubscribe=One-Click")
    headers += [f"List-Id: {t.list_id}",
                f'Content-Type: multipart/alternative; boundary="{t.boundary}"']
    parts = []
    for subtype, segments, escape in (("plain", t.text_segments, False),
                                      ("html", t.html_segments, True)):
        parts.append((f"--{t.boundary}\r\nContent-Type: text/{subtype}; charset=\"utf-8\"\r\n"
                      "Content-Transfer-Encoding: base64\r\n\r\n").encode("ascii"))
        parts.append(plain_base64(render.fill(segments, values, escape=escape)))
    return b"".join([("\r\n".join(headers) + "\r\n\r\n").encode("utf-8"), *parts,
                     f"--{t.boundary}--\r\n".encode("ascii")])


# the body, encoded piece by piece ------------------------------------------------------

TEXT = st.text(st.sampled_from("aé中😀<>&\"' \n."), max_size=200)


@st.composite
def templates(draw) -> list[str]:
    """A body cut at its token places: literals of every length around a line's 57 bytes."""
    pieces = []
    for _ in range(draw(st.integers(0, 6))):
        pieces.append(draw(st.one_of(TEXT, st.sampled_from(["", "a" * 56, "a" * 57, "é" * 29]))))
        pieces.append(f"%%{draw(st.sampled_from(TOKENS))}%%")
    pieces.append(draw(TEXT))
    return render.split_tokens("".join(pieces))


@given(templates(), st.lists(st.dictionaries(st.sampled_from(TOKENS), TEXT), min_size=1,
                             max_size=6), st.booleans())
@example(["a" * 57, "name", "b" * 57], [{"name": ""}, {"name": "x"}, {"name": "é" * 57}], False)
@example(["", "email", ""], [{}, {"email": "a"}], True)
def test_encoded_body_is_the_whole_body_encoded(segments, recipients, escape):
    # One EncodedBody serves every recipient in turn: what it keeps for one never leaks
    # into the next.
    body = EncodedBody(segments, escape=escape)
    for values in recipients:
        assert body.encode(values) == plain_base64(render.fill(segments, values, escape=escape))


@pytest.mark.parametrize("offset", range(0, 60))
def test_a_token_at_every_place_in_a_line(offset):
    segments = render.split_tokens("x" * offset + "%%name%%" + "é" * 40 + "%%email%%" + "y" * 70)
    body = EncodedBody(segments, escape=True)
    for name in ("", "Zoë", "名" * 19, "a" * 57, "<&>" * 20):
        values = {"name": name, "email": f"{name[:5]}@example.org"}
        assert body.encode(values) == plain_base64(render.fill(segments, values, escape=True))


def test_what_is_kept_per_piece_stays_bounded():
    """However many readers, each literal piece is kept in at most 57 encodings (one per
    place in a line it can start at)."""
    segments = render.split_tokens("Hi %%name%%," + "é" * 5000 + "%%email%%" + "x" * 3000)
    body = EncodedBody(segments, escape=True)
    for n in range(2000):
        values = {"name": "n" * (n % 200), "email": f"r{n}@example.org"}
        assert body.encode(values) == plain_base64(render.fill(segments, values, escape=True))
    assert all(len(kept) <= 57 for kept in body.cache)
    assert len(body.cache[1]) == 57  # the names reached every place


# the whole message, through the real command and a real server ---------------------------

def _posts() -> list[Path]:
    folder = CORPUS / "hf-blog"
    if not folder.is_dir():
        return []
    posts = sorted(p for p in folder.glob("*.md") if p.name != "MANIFEST.md")
    english = [p for p in posts if not p.name.startswith("zh-")]
    chinese = [p for p in posts if p.name.startswith("zh-")]
    return english[:1] + chinese[:1]


ISSUES = ["2025-01-ai-art.md", *(f"corpus:{p.name}" for p in _posts())]

READERS = [
    ("plain@example.org", ""),
    ("zoe@example.org", "Zoë Ångström"),
    ("chen@example.org", "陈小明"),
    ("emoji@example.org", "Ana 😀 Lima"),
    ("quoted@example.org", 'O\'Brien, "Pat" <the boss>'),
    (f"{'l' * 64}@{'very-long-subdomain.' * 8}example.org", "Long Address"),
    ("amp@example.org", "Tom & Jerry <b>"),
    ("用户@例子.example", "Unicode Address"),
]
# Names of every length from 0 to 60 move each token across a line's 57 bytes.
READERS += [(f"shift{n}@example.org", "n" * n) for n in range(61)]


@pytest.mark.parametrize("issue", ISSUES)
def test_each_message_on_the_wire_is_the_plain_assembly(tmp_path, monkeypatch, issue):
    letter = copy_sample_newsletter(tmp_path / "letter")
    if issue.startswith("corpus:"):
        source = CORPUS / "hf-blog" / issue.removeprefix("corpus:")
        issue = f"issues/{source.name}"
        shutil.copy2(source, letter / issue)
    else:
        issue = f"issues/{issue}"
    rows = ["email,name,status,created_at"]
    rows += ['{},"{}",active,'.format(a, n.replace('"', '""')) for a, n in READERS]
    (letter / "subscribers" / "main.csv").write_text("\n".join(rows) + "\n", "utf-8")
    env = {"PUBLISH_UNSUBSCRIBE_SECRET": SECRET}
    monkeypatch.setenv("PUBLISH_UNSUBSCRIBE_SECRET", SECRET)
    assert run_publish("draft", issue, cwd=letter, env=env).returncode == 0
    with SmtpServer(smtputf8=True) as smtp:
        env.update({"PUBLISH_SMTP_HOST": "127.0.0.1", "PUBLISH_SMTP_PORT": str(smtp.port),
                    "PUBLISH_SMTP_SECURITY": "none"})
        sent = run_publish("send", issue, "--service", "smtp", "--yes", "--connections", "2",
                           "--ignore-check", cwd=letter, env=env)
        assert sent.returncode == 0, sent.stderr
        received = dict(smtp.recorder.messages)
    assert set(received) == {_envelope(a) for a, _ in READERS}
    db = sqlite3.connect(letter / ".publish" / "state.db")
    db.row_factory = sqlite3.Row
    row = db.execute("SELECT * FROM sends").fetchone()
    db.close()
    frozen = ledger.Content(row["revision"], row["subject"], row["html"], row["text"])
    messages = Messages(letter / issue, settings.load(letter, env={**env}), frozen)
    template = messages.template
    for address, name in READERS:
        [raw] = received[_envelope(address)]
        parsed = email.message_from_bytes(raw, policy=policy.default)
        boundary = re.search(rb'boundary="(=_publish_[0-9a-f]{24})"', raw).group(1).decode()
        template.boundary = boundary  # the only part of the template that is random
        expected = plain_message(template, Recipient(_envelope(address), name),
                                 messages.unsubscribe_url(address),
                                 date=parsed["Date"], message_id=parsed["Message-ID"])
        assert raw == expected, address
        assert parsed.get_body(("plain",)).get_content().strip()


def _envelope(address: str) -> str:
    from pipeline.transports import envelope_address

    return envelope_address(address)


# dot-stuffing ----------------------------------------------------------------------------

@pytest.mark.parametrize("body", [
    b".starts with a dot\r\nand.has.dots\r\n.\r\n..two\r\n",
    b"no dots at all\r\n",
    b"\r\n".join(b"line. with. dots. %d." % n for n in range(200)) + b"\r\n.last\r\n",
    b"".join(b".%d\r\n" % n for n in range(100)),  # more dots than the quick look takes
    b"ends without a line break.",
])
def test_lines_that_start_with_a_dot_arrive_as_they_were(body):
    message = b"Subject: dots\r\n\r\n" + body
    with SmtpServer() as smtp:
        transport = SmtpTransport("127.0.0.1", smtp.port, security="none")
        try:
            transport.deliver("letters@letter.example", "dots@example.org", message)
        finally:
            transport.close()
        [got] = smtp.recorder.messages["dots@example.org"]
    assert got == (message if message.endswith(b"\r\n") else message + b"\r\n")
