"""Send throughput: `publish send --service smtp` against Postfix's smtp-sink, beside smtp-source.

Usage: python bench/send.py [--recipients 20000] [--connections 1 4] [--runs 15]
       [--memory 10000 200000] [--before CHECKOUT] [--write]
       [--service ses]  (SES: see bench/send_ses.py)

Needs Debian's `postfix` package (smtp-sink, smtp-source). Starts one smtp-sink on
loopback, then for each connection count makes `--runs` pairs: the bigger sample issue
sent to N generated recipients by a whole `publish send` process (startup, reading the
list, opening the send and the report included), and smtp-source sending N messages of
the same size over the same number of connections; the two alternate which goes first.
Each process is timed as a whole (wall) and by its own CPU time (wait4's rusage), and
the ratio is smtp-source's wall time over publish's, per pair; the table gives medians,
the load average and the machine. `--before` runs earlier checkouts' `publish send` (one
or more) in the same rounds (PYTHONPATH), for a before/after under the same load; the CPU
per message is the median process CPU time over the recipients.
`--write` replaces the SMTP section of bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SECRET = "bench-unsubscribe-secret-0123456789"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_sink(port: int) -> subprocess.Popen:
    sink = shutil.which("smtp-sink") or "/usr/sbin/smtp-sink"
    user = ["-u", "nobody"] if os.geteuid() == 0 else []
    proc = subprocess.Popen([sink, *user, f"127.0.0.1:{port}", "1024"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
            return proc
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise SystemExit("smtp-sink did not start; install Debian's postfix package")


def newsletter(folder: Path, recipients: int) -> Path:
    for name in ("email_templates", "issues", "assets"):
        shutil.copytree(ROOT / name, folder / name)
    shutil.copy2(ROOT / "publish.toml", folder / "publish.toml")
    (folder / "subscribers").mkdir()
    with open(folder / "subscribers" / "main.csv", "w", encoding="utf-8") as out:
        out.write("email,name,status,created_at\n")
        for n in range(recipients):
            out.write(f"reader{n}@example.org,Reader {n},active,2025-01-01\n")
    return folder


def finished(proc: subprocess.Popen, start: float) -> tuple[float, float, int]:
    """Wait for one child: its wall time, its own CPU time (user + system) and peak RSS
    in KB, read with wait4 so that nothing else is counted."""
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        err = proc.stderr.read().decode("utf-8", "replace") if proc.stderr else ""
        raise SystemExit(f"{proc.args[0]} failed ({proc.returncode}): {err[-2000:]}")
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss


def run_send(folder: Path, issue: str, port: int, connections: int,
             code: Path | None = None) -> dict:
    """One whole `publish send` process: its wall and CPU time (its worker processes
    included: wait4 counts the children it waited for), peak RSS and its report. `code`: a
    checkout of the pipeline to run instead of the one installed (PYTHONPATH)."""
    env = {**os.environ, "PUBLISH_UNSUBSCRIBE_SECRET": SECRET, "PUBLISH_SMTP_HOST": "127.0.0.1",
           "PUBLISH_SMTP_PORT": str(port), "PUBLISH_SMTP_SECURITY": "none"}
    if code is not None:
        env["PYTHONPATH"] = str(code)
    shutil.rmtree(folder / ".publish", ignore_errors=True)
    subprocess.run([sys.executable, "-m", "pipeline.cli", "draft", issue], cwd=folder, env=env,
                   check=True, stdout=subprocess.DEVNULL)
    with tempfile.TemporaryFile() as out:
        start = time.perf_counter()
        proc = subprocess.Popen(
            [sys.executable, "-m", "pipeline.cli", "send", issue, "--service", "smtp", "--yes",
             "--json", "--connections", str(connections)],
            cwd=folder, env=env, stdout=out, stderr=subprocess.PIPE)
        wall, cpu, peak_kb = finished(proc, start)
        out.seek(0)
        report = json.loads(out.read())
    return {"sent": report["sent"], "wall": wall, "cpu": cpu,
            "send_seconds": report["seconds"], "peak_mb": peak_kb / 1024}


def message_size(folder: Path, issue: str) -> int:
    env = {**os.environ, "PUBLISH_UNSUBSCRIBE_SECRET": SECRET}
    out = folder / "size-check"
    subprocess.run([sys.executable, "-m", "pipeline.cli", "build", issue, "--out", str(out)],
                   cwd=folder, env=env, check=True, stdout=subprocess.DEVNULL)
    return (out / "email.eml").stat().st_size


def run_source(port: int, messages: int, connections: int, size: int) -> tuple[float, float]:
    """One whole smtp-source process: wall and CPU time."""
    source = shutil.which("smtp-source") or "/usr/sbin/smtp-source"
    start = time.perf_counter()
    proc = subprocess.Popen([source, "-d", "-s", str(connections), "-m", str(messages),
                             "-l", str(size), "-f", "letters@pixels-and-prose.example",
                             "-t", "reader@example.org", f"127.0.0.1:{port}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    wall, cpu, _ = finished(proc, start)
    return wall, cpu


def load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3]) \
        if Path("/proc/loadavg").exists() else "?"


def paired(folder: Path, issue: str, port: int, connections: int, size: int,
           recipients: int, runs: int, before: list[Path] | None = None) -> list[dict]:
    """`runs` rounds of (publish send, smtp-source[, publish send of each of `before`]),
    the order rotating from round to round; the medians for publish and each of `before`."""
    before = before or []
    codes = {"send": None, **{f"before{n}": code for n, code in enumerate(before)}}
    steps = ["send", "source"] + [f"before{n}" for n in range(len(before))]
    got: dict[str, list] = {step: [] for step in steps}
    loads = []
    for n in range(runs):
        loads.append(float(load().split()[0]))
        order = steps[n % len(steps):] + steps[:n % len(steps)]
        for step in order:
            if step == "source":
                got[step].append(run_source(port, recipients, connections, size))
                continue
            result = run_send(folder, issue, port, connections, codes[step])
            if result["sent"] != recipients:
                raise SystemExit(f"publish sent {result['sent']} of {recipients}")
            got[step].append(result)
        source = got["source"][-1]
        words = [f"  {connections} connection(s), run {n + 1}/{runs}:"]
        for step in codes:
            one = got[step][-1]
            words.append(f"{'publish' if step == 'send' else step} {one['wall']:.2f} s "
                         f"wall {one['cpu']:.2f} s CPU (ratio {source[0] / one['wall']:.2f}),")
        words.append(f"smtp-source {source[0]:.2f} s wall {source[1]:.2f} s CPU, "
                     f"load {loads[-1]:.2f}")
        print(" ".join(words), file=sys.stderr, flush=True)
    med = statistics.median
    rows = []
    for step, code in codes.items():
        ratios = [t[0] / s["wall"] for s, t in zip(got[step], got["source"], strict=True)]
        rows.append({
            "name": "this" if step == "send" else f"{step} ({code})",
            "wall": med(s["wall"] for s in got[step]), "cpu": med(s["cpu"] for s in got[step]),
            "loop": med(s["send_seconds"] for s in got[step]),
            "peak_mb": max(s["peak_mb"] for s in got[step]),
            "source_wall": med(t[0] for t in got["source"]),
            "source_cpu": med(t[1] for t in got["source"]),
            "ratio": med(ratios), "ratio_min": min(ratios), "ratio_max": max(ratios),
            "load": med(loads),
        })
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipients", type=int, default=20000)
    parser.add_argument("--connections", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--runs", type=int, default=15,
                        help="paired runs per connection count (medians are reported)")
    parser.add_argument("--memory", type=int, nargs="*", default=[],
                        help="list sizes for a peak-memory comparison (1 connection)")
    parser.add_argument("--write", action="store_true",
                        help="replace the send section of bench/RESULTS.md")
    parser.add_argument("--before", type=Path, nargs="+",
                        help="checkouts of earlier pipelines, run in the same rounds")
    parser.add_argument("--service", choices=["smtp", "ses"], default="smtp",
                        help="ses: through the SES v2 emulator (see bench/send_ses.py)")
    args = parser.parse_args()
    if args.service == "ses":
        from bench import send_ses

        print("\n".join(send_ses.main(args.recipients, args.connections, args.memory)))
        return
    issue = "issues/2025-01-ai-art.md"
    # The pipeline the runs import (PYTHONPATH may point at another checkout, to compare).
    found = subprocess.run([sys.executable, "-c", "import pipeline; print(pipeline.__file__)"],
                           capture_output=True, text=True, check=True,
                           cwd=tempfile.gettempdir()).stdout.strip()
    source = Path(found).parents[1]
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=source,
                            capture_output=True, text=True).stdout.strip()
    lines = [f"machine: {platform.machine()}, {os.cpu_count()} cores, Python "
             f"{platform.python_version()}, {platform.platform()}",
             f"date: {time.strftime('%Y-%m-%d %H:%M %Z')}; pipeline at commit {commit or '?'}; "
             f"load average at start: {load()}"]
    port = free_port()
    sink = start_sink(port)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            folder = newsletter(Path(tmp) / "letter", args.recipients)
            size = message_size(folder, issue)
            lines.append(f"message: {size} bytes ({issue}); recipients: {args.recipients}; "
                         f"{args.runs} paired runs per row (medians; publish and smtp-source "
                         "alternate which goes first)")
            lines.append("")
            lines.append("| code | connections | publish: whole process | publish CPU | "
                         "CPU per message | send loop | smtp-source | smtp-source CPU | "
                         "ratio (paired median, min–max) | load | peak RSS |")
            lines.append("|---|---|---|---|---|---|---|---|---|---|---|")
            for connections in args.connections:
                for got in paired(folder, issue, port, connections, size, args.recipients,
                                  args.runs, args.before):
                    rate = args.recipients / got["wall"]
                    lines.append(
                        f"| {got['name']} | {connections} | {got['wall']:.2f} s "
                        f"({rate:.0f} msg/s) | {got['cpu']:.2f} s | "
                        f"{got['cpu'] / args.recipients * 1e6:.0f} µs | "
                        f"{args.recipients / got['loop']:.0f} msg/s | "
                        f"{got['source_wall']:.2f} s "
                        f"({args.recipients / got['source_wall']:.0f} msg/s) | "
                        f"{got['source_cpu']:.2f} s | **{got['ratio']:.2f}** "
                        f"({got['ratio_min']:.2f}–{got['ratio_max']:.2f}) | {got['load']:.2f} "
                        f"| {got['peak_mb']:.0f} MB |")
                    print(lines[-1], flush=True)
            if args.memory:
                lines.append("")
                lines.append("| subscribers | peak RSS of `publish send` |")
                lines.append("|---|---|")
            for count in args.memory:
                with tempfile.TemporaryDirectory() as tmp2:
                    small = newsletter(Path(tmp2) / "letter", count)
                    result = run_send(small, issue, port, 1)
                    lines.append(f"| {count} | {result['peak_mb']:.0f} MB "
                                 f"({result['sent'] / result['wall']:.0f} msg/s) |")
                    print(lines[-1], flush=True)
    finally:
        sink.terminate()
        sink.wait()
    lines.append(f"load average at the end: {load()}")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.write:
        write_section(text, args)


SECTION = "## SMTP sends"


def write_section(text: str, args: argparse.Namespace) -> None:
    """Replace the SMTP send section of bench/RESULTS.md (the other sections stay)."""
    path = ROOT / "bench" / "RESULTS.md"
    old = path.read_text("utf-8") if path.exists() else "# Benchmark results\n"
    command = (f"python bench/send.py --recipients {args.recipients} --connections "
               f"{' '.join(map(str, args.connections))} --runs {args.runs}")
    section = f"{SECTION} (`{command}`)\n\n{text}\n"
    if SECTION in old:
        head, _, rest = old.partition(SECTION)
        tail = rest[rest.find("\n## "):] if "\n## " in rest else "\n"
        new = head + section + tail.lstrip("\n")
    else:
        new = old.rstrip("\n") + "\n\n" + section
    path.write_text(new, "utf-8")


if __name__ == "__main__":
    main()
