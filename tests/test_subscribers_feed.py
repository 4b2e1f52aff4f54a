"""A big export is read and checked in a second process: the same list, and no more risk.

Differential: every generated export imported with the reading in a second process and in
this one gives the same list, byte for byte, and the same report. Attacks on real
processes: a SIGKILL of the reading process or of the importing one, a Ctrl-C, an error in
the reading process — the list is left as it was, the error is one line naming the file
and line, and no process is left behind.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline import listfeed, listscratch, subscribers

ADDRESS = st.sampled_from(["a@example.org", "A@EXAMPLE.ORG", "b@xn--bcher-kva.de",
                           "b@bücher.de", "not-an-address", "", "  c@example.org ",
                           "<d@example.org>", "é@example.org", "x@localhost"])
CELL = st.text(alphabet='ab,"\n é\t', max_size=8)
STATUS = st.sampled_from(["", "active", "unsubscribed", "bounced", "paused", "Cleaned"])
ROW = st.tuples(ADDRESS, CELL, STATUS, st.sampled_from(["", "city", "plan"]), CELL)


def _export(rows: list[tuple[str, str, str, str, str]]) -> str:
    """An export whose rows may bring a column of their own (`city`, `plan`) mid-file."""
    import csv
    import io

    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["email", "name", "status", "city", "plan"])
    for email, name, status, column, value in rows:
        writer.writerow([email, name, status, value if column == "city" else "",
                         value if column == "plan" else ""])
    return out.getvalue()


def _import(tmp_path: Path, export: str, existing: str | None, fork_from: int,
            monkeypatch) -> tuple[dict, bytes | None]:
    folder = tmp_path / f"fork{fork_from}"
    folder.mkdir()
    source = folder / "export.csv"
    source.write_text(export, "utf-8")
    dest = folder / "main.csv"
    if existing is not None:
        dest.write_text(existing, "utf-8")
    monkeypatch.setattr(listfeed, "FORK_FROM", fork_from)
    report = subscribers.import_file(source, dest)
    return report.summary(), dest.read_bytes() if dest.exists() else None


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(ROW, max_size=40), existing=st.sampled_from(
    [None, "", "email,name,status,created_at\na@example.org,Old,active,\n",
     "email;status;city\r\nb@bücher.de;bounced;Paris\r\nnot-an-address;active;\r\n"]))
def test_reading_in_a_second_process_changes_nothing(tmp_path_factory, monkeypatch, rows,
                                                     existing):
    tmp_path = tmp_path_factory.mktemp("feed")
    export = _export(rows)
    here = _import(tmp_path, export, existing, 1 << 40, monkeypatch)
    forked = _import(tmp_path, export, existing, 0, monkeypatch)
    assert forked == here


def test_batches_come_in_the_export_order_with_progress(tmp_path, monkeypatch):
    """Many batches through the pipe: every row, once, in order, and progress as it reads."""
    source = tmp_path / "export.csv"
    rows = 30_000
    with open(source, "w", encoding="utf-8") as out:
        out.write("email,name\n")
        for n in range(rows):
            out.write(f"r{n}@example.org,R {n}\n" if n % 7 else f"bad-{n},Bad\n")
    monkeypatch.setattr(listfeed, "FORK_FROM", 0)
    seen: list[int] = []
    got = list(listfeed.batches(source, lambda done, chars, size: seen.append(done)))
    loaded = [row for first, columns, _, _ in got for row in listscratch._rows(first, columns)]
    rejected = [r.value for _, _, refused, _ in got for r in refused]
    assert len(got) > 2
    assert [row[2] for row in loaded] == [f"r{n}@example.org" for n in range(rows) if n % 7]
    assert rejected == [f"bad-{n}" for n in range(rows) if not n % 7]
    assert [row[0] for row in loaded] == list(range(1, len(loaded) + 1))
    assert seen and seen == sorted(seen) and seen[-1] >= rows - 5000


# real processes ---------------------------------------------------------------------

ROWS = 250_000  # ~6.6 MB: over listfeed.FORK_FROM, read in a second process


def _folder(tmp_path: Path) -> tuple[Path, Path, Path]:
    (tmp_path / "publish.toml").write_text('name = "X"\n', "utf-8")
    (tmp_path / "subscribers").mkdir()
    dest = tmp_path / "subscribers" / "main.csv"
    dest.write_text("email,name,status,created_at\nold@example.org,Old,active,\n", "utf-8")
    source = tmp_path / "export.csv"
    with open(source, "w", encoding="utf-8") as out:
        out.write("email,name\n")
        for n in range(ROWS):
            out.write(f"reader{n}@example.org,Reader {n}\n")
    assert source.stat().st_size >= listfeed.FORK_FROM
    return tmp_path, source, dest


def _publish(*args: str, cwd: Path, **popen) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "pipeline.cli", *args], cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(x) for x in text.split()]


def _reader_of(run: subprocess.Popen) -> int:
    """The reading process the import forks (waits for it)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and run.poll() is None:
        children = _children(run.pid)
        if children:
            return children[0]
        time.sleep(0.005)
    raise AssertionError("the import never started a reading process")


