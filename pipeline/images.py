"""The real pixel size of an issue's images, so an email never blows a 16 px icon up to the
width of the column.

A local image (under the newsletter folder, where `base_url` publishes it) is read from
disk. A remote one is asked for once: only its first bytes are read, with a short timeout,
and the answer is kept in a small JSON cache in the state folder, so a rebuild asks no one.
When the network is unreachable the first failure stops every further request in that
build and one warning says so; those images then keep no width (they show at their own
size, capped at the column, in every client but Outlook on Windows).
"""

from __future__ import annotations

import io
import json
import os
import tempfile
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import unquote, urlsplit

CACHE_FILE = "image-sizes.json"
CACHE_LIMIT = 5000  # entries; the oldest go first
MAX_HEADER_BYTES = 512 * 1024  # a JPEG's size can sit after a large EXIF block
TIMEOUT = 4.0
WORKERS = 8
USER_AGENT = "publish-newsletter-image-size/0.1"

Size = tuple[int, int]
# What failed lately in this process: a preview rebuilds on every save, and an image that
# did not answer (or a host that could not be reached) is not asked again each time.
RETRY_AFTER = 60.0  # seconds
_FAILED: dict[str, float] = {}  # url -> when it answered with no image
_UNREACHABLE: dict[str, tuple[float, str]] = {}  # host -> (when, why)


def size_of_bytes(data: bytes) -> Size | None:
    """(width, height) from an image's first bytes, or None when they do not say."""
    from PIL import Image, ImageFile, UnidentifiedImageError

    parser = ImageFile.Parser()
    try:
        parser.feed(data)
        if parser.image is not None:
            return parser.image.size
    except (OSError, SyntaxError, ValueError, UnidentifiedImageError,
            Image.DecompressionBombError):
        return None
    try:  # formats the incremental parser does not know (SVG aside): open what we have
        with Image.open(io.BytesIO(data)) as image:
            return image.size
    except (OSError, SyntaxError, ValueError, UnidentifiedImageError,
            Image.DecompressionBombError):
        return None


def _size(entry) -> Size | None:
    """(width, height) of a cache entry, None unless both are positive whole numbers (a
    hand-edited or damaged cache is read again, never trusted)."""
    if not isinstance(entry, list | tuple) or len(entry) < 2:
        return None
    width, height = entry[0], entry[1]
    if type(width) is not int or type(height) is not int or width <= 0 or height <= 0:
        return None
    return width, height


def size_of_file(path: Path) -> Size | None:
    try:
        with path.open("rb") as handle:
            return size_of_bytes(handle.read(MAX_HEADER_BYTES))
    except OSError:
        return None


