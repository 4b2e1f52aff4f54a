"""Amazon SES v2 on loopback for the tests: the `aws-ses-v2-local` emulator (npm, installed
by .ci/run into .ci/node), behind a thin proxy that adds what the emulator lacks.

The emulator implements SendBulkEmail (inline templates, replacement data and headers; it
stores every message it "sends", read back from its /store) and GetAccount (the account
given in AWS_SES_ACCOUNT). It never throttles, never answers an entry TRANSIENT_FAILURE or
ACCOUNT_THROTTLED and always answers. The proxy (`SesProxy`) forwards every request
unchanged, except, when a test asks:
- `entry_status[address] = [STATUS, ...]`: in the next calls that carry the address (one
  status per call), its entry is taken out before the call is forwarded (so the emulator
  never sends it) and answered with that per-entry Status and an Error, in its place
  among the results (API reference: BulkEmailEntryResult);
- `throttle_calls = N`: the next N SendBulkEmail calls are answered HTTP 429 with
  `x-amzn-ErrorType: TooManyRequestsException` (API reference: SendBulkEmail, Errors)
  and not forwarded;
- `hold`: a call is forwarded (the emulator sends it) and its answer held back until the
  event is set (the first `hold_calls` calls only, when set); `held` is set when one is
  being held (a kill or a timeout "during a call");
- `replace_answer = (status, body)`: the call is forwarded (sent) and answered with that
  instead (a server that answers garbage, or a 5xx after doing the work).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from tests.conftest import ROOT

EMULATOR = ROOT / ".ci" / "node" / "node_modules" / "aws-ses-v2-local" / "dist" / "cli.js"
BULK_PATH = "/v2/email/outbound-bulk-emails"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def account(max_rate: float = 1000, max_24h: float = 200000, sent: float = 0) -> dict:
    """A GetAccount answer, every field the emulator's schema wants."""
    return {"DedicatedIpAutoWarmupEnabled": False,
            "Details": {"AdditionalContactEmailAddresses": [], "ContactLanguage": "EN",
                        "MailType": "MARKETING",
                        "ReviewDetails": {"CaseId": "", "Status": "GRANTED"},
                        "UseCaseDescription": "", "WebsiteURL": "https://letter.test"},
            "EnforcementStatus": "HEALTHY", "ProductionAccessEnabled": True,
            "SendingEnabled": True,
            "SendQuota": {"Max24HourSend": max_24h, "MaxSendRate": max_rate,
                          "SentLast24Hours": sent},
            "SuppressionAttributes": {"SuppressedReasons": []}}


