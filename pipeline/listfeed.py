"""An export read and checked in a second process while this one loads the scratch database.

Reading an export's rows and checking their addresses is half the work of a big import,
and loading them into SQLite most of the rest: on a machine with two cores the two run at
once. The reading process sends the rows back in batches, in the export's order, through a
pipe; it never touches the list, the lock or the scratch database, so a kill of either
process leaves the list as it was (the list is only rewritten once every row is in). A
file under `FORK_FROM` bytes, or a system without fork, is read in this process.
"""

from __future__ import annotations

import gc
import os
import pickle
import signal
import traceback
from collections.abc import Iterator
from pathlib import Path

from . import listscratch
from .errors import PublishError
from .subscribers import Progress, entries

FORK_FROM = 4 << 20  # bytes of export from which a second process pays for itself
_PIPE_SIZE = 1 << 20  # a bigger pipe: fewer switches between the two processes
_HEAD = 8  # bytes of a message's length


def batches(source: Path, progress: Progress | None = None) -> Iterator[listscratch.Batch]:
    """The export's rows as `listscratch.batches` makes them, in order, read in a second
    process when the file is big enough and the system can fork."""
    if not hasattr(os, "fork") or not _big(source):
        yield from listscratch.batches(entries(source, progress))
        return
    yield from _forked(source, progress)


def _big(source: Path) -> bool:
    try:
        return source.is_file() and source.stat().st_size >= FORK_FROM
    except OSError:
        return False  # read here, where the error is reported as usual


def _forked(source: Path, progress: Progress | None) -> Iterator[listscratch.Batch]:
    read_end, write_end = os.pipe()
    _widen(read_end)
    try:
        pid = os.fork()
    except OSError:  # no process to spare: read here
        os.close(read_end)
        os.close(write_end)
        yield from listscratch.batches(entries(source, progress))
        return
    if pid == 0:  # the reading process: never returns
        os.close(read_end)
        _read(source, write_end)
    os.close(write_end)
    ended = False
    try:
        with open(read_end, "rb", buffering=_PIPE_SIZE) as pipe:
            while True:
                kind, payload = _receive(pipe)
                if kind == "batch":
                    batch, seen = payload
                    if progress is not None and seen is not None:
                        progress(*seen)
                    yield batch
                elif kind == "end":
                    ended = True
                    return
                else:  # "error": what stopped the reading, raised here as it would be there
                    raise payload
    finally:
        if not ended:
            os.kill(pid, signal.SIGKILL)  # our own child, by its id
        os.waitpid(pid, 0)


def _receive(pipe) -> tuple[str, object]:
    head = pipe.read(_HEAD)
    if len(head) == _HEAD:
        size = int.from_bytes(head, "little")
        body = pipe.read(size)
        if len(body) == size:
            return pickle.loads(body)
    raise PublishError("the process reading the export stopped before its end; "
                       "the list is unchanged")


def _read(source: Path, write_end: int) -> None:
    """The reading process: send every batch, then "end" (or "error"), and exit."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the loading process's to handle
    gc.freeze()  # what the process was forked with is never garbage: not scanned again
    code = 0
    try:
        with open(write_end, "wb", buffering=_PIPE_SIZE) as pipe:
            seen: list[tuple[int, int, int] | None] = [None]

            def note(rows: int, chars: int, size: int) -> None:
                seen[0] = (rows, chars, size)

            try:
                for batch in listscratch.batches(entries(source, note)):
                    _send(pipe, "batch", (batch, seen[0]))
                _send(pipe, "end", None)
            except BrokenPipeError:
                raise
            except BaseException as exc:  # raised again in the loading process
                _send(pipe, "error", _portable(exc))
                code = 1
    except BaseException:  # the loading process is gone: nothing to tell
        code = 1
    os._exit(code)


def _send(pipe, kind: str, payload: object) -> None:
    body = pickle.dumps((kind, payload), pickle.HIGHEST_PROTOCOL)
    pipe.write(len(body).to_bytes(_HEAD, "little"))
    pipe.write(body)
    pipe.flush()


def _portable(exc: BaseException) -> BaseException:
    """The exception itself when it survives pickling (PublishError keeps its file and
    line), else a RuntimeError with its traceback."""
    try:
        pickle.loads(pickle.dumps(exc, pickle.HIGHEST_PROTOCOL))
        return exc
    except Exception:
        return RuntimeError("reading the export failed:\n" + "".join(
            traceback.format_exception(exc)))


def _widen(fd: int) -> None:
    try:
        import fcntl

        fcntl.fcntl(fd, getattr(fcntl, "F_SETPIPE_SZ", 1031), _PIPE_SIZE)
    except (ImportError, OSError):
        pass  # the default pipe: slower, the same result
