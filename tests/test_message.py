"""Per-recipient messages: headers that cannot be injected, tokens that cannot be forged."""

from __future__ import annotations

import email
from email import policy

import pytest

from pipeline import unsubscribe
from pipeline.errors import InputError
from pipeline.message import MessageTemplate, Recipient
from pipeline.render import Email

EMAIL = Email(subject="Issue №1 — café", preheader="p",
              html="<p>Hi %%name%%, <a href=\"%%unsubscribe_url%%\">leave</a></p>",
              text="Hi %%name%%\nLeave: %%unsubscribe_url%%\n", lang="en")


def _template(**kw):
    return MessageTemplate(EMAIL, sender="Tide Letter <tides@letter.example>",
                           list_name="Tide Letter", name_fallback="reader", **kw)


def test_message_parses_back_with_personal_values():
    raw = _template(unsubscribe_mailto="leave@letter.example").render(
        Recipient("ana@example.org", "Ana Łucja <3"), "https://letter.example/u?token=abc")
    msg = email.message_from_bytes(raw, policy=policy.default)
    assert str(msg["Subject"]) == "Issue №1 — café"
    assert msg["To"].addresses[0].display_name == "Ana Łucja <3"
    assert msg["To"].addresses[0].addr_spec == "ana@example.org"
    assert msg["List-Unsubscribe"] == ("<https://letter.example/u?token=abc>, "
                                       "<mailto:leave@letter.example>")
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert msg["List-Id"] == "Tide Letter <tide-letter.letter.example>"
    text, html = msg.iter_parts()
    assert text.get_content().startswith("Hi Ana Łucja <3\n")
    assert "Hi Ana Łucja &lt;3," in html.get_content()
    assert 'href="https://letter.example/u?token=abc"' in html.get_content()
    assert all(len(line) <= 998 for line in raw.split(b"\r\n"))


def test_name_fallback_when_the_list_has_no_name():
    raw = _template().render(Recipient("bo@example.org"), "https://letter.example/u")
    msg = email.message_from_bytes(raw, policy=policy.default)
    assert msg.get_body("plain").get_content().startswith("Hi reader")
    assert str(msg["To"]) == "bo@example.org"


@pytest.mark.parametrize("recipient", [
    Recipient("ana@example.org", "Ana\r\nBcc: victim@example.com"),
    Recipient("ana@example.org\nBcc: victim@example.com"),
    Recipient("ana@example.org, victim@example.com"),
    Recipient("not an address"),
])
def test_header_injection_through_recipient_is_refused(recipient):
    with pytest.raises(InputError):
        _template().render(recipient, "https://letter.example/u")


def test_header_injection_through_subject_or_url_is_refused():
    bad = Email(subject="Hello\r\nBcc: x@y.z", preheader="", html="", text="", lang="en")
    with pytest.raises(InputError, match="subject"):
        MessageTemplate(bad, sender="a@b.example", list_name="L")
    with pytest.raises(InputError, match="unsubscribe URL"):
        _template().render(Recipient("a@b.example"), "https://x.example/\r\nBcc: y@z.example")


def test_unsubscribe_tokens_verify_only_with_their_key():
    key = b"k" * 32
    token = unsubscribe.make_token(key, "Ana@Example.org")
    assert unsubscribe.verify_token(key, token) == "ana@example.org"
    assert unsubscribe.verify_token(b"x" * 32, token) is None
    forged = unsubscribe.make_token(b"x" * 32, "ana@example.org")
    assert unsubscribe.verify_token(key, forged) is None
    assert unsubscribe.verify_token(key, token[:-1] + ("A" if token[-1] != "A" else "B")) is None
    assert unsubscribe.verify_token(key, "garbage") is None
    with pytest.raises(InputError, match="PUBLISH_UNSUBSCRIBE_SECRET"):
        unsubscribe.key_from_env({"PUBLISH_UNSUBSCRIBE_SECRET": "short"})
