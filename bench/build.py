"""A cold `publish build` beside the official MJML CLI (node) on the same MJML, whole processes.

Usage: python bench/build.py [--runs 15] [--mjml PATH] [--no-compile] [--table-only | --no-table]
                             [--before DIR]

Each round runs, one after the other, `publish build` of the bigger sample issue, the
`mjml` node CLI on the MJML that build renders (same input to MJML, whole process),
`publish --help`, and `publish build` with an empty temporary directory (a first build:
no compiled templates or regular expressions kept from an earlier run); the median of
each and the ratio build / mjml are printed with the machine and its load before and after.
Then one line for a slow case: an issue holding a 300 x 200-cell table, built once.

The MJML CLI is looked for in bench/.node (install it there with
`npm install --prefix bench/.node mjml@5`), else on PATH. `--before DIR` also builds with
another checkout (an older commit) in the same loop, for a before/after pair. The
`pipeline` package is byte-compiled first, as `pip install` does, unless --no-compile (an
editable install under PYTHONDONTWRITEBYTECODE has no bytecode cache and spends ~0.1 s
compiling on each run).
"""

from __future__ import annotations

import argparse
import compileall
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
PUBLISH = [sys.executable, "-m", "pipeline.cli"]


def bigger_sample() -> Path:
    return max((ROOT / "issues").glob("*.md"), key=lambda p: p.stat().st_size)


def machine() -> str:
    return (f"machine: {platform.machine()}, {os.cpu_count()} cores, Python "
            f"{platform.python_version()}, {platform.platform()}")


def load() -> str:
    return "load average: " + " ".join(f"{x:.2f}" for x in os.getloadavg())


def mjml_cli(given: str | None) -> str | None:
    local = ROOT / "bench" / ".node" / "node_modules" / ".bin" / "mjml"
    return given or (str(local) if local.exists() else shutil.which("mjml"))


def mjml_source(issue: Path) -> str:
    """The MJML that `publish build` hands to MJML for `issue` (the repository's settings)."""
    from pipeline import build, render, settings

    seen: list[str] = []
    original = render.mjml_to_html

    def capture(source: str) -> str:
        seen.append(source)
        return original(source)

    render.mjml_to_html = capture
    try:
        build.render_issue(issue, settings.load(ROOT, env={"PUBLISH_IMAGE_SIZES": "local"}))
    finally:
        render.mjml_to_html = original
    return seen[0]


CPU: dict[str, list[float]] = {}  # label -> CPU seconds (user + system) of each run


