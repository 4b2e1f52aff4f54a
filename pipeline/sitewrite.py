"""Writing the site folder without ever losing what publish did not make.

The rule of the build outputs holds here too: `site_dir` must be a folder publish made (it
holds the `.publish-site` marker), an empty folder or a new one, and never the newsletter
folder, one of its working folders or something holding them. Inside it publish writes
only the files it lists in `.publish-site.json`, each through a temporary file moved into
place (a reader of the site never sees half a page), and removes only files it listed
before and no longer makes: a `CNAME`, a `robots.txt` or anything else put there is kept.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path, PurePosixPath

from .errors import InputError, PublishError
from .settings import Settings

MARKER = ".publish-site"
MANIFEST = ".publish-site.json"
MARKER_TEXT = ("Made by `publish site`; publish rewrites only the files it lists in "
               ".publish-site.json.\n")


def _refuse(folder: Path, why: str) -> InputError:
    return InputError(f"will not write the site here: {why}; nothing was changed "
                      "(set site_dir to a new or empty folder)", folder)


def check_site_folder(folder: Path, settings: Settings) -> Path:
    """The resolved site folder, or InputError when writing into it could lose anything."""
    resolved = folder.resolve()
    root = settings.root.resolve()
    protected = {root: "it is the newsletter folder"}
    for name in (settings.state_dir, settings.build_dir, settings.templates_dir,
                 settings.outbox_dir, "issues", "assets", "subscribers", "pipeline", "tests"):
        protected[(root / name).resolve()] = f"it is the {name} folder"
    if resolved in protected:
        raise _refuse(folder, protected[resolved])
    if resolved.parent == resolved or root.is_relative_to(resolved):
        raise _refuse(folder, "it holds the newsletter folder")
    for inside in (settings.state_dir, settings.build_dir, settings.outbox_dir, "issues",
                   "assets", "subscribers"):
        if resolved.is_relative_to((root / inside).resolve()):
            raise _refuse(folder, f"it is inside the {inside} folder")
    if not os.path.lexists(resolved):
        return resolved
    if not resolved.is_dir():
        raise _refuse(folder, "it is a file, not a folder")
    if any(resolved.iterdir()) and not (resolved / MARKER).is_file():
        raise _refuse(folder, f"it was not made by publish (no {MARKER} file)")
    return resolved


def _safe_target(site: Path, rel: str) -> Path:
    """`site/rel`, refusing `..`, absolute paths and symlinks on the way."""
    parts = PurePosixPath(rel).parts
    if not parts or rel.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise InputError(f"will not write {rel!r} in the site: not a plain relative path")
    target = site.joinpath(*parts)
    walk = site
    for part in parts:
        walk = walk / part
        if walk.is_symlink():
            raise _refuse(walk, "a symlink is in the way")
    return target


def previous_files(site: Path) -> dict:
    try:
        data = json.loads((site / MANIFEST).read_text("utf-8"))
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def write_file(site: Path, rel: str, data: bytes) -> bool:
    """Write one file atomically; False (nothing written) when it already holds `data`."""
    target = _safe_target(site, rel)
    try:
        if target.is_file() and target.stat().st_size == len(data) and \
                target.read_bytes() == data:
            return False
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, staging = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            os.chmod(staging, 0o644)
            os.replace(staging, target)
        finally:
            if os.path.exists(staging):
                os.unlink(staging)
    except OSError as exc:
        raise PublishError(f"cannot write the site: {exc.strerror}", target) from None
    return True


def begin(folder: Path, settings: Settings) -> Path:
    site = check_site_folder(folder, settings)
    try:
        site.mkdir(parents=True, exist_ok=True)
        if not (site / MARKER).is_file():
            (site / MARKER).write_text(MARKER_TEXT, "utf-8")
    except OSError as exc:
        raise PublishError(f"cannot write the site: {exc.strerror}", site) from None
    return site


def finish(site: Path, files: list[str], extra: dict) -> list[str]:
    """Record what publish made; remove what it made before and no longer makes."""
    before = previous_files(site).get("files", [])
    removed = []
    for rel in sorted(set(before) - set(files)):
        try:
            target = _safe_target(site, rel)
        except InputError:
            continue
        if target.is_file() or target.is_symlink():
            target.unlink()
            removed.append(rel)
            parent = target.parent
            while parent != site and parent.is_dir() and not any(parent.iterdir()):
                parent.rmdir()
                parent = parent.parent
    write_file(site, MANIFEST, json.dumps({"files": sorted(files), **extra},
                                          ensure_ascii=False, indent=1).encode("utf-8"))
    return removed
