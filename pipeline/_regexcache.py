"""Compiled regular expressions kept between runs, as Python keeps compiled modules.

A cold build compiles ~420 regular expressions (premailer's cssutils, pygments' lexers,
BeautifulSoup's entity table, markdown-it, Jinja2, PyYAML and our own passes): about a
quarter of its CPU time, spent again by every process on the same patterns. `re` turns a
pattern into a list of integers for the `_sre` engine (parsing, then optimising the
character sets, the slow part) and hands that list to `_sre.compile`. `install` keeps
those lists in one file per interpreter: a pattern seen before goes straight to
`_sre.compile` with the list it compiled to, which is the same pattern object `re` would
have made (tests/test_regexcache.py compares them).

The file is keyed by the interpreter's exact version and `_sre`'s code format, lives in a
folder of the temporary directory only the user may read or write (as Jinja2's compiled
templates do), and is replaced whole (write, then rename) when a run compiled patterns it
did not hold, with a checksum of what it holds. A file that is damaged (the checksum),
foreign (the key) or unwritable only costs the compiling.
"""

from __future__ import annotations

import atexit
import contextlib
import marshal
import os
import stat
import sys
import tempfile
import threading
import time
import zlib
from array import array
from collections.abc import Callable

try:  # CPython 3.11+: the parser and code generator behind re.compile
    import _sre
    from re import _compiler, _parser
except ImportError:  # another implementation: nothing to keep
    _sre = _compiler = _parser = None

# The code is kept as the bytes of an array of _sre's code units (marshal reads bytes at
# memory speed, a list of 100,000 integers ten times slower).
_CODE_TYPE = next((t for t in "IL" if _sre and array(t).itemsize == _sre.CODESIZE), None)
_LOCK = threading.Lock()
# (whether bytes, pattern, flags) -> the arguments of _sre.compile after the pattern,
# marshalled apart (a run decodes the few hundred it uses, not every entry of the file)
_KEPT: dict[tuple, bytes] = {}
_STATE = {"installed": False, "added": 0, "path": None,
          "compiling": 0.0, "loading": 0.0}  # seconds spent on new patterns, on the file
# The file's bound: the code of patterns this run did not use goes first, oldest first
# (a library that builds a pattern differently in each process, from a set, must not
# grow the file without end). A build uses ~250 KB of it, the samples and the corpus
# ~320 KB; every MB more costs 3-6 ms to read at each start.
_MAX_BYTES = 600_000
# The layout of the file and its entries (in its tag and name: a file of another layout,
# as an older version writes it, is neither read nor overwritten).
_FORMAT = 3
_USED: set[tuple] = set()


def _tag() -> str:
    return (f"{sys.implementation.cache_tag}-{_sre.MAGIC}-{_sre.CODESIZE}-{sys.hexversion:x}"
            f"-f{_FORMAT}")


def _folder() -> str | None:
    """A folder of the temporary directory that only this user owns and may enter."""
    if not hasattr(os, "getuid"):
        return None
    folder = os.path.join(tempfile.gettempdir(), f"publish-cache-{os.getuid()}")
    with contextlib.suppress(FileExistsError):
        os.mkdir(folder, stat.S_IRWXU)
    info = os.lstat(folder)
    if (info.st_uid != os.getuid() or not stat.S_ISDIR(info.st_mode)
            or stat.S_IMODE(info.st_mode) != stat.S_IRWXU):
        return None
    return folder


# A kept file: this header, its tag's length and text, the checksum of the rest, then the
# rest (the marshalled entries). Read by hand, not by marshal: a damaged count in a
# marshalled envelope (one flipped bit) has marshal make a tuple of two billion items,
# tens of gigabytes, before it finds the file too short.
_HEADER = b"publish kept\n"
LAYOUT = 2  # of the envelope: in every kept file's tag and name (a file of 1 is marshal's)
_LARGEST = 64_000_000  # bytes: past every bound of the kept files, so a stranger's file


def pack(tag: str, blob: bytes) -> bytes:
    """A kept file's bytes: `blob` (marshalled entries) under `tag`, with its checksum."""
    tagged = tag.encode()
    return (_HEADER + len(tagged).to_bytes(2, "big") + tagged
            + zlib.crc32(blob).to_bytes(4, "big") + blob)


