"""The newsletter's web app under a real production server (uvicorn) on loopback."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class WebServer:
    """`uvicorn --factory pipeline.webapp:create_app` in the newsletter folder."""

    def __init__(self, root: Path, env: dict | None = None, workers: int = 1):
        self.root = root
        self.env = {**os.environ, **(env or {})}
        self.workers = workers
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> WebServer:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "--factory", "pipeline.webapp:create_app",
             "--host", "127.0.0.1", "--port", str(self.port), "--workers", str(self.workers),
             "--no-server-header", "--log-level", "warning", "--no-access-log"],
            cwd=self.root, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError("the web app did not start: "
                                   + self.process.stderr.read().decode(errors="replace"))
            try:
                urllib.request.urlopen(self.url + "/no-such-page", timeout=1)
            except urllib.error.HTTPError:
                return self
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("the web app did not answer within 30 s")

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> str:
        if self.process is None:
            return ""
        self.process.terminate()
        try:
            _, err = self.process.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            _, err = self.process.communicate()
        self.process = None
        self.stderr = err.decode(errors="replace")
        return self.stderr

    def local(self, url: str) -> str:
        """A link from a message (https://letter.example/x?y) on this server."""
        from urllib.parse import urlsplit

        parts = urlsplit(url)
        return f"{self.url}{parts.path}" + (f"?{parts.query}" if parts.query else "")