def _gone(pid: int) -> bool:
    """Whether a process has ended (a zombie waiting for its parent counts as ended)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            return True
        if state in ("Z", "X"):
            return True
        time.sleep(0.01)
    return False


def _untouched(folder: Path, dest: Path, old: bytes) -> None:
    assert dest.read_bytes() == old
    assert not [p for p in (folder / "subscribers").iterdir() if p.name != "main.csv"]


def test_a_big_import_reads_in_a_second_process_and_lands_whole(tmp_path):
    folder, source, dest = _folder(tmp_path)
    run = _publish("subscribers", "import", str(source), cwd=folder)
    reader = _reader_of(run)
    _out, err = run.communicate(timeout=300)
    assert run.returncode == 0, err
    assert _gone(reader)
    lines = dest.read_text("utf-8").splitlines()
    assert lines[1] == "old@example.org,Old,active,"
    last = ROWS - 1
    assert len(lines) == ROWS + 2 and lines[-1] == f"reader{last}@example.org,Reader {last},active,"


def _import_under_way(tmp_path, trial: int):
    """A big import started, its reading process found, and 0.2 s x `trial` gone by."""
    folder, source, dest = _folder(tmp_path)
    old = dest.read_bytes()
    run = _publish("subscribers", "import", str(source), cwd=folder)
    reader = _reader_of(run)
    time.sleep(0.2 * trial)
    return folder, dest, old, run, reader


@pytest.mark.parametrize("trial", range(3))
def test_a_killed_reading_process_leaves_the_list_and_says_so(tmp_path, trial):
    folder, dest, old, run, reader = _import_under_way(tmp_path, trial)
    os.kill(reader, signal.SIGKILL)
    _out, err = run.communicate(timeout=300)
    assert run.returncode == 1, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert "stopped before its end" in err and "unchanged" in err, err
    _untouched(folder, dest, old)


@pytest.mark.parametrize("trial", range(3))
def test_a_killed_import_leaves_the_list_and_no_reading_process(tmp_path, trial):
    folder, dest, old, run, reader = _import_under_way(tmp_path, trial)
    run.kill()
    run.communicate(timeout=60)
    assert _gone(reader), "the reading process outlived the import"
    _untouched(folder, dest, old)


def test_ctrl_c_stops_both_processes_and_leaves_the_list(tmp_path):
    folder, source, dest = _folder(tmp_path)
    old = dest.read_bytes()
    run = _publish("subscribers", "import", str(source), cwd=folder, start_new_session=True)
    reader = _reader_of(run)
    os.killpg(run.pid, signal.SIGINT)  # what a terminal sends to the foreground group
    _out, err = run.communicate(timeout=60)
    assert run.returncode == 130, err
    # click says Aborted.; (a Ctrl-C landing inside a finaliser may add Python's one-line
    # "Exception ignored in:" above it, never a traceback)
    assert "Traceback" not in err, err
    assert err.strip().splitlines()[-1] in ("Aborted.", "Interrupted."), err
    assert _gone(reader)
    _untouched(folder, dest, old)


def test_an_error_in_the_reading_process_names_the_file_and_line(tmp_path):
    """A header without an email column: found by the reading process, told by the import
    exactly as when it reads the file itself (file, line, exit 2)."""
    folder, source, dest = _folder(tmp_path)
    old = dest.read_bytes()
    text = source.read_text("utf-8")
    source.write_text("\n\nmail address,name" + text[len("email,name"):], "utf-8")
    run = _publish("subscribers", "import", str(source), cwd=folder)
    _out, err = run.communicate(timeout=300)
    assert run.returncode == 2, err
    assert err.strip().splitlines() == [
        f"error: {source}:3: no 'email' column in the header (found: mail address, name)"], err
    _untouched(folder, dest, old)


def test_an_error_late_in_the_file_after_many_batches_is_one_line(tmp_path):
    """UTF-16 cut in the middle of its last character: the reading process has sent most
    of the rows when it fails; the import says so in one line naming the file, exit 2, and
    the list is as it was — exactly what reading in one process says."""
    folder, source, dest = _folder(tmp_path)
    old = dest.read_bytes()
    source.write_bytes(source.read_text("utf-8").encode("utf-16") + b"\x41")
    run = _publish("subscribers", "import", str(source), cwd=folder)
    _out, err = run.communicate(timeout=300)
    assert run.returncode == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {source}: cannot decode as utf-16")
    _untouched(folder, dest, old)
    small = tmp_path / "small.csv"
    small.write_bytes("email\nx@example.org\n".encode("utf-16") + b"\x41")
    alone = _publish("subscribers", "import", str(small), cwd=folder)
    _out, err_small = alone.communicate(timeout=60)
    assert alone.returncode == 2
    assert err_small.replace(str(small), "F").split(":", 2)[2] == \
        err.replace(str(source), "F").split(":", 2)[2]
    _untouched(folder, dest, old)


def test_two_big_imports_started_together_both_land(tmp_path):
    """Two imports, each with its reading process, at once: both land, in either order,
    and the list holds every row of both."""
    folder, source, dest = _folder(tmp_path)
    other = tmp_path / "other.csv"
    with open(other, "w", encoding="utf-8") as out:
        out.write("email,name\n")
        for n in range(ROWS):
            out.write(f"other{n}@example.org,Other {n}\n")
    runs = [_publish("subscribers", "import", str(path), cwd=folder) for path in (source, other)]
    for run in runs:
        _out, err = run.communicate(timeout=600)
        assert run.returncode == 0, err
    emails = [line.split(",", 1)[0] for line in dest.read_text("utf-8").splitlines()[1:]]
    assert len(emails) == 1 + 2 * ROWS and len(set(emails)) == len(emails)
    assert {f"reader{n}@example.org" for n in range(ROWS)} <= set(emails)
    assert {f"other{n}@example.org" for n in range(ROWS)} <= set(emails)