def unpack(data: bytes) -> tuple[str, bytes] | None:
    """(tag, blob) of a kept file's bytes, or None unless its layout and checksum hold."""
    if not data.startswith(_HEADER):
        return None
    start = len(_HEADER) + 2
    size = int.from_bytes(data[len(_HEADER):start], "big")
    tag, checksum = data[start:start + size], data[start + size:start + size + 4]
    blob = data[start + size + 4:]
    if len(checksum) != 4 or zlib.crc32(blob) != int.from_bytes(checksum, "big"):
        return None
    try:
        return tag.decode(), blob
    except UnicodeDecodeError:
        return None


def read_entries(path: str, tag: str) -> dict:
    """The entries of a kept file written with `tag`, or none when the file is missing,
    foreign (another tag or layout) or damaged (checksum, shape)."""
    try:
        with open(path, "rb") as file:
            data = file.read(_LARGEST + 1)
        found = unpack(data) if len(data) <= _LARGEST else None
        if found is None or found[0] != tag:
            return {}
        entries = marshal.loads(found[1])
    except (OSError, EOFError, ValueError, TypeError):
        return {}
    return entries if isinstance(entries, dict) else {}


def write_entries(path: str, tag: str, entries: dict, prefix: str) -> None:
    """Replace the kept file whole: written beside it, then renamed over (a reader sees the
    old file or the new one). Entries marshal cannot hold, or a failing write, keep
    nothing new."""
    try:
        data = pack(tag, marshal.dumps(entries))
    except ValueError:
        return
    with contextlib.suppress(OSError):
        fd, staging = tempfile.mkstemp(prefix=prefix, dir=os.path.dirname(path))
        try:
            with os.fdopen(fd, "wb") as file:
                file.write(data)
            os.replace(staging, path)
        finally:
            with contextlib.suppress(OSError):
                os.unlink(staging)


def _load(path: str) -> dict[tuple, tuple]:
    """The kept entries, decoded, or none when the file is missing, foreign or damaged."""
    entries = {key: _decoded(value) for key, value in read_entries(path, _tag()).items()}
    return {key: args for key, args in entries.items() if _well_formed(key, args)}


def _decoded(value):
    """The arguments an entry holds marshalled, or None when it holds none."""
    try:
        return marshal.loads(value) if isinstance(value, bytes) else None
    except (EOFError, ValueError, TypeError):
        return None


def _key_well_formed(key) -> bool:
    return (isinstance(key, tuple) and len(key) == 3 and isinstance(key[1], str | bytes)
            and isinstance(key[2], int))


def _well_formed(key, args) -> bool:
    """Whether an entry read has the shape this module writes (the code itself _sre checks
    when it is used)."""
    return (_key_well_formed(key) and isinstance(args, tuple) and len(args) == 5
            and isinstance(args[1], bytes))


def _compiled_args(p, flags: int) -> tuple:
    """What `re` hands `_sre.compile` for `p` after the pattern itself, with the code as
    bytes (as re._compiler.compile makes it)."""
    parsed = _parser.parse(p, flags)
    code = _compiler._code(parsed, flags)
    groupindex = dict(parsed.state.groupdict)
    indexgroup = [None] * parsed.state.groups
    for name, index in groupindex.items():
        indexgroup[index] = name
    return (flags | parsed.state.flags, array(_CODE_TYPE, code).tobytes(),
            parsed.state.groups - 1, groupindex, tuple(indexgroup))


def _from_args(p, args: tuple):
    final_flags, code, groups, groupindex, indexgroup = args
    ops = array(_CODE_TYPE)
    ops.frombytes(code)
    return _sre.compile(p, final_flags, ops.tolist(), groups, dict(groupindex), indexgroup)


def _compile_kept(p, flags=0):
    """`re._compiler.compile`, answering from the kept code when it can."""
    if not isinstance(p, str | bytes) or flags & _compiler.SRE_FLAG_DEBUG:
        return _ORIGINAL(p, flags)  # a parsed pattern (re.Scanner) or a debugging print
    key = (isinstance(p, bytes), p, int(flags))
    args = _decoded(_KEPT.get(key))
    _USED.add(key)
    if args is not None and _well_formed(key, args):  # checked on use, not for the whole file
        try:
            return _from_args(p, args)
        except Exception:  # a damaged entry (_sre checks the code it is given)
            pass
    started = time.perf_counter()
    args = _compiled_args(p, flags)
    spent = time.perf_counter() - started
    with _LOCK:
        _KEPT[key] = marshal.dumps(args)
        _STATE["added"] += 1
        _STATE["compiling"] += spent
    return _from_args(p, args)