class ImageSizes:
    """Sizes for the images of one build: local files, the cache, then the network."""

    def __init__(self, root: Path | None = None, base_url: str = "",
                 state_dir: Path | None = None, timeout: float = TIMEOUT,
                 network: bool = True):
        self.root = root.resolve() if root else None
        self.base_url = base_url
        self.cache_path = state_dir / CACHE_FILE if state_dir else None
        self.timeout = timeout
        self.network = network
        self.offline_reason = ""  # why remote sizes were not asked for, once it is known
        self.unknown: list[str] = []  # images left without a width: no size, none declared
        self._lock = threading.Lock()
        self._cache: dict[str, list] | None = None
        self._fresh: dict[str, Size] = {}

    # local files ---------------------------------------------------------------------
    def local_path(self, url: str) -> Path | None:
        """The file under the newsletter folder that `url` is published from, if any."""
        if self.root is None or not self.base_url or not url.startswith(self.base_url):
            return None
        relative = unquote(urlsplit(url[len(self.base_url):]).path)
        candidate = (self.root / relative).resolve()
        if not candidate.is_relative_to(self.root) or not candidate.is_file():
            return None
        return candidate

    # the cache -------------------------------------------------------------------------
    def _load(self) -> dict[str, list]:
        if self._cache is None:
            self._cache = {}
            if self.cache_path is not None:
                try:
                    data = json.loads(self.cache_path.read_text("utf-8"))
                    if isinstance(data, dict):
                        self._cache = {k: v for k, v in data.items()
                                       if isinstance(v, list) and len(v) == 3}
                except (OSError, ValueError):
                    pass  # a missing or damaged cache is rebuilt
        return self._cache

    def save(self) -> None:
        """Merge what this build learnt into the cache file, replaced whole."""
        if self.cache_path is None or not self._fresh:
            return
        try:
            self.cache_path.parent.mkdir(parents=True, exist_ok=True)
            current = {}
            try:
                current = json.loads(self.cache_path.read_text("utf-8"))
                if not isinstance(current, dict):
                    current = {}
            except (OSError, ValueError):
                pass
            now = int(time.time())
            current.update({url: [w, h, now] for url, (w, h) in self._fresh.items()})
            if len(current) > CACHE_LIMIT:
                newest = sorted(current.items(), key=lambda kv: kv[1][2])[-CACHE_LIMIT:]
                current = dict(newest)
            handle, temporary = tempfile.mkstemp(prefix=".image-sizes.",
                                                 dir=self.cache_path.parent)
            with os.fdopen(handle, "w", encoding="utf-8") as out:
                json.dump(current, out)
            os.replace(temporary, self.cache_path)
        except OSError:
            pass  # a cache that cannot be written only costs a request next time

    # the network -----------------------------------------------------------------------
    def _fetch(self, url: str) -> Size | None:
        if self.offline_reason or not self.network:
            return None
        now = time.monotonic()
        host = urlsplit(url).netloc
        when, why = _UNREACHABLE.get(host, (-RETRY_AFTER, ""))
        if now - when < RETRY_AFTER:
            with self._lock:
                self.offline_reason = self.offline_reason or why
            return None
        if now - _FAILED.get(url, -RETRY_AFTER) < RETRY_AFTER:
            return None
        size = self._ask(url)
        if size is None and not self.offline_reason:
            _FAILED[url] = now
        return size

    def _ask(self, url: str) -> Size | None:
        import requests

        try:
            with requests.get(url, stream=True, timeout=self.timeout,
                              headers={"User-Agent": USER_AGENT,
                                       "Range": f"bytes=0-{MAX_HEADER_BYTES - 1}"}) as reply:
                if reply.status_code >= 400:
                    return None
                data = b""
                started = time.monotonic()
                for chunk in reply.iter_content(16384):
                    data += chunk
                    size = size_of_bytes(data)
                    if size is not None:
                        return size
                    if (len(data) >= MAX_HEADER_BYTES
                            or time.monotonic() - started > self.timeout):
                        return None
                return size_of_bytes(data)
        except (requests.ConnectionError, requests.Timeout) as exc:
            with self._lock:
                self.offline_reason = self.offline_reason or type(exc).__name__
            _UNREACHABLE[urlsplit(url).netloc] = (time.monotonic(), type(exc).__name__)
            return None
        except requests.RequestException:
            return None

    def prefetch(self, urls: Iterable[str]) -> None:
        """Ask for every remote size not known yet, a few at a time."""
        cache = self._load()
        wanted = sorted({u for u in urls if u.startswith(("http://", "https://"))
                         and u not in cache and u not in self._fresh
                         and self.local_path(u) is None})
        if not wanted or not self.network:
            return
        # One request first: when the network is down, the rest are not even tried.
        first = self._fetch(wanted[0])
        if first is not None:
            self._fresh[wanted[0]] = first
        rest = [] if self.offline_reason else wanted[1:]
        from concurrent.futures import ThreadPoolExecutor  # only when sizes are fetched

        with ThreadPoolExecutor(max_workers=WORKERS) as pool:
            for url, size in zip(rest, pool.map(self._fetch, rest), strict=True):
                if size is not None:
                    self._fresh[url] = size

    def size(self, url: str) -> Size | None:
        local = self.local_path(url)
        if local is not None:
            return self._local_size(local)
        if url in self._fresh:
            return self._fresh[url]
        return _size(self._load().get(url))

    def _local_size(self, path: Path) -> Size | None:
        """A local file's size, kept in the cache under its path, modification time and
        length, so a build whose images did not change reads none of them (nor loads the
        image library)."""
        try:
            stat = path.stat()
        except OSError:
            return None
        # The change time too: a file rewritten to the same length within one tick of the
        # modification time, or with its old modification time put back, still changes it.
        key = f"file:{path}:{stat.st_mtime_ns}:{stat.st_ctime_ns}:{stat.st_size}"
        known = _size(self._fresh.get(key) or self._load().get(key))
        if known is not None:
            return known
        size = size_of_file(path)
        if size is not None:
            self._fresh[key] = size
        return size

    def warning(self, source: str) -> str | None:
        """One line about the images whose size could not be read, or None."""
        if not self.unknown:
            return None
        count = len(set(self.unknown))
        if not self.network:
            why = "remote images are not asked for (image_sizes = \"local\")"
        elif self.offline_reason:
            why = f"the network is unreachable ({self.offline_reason})"
        else:
            why = "they did not answer with an image"
        return (f"{source}: could not read the size of {count} image(s) without a width: {why}; "
                "they show at their own size, capped at the column, but Outlook on Windows "
                "may show them full size (give them a width attribute)")