def timed(args: list[str], cwd: Path = ROOT, label: str = "", env: dict | None = None) -> float:
    """Wall seconds of one whole process; its CPU seconds are kept under `label`."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(args, cwd=cwd, check=True, stdout=subprocess.DEVNULL,
                   env={**os.environ, "PUBLISH_IMAGE_SIZES": "local", **(env or {})})
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    CPU.setdefault(label, []).append(cpu)
    return wall


def report(label: str, times: list[float]) -> None:
    cpu = CPU.get(label)
    cpu_text = f"   CPU median {statistics.median(cpu) * 1000:7.1f} ms" if cpu else ""
    print(f"{label:<44} median {statistics.median(times) * 1000:7.1f} ms   "
          f"min {min(times) * 1000:7.1f}   max {max(times) * 1000:7.1f}   (n={len(times)})"
          + cpu_text)


def big_table_issue(path: Path, rows: int = 300, columns: int = 200) -> None:
    head = "| " + " | ".join(f"h{c}" for c in range(columns)) + " |"
    rule = "|" + "---|" * columns
    body = ["| " + " | ".join(f"r{r}c{c}" for c in range(columns)) + " |" for r in range(rows)]
    path.write_text("---\ntitle: A big table\npreheader: Sixty thousand cells, one table, "
                    "built into an email that still opens\n---\n\n"
                    + "\n".join([head, rule, *body]) + "\n", "utf-8")


def paired(issue: Path, mjml: str | None, runs: int, out: Path,
           before: Path | None = None) -> None:
    build_cmd = [*PUBLISH, "build", str(issue), "--out", str(out / "publish")]
    before_cmd = [*PUBLISH, "--root", str(ROOT), "build", str(issue), "--out",
                  str(out / "before")]
    mjml_file = out / "issue.mjml"
    mjml_file.write_text(mjml_source(issue), "utf-8")
    mjml_cmd = [mjml, str(mjml_file), "-o", str(out / "mjml.html")] if mjml else None
    timed(build_cmd)  # warm the disk cache
    if mjml_cmd:
        timed(mjml_cmd)
    builds, references, helps, befores, firsts = [], [], [], [], []
    build_label, mjml_label = "publish build (cold process)", "mjml node CLI, same MJML"
    first_label = "publish build, nothing kept (first run)"
    before_label = "publish build, --before checkout"
    if before:
        timed(before_cmd, cwd=before)
    for _ in range(runs):
        builds.append(timed(build_cmd, label=build_label))
        if before:
            befores.append(timed(before_cmd, cwd=before, label=before_label))
        if mjml_cmd:
            references.append(timed(mjml_cmd, label=mjml_label))
        helps.append(timed([*PUBLISH, "--help"], label="publish --help"))
        with tempfile.TemporaryDirectory() as empty:  # no compiled templates or patterns
            firsts.append(timed(build_cmd, label=first_label, env={"TMPDIR": empty}))
    report(build_label, builds)
    report(first_label, firsts)
    if befores:
        report(before_label, befores)
        cpu_ratio = statistics.median(CPU[build_label]) / statistics.median(CPU[before_label])
        print(f"{'ratio build / before (CPU, medians)':<44} {cpu_ratio:.2f} x")
    if references:
        report(mjml_label, references)
        ratio = statistics.median(builds) / statistics.median(references)
        print(f"{'ratio build / mjml CLI (wall, medians)':<44} {ratio:.2f} x")
        print(f"{'ratio build / mjml CLI (wall, paired)':<44} "
              f"{statistics.median(b / r for b, r in zip(builds, references, strict=True)):.2f} x")
        cpu_ratio = statistics.median(CPU[build_label]) / statistics.median(CPU[mjml_label])
        print(f"{'ratio build / mjml CLI (CPU, medians)':<44} {cpu_ratio:.2f} x")
    else:
        print("mjml node CLI not found: npm install --prefix bench/.node mjml@5")
    report("publish --help", helps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--mjml", help="the mjml CLI (default bench/.node, else PATH)")
    parser.add_argument("--no-compile", action="store_true",
                        help="do not byte-compile pipeline/ first")
    parser.add_argument("--table-only", action="store_true", help="only the big-table line")
    parser.add_argument("--no-table", action="store_true", help="leave the big table out")
    parser.add_argument("--before", type=Path, help="another checkout to build with too")
    args = parser.parse_args()
    if not args.no_compile:
        for code in (ROOT, args.before):
            if code:
                compileall.compile_dir(code / "pipeline", quiet=1)
    issue = bigger_sample()
    print(machine())
    print(f"issue: {issue.relative_to(ROOT)} ({issue.stat().st_size / 1024:.1f} KB Markdown); "
          f"bytecode: {'as found' if args.no_compile else 'compiled first'}")
    print(load())
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        if not args.table_only:
            paired(issue, mjml_cli(args.mjml), args.runs, out,
                   args.before.resolve() if args.before else None)
        if not args.no_table:
            table = out / "big-table.md"
            big_table_issue(table)
            seconds = timed([*PUBLISH, "build", str(table), "--out", str(out / "table")],
                            label="table")
            print(f"{'publish build, 300 x 200-cell table (once)':<44} {seconds:7.2f} s   "
                  f"CPU {CPU['table'][0]:7.2f} s")
    print(load())


if __name__ == "__main__":
    main()
