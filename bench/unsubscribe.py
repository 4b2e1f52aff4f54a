"""One-click unsubscribe under the production server: 1,000 POSTs from 20 clients.

Usage: python bench/unsubscribe.py [--requests 1000] [--clients 20] [--workers 1]
Makes a newsletter folder in a temporary directory, starts `uvicorn --factory
pipeline.webapp:create_app` on loopback, and posts `List-Unsubscribe=One-Click` with a valid
token per reader (as Gmail does) from CLIENTS threads, each on its own keep-alive
connection. Prints the median and p99 latency, the errors (must be 0) and the machine.
"""

from __future__ import annotations

import argparse
import http.client
import os
import platform
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline import unsubscribe
from tests.web_server import WebServer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        (root / "publish.toml").write_text('name = "Bench"\nbase_url = "https://b.example/"\n',
                                           "utf-8")
        (root / "subscribers").mkdir()
        (root / "subscribers" / "main.csv").write_text("email\n", "utf-8")
        key = unsubscribe.signing_key(root / ".publish")
        tokens = [unsubscribe.make_token(key, f"reader{n}@example.org")
                  for n in range(args.requests)]
        latencies: list[float] = []
        errors: list[str] = []
        lock = threading.Lock()

        def client(share: list[str], port: int) -> None:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            for token in share:
                started = time.perf_counter()
                try:
                    conn.request("POST", f"/unsubscribe?token={token}",
                                 body=b"List-Unsubscribe=One-Click", headers={
                                     "Content-Type": "application/x-www-form-urlencoded"})
                    response = conn.getresponse()
                    response.read()
                    ok = response.status == 200
                except OSError as exc:
                    ok, conn = False, http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                    response = exc
                elapsed = time.perf_counter() - started
                with lock:
                    latencies.append(elapsed)
                    if not ok:
                        errors.append(str(getattr(response, "status", response)))

        with WebServer(root, workers=args.workers) as server:
            threads = [threading.Thread(target=client, args=(tokens[i::args.clients],
                                                             server.port))
                       for i in range(args.clients)]
            wall = time.perf_counter()
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            wall = time.perf_counter() - wall
        db = sqlite3.connect(root / ".publish" / "state.db")
        recorded = db.execute("SELECT count(*) FROM reader_changes").fetchone()[0]
        db.close()
    latencies.sort()
    p99 = latencies[max(0, int(len(latencies) * 0.99) - 1)]
    print(f"{args.requests} one-click POSTs from {args.clients} clients, uvicorn with "
          f"{args.workers} worker(s): median {statistics.median(latencies) * 1000:.1f} ms, "
          f"p99 {p99 * 1000:.1f} ms, {args.requests / wall:.0f} requests/s, "
          f"errors {len(errors)}, recorded {recorded}")
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, {platform.system()} "
          f"{platform.release()}, Python {platform.python_version()}")
    if errors or recorded != args.requests:
        sys.exit(1)


if __name__ == "__main__":
    main()