class Emulator:
    """The npm emulator as a child process on a free loopback port."""

    def __init__(self, quota: dict | None = None):
        node = shutil.which("node")
        if node is None or not EMULATOR.is_file():
            raise RuntimeError("aws-ses-v2-local is not installed: npm install --prefix .ci/node "
                               "aws-ses-v2-local (as .ci/run does)")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "AWS_SES_ACCOUNT": json.dumps(quota or account())}
        self.proc = subprocess.Popen([node, str(EMULATOR), "--host", "127.0.0.1", "--port",
                                      str(self.port)], env=env, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(self.url + "/health-check", timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    self.stop()
                    raise RuntimeError("aws-ses-v2-local did not start") from None
                time.sleep(0.1)

    def emails(self) -> list[dict]:
        """Every message the emulator has sent."""
        with urllib.request.urlopen(self.url + "/store", timeout=60) as answer:
            return json.loads(answer.read())["emails"]

    def stop(self) -> None:
        self.proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


class SesProxy:
    """Forwards to the emulator; see the module docstring for what it adds."""

    def __init__(self, emulator: Emulator):
        self.emulator = emulator
        self.entry_status: dict[str, list[str]] = {}
        self.throttle_calls = 0
        self.hold: threading.Event | None = None
        self.hold_calls: int | None = None  # how many calls to hold (None: every one)
        self.replace_answer: tuple[int, bytes] | None = None  # after forwarding the call
        self.held = threading.Event()
        self.calls: list[dict] = []  # every SendBulkEmail request, as received
        self.lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:
                proxy._forward(self, b"")

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.path == BULK_PATH:
                    proxy._bulk(self, body)
                else:
                    proxy._forward(self, body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def _send(self, handler, status: int, body: bytes, headers: dict | None = None) -> None:
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            handler.send_header(name, value)
        handler.end_headers()
        handler.wfile.write(body)

    def _upstream(self, handler, body: bytes) -> tuple[int, bytes]:
        headers = {k: v for k, v in handler.headers.items() if k.lower() not in
                   ("host", "content-length")}
        request = urllib.request.Request(self.emulator.url + handler.path, data=body or None,
                                         headers=headers, method=handler.command)
        try:
            with urllib.request.urlopen(request, timeout=60) as answer:
                return answer.status, answer.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def _forward(self, handler, body: bytes) -> None:
        status, answer = self._upstream(handler, body)
        self._send(handler, status, answer)

    def _bulk(self, handler, body: bytes) -> None:
        request = json.loads(body)
        with self.lock:
            self.calls.append(request)
            throttled = self.throttle_calls > 0
            self.throttle_calls -= throttled
        if throttled:
            self._send(handler, 429, json.dumps({"message": "Rate exceeded"}).encode(),
                       {"x-amzn-ErrorType": "TooManyRequestsException:"})
            return
        entries = request["BulkEmailEntries"]
        answered = {}
        for index, entry in enumerate(entries):
            address = entry["Destination"]["ToAddresses"][0]
            with self.lock:
                statuses = self.entry_status.get(address) or []
                status = statuses.pop(0) if statuses else ""
            if status:
                answered[index] = {"Status": status, "Error": f"{status} (test proxy)"}
        forwarded = [e for i, e in enumerate(entries) if i not in answered]
        results = iter([])
        if forwarded:
            status, answer = self._upstream(handler, json.dumps(
                {**request, "BulkEmailEntries": forwarded}).encode())
            if status != 200:
                self._send(handler, status, answer)
                return
            results = iter(json.loads(answer)["BulkEmailEntryResults"])
        merged = [answered[i] if i in answered else next(results) for i in range(len(entries))]
        with self.lock:
            holding = self.hold is not None and self.hold_calls != 0
            if holding and self.hold_calls is not None:
                self.hold_calls -= 1
        if holding:
            self.held.set()
            self.hold.wait()
        with contextlib.suppress(OSError):
            if self.replace_answer is not None:
                self._send(handler, *self.replace_answer)
                return
            self._send(handler, 200, json.dumps({"BulkEmailEntryResults": merged}).encode())

    def stop(self) -> None:
        if self.hold is not None:
            self.hold.set()
        self.server.shutdown()
        self.server.server_close()


def aws_env(proxy: SesProxy) -> dict[str, str]:
    """Fake credentials and a region the standard AWS way, the endpoint through the proxy;
    nothing read from this machine's own AWS configuration."""
    return {"AWS_ACCESS_KEY_ID": "AKIDTESTTESTTEST", "AWS_SECRET_ACCESS_KEY": "test-secret-key",
            "AWS_REGION": "eu-west-1", "AWS_DEFAULT_REGION": "eu-west-1",
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull, "AWS_EC2_METADATA_DISABLED": "true",
            "PUBLISH_SES_ENDPOINT_URL": proxy.url,
            "PUBLISH_SES_CONFIGURATION_SET": "newsletter-events"}


def node_missing() -> bool:
    """True when the emulator is not installed (its tests are skipped); CI sets
    PUBLISH_TESTS_NEED_EMULATORS=1 so that a missing emulator fails instead of hiding."""
    missing = shutil.which("node") is None or not Path(EMULATOR).is_file()
    if missing and os.environ.get("PUBLISH_TESTS_NEED_EMULATORS") == "1":
        raise RuntimeError(f"the SES emulator is not installed at {EMULATOR}: run "
                           "npm install --prefix .ci/node aws-ses-v2-local")
    return missing
