"""Attacks on list rewrites: processes started together, a SIGKILL mid-rewrite, a full disk.

Each promise: a change to a list lands whole or not at all, and never loses another
change made at the same time, nor any row it did not mean to touch.
"""

from __future__ import annotations

import csv
import random
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline import subscribers


def _folder(tmp_path: Path, rows: int) -> Path:
    (tmp_path / "publish.toml").write_text('name = "X"\n', "utf-8")
    (tmp_path / "subscribers").mkdir()
    with open(tmp_path / "subscribers" / "main.csv", "w", encoding="utf-8", newline="") as out:
        out.write("email,name,status,created_at\r\n")
        for n in range(rows):
            out.write(f"old{n}@example.org,Old {n},active,2024-01-01\r\n")
        out.write("not-an-address,,active,\r\nkept@example.org,Kept,paused,\r\n")
    return tmp_path


def _export(path: Path, rows: int, prefix: str = "new") -> Path:
    with open(path, "w", encoding="utf-8") as out:
        out.write("email,name\n")
        for n in range(rows):
            out.write(f"{prefix}{n}@example.org,New {n}\n")
    return path


def _publish(*args: str, cwd: Path, **popen) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "pipeline.cli", *args], cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)


def _statuses(path: Path) -> dict[str, str]:
    with open(path, encoding="utf-8", newline="") as handle:
        return {row["email"]: row["status"] for row in csv.DictReader(handle)}


@pytest.mark.parametrize("trial", range(3))
def test_import_and_unsubscribes_started_together_all_land(tmp_path, trial):
    folder = _folder(tmp_path, 3000)
    source = _export(tmp_path / "new.csv", 2000, prefix=f"t{trial}-")
    targets = [f"old{n}@example.org" for n in (5, 1500, 2999)]
    runs = [_publish("subscribers", "import", str(source), cwd=folder)]
    runs += [_publish("subscribers", "unsubscribe", t, cwd=folder) for t in targets]
    for run in runs:
        _out, err = run.communicate(timeout=120)
        assert run.returncode == 0, err
    statuses = _statuses(folder / "subscribers" / "main.csv")
    for target in targets:
        assert statuses[target] == "unsubscribed"
    assert sum(1 for e in statuses if e.startswith(f"t{trial}-")) == 2000
    assert sum(1 for e, s in statuses.items() if e.startswith("old") and s == "active") == 2997
    assert statuses["not-an-address"] == "active" and statuses["kept@example.org"] == "paused"
    assert subscribers.suppressed(folder) == set(targets)
    assert not list((folder / "subscribers").glob(".main.csv.*"))


def _staging(folder: Path) -> list[Path]:
    return list((folder / "subscribers").glob(".main.csv.*.tmp"))


def test_a_kill_mid_rewrite_leaves_the_old_list_or_the_new(tmp_path):
    """SIGKILL at random moments of an import (reading the export, writing the new list):
    the list is the old one or the whole new one, never a part."""
    folder = _folder(tmp_path, 20_000)
    path = folder / "subscribers" / "main.csv"
    old = path.read_bytes()
    source = _export(tmp_path / "new.csv", 20_000)
    started = time.monotonic()
    whole = _publish("subscribers", "import", str(source), cwd=folder)
    assert whole.wait(timeout=120) == 0
    took = time.monotonic() - started
    new = path.read_bytes()
    assert new.startswith(old) and new.count(b"\n") == 40_003
    rng = random.Random(20261127)
    killed_writing = 0
    for trial in range(10):
        path.write_bytes(old)
        run = _publish("subscribers", "import", str(source), cwd=folder)
        if trial % 2:  # while the new list is being written beside the old one
            deadline = time.monotonic() + 60
            while not _staging(folder) and run.poll() is None and time.monotonic() < deadline:
                time.sleep(0.002)
            time.sleep(rng.uniform(0, 0.05))
            killed_writing += bool(_staging(folder))
        else:  # anywhere in the import
            time.sleep(rng.uniform(0.05, 1.0) * took)
        run.send_signal(signal.SIGKILL)
        run.communicate()
        assert path.read_bytes() in (old, new), "a killed import left a half-written list"
    assert killed_writing  # at least one kill landed mid-rewrite
    path.write_bytes(old)
    finished = _publish("subscribers", "import", str(source), cwd=folder)
    assert finished.wait(timeout=120) == 0
    assert path.read_bytes() == new
    assert not _staging(folder)  # leftovers cleaned up


