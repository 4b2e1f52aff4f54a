"""Modules our dependencies import but a command never uses, loaded only when first touched.

premailer imports requests (for stylesheets on the network, which a build never fetches),
BeautifulSoup imports soupsieve (CSS selectors, which we never use) and a character-set
detector (for bytes, and we only give it text). Importing them costs a cold build about
0.1 s. `defer` puts a stand-in for each into `sys.modules`; the first attribute anyone
reads from it imports the real module, which then answers for it, so code that does use
them works as before and only pays when it does.

(The standard library's LazyLoader would be the obvious tool, but on Python 3.11 the
`import` statement itself reads the module's `__spec__`, which makes it load at once.)
"""

from __future__ import annotations

import importlib
import os
import sys
import threading
from importlib.machinery import PathFinder
from types import ModuleType

# Imported by premailer (requests), by BeautifulSoup (chardet, charset_normalizer,
# soupsieve) and by cssutils (urllib.request and importlib.metadata, to fetch stylesheets
# from the network and name its version when it does), never used by a build.
UNUSED_BY_BUILD = ("requests", "chardet", "charset_normalizer", "soupsieve",
                   "urllib.request", "importlib.metadata")
_LOCK = threading.RLock()


class _Deferred(ModuleType):
    """Stands in `sys.modules` for a module until someone reads an attribute from it."""

    def __getattr__(self, attr: str):
        return getattr(_load(self), attr)


def _adopt(stand_in: _Deferred, real: ModuleType) -> ModuleType:
    stand_in.__dict__["_deferred_real"] = real
    # Later reads find the real module's names without coming back here.
    stand_in.__dict__.update({k: v for k, v in vars(real).items()
                              if k not in ("__name__", "__spec__", "__loader__")})
    return real


def _load(stand_in: _Deferred) -> ModuleType:
    """Import the real module (its package first) and let `stand_in` answer for it.

    A package's submodules have stand-ins too (so `from requests.exceptions import X`
    goes through here rather than importing a second copy of the submodule): all of
    them leave `sys.modules` before the package's real import, which imports them again.
    """
    with _LOCK:
        real = stand_in.__dict__.get("_deferred_real")
        if real is not None:
            return real
        root_name = stand_in.__name__.partition(".")[0]
        root = _STAND_INS.get(root_name)
        if root is None:  # a submodule of a package that was imported for real
            return _load_submodule(stand_in)
        if "_deferred_real" not in root.__dict__:
            for name in (root_name, *root.__dict__.get("_deferred_children", ())):
                if sys.modules.get(name) is _STAND_INS.get(name):
                    del sys.modules[name]
            _adopt(root, importlib.import_module(root_name))
        if stand_in is root:
            return root.__dict__["_deferred_real"]
        return _adopt(stand_in, importlib.import_module(stand_in.__name__))


def _load_submodule(stand_in: _Deferred) -> ModuleType:
    """Import a deferred submodule of a real package; importing sets the package's
    attribute to the real module, which `stand_in` then answers for."""
    name = stand_in.__name__
    if sys.modules.get(name) is stand_in:
        del sys.modules[name]
    parent, _, child = name.rpartition(".")
    if getattr(sys.modules.get(parent), child, None) is stand_in:
        delattr(sys.modules[parent], child)
    return _adopt(stand_in, importlib.import_module(name))


_STAND_INS: dict[str, _Deferred] = {}


def _stand_in(name: str, spec) -> _Deferred:
    stand_in = _Deferred(name)
    stand_in.__spec__ = spec
    stand_in.__loader__ = spec.loader if spec else None
    stand_in.__file__ = spec.origin if spec else None  # what tools walking sys.modules read
    _STAND_INS[name] = stand_in
    sys.modules[name] = stand_in
    return stand_in


def _submodules(folders: list[str]) -> list[str]:
    """The names of a package's modules and subpackages (what pkgutil would list, without
    the 20 ms pkgutil costs to import)."""
    names = set()
    for folder in folders:
        try:
            entries = os.listdir(folder)
        except OSError:
            continue
        for entry in entries:
            stem, dot, suffix = entry.partition(".")
            if not stem.isidentifier() or stem == "__init__":
                continue
            module = suffix == "py" or suffix.endswith(("so", "pyd"))
            package = not dot and os.path.isfile(os.path.join(folder, entry, "__init__.py"))
            if (dot and module) or package:
                names.add(stem)
    return sorted(names)


