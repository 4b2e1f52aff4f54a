"""Importing a big subscriber export: time and peak memory, 10,000 vs 1,000,000 rows.

Usage: python bench/subscribers.py [--rows 10000 1000000]
Generates a Substack-style export (with duplicates in other letter cases and a few bad
rows), runs `publish subscribers import` in a fresh process for each size, and prints
wall time and the process's peak RSS: flat memory means the file was streamed.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PEAK_OF_CHILD = (
    "import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True, "
    "stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL); "
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
)


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[10_000, 1_000_000])
    args = parser.parse_args()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python "
          f"{platform.python_version()}")
    for rows in args.rows:
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            (folder / "publish.toml").write_text('name = "Bench"\n', "utf-8")
            export(folder / "export.csv", rows)
            start = time.perf_counter()
            done = subprocess.run(
                [sys.executable, "-c", PEAK_OF_CHILD, sys.executable, "-m", "pipeline.cli",
                 "subscribers", "import", "export.csv"],
                cwd=folder, check=True, capture_output=True, text=True)
            wall = time.perf_counter() - start
            peak_mb = int(done.stdout.strip().splitlines()[-1]) / 1024
            with open(folder / "subscribers" / "main.csv", encoding="utf-8") as imported:
                kept = sum(1 for _ in imported) - 1
            print(f"{rows:>9} rows: {wall:6.1f} s, peak RSS {peak_mb:5.0f} MB, {kept} imported")


if __name__ == "__main__":
    main()
