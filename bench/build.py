"""Time a cold `publish build` of the bigger sample issue, and `publish --help`, as whole processes.

Usage: python bench/build.py [--runs N]
Prints the median, min and max wall time of each over N runs (default 15) and the machine.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def bigger_sample() -> Path:
    return max((ROOT / "issues").glob("*.md"), key=lambda p: p.stat().st_size)


def time_command(args: list[str], runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(args, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
        times.append(time.perf_counter() - start)
    return times


def report(label: str, times: list[float]) -> None:
    print(f"{label:<44} median {statistics.median(times) * 1000:7.1f} ms   "
          f"min {min(times) * 1000:7.1f}   max {max(times) * 1000:7.1f}   (n={len(times)})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    runs = parser.parse_args().runs
    issue = bigger_sample()
    publish = [sys.executable, "-m", "pipeline.cli"]
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python "
          f"{platform.python_version()}, {platform.platform()}")
    print(f"issue: {issue.relative_to(ROOT)} ({issue.stat().st_size / 1024:.1f} KB Markdown)")
    with tempfile.TemporaryDirectory() as out:
        time_command([*publish, "build", str(issue), "--out", out], 1)  # warm the disk cache
        report("publish build (cold process)",
               time_command([*publish, "build", str(issue), "--out", out], runs))
    report("publish --help", time_command([*publish, "--help"], runs))


if __name__ == "__main__":
    main()
