"""Changing a subscriber list safely: one writer at a time, and the old list or the new one.

Every rewrite of a file in `subscribers/` holds an exclusive lock on `subscribers/.lock`
from the moment it reads the list until the new one is in place, so an import and an
unsubscribe started together both land. The new list is written beside the old one and
moved over it with `os.replace`, after an fsync: a crash or a kill leaves one or the other.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TextIO

from .errors import PublishError

LOCK_NAME = ".lock"
LOCK_TIMEOUT = 600.0  # a million-row import holds the lock for minutes
# Told once when a change has to wait for another process (the CLI prints it).
notify: Callable[[str], None] | None = None


@contextlib.contextmanager
def locked(folder: Path, timeout: float = LOCK_TIMEOUT) -> Iterator[None]:
    """Hold the lists' lock; a PublishError naming the holder after `timeout` seconds."""
    import fcntl

    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + timeout
        waited = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if notify is not None and not waited:
                    holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
                    notify(f"waiting for another publish process"
                           f"{f' (pid {holder})' if holder.isdigit() else ''} that is "
                           f"changing the lists in {folder}…")
                waited = True
                if time.monotonic() >= deadline:
                    holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
                    who = f" (pid {holder})" if holder.isdigit() else ""
                    raise PublishError(f"another publish process{who} has been changing the "
                                       f"lists in {folder} for {timeout:g} s; try again when it "
                                       "has finished") from None
                time.sleep(0.02)
        with contextlib.suppress(OSError):  # who holds it is only a courtesy
            os.ftruncate(fd, 0)
            os.pwrite(fd, str(os.getpid()).encode("ascii"), 0)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def _staging_prefix(dest: Path) -> str:
    return f".{dest.name}."


def remove_stale(dest: Path) -> None:
    """Delete what a killed rewrite of `dest` left behind; call only with the lock held."""
    for stale in dest.parent.glob(f"{_staging_prefix(dest)}*.tmp"):
        with contextlib.suppress(OSError):
            stale.unlink()


@contextlib.contextmanager
def replacing(dest: Path, encoding: str) -> Iterator[TextIO]:
    """A text file that takes `dest`'s place whole when the block ends without an error.

    A failure to write (a full disk, say) is a PublishError that says the list is unchanged.
    """
    try:
        with _replacing(dest, encoding) as out:
            yield out
    except OSError as exc:
        raise PublishError(f"cannot write {dest}: {exc.strerror or exc}; the list is "
                           "unchanged") from None


@contextlib.contextmanager
def _replacing(dest: Path, encoding: str) -> Iterator[TextIO]:
    dest.parent.mkdir(parents=True, exist_ok=True)
    handle, staging = tempfile.mkstemp(prefix=_staging_prefix(dest), suffix=".tmp",
                                       dir=dest.parent)
    try:
        try:
            mode = stat.S_IMODE(dest.stat().st_mode)
        except FileNotFoundError:
            umask = os.umask(0)
            os.umask(umask)
            mode = 0o666 & ~umask
        os.fchmod(handle, mode)
        with os.fdopen(handle, "w", encoding=encoding, newline="") as out:
            yield out
            out.flush()
            os.fsync(out.fileno())
        os.replace(staging, dest)
        with contextlib.suppress(OSError):
            folder = os.open(dest.parent, os.O_RDONLY)
            try:
                os.fsync(folder)
            finally:
                os.close(folder)
    finally:
        if os.path.exists(staging):
            os.unlink(staging)
