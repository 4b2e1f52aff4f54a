"""What cssutils made of a piece of CSS, kept between runs so a cold build need not import it.

premailer reads the templates' stylesheet and each distinct inline style with cssutils,
and the check reads the head's style blocks with it: importing cssutils and those parses
are ~0.1 s of a cold build, spent again by every process on the same text. Each result is
plain data (rules as tuples of strings and numbers, a style's (name, value) pairs), a pure
function of its text, so `kept` answers it from a file written by an earlier run; a text
not seen before is parsed the usual way and added.

The file lives beside the kept regular expressions (a folder of the temporary directory
only the user may enter, see _regexcache), is named and tagged after the interpreter, the
installed cssutils and premailer and the source of the modules that compute the results
(any change and another file is used; the files of all but the three latest versions are
removed), carries a checksum, is bounded in size and replaced whole (write, then rename).
A damaged, foreign or unwritable file only costs the parsing.
"""

from __future__ import annotations

import atexit
import contextlib
import itertools
import marshal
import os
import sys
import threading
import zlib
from collections.abc import Callable
from functools import lru_cache
from importlib.machinery import PathFinder

from . import _regexcache

_LOCK = threading.RLock()
_KEPT: dict[tuple, object] = {}
_USED: set[tuple] = set()
# full key -> the kept result that passed its shape check in this process (the object
# itself, so a result put in its place is checked again)
_CHECKED: dict[tuple, object] = {}
_STATE: dict = {"loaded": False, "added": 0, "path": None, "tag": None}
_MAX_BYTES = 2_000_000
# In one process (a preview session, where every edit may add a style), the results held
# in memory: past this many, the least recently used tenth is let go.
_MAX_HELD = 40_000
# The modules whose code turns CSS into the kept results (their source is in the tag).
_OUR_SOURCES = ("_csscache.py", "inliner.py", "check_contrast.py")
_DISTRIBUTIONS = ("cssutils", "premailer")


def _distribution(name: str) -> tuple:
    """What identifies an installed distribution's code: its dist-info and the files'
    stamps (a reinstall or an edit changes them)."""
    spec = PathFinder.find_spec(name)
    if spec is None or not spec.origin:
        return (name, None)
    site = os.path.dirname(os.path.dirname(spec.origin))
    info = sorted(entry for entry in os.listdir(site)
                  if entry.lower().startswith(f"{name}-") and entry.endswith(".dist-info"))
    stamps = []
    for path in [os.path.join(site, entry, "RECORD") for entry in info] + [spec.origin]:
        with contextlib.suppress(OSError):
            status = os.stat(path)
            stamps.append((path, status.st_mtime_ns, status.st_size))
    return (name, tuple(info), tuple(stamps))


def _tag() -> str:
    """The version of everything a kept result depends on."""
    if _STATE["tag"] is None:
        here = os.path.dirname(os.path.abspath(__file__))
        sums = []
        for name in _OUR_SOURCES:
            with open(os.path.join(here, name), "rb") as file:
                sums.append(zlib.crc32(file.read()))
        parts = (sys.implementation.cache_tag, sys.hexversion, _regexcache.LAYOUT, tuple(sums),
                 tuple(_distribution(name) for name in _DISTRIBUTIONS))
        _STATE["tag"] = f"{zlib.crc32(repr(parts).encode()):08x}-{len(repr(parts))}"
    return _STATE["tag"]


def _load(path: str) -> dict[tuple, object]:
    entries = _regexcache.read_entries(path, _tag())
    return {key: value for key, value in entries.items()
            if isinstance(key, tuple) and len(key) == 2 and isinstance(key[0], str)}


def _ensure_loaded() -> None:
    if _STATE["loaded"]:
        return
    _STATE["loaded"] = True
    try:
        folder = _regexcache._folder()
        if folder is None:
            return
        # One file per version of the code (its tag in the name, as __pycache__ names a
        # file per interpreter): two versions in use at once never undo each other's.
        path = os.path.join(folder, f"css-{_tag()}.marshal")
        _KEPT.update(_load(path))
    except OSError:
        return
    _STATE["path"] = path
    atexit.register(_save)


