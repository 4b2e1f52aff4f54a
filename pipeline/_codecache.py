"""The methods dataclasses and named tuples generate, kept compiled between runs.

`@dataclass` writes each class's `__init__`, `__repr__`, `__eq__` (and more) as Python
source and compiles it with `exec`; `namedtuple` does the same for `__new__` with `eval`.
A cold build creates ~45 such classes (ours, markdown-it's, cssutils'), and compiling
their source is ~17 ms of it, spent again by every process on the same text. `install`
gives both modules an `exec` and an `eval` that look the source up in a file of code
objects compiled by an earlier run, as Python keeps compiled modules in `__pycache__`;
source not seen before is compiled as the builtins would compile it (no inherited
`__future__` flags, file name `<string>`) and added. The code run is the code `compile`
makes of that source (tests/test_codecache.py compares every kept entry with it).

The file is kept as the regular expressions are (see _regexcache): a folder of the
temporary directory only the user may enter, tagged with the interpreter's bytecode
version, a checksum, bounded, replaced whole, and written back only when what this run
compiled anew cost more than writing it would. Its code is run as Python runs a module's
`__pycache__` file or Jinja2 its cached templates (`_jinja2-cache-<uid>`, beside it):
trusted because no one else may write there; the checksum catches damage, and an entry
that is not a code object is compiled again.
"""

from __future__ import annotations

import atexit
import builtins
import marshal
import sys
import threading
import time
from importlib._bootstrap_external import MAGIC_NUMBER
from types import CodeType

from . import _regexcache  # first: what dataclasses compiles at its import comes from it

_LOCK = threading.Lock()
# (mode, source) -> marshalled code
_KEPT: dict[tuple[str, str], bytes] = {}
_USED: set[tuple[str, str]] = set()
_STATE = {"installed": False, "added": 0, "path": None, "compiling": 0.0, "loading": 0.0}
# A first build writes ~180 KB (its classes' methods, cssutils' among them).
_MAX_BYTES = 1_000_000


def _tag() -> str:
    return (f"{sys.implementation.cache_tag}-{MAGIC_NUMBER.hex()}-{sys.hexversion:x}"
            f"-O{sys.flags.optimize}-k{_regexcache.LAYOUT}")


def _compiled(source: str, mode: str) -> CodeType:
    """The code of `source` as `exec`/`eval` would compile it from dataclasses' or
    collections' own frame (neither module has `__future__` imports): kept, or new."""
    key = (mode, source)
    data = _KEPT.get(key)
    _USED.add(key)
    if isinstance(data, bytes):
        try:
            code = marshal.loads(data)
        except (EOFError, ValueError, TypeError):
            code = None
        if isinstance(code, CodeType):
            return code
    started = time.perf_counter()
    code = compile(source, "<string>", mode, dont_inherit=True)
    spent = time.perf_counter() - started
    with _LOCK:
        _KEPT[key] = marshal.dumps(code)
        _STATE["added"] += 1
        _STATE["compiling"] += spent
    return code


def kept_exec(source, *namespaces):
    """`exec`, with source text compiled from the kept code."""
    if isinstance(source, str):
        source = _compiled(source, "exec")
    return builtins.exec(source, *namespaces)


def kept_eval(source, *namespaces):
    """`eval`, with source text compiled from the kept code."""
    if isinstance(source, str):
        source = _compiled(source, "eval")
    return builtins.eval(source, *namespaces)


def _well_formed(key, value) -> bool:
    return (isinstance(key, tuple) and len(key) == 2 and key[0] in ("exec", "eval")
            and isinstance(key[1], str) and isinstance(value, bytes))


def _save() -> None:
    """Write the kept code back when this run compiled enough new source to be worth it."""
    path = _STATE["path"]
    if not path or not _STATE["added"] or not _regexcache.worth_writing(
            _STATE["compiling"], _STATE["loading"]):
        return
    with _LOCK:
        entries = {key: value for key, value in _KEPT.items() if _well_formed(key, value)}
        entries = _regexcache.bounded(entries, _USED, _MAX_BYTES,
                                      lambda key, value: len(key[1]) + len(value))
    _regexcache.write_entries(path, _tag(), entries, ".code-")


def install() -> None:
    """Compile the source dataclasses and namedtuple generate from the kept code from now
    on in this process (idempotent)."""
    if _STATE["installed"] or sys.implementation.name != "cpython":
        return
    _STATE["installed"] = True
    path, entries, _STATE["loading"] = _regexcache.open_kept("code", _tag())
    if path is None:
        return
    _KEPT.update(entries)  # each entry checked on use
    _STATE["path"] = path
    import collections
    import dataclasses

    # Both modules call the builtin by its global name: theirs is found first.
    dataclasses.exec = kept_exec
    collections.eval = kept_eval
    atexit.register(_save)


# Importing is installing: `pipeline.build` imports this module before any other of ours.
install()
