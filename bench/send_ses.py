"""Send throughput, CPU and memory through `--service ses`, against the SES v2 emulator.

Usage: python bench/send.py --service ses [--recipients 100000] [--connections 1 4]
       [--memory 10000 100000 1000000]

Starts `aws-ses-v2-local` (installed by .ci/run into .ci/node) on loopback with an account
allowing far more than the run sends, and empties its store every second (it keeps every
message in memory). The figure that says how far one machine goes before SES's own rate
is the limit is the send's CPU time per 1,000 recipients.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.send import SECRET, newsletter  # noqa: E402
from tests.ses_server import Emulator, account  # noqa: E402

USAGE_OF_CHILD = (
    "import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True); "
    "u = resource.getrusage(resource.RUSAGE_CHILDREN); "
    "print(u.ru_maxrss, u.ru_utime + u.ru_stime, file=sys.stderr)"
)


def keep_emptying(url: str, stop: threading.Event) -> None:
    while not stop.wait(1.0):
        with contextlib.suppress(OSError):
            urllib.request.urlopen(urllib.request.Request(url + "/clear-store", method="POST"),
                                   timeout=10).close()


def run_send(folder: Path, issue: str, endpoint: str, connections: int) -> dict:
    env = {**os.environ, "PUBLISH_UNSUBSCRIBE_SECRET": SECRET,
           "PUBLISH_SES_ENDPOINT_URL": endpoint, "PUBLISH_SES_CONFIGURATION_SET": "bench",
           "AWS_ACCESS_KEY_ID": "AKIDBENCH", "AWS_SECRET_ACCESS_KEY": "bench-secret",
           "AWS_DEFAULT_REGION": "eu-west-1", "AWS_CONFIG_FILE": os.devnull,
           "AWS_SHARED_CREDENTIALS_FILE": os.devnull, "AWS_EC2_METADATA_DISABLED": "true"}
    subprocess.run([sys.executable, "-m", "pipeline.cli", "draft", issue], cwd=folder, env=env,
                   check=True, stdout=subprocess.DEVNULL)
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", USAGE_OF_CHILD, sys.executable, "-m", "pipeline.cli", "send",
         issue, "--service", "ses", "--yes", "--json", "--connections", str(connections)],
        cwd=folder, env=env, check=True, capture_output=True, text=True)
    wall = time.perf_counter() - start
    report = json.loads(done.stdout)
    peak_kb, cpu = done.stderr.strip().splitlines()[-1].split()
    return {"sent": report["sent"], "wall": wall, "send_seconds": report["seconds"],
            "peak_mb": int(peak_kb) / 1024, "cpu": float(cpu)}


def main(recipients: int, connections: list[int], memory: list[int]) -> list[str]:
    issue = "issues/2025-01-ai-art.md"
    emulator = Emulator(account(max_rate=1e6, max_24h=1e9))
    stop = threading.Event()
    threading.Thread(target=keep_emptying, args=(emulator.url, stop), daemon=True).start()
    lines = ["", f"SES (aws-ses-v2-local on loopback), {issue}; recipients: {recipients}", "",
             "| connections | recipients/s (send loop) | recipients/s (whole command) | "
             "CPU s per 1,000 | peak RSS |", "|---|---|---|---|---|"]
    try:
        with tempfile.TemporaryDirectory() as tmp:
            folder = newsletter(Path(tmp) / "letter", recipients)
            for count in connections:
                ours = run_send(folder, issue, emulator.url, count)
                lines.append(f"| {count} | {ours['sent'] / ours['send_seconds']:.0f} | "
                             f"{ours['sent'] / ours['wall']:.0f} | "
                             f"{ours['cpu'] * 1000 / ours['sent']:.2f} | "
                             f"{ours['peak_mb']:.0f} MB |")
                print(lines[-1], flush=True)
                shutil.rmtree(folder / ".publish")
        lines += ["", "| subscribers | peak RSS of `publish send --service ses` |", "|---|---|"]
        for count in memory:
            with tempfile.TemporaryDirectory() as tmp:
                result = run_send(newsletter(Path(tmp) / "letter", count), issue,
                                  emulator.url, 1)
                lines.append(f"| {count} | {result['peak_mb']:.0f} MB "
                             f"({result['sent'] / result['send_seconds']:.0f} recipients/s) |")
                print(lines[-1], flush=True)
    finally:
        stop.set()
        emulator.stop()
    return lines