def _size(key: tuple, value: object) -> int:
    try:
        return len(marshal.dumps((key, value)))
    except ValueError:
        return _MAX_BYTES


def _save() -> None:
    """Write the kept results when this run added to them: a fresh file renamed over."""
    path = _STATE["path"]
    if not path or not _STATE["added"]:
        return
    with _LOCK:
        entries = _regexcache.bounded(_KEPT, _USED, _MAX_BYTES, _size)
    _regexcache.write_entries(path, _tag(), entries, ".css-")
    _forget_old_versions(path)


_VERSIONS_KEPT = 3


def _forget_old_versions(path: str) -> None:
    """Remove the files of all but the most recently written versions of the code (an
    upgrade or an edit leaves its predecessor's file behind)."""
    folder = os.path.dirname(path)
    with contextlib.suppress(OSError):
        found = []
        for entry in os.scandir(folder):
            if entry.name.startswith("css-") and entry.name.endswith(".marshal") \
                    and entry.is_file(follow_symlinks=False):
                found.append((entry.stat(follow_symlinks=False).st_mtime_ns, entry.path))
        for _, old in sorted(found, reverse=True)[_VERSIONS_KEPT:]:
            if old != path:
                with contextlib.suppress(OSError):
                    os.unlink(old)


def kept(kind: str, key, compute: Callable[[], object],
         well_formed: Callable[[object], bool]):
    """`compute()`, or what it returned for the same `kind` and `key` in an earlier run.

    `key` must hold everything the result depends on besides the tagged code; the result
    must be plain data that marshal writes and reads back equal. `well_formed` checks a
    kept result's shape (a result of another shape is computed again).
    """
    with _LOCK:
        _ensure_loaded()
        full = (kind, key)
        _USED.add(full)
        found = _KEPT.pop(full, None)
        if found is not None:
            _KEPT[full] = found  # the dict's order is the order of last use
    if found is not None:
        if _CHECKED.get(full) is found:
            return found
        try:
            if well_formed(found):
                _checked(full, found)
                return found
        except Exception:  # a result of a shape the check did not foresee
            pass
    value = compute()
    try:
        plain = marshal.loads(marshal.dumps(value)) == value
    except (ValueError, TypeError):
        plain = False
    if plain:
        with _LOCK:
            _KEPT[full] = value
            _STATE["added"] += 1
            _CHECKED.pop(full, None)
            if len(_KEPT) > _MAX_HELD:
                _let_go(len(_KEPT) - _MAX_HELD + _MAX_HELD // 10)
    return value


def _let_go(count: int) -> None:
    """Forget the `count` least recently used results (they are computed again if asked)."""
    for full in list(itertools.islice(_KEPT, count)):
        del _KEPT[full]
        _USED.discard(full)
        _CHECKED.pop(full, None)


def _checked(full: tuple, found: object) -> None:
    """Remember that `found`, kept for `full`, has the shape its caller needs."""
    with _LOCK:
        if len(_CHECKED) >= _MAX_HELD:
            _CHECKED.clear()
        _CHECKED[full] = found


@lru_cache(maxsize=1)
def quiet_cssutils():
    """cssutils, told to neither validate nor log (loaded only when a result is computed).

    premailer validates every inline style it merges (whatever `disable_validation`
    says), and validation only logs: it compiles some 150 regular expressions (~0.1 s of
    a cold build) to write messages nobody reads. Without profiles cssutils knows no
    property names and validates nothing; what it parses and writes is the same.
    """
    import logging

    import cssutils

    cssutils.log.setLevel(logging.CRITICAL)
    cssutils.profile.removeProfile(all=True)
    return cssutils
