"""Importing a big subscriber export, paired with a reference import in the same run.

Usage: python bench/subscribers.py [--rows 100000] [--runs 15] [--memory 10000 1000000]
                                   [--also LABEL=CHECKOUT ...]

Generates a Substack-style export (a duplicate in other letter cases every 100 rows, a
bad row every 1,000), then, alternating in each round, runs as whole processes:

- `publish subscribers import` into a fresh project (no list yet);
- the reference, bench/reference_csv_email_validator_sqlite.py: csv -> email-validator
  -> one SQLite transaction;
- `publish subscribers import` from any other checkout given with --also (say the code
  before a change), for before/after figures from the same run.

Prints the median wall and CPU time (user + system of the process, and of the reading
process a big import forks and waits for) of each, the ratios to
the reference, the machine and its load before and after, and the SHA-256 of the list each
checkout wrote (the same digest: the same bytes). --memory: the peak RSS of one import per
size; flat memory means the file was streamed.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REFERENCE = ROOT / "bench" / "reference_csv_email_validator_sqlite.py"


def export(path: Path, rows: int) -> None:
    with open(path, "w", encoding="utf-8") as out:
        out.write("Email,Name,Type,Start date,Cancel date\n")
        for n in range(rows):
            if n % 1000 == 999:
                out.write(f"not-an-address-{n},Bad,free,2024-01-01,\n")
            elif n % 100 == 99:
                out.write(f"READER{n - 1}@EXAMPLE.ORG,Dup,free,2024-01-01,\n")
            else:
                out.write(f"reader{n}@example.org,Reader {n},free,2024-01-01,\n")


def machine() -> str:
    return (f"machine: {platform.machine()}, {os.cpu_count()} cores, Python "
            f"{platform.python_version()}, {platform.platform()}")


def load() -> str:
    return "load average: " + " ".join(f"{x:.2f}" for x in os.getloadavg())


def run(command: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, float, int]:
    """(wall s, CPU s, peak RSS KB) of one whole process."""
    start = time.perf_counter()
    child = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE)
    assert child.stderr is not None
    error = child.stderr.read()  # read while it runs: the rejected rows fill a pipe
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - start
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        sys.exit(f"{' '.join(command)} failed ({child.returncode}):\n"
                 f"{error.decode(errors='replace')[-2000:]}")
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss


def publish(checkout: Path, folder: Path, source: Path) -> tuple[float, float, int]:
    subscribers = folder / "subscribers"
    for old in subscribers.glob("*") if subscribers.exists() else ():
        old.unlink()
    env = {**os.environ, "PYTHONPATH": str(checkout)}
    return run([sys.executable, "-m", "pipeline.cli", "subscribers", "import", str(source)],
               folder, env)


def reference(folder: Path, source: Path) -> tuple[float, float, int]:
    database = folder / "reference.db"
    database.unlink(missing_ok=True)
    return run([sys.executable, str(REFERENCE), str(source), str(database)], folder,
               dict(os.environ))


def digest(folder: Path) -> str:
    """The list's SHA-256, read by chunks: this process stays small, and so does the peak
    RSS a child it starts reports (which counts what it was forked from)."""
    with open(folder / "subscribers" / "main.csv", "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()[:16]


def timings(rows: int, runs: int, checkouts: dict[str, Path]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "publish.toml").write_text('name = "Bench"\n', "utf-8")
        source = folder / "export.csv"
        export(source, rows)
        walls: dict[str, list[float]] = {}
        cpus: dict[str, list[float]] = {}
        digests: dict[str, str] = {}
        labels = [*checkouts, "reference"]
        for round_ in range(runs):
            order = labels[round_ % len(labels):] + labels[:round_ % len(labels)]
            for label in order:
                if label == "reference":
                    wall, cpu, _ = reference(folder, source)
                else:
                    wall, cpu, _ = publish(checkouts[label], folder, source)
                    digests[label] = digest(folder)
                walls.setdefault(label, []).append(wall)
                cpus.setdefault(label, []).append(cpu)
        ref_wall = statistics.median(walls["reference"])
        ref_cpu = statistics.median(cpus["reference"])
        print(f"{rows} rows, {runs} runs of each, alternating; medians:")
        for label in labels:
            wall, cpu = statistics.median(walls[label]), statistics.median(cpus[label])
            name = "reference (csv -> email-validator -> sqlite)" if label == "reference" \
                else f"publish subscribers import [{label}]"
            ratio = "" if label == "reference" else \
                f"   / reference: wall {wall / ref_wall:.2f} x, CPU {cpu / ref_cpu:.2f} x"
            print(f"  {name:<46} wall {wall:7.2f} s (min {min(walls[label]):6.2f})"
                  f"   CPU {cpu:7.2f} s{ratio}")
        for label, value in digests.items():
            print(f"  subscribers/main.csv written by [{label}]: sha256 {value}…")


def memory(sizes: list[int], checkout: Path) -> None:
    for rows in sizes:
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            (folder / "publish.toml").write_text('name = "Bench"\n', "utf-8")
            export(folder / "export.csv", rows)
            wall, cpu, peak = publish(checkout, folder, folder / "export.csv")
            with open(folder / "subscribers" / "main.csv", encoding="utf-8") as imported:
                kept = sum(1 for _ in imported) - 1
            print(f"  {rows:>9} rows: wall {wall:6.2f} s, CPU {cpu:6.2f} s, "
                  f"peak RSS {peak / 1024:5.0f} MB, {kept} imported")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--memory", type=int, nargs="*", default=[],
                        help="also the peak RSS of one import of each of these sizes")
    parser.add_argument("--also", action="append", default=[], metavar="LABEL=CHECKOUT",
                        help="also time the import of another checkout (say, the code "
                             "before a change), alternating in the same run")
    args = parser.parse_args()
    checkouts = {"this": ROOT}
    for item in args.also:
        label, _, path = item.partition("=")
        checkouts[label] = Path(path).resolve()
    print(machine())
    print(f"date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    print(load())
    if args.runs:
        timings(args.rows, args.runs, checkouts)
        print(load())
    if args.memory:
        print("peak memory of one import (this checkout):")
        memory(args.memory, ROOT)
        print(load())


if __name__ == "__main__":
    main()
