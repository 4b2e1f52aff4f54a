"""The fast path for plain addresses says exactly what email-validator says, or asks it.

Differential: over generated addresses (plain ones, near misses with every character
email-validator treats specially, special-use and punycode domains, over-long parts),
whenever the fast path accepts an address email-validator accepts it too and normalises
it to the same string; and the validator is still asked for everything else.
"""

from __future__ import annotations

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from pipeline.subscribers import _plain, normalize_email, validated

LOCAL_CHARS = "abcXYZ019._%+-'=!#$&*/?^`{|}~\"\\ (),:;<>@[]é\u00a0\u200b"
DOMAIN_CHARS = "abcxyzABC019-._ü"
TLDS = ["com", "org", "io", "co", "c", "x1", "1", "test", "invalid", "localhost", "local",
        "onion", "arpa", "example", "xn--p1ai", "COM", "Org", "a" * 63, "a" * 64, ""]

labels = st.text(DOMAIN_CHARS, min_size=0, max_size=12) | st.sampled_from(
    ["xn--bcher-kva", "ab--cd", "a--b", "-a", "a-", "a" * 63, "a" * 64, "1", "EXAMPLE"])
locals_ = st.text(LOCAL_CHARS, min_size=0, max_size=20) | st.text(
    "abcXYZ019._%+-'=", min_size=60, max_size=70) | st.sampled_from(
    [".a", "a.", "a..b", "A.B", "o'hara", "x+tag", "%", "a=b"])


@st.composite
def addresses(draw) -> str:
    local = draw(locals_)
    inner = draw(st.lists(labels, min_size=0, max_size=4))
    domain = ".".join([*inner, draw(st.sampled_from(TLDS))])
    at = draw(st.sampled_from(["@", "@", "@", "@@", ""]))
    return f"{local}{at}{domain}"


def expected(value: str) -> str | None:
    try:
        return validated(value)
    except ValueError:
        return None


@settings(max_examples=3000, deadline=None)
@given(addresses() | st.text(max_size=40))
@example("reader1@example.org")
@example("READER1@EXAMPLE.ORG")
@example("a@b.co")
@example("o'hara+news@mail.example.co.uk")
@example("a@xn--bcher-kva.com")
@example("a@ab--c.com")
@example("x" * 64 + "@example.com")
@example("x" * 65 + "@example.com")
@example("a@" + "b" * 63 + ".com")
@example("a@" + ("b" * 60 + ".") * 4 + "com")
@example("a@b.test")
@example("a@b.localhost")
def test_the_fast_path_agrees_with_email_validator(value):
    fast = _plain(value)
    if fast is not None:
        assert fast == expected(value), value


@pytest.mark.parametrize("value", [
    "reader@example.org", "A.B-C_D%E+F'G=H@Sub-Domain.Example.ORG", "a@b.co",
    "x" * 64 + "@example.com", "reader@" + "b" * 63 + ".com",
])
def test_plain_addresses_take_the_fast_path(value):
    assert _plain(value) == expected(value) is not None


@pytest.mark.parametrize("value", [
    "Ünïcode@example.org", "a@bücher.de", "a@xn--bcher-kva.com", "a@b.test", "a@b.invalid",
    "a@b.localhost", "\"quoted\"@example.org", "a..b@example.org", "a@-b.com",
    "x" * 65 + "@example.com", "a@b.c1", "a@ab--c.com",
])
def test_everything_else_asks_email_validator(value):
    assert _plain(value) is None
    want = expected(value)
    if want is None:
        with pytest.raises(ValueError):
            normalize_email(value)
    else:
        assert normalize_email(value) == want


def test_a_wide_random_set_agrees_and_both_paths_are_taken():
    """50,000 addresses from a seeded generator: near misses as often as plain ones."""
    import random

    rng = random.Random(15)
    plain_chars = "abcdefxyzABCXYZ0123456789._%+-'="
    fast = slow = 0
    for _ in range(50_000):
        local = "".join(rng.choice(plain_chars if rng.random() < 0.95 else LOCAL_CHARS)
                        for _ in range(rng.randint(1, 70 if rng.random() < 0.05 else 12)))
        domain = ".".join(
            "".join(rng.choice("abcxyz019-" if rng.random() < 0.97 else DOMAIN_CHARS)
                    for _ in range(rng.randint(0, 65 if rng.random() < 0.05 else 8)))
            for _ in range(rng.randint(0, 3)))
        tld = rng.choice(TLDS) if rng.random() < 0.3 else rng.choice(["com", "org", "IO"])
        value = f"{local}@{domain}{'.' if domain else ''}{tld}"
        got, want = _plain(value), expected(value)
        if got is None:
            slow += 1
        else:
            fast += 1
            assert got == want, value
    assert fast > 10_000 and slow > 10_000
