"""Images a service must host itself: read from the newsletter folder or fetched once."""

from __future__ import annotations

from urllib.parse import unquote, urlsplit

from ..errors import PublishError
from ..settings import Settings

MAX_IMAGE_BYTES = 10 * 1024 * 1024
IMAGE_TYPES = {b"\x89PNG": "image/png", b"\xff\xd8\xff": "image/jpeg", b"GIF8": "image/gif",
               b"RIFF": "image/webp"}


def image_type(data: bytes) -> str | None:
    for magic, kind in IMAGE_TYPES.items():
        if data.startswith(magic):
            return kind
    return None


def image_bytes(settings: Settings, src: str) -> bytes:
    """The image's bytes: from the newsletter folder when it lives there, else over HTTP."""
    base = settings.base_url
    if src.startswith(base):
        relative = unquote(urlsplit(src).path[len(urlsplit(base).path):])
        root = settings.root.resolve()
        candidate = root / relative
        if candidate.is_file() or candidate.is_symlink():
            local = candidate.resolve()
            if not local.is_relative_to(root):
                raise PublishError(f"image {relative} leads outside the newsletter folder "
                                   f"({root}); refused")
            return local.read_bytes()
    scheme = urlsplit(src).scheme
    if scheme not in {"http", "https"}:
        raise PublishError(f"cannot upload image {src[:60]}: not an http(s) URL")
    import requests

    try:
        with requests.Session() as session:  # no cookie: images are public
            session.max_redirects = 5
            reply = session.get(src, timeout=settings.http_timeout_seconds,
                                stream=True)
            reply.raise_for_status()
            data = reply.raw.read(MAX_IMAGE_BYTES + 1, decode_content=True)
    except requests.RequestException as exc:
        raise PublishError(f"cannot fetch image {src}: {type(exc).__name__}") from None
    if len(data) > MAX_IMAGE_BYTES:
        raise PublishError(f"image {src} is over 10 MB")
    return data
