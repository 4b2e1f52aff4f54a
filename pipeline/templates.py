"""Find the newsletter's email templates and the strings for each language.

A newsletter folder may carry its own `email_templates/`; otherwise the templates that
ship with publish are used.
"""

from __future__ import annotations

import contextlib
import tomllib
from functools import lru_cache
from pathlib import Path

from .errors import InputError


@lru_cache(maxsize=1)
def _package_dir() -> Path:
    """This package's folder, resolved once: the module's own file does not move."""
    return Path(__file__).resolve().parent


def skeleton_dir() -> Path:
    """The newsletter skeleton: this checkout when run from source, else the packaged copy."""
    package = _package_dir()
    packaged = package / "skeleton"
    if (packaged / "email_templates").is_dir():
        return packaged
    return package.parent


@lru_cache(maxsize=4)
def bytecode_cache(kind: str):
    """Compiled templates kept between runs, so a build compiles only templates it has not
    compiled before (compiling the email's templates is ~40 ms of a cold build). `kind`
    names the environment: its entries are kept apart, since the same file compiles to
    different code under other options (autoescaping, trailing newlines).

    Jinja2's own cache, in a folder of the user's temporary directory that only the user
    may read or write (Jinja2 refuses any other). A cache entry is keyed by the template's
    file and checked against its source, so an edited template is compiled again. A
    cache that cannot be read or written only costs the compiling; None when there is
    no safe folder.
    """
    import jinja2

    class Cache(jinja2.FileSystemBytecodeCache):
        def load_bytecode(self, bucket) -> None:
            try:
                super().load_bytecode(bucket)
            except Exception:  # a damaged entry: compile again, and replace it
                bucket.reset()

        def dump_bytecode(self, bucket) -> None:
            # a full or read-only disk: the next run compiles again
            with contextlib.suppress(OSError):
                super().dump_bytecode(bucket)

    try:
        # Jinja2's version in the name: compiled code is only read by the release that
        # wrote it.
        return Cache(pattern=f"publish-{kind}-jinja2-{jinja2.__version__}-%s.cache")
    except (OSError, RuntimeError):
        return None


def edited_loader(folder: Path):
    """A Jinja2 loader for `folder` whose templates count as changed when their text does.

    Jinja2's own loader compares modification times, and a kept environment (a preview
    rebuilding on each save) would miss an edit saved within the file system's time
    resolution; reading a few small files again costs nothing next to compiling them.
    """
    import jinja2

    class Loader(jinja2.FileSystemLoader):
        def get_source(self, environment, template):
            source, filename, _mtime_check = super().get_source(environment, template)

            def uptodate() -> bool:
                try:
                    return Path(filename).read_bytes().decode(self.encoding) == source
                except (OSError, ValueError):
                    return False

            return source, filename, uptodate

    return Loader(str(folder))


def templates_dir(root: Path, name: str = "email_templates") -> Path:
    own = root / name
    if (own / "issue.mjml.j2").is_file():
        return own
    return skeleton_dir() / "email_templates"


KEEP_TOML_BYTES = 256 * 1024  # a longer file is parsed each time, never kept


def parsed_toml(text: str) -> dict:
    """`tomllib.loads(text)`, kept by the text itself for the few small files read at every
    build (a preview reads them at each save): a changed file is always read afresh, even
    one changed within the same tick of its modification time. Callers do not change it."""
    if len(text) > KEEP_TOML_BYTES:
        return tomllib.loads(text)
    return _parsed_toml_kept(text)


@lru_cache(maxsize=16)
def _parsed_toml_kept(text: str) -> dict:
    return tomllib.loads(text)


def _strings_file(path: Path) -> dict[str, str]:
    try:
        data = parsed_toml(path.read_text("utf-8"))
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read template strings: {exc}", path) from None
    return {str(k): str(v) for k, v in data.items()}


def known_languages(folder: Path) -> list[str]:
    return sorted(p.stem for p in (folder / "strings").glob("*.toml"))


def resolve(folder: Path, lang: str) -> tuple[str, str]:
    """The strings file for `lang` (zh-TW → zh-Hant) and a warning when it only approximates it."""
    from .language import require_strings_name

    return require_strings_name(lang, known_languages(folder), folder / "strings")


def strings(folder: Path, lang: str) -> dict[str, str]:
    """Template strings for `lang` ('zh-CN' uses zh, 'zh-TW' zh-Hant), over English for any
    missing key."""
    name, _warning = resolve(folder, lang)
    path = folder / "strings" / f"{name}.toml"
    base = _strings_file(folder / "strings" / "en.toml") if name != "en" else {}
    return {**base, **_strings_file(path)}