@pytest.mark.parametrize("trial", range(2))
def test_two_imports_started_together_both_land(tmp_path, trial):
    """Two exports imported into one list at once: every row of both, the stricter status
    for an address in both (in any letter case), and the list's own rows as they were."""
    folder = _folder(tmp_path, 2000)
    path = folder / "subscribers" / "main.csv"
    old = path.read_bytes()
    first, second = tmp_path / "first.csv", tmp_path / "second.csv"
    with open(first, "w", encoding="utf-8") as out:
        out.write("email,name,status\n")
        out.writelines(f"one{n}@example.org,One {n},active\n" for n in range(3000))
        out.writelines(f"both{n}@example.org,,active\n" for n in range(500))
    with open(second, "w", encoding="utf-8") as out:
        out.write("Email;Name;Type;Start date;Cancel date\n")
        out.writelines(f"two{n}@example.org;Two {n};free;2024-01-01;\n" for n in range(3000))
        out.writelines(f"BOTH{n}@EXAMPLE.ORG;Both;free;2024-01-01;2024-06-01\n"
                       for n in range(500))
    runs = [_publish("subscribers", "import", str(source), cwd=folder)
            for source in ((first, second) if trial == 0 else (second, first))]
    for run in runs:
        _out, err = run.communicate(timeout=120)
        assert run.returncode == 0, err
    header, rows = path.read_bytes().split(b"\r\n", 1)
    assert header == b"email,name,status,created_at,substack_type"  # a column added
    assert rows.startswith(old.split(b"\r\n", 1)[1])  # the list's own rows, as they were
    statuses = _statuses(path)
    assert sum(1 for e in statuses if e.startswith("one")) == 3000
    assert sum(1 for e in statuses if e.startswith("two")) == 3000
    both = {e.lower(): s for e, s in statuses.items() if e.lower().startswith("both")}
    assert len(both) == 500 and set(both.values()) == {"unsubscribed"}
    assert len(statuses) == 2002 + 6500
    assert not _staging(folder)


def _limit_file_size(limit: int):
    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


@pytest.mark.parametrize("limit", [0, 100, 4096, 50_000, 90_000])
def test_a_full_disk_at_any_point_of_the_rewrite_changes_nothing(tmp_path, limit):
    """A write that fails (no space left, here a file-size limit) at any point of the
    import or the unsubscribe: one line, exit 1, the list as it was, no leftovers."""
    folder = _folder(tmp_path, 2000)
    path = folder / "subscribers" / "main.csv"
    old = path.read_bytes()
    assert len(old) > 90_000
    source = _export(tmp_path / "new.csv", 3000)
    for args in (["subscribers", "import", str(source)],
                 ["subscribers", "unsubscribe", "old1999@example.org"]):
        run = _publish(*args, cwd=folder, preexec_fn=_limit_file_size(limit))
        _out, err = run.communicate(timeout=120)
        assert run.returncode == 1, err
        assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
        assert "unchanged" in err or "cannot" in err, err
        assert path.read_bytes() == old
        assert not list((folder / "subscribers").glob(".main.csv.*"))


@pytest.mark.parametrize("limit", [20_000, 2_000_000])
def test_a_scratch_database_that_cannot_grow_is_one_line(tmp_path, limit):
    """The scratch database fills up while the export is being loaded into it, or when it
    is committed: one line, exit 1, the list as it was, no leftovers."""
    folder = _folder(tmp_path, 100)
    path = folder / "subscribers" / "main.csv"
    old = path.read_bytes()
    source = _export(tmp_path / "new.csv", 200_000)  # outgrows the page cache
    run = _publish("subscribers", "import", str(source), cwd=folder,
                   preexec_fn=_limit_file_size(limit))
    _out, err = run.communicate(timeout=120)
    assert run.returncode == 1, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert "cannot merge the list in a temporary folder" in err and "unchanged" in err, err
    assert path.read_bytes() == old
    assert not _staging(folder)


# whatever a list holds, a change touches only its own rows -------------------------------

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from pipeline import csvrows  # noqa: E402

CELL = st.text(alphabet='ab@.,;"\n\r é\t|x', max_size=12)
ADDRESS = st.sampled_from(["a@example.org", "B@Example.org", "c@xn--bcher-kva.de",
                           "not-an-address", '"q"@example.org', ""])
STATUS = st.sampled_from(["active", "unsubscribed", "paused", "", "Bounced"])
ROW = st.tuples(ADDRESS, CELL, STATUS, st.sampled_from(["\n", "\r\n", "\r", ""]), CELL)


@settings(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(alphabet='ab@.,;"\n\r é\t|\x00', max_size=200))
def test_records_put_together_are_the_whole_file(text):
    import io

    records = list(csvrows.records(io.StringIO(text, newline=""), ","))
    assert "".join(r.raw for r in records) == text


@settings(deadline=None, max_examples=40,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(ROW, max_size=8), target=ADDRESS.filter(lambda a: "@" in a and '"' not in a))
def test_unsubscribe_changes_only_the_rows_of_that_address(tmp_path_factory, rows, target):
    folder = tmp_path_factory.mktemp("list")
    text = "email,name,status,created_at\n" + "".join(
        f"{email},{name},{status}{end}{junk if not end else ''}"
        for email, name, status, end, junk in rows)
    path = folder / "main.csv"
    path.write_bytes(text.encode("utf-8"))
    before = list(csvrows.scan(path))
    key = subscribers.email_key(subscribers.normalize_email(target))
    subscribers.set_status(path, target, "unsubscribed")
    after = list(csvrows.scan(path))
    assert len(after) == len(before)
    for old, new in zip(before, after, strict=True):
        if old.record.raw == new.record.raw:
            continue
        # only a data row of the target address may change, and only its status
        assert old.kind == new.kind == "data", (old, new)
        assert subscribers.email_key(subscribers.normalize_email(old.values["email"])) == key
        assert new.values["status"] == "unsubscribed"
        assert {k: v for k, v in new.values.items() if k != "status"} == \
            {k: v for k, v in old.values.items() if k != "status"}
    assert not list(folder.glob(".main.csv.*"))