def defer(*names: str) -> None:
    """Load each module not imported yet on its first use instead of on its import."""
    for name in names:
        if name in sys.modules:
            continue
        if "." in name:
            _defer_submodule(name)
            continue
        try:
            spec = PathFinder.find_spec(name)  # installed packages live on sys.path
        except (ImportError, ValueError):
            continue
        if spec is None:
            continue  # not installed (or not found on sys.path): imported as it would be
        with _LOCK:
            root = _stand_in(name, spec)
            if spec.submodule_search_locations is not None:
                children = [f"{name}.{child}" for child in
                            _submodules(list(spec.submodule_search_locations))]
                root.__dict__["_deferred_children"] = children
                for child in children:
                    if child not in sys.modules:
                        _stand_in(child, None)


def _defer_submodule(name: str) -> None:
    """A stand-in for a module of a package that is imported for real (`urllib.request`):
    it goes into `sys.modules` and becomes the package's attribute, as importing does."""
    parent_name, _, child = name.rpartition(".")
    try:
        parent = importlib.import_module(parent_name)  # urllib, importlib: next to free
        spec = PathFinder.find_spec(name, list(getattr(parent, "__path__", [])))
    except (ImportError, ValueError):
        return
    if hasattr(parent, child):
        return  # imported meanwhile
    if spec is None:
        return  # not installed: imported (and failing) as it would be
    with _LOCK:
        stand_in = _Deferred(name)
        stand_in.__spec__ = spec
        stand_in.__loader__ = spec.loader
        stand_in.__file__ = spec.origin
        if spec.submodule_search_locations is not None:
            # a package (importlib.metadata): importing one of its modules reads its
            # path, which must not load the package midway and run that module twice
            stand_in.__path__ = list(spec.submodule_search_locations)
        sys.modules[name] = stand_in
        setattr(parent, child, stand_in)


def is_deferred(name: str) -> bool:
    """Whether `name` has a stand-in that has not loaded the real module yet."""
    module = sys.modules.get(name)
    return isinstance(module, _Deferred) and "_deferred_real" not in module.__dict__


class _LazyPattern:
    """A regular expression compiled on its first use (it answers as the pattern does)."""

    def __init__(self, source, flags: int = 0):
        self._source, self._flags, self._compiled = source, flags, None

    def __getattr__(self, attr: str):
        if self._compiled is None:
            import re

            self._compiled = re.compile(self._source, self._flags)
        return getattr(self._compiled, attr)


class _CompileLater(ModuleType):
    """`re` with `compile` making _LazyPatterns; anything else is the real module's."""

    def __init__(self, real: ModuleType):
        super().__init__(real.__name__)
        self._real = real

    def compile(self, source, flags: int = 0) -> _LazyPattern:
        return _LazyPattern(source, flags)

    def __getattr__(self, attr: str):
        return getattr(self._real, attr)


def entity_patterns_on_use() -> None:
    """BeautifulSoup's entity table without its two patterns until they are used.

    The first `&name;` BeautifulSoup parses fills its table of HTML entities, and with it
    two patterns over every character that has an entity name (~35 ms to compile, and
    made from a set, so their text differs in each process and no cache can keep them).
    Only its "html" output formatter uses them; ours writes "minimal". They are compiled
    on first use instead (tests/test_lazy.py uses them).
    """
    from bs4 import dammit

    meta = type(dammit.EntitySubstitution)
    original = meta.__dict__.get("_populate_class_variables")
    if original is None or getattr(original, "_compiles_later", False):
        return  # another BeautifulSoup, or done already

    def populate(cls) -> None:
        with _LOCK:
            if cls._CLASS_VARIABLES_POPULATED:
                return
            real = dammit.re
            dammit.re = _CompileLater(real)
            try:
                original(cls)
            finally:
                dammit.re = real

    populate._compiles_later = True
    meta._populate_class_variables = populate
