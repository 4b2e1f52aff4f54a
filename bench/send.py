"""Send throughput and memory: `publish send` against Postfix's smtp-sink, beside smtp-source.

Usage: python bench/send.py [--recipients 20000] [--connections 1 4] [--memory 10000 200000]
       [--service ses]  (SES: see bench/send_ses.py)

Needs Debian's `postfix` package (smtp-sink, smtp-source). Starts smtp-sink on loopback,
sends the bigger sample issue to N generated recipients through `publish send --service
smtp` (a fresh process each run, timed as a whole and as reported by the send itself),
then runs smtp-source with the same message size and connection count. Peak memory is
the send process's maximum resident set size. Prints a table; `--write` records it in
bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SECRET = "bench-unsubscribe-secret-0123456789"
PEAK_OF_CHILD = (
    "import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True); "
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr)"
)


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


def run_send(folder: Path, issue: str, port: int, connections: int) -> dict:
    env = {**os.environ, "PUBLISH_UNSUBSCRIBE_SECRET": SECRET, "PUBLISH_SMTP_HOST": "127.0.0.1",
           "PUBLISH_SMTP_PORT": str(port), "PUBLISH_SMTP_SECURITY": "none"}
    shutil.rmtree(folder / ".publish", ignore_errors=True)
    subprocess.run([sys.executable, "-m", "pipeline.cli", "draft", issue], cwd=folder, env=env,
                   check=True, stdout=subprocess.DEVNULL)
    start = time.perf_counter()
    # A wrapper process whose only child is the send, so its peak RSS is the send's own.
    done = subprocess.run(
        [sys.executable, "-c", PEAK_OF_CHILD, sys.executable, "-m", "pipeline.cli", "send",
         issue, "--service", "smtp", "--yes", "--json", "--connections", str(connections)],
        cwd=folder, env=env, check=True, capture_output=True, text=True)
    wall = time.perf_counter() - start
    report = json.loads(done.stdout)
    peak_kb = int(done.stderr.strip().splitlines()[-1])
    return {"sent": report["sent"], "wall": wall, "send_seconds": report["seconds"],
            "peak_mb": peak_kb / 1024}


def message_size(folder: Path, issue: str) -> int:
    env = {**os.environ, "PUBLISH_UNSUBSCRIBE_SECRET": SECRET}
    out = folder / "size-check"
    subprocess.run([sys.executable, "-m", "pipeline.cli", "build", issue, "--out", str(out)],
                   cwd=folder, env=env, check=True, stdout=subprocess.DEVNULL)
    return (out / "email.eml").stat().st_size


def run_source(port: int, messages: int, connections: int, size: int) -> float:
    source = shutil.which("smtp-source") or "/usr/sbin/smtp-source"
    start = time.perf_counter()
    subprocess.run([source, "-d", "-s", str(connections), "-m", str(messages), "-l", str(size),
                    "-f", "letters@pixels-and-prose.example", "-t", "reader@example.org",
                    f"127.0.0.1:{port}"], check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipients", type=int, default=20000)
    parser.add_argument("--connections", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--memory", type=int, nargs="*", default=[10000, 100000],
                        help="list sizes for the peak-memory comparison (1 connection)")
    parser.add_argument("--write", action="store_true", help="record in bench/RESULTS.md")
    parser.add_argument("--service", choices=["smtp", "ses"], default="smtp",
                        help="ses: through the SES v2 emulator (see bench/send_ses.py)")
    args = parser.parse_args()
    if args.service == "ses":
        from bench import send_ses

        print("\n".join(send_ses.main(args.recipients, args.connections, args.memory)))
        return
    issue = "issues/2025-01-ai-art.md"
    lines = [f"machine: {platform.machine()}, {os.cpu_count()} cores, Python "
             f"{platform.python_version()}, {platform.platform()}",
             f"date: {time.strftime('%Y-%m-%d %H:%M')}"]
    port = free_port()
    sink = start_sink(port)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            folder = newsletter(Path(tmp) / "letter", args.recipients)
            size = message_size(folder, issue)
            lines.append(f"message: {size} bytes ({issue}); recipients: {args.recipients}")
            lines.append("")
            lines.append("| connections | publish msg/s (send loop) | publish msg/s (whole "
                         "command) | smtp-source msg/s | ratio | peak RSS |")
            lines.append("|---|---|---|---|---|---|")
            for connections in args.connections:
                ours = run_send(folder, issue, port, connections)
                theirs = args.recipients / run_source(port, args.recipients, connections, size)
                loop_rate = ours["sent"] / ours["send_seconds"]
                lines.append(
                    f"| {connections} | {loop_rate:.0f} | {ours['sent'] / ours['wall']:.0f} | "
                    f"{theirs:.0f} | {loop_rate / theirs:.2f} | {ours['peak_mb']:.0f} MB |")
                print(lines[-1], flush=True)
            lines.append("")
            lines.append("| subscribers | peak RSS of `publish send` |")
            lines.append("|---|---|")
            for count in args.memory:
                with tempfile.TemporaryDirectory() as tmp2:
                    small = newsletter(Path(tmp2) / "letter", count)
                    result = run_send(small, issue, port, 1)
                    lines.append(f"| {count} | {result['peak_mb']:.0f} MB "
                                 f"({result['sent'] / result['send_seconds']:.0f} msg/s) |")
                    print(lines[-1], flush=True)
    finally:
        sink.terminate()
        sink.wait()
    text = "\n".join(lines) + "\n"
    print(text)
    if args.write:
        (ROOT / "bench" / "RESULTS.md").write_text(
            "# Last benchmark run\n\nProduced by `python bench/send.py --write` and "
            "`python bench/build.py`.\n\n" + text, "utf-8")


if __name__ == "__main__":
    main()
