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


def test_a_kill_mid_rewrite_leaves_the_old_list_or_the_new(tmp_path):
    folder = _folder(tmp_path, 20_000)
    path = folder / "subscribers" / "main.csv"
    old = path.read_bytes()
    source = _export(tmp_path / "new.csv", 20_000)
    rng = random.Random(20261127)
    for _ in range(6):
        run = _publish("subscribers", "import", str(source), cwd=folder)
        time.sleep(rng.uniform(0.3, 3.0))
        run.send_signal(signal.SIGKILL)
        run.communicate()
        now = path.read_bytes()
        assert now == old or (now.startswith(old) and now.count(b"\n") == 40_003), \
            "a killed import left a half-written list"
        path.write_bytes(old)
    finished = _publish("subscribers", "import", str(source), cwd=folder)
    assert finished.wait(timeout=120) == 0
    assert path.read_bytes().startswith(old)
    assert not list((folder / "subscribers").glob(".main.csv.*"))  # leftovers cleaned up


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