_ORIGINAL = _compiler.compile if _compiler else None


def bounded(kept: dict, used: set, limit: int, size: Callable[[object, object], int]) -> dict:
    """`kept` with this run's entries last, less the oldest unused ones past `limit` bytes
    (`size(key, value)` each)."""
    order = [key for key in kept if key not in used] + [key for key in kept if key in used]
    sizes = [size(key, kept[key]) for key in order]
    total = sum(sizes)
    first = 0
    while total > limit and first < len(order) and order[first] not in used:
        total -= sizes[first]
        first += 1
    return {key: kept[key] for key in order[first:]}


# Writing the file back costs about twice reading it (measured: ~7 ms for 1 MB, ~3.5 to
# read it); a run whose new patterns took less to compile than that leaves it as it is.
_WRITE_COST = 2.0


def open_kept(kind: str, tag: str) -> tuple[str | None, dict, float]:
    """The path of the kept file of `kind` for `tag`, its entries, and the seconds reading
    it took; (None, {}, 0.0) when there is no safe folder to keep it in."""
    try:
        folder = _folder()
    except OSError:
        folder = None
    if folder is None:
        return None, {}, 0.0
    path = os.path.join(folder, f"{kind}-{tag}.marshal")
    started = time.perf_counter()
    entries = read_entries(path, tag)
    return path, entries, time.perf_counter() - started


def worth_writing(compiling: float, loading: float) -> bool:
    """Whether writing the file back saves the next runs more than it costs this one:
    the new entries took `compiling` seconds to make, the file `loading` to read. A
    library that builds one cheap pattern from a set (its text differs in each process)
    would otherwise have every run rewrite the whole file for it."""
    return compiling > _WRITE_COST * loading


def _save() -> None:
    """Write the kept code when this run added to it enough to be worth keeping (see
    `worth_writing`): a fresh file renamed over the old."""
    path = _STATE["path"]
    if not path or not _STATE["added"] or not worth_writing(_STATE["compiling"],
                                                              _STATE["loading"]):
        return
    with _LOCK:
        well_formed = {key: value for key, value in _KEPT.items()
                       if _key_well_formed(key) and isinstance(value, bytes)}
        entries = bounded(well_formed, _USED, _MAX_BYTES,
                          lambda key, value: len(key[1]) + len(value))
    write_entries(path, _tag(), entries, ".regex-")


# Patterns whose code must come out as `re` itself makes it before anything is kept: named
# and numbered groups, flags, a character set, bytes.
# (The first one's character set, in three runs of which two are past U+00FF, takes
# _sre's big charset form; a wide range such as U+4E00-U+9FFF would cost ~1 ms more at
# each start for nothing more.)
_PROBES = ((r"(?P<name>[a-z\u0100-\u017f\u4e00-\u4e0f]+)\s*(\d{2,})?$", 0),
           (rb"(?i)^\.[^\r\n]", 0), (r"[^\W_](?=x)|(?<!y)z", 16))


def _agrees() -> bool:
    """Whether this interpreter's `re` internals are those this module was written for: a
    CPython whose `_compiler` or `_sre` changed makes patterns the usual way."""
    try:
        for p, flags in _PROBES:
            made, fresh = _from_args(p, _compiled_args(p, flags)), _ORIGINAL(p, flags)
            if made != fresh or made.groupindex != fresh.groupindex:
                return False
    except Exception:
        return False
    return True


def install() -> None:
    """Answer `re.compile` from the kept code from now on in this process (idempotent)."""
    if (_STATE["installed"] or _compiler is None or _CODE_TYPE is None
            or not hasattr(_compiler, "_code") or not _agrees()):
        return
    _STATE["installed"] = True
    path, entries, _STATE["loading"] = open_kept("regex", _tag())
    if path is None:
        return
    _KEPT.update(entries)  # each entry's shape is checked when it is used
    _STATE["path"] = path
    _compiler.compile = _compile_kept
    atexit.register(_save)


# Importing is installing: `pipeline.build` imports this module before any other.
install()
