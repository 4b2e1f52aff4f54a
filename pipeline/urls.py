"""URL helpers shared by the stages that rewrite links and images."""

from __future__ import annotations

from urllib.parse import quote, urljoin, urlsplit

# Characters that may stay as they are in a URL; everything else (spaces, non-ASCII) is encoded.
_SAFE = ":/?#[]@!$&'()*+,;=%~-._"


def encode(url: str) -> str:
    """Percent-encode spaces and non-ASCII, leaving existing escapes and delimiters alone."""
    return quote(url.strip(), safe=_SAFE)


def absolute(url: str, base: str) -> str:
    """`url` made absolute against the newsletter's base URL, and percent-encoded."""
    url = url.strip()
    if url.startswith("//"):
        url = "https:" + url
    return encode(urljoin(base, url))


def host(url: str) -> str:
    return urlsplit(url).hostname or ""
