"""`publish serve`: one-click unsubscribe, the unsubscribe page, double opt-in, under uvicorn.

Everything runs for real: the app under uvicorn on loopback, `publish send` and `publish site`
as processes, the local outbox (Maildir), the state database, headless Chromium.
"""

from __future__ import annotations

import email
import email.policy
import http.client
import mailbox
import re
import shutil
import sqlite3
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.conftest import copy_sample_newsletter, run_publish
from tests.web_server import WebServer

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]
BASE = "https://letter.example/"
ENV = {"PUBLISH_BASE_URL": BASE, "PUBLISH_WEB_URL": "", "PUBLISH_SUBSCRIBE_PER_CLIENT": "1000"}
EN, ZH = "issues/2025-01-ai-art.md", "issues/2025-02-video-models.md"


def letter(tmp_path: Path, readers: list[str]) -> Path:
    root = copy_sample_newsletter(tmp_path / "letter")
    rows = "".join(f"{address},Reader {i},active,2025-01-01\n"
                   for i, address in enumerate(readers))
    (root / "subscribers" / "main.csv").write_text("email,name,status,created_at\n" + rows,
                                                   "utf-8")
    return root


def send(root: Path, issue: str, *extra: str):
    result = run_publish("send", issue, "--redraft", "--yes", *extra, cwd=root, env=ENV)
    assert result.returncode == 0, result.stderr
    return result


def outbox(root: Path) -> list[email.message.EmailMessage]:
    box = root / "outbox"
    if not box.exists():
        return []
    return [email.message_from_bytes(bytes(m), policy=email.policy.default)
            for m in mailbox.Maildir(box, create=False)]


def to_whom(messages, subject_part: str) -> set[str]:
    return {m["To"].addresses[0].addr_spec.lower() for m in messages
            if subject_part in str(m["Subject"])}


def db_rows(root: Path, sql: str, *args) -> list[tuple]:
    db = sqlite3.connect(root / ".publish" / "state.db")
    try:
        return db.execute(sql, args).fetchall()
    finally:
        db.close()


def post(server: WebServer, target: str, body: bytes,
         content_type: str = "application/x-www-form-urlencoded",
         headers: dict | None = None) -> tuple[int, str]:
    parts = urlsplit(target)
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    conn.request("POST", path, body=body, headers={"Content-Type": content_type,
                                                  **(headers or {})})
    response = conn.getresponse()
    text = response.read().decode("utf-8", "replace")
    conn.close()
    return response.status, text


def get(server: WebServer, target: str) -> tuple[int, str]:
    parts = urlsplit(target)
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    conn.request("GET", parts.path + (f"?{parts.query}" if parts.query else ""))
    response = conn.getresponse()
    text = response.read().decode("utf-8", "replace")
    conn.close()
    return response.status, text


def list_unsubscribe(message) -> str:
    found = re.search(r"<(https://[^>]+)>", str(message["List-Unsubscribe"]))
    assert found and message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    return found.group(1)


def changes(root: Path) -> list[tuple]:
    return db_rows(root, "SELECT key, status, source FROM reader_changes ORDER BY key")


def test_one_click_unsubscribe_as_gmail_sends_it_is_honoured_by_the_next_send(tmp_path):
    readers = ["ada@example.org", "Grace@Example.net", "lin@例子.中国"]
    root = letter(tmp_path, readers)
    send(root, EN)
    first = outbox(root)
    assert len(first) == 3
    grace = next(m for m in first if "grace" in str(m["To"]).lower())
    link = list_unsubscribe(grace)
    with WebServer(root, ENV) as server:
        # Gmail: POST to the List-Unsubscribe URL, body List-Unsubscribe=One-Click, no cookie.
        status, _ = post(server, server.local(link), b"List-Unsubscribe=One-Click")
        assert status == 200
        assert changes(root) == [("grace@example.net", "unsubscribed", "one-click")]
        # Idempotent, and as multipart/form-data (RFC 8058 allows both).
        body = (b"--XyZ\r\nContent-Disposition: form-data; name=\"List-Unsubscribe\"\r\n\r\n"
                b"One-Click\r\n--XyZ--\r\n")
        status, _ = post(server, server.local(link), body, "multipart/form-data; boundary=XyZ")
        assert status == 200
        assert len(changes(root)) == 1
    send(root, ZH)
    subject = str(first[0]["Subject"])
    second = {m["To"].addresses[0].addr_spec.lower() for m in outbox(root)
              if str(m["Subject"]) != subject}
    assert second == {"ada@example.org", "lin@xn--fsqu00a.xn--fiqs8s"}
    skipped = db_rows(root, "SELECT r.email, r.reason FROM recipients r JOIN sends s ON "
                      "s.id = r.send_id WHERE s.issue = ? AND r.state = 'skipped'", ZH)
    assert skipped == [("Grace@example.net", "unsubscribed")]
    # The lists commands see the same data; the export is what the send saw.
    listed = run_publish("subscribers", "list", "--status", "active", cwd=root, env=ENV)
    assert "Grace" not in listed.stdout and "ada@example.org" in listed.stdout
    exported = run_publish("subscribers", "export", cwd=root, env=ENV)
    assert "Grace@example.net,Reader 1,unsubscribed" in exported.stdout


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium")
def test_a_get_never_unsubscribes_and_the_page_button_does(tmp_path):
    from playwright.sync_api import sync_playwright

    root = letter(tmp_path, ["ada@example.org", "bo@example.org"])
    send(root, ZH)
    message = next(m for m in outbox(root) if "ada" in str(m["To"]))
    html = message.get_body(("html",)).get_content()
    link = re.search(r'href="(https://letter\.example/unsubscribe\?token=[^"]+)"', html)
    assert link
    target = link.group(1).replace("&amp;", "&")
    with WebServer(root, ENV) as server, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = browser.new_page(locale="zh-CN", extra_http_headers={"Accept-Language": "zh-CN"})
        page.goto(server.local(target))
        assert page.locator("html").get_attribute("lang") == "zh"
        assert page.locator("button").count() == 1
        assert "ada@example.org" in page.content()
        page.reload()
        assert changes(root) == [], "a GET (a scanner, a preview, a reload) changes nothing"
        with page.expect_navigation():
            page.click("button")
        assert "已退订" in page.content()
        browser.close()
    assert changes(root) == [("ada@example.org", "unsubscribed", "unsubscribe-page")]


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium")
def test_double_opt_in_in_chromium_then_the_send_includes_the_reader(tmp_path):
    from playwright.sync_api import sync_playwright

    root = letter(tmp_path, ["ada@example.org"])
    assert run_publish("site", cwd=root, env=ENV).returncode == 0
    with WebServer(root, ENV) as server, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = browser.new_page()
        page.goto(server.url + "/subscribe/")
        page.fill("#email", "Zoë@Example.org")
        page.fill("#name", "Zoë")
        with page.expect_navigation():
            page.click("button")
        assert "Check your inbox" in page.content()
        mails = [m for m in outbox(root) if "Confirm" in str(m["Subject"])]
        assert len(mails) == 1 and str(mails[0]["To"]) == "Zoë@example.org"
        assert changes(root) == [], "nobody is subscribed before confirming"
        link = re.search(r"https://letter\.example/confirm\?token=\S+",
                         mails[0].get_body(("plain",)).get_content()).group(0)
        page.goto(server.local(link))
        assert changes(root) == [], "opening the link is not confirming"
        with page.expect_navigation():
            page.click("button")
        assert "You are subscribed" in page.content()
        assert changes(root) == [("zoë@example.org", "active", "confirm")]
        page.goto(server.local(link))  # the link works once
        assert "already used" in page.content()
        browser.close()
    send(root, EN)
    assert db_rows(root, "SELECT email, state FROM recipients ORDER BY id") == [
        ("ada@example.org", "sent"), ("Zoë@example.org", "sent")]
    raw = [bytes(m) for m in mailbox.Maildir(root / "outbox", create=False)]
    assert sum("<Zoë@example.org>".encode() in m for m in raw) == 1


def test_forged_truncated_and_hostile_requests_change_nothing(tmp_path):
    root = letter(tmp_path, ["ada@example.org"])
    send(root, EN)
    assert run_publish("site", cwd=root, env=ENV).returncode == 0
    link = list_unsubscribe(outbox(root)[0])
    token = link.split("token=")[1]
    encoded, _, signature = token.partition(".")
    forged = "ZXZlQGV4YW1wbGUub3Jn." + signature  # eve@example.org with ada's signature
    with WebServer(root, ENV) as server:
        before = len(outbox(root))
        attempts = [
            ("POST", f"/unsubscribe?token={forged}", b"List-Unsubscribe=One-Click", 400),
            ("POST", f"/unsubscribe?token={token[:-3]}", b"List-Unsubscribe=One-Click", 400),
            ("POST", f"/unsubscribe?token={encoded}", b"List-Unsubscribe=One-Click", 400),
            ("POST", "/unsubscribe?token=", b"List-Unsubscribe=One-Click", 400),
            ("POST", f"/unsubscribe?token={token}", b"", 400),
            ("POST", f"/unsubscribe?token={token}", b"List-Unsubscribe=Yes", 400),
            ("POST", f"/unsubscribe?token={token}&lang=xx-nope",
             b"List-Unsubscribe=One-Click", 400),
            ("POST", f"/unsubscribe?token={token}", b"a=" + b"x" * (10 * 1024 * 1024), 413),
            ("GET", f"/unsubscribe?token={forged}", b"", 400),
            ("GET", f"/unsubscribe?token={token}&lang=klingon", b"", 400),
            ("GET", "/confirm?token=c1.e30.AAAA", b"", 400),
            ("POST", "/confirm", b"token=c1.e30.AAAA", 400),
            ("POST", "/subscribe", b"email=a%0D%0ABcc:x@evil.example@example.org", 400),
            ("POST", "/subscribe", b"email=" + b"a" * 10_000 + b"@example.org", 400),
            ("POST", "/subscribe", b"email=not-an-address", 400),
            ("POST", "/subscribe", b"email=x@example.org&lang=qq", 400),
            ("POST", "/subscribe", b"email=x@example.org&name=a%0Ab", 400),
            ("POST", "/subscribe", b"email=x@example.org&lang=%ff%fe", 400),
            ("PUT", "/unsubscribe", b"", 405),
            ("GET", "/%2e%2e/publish.toml", b"", 404),
            ("GET", "/..%2f.publish/state.db", b"", 404),
            ("GET", "/.publish-site.json", b"", 404),
        ]
        for method, target, body, expected in attempts:
            if method == "GET":
                status, text = get(server, target)
            else:
                conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
                try:
                    conn.request(method, target, body=body, headers={
                        "Content-Type": "application/x-www-form-urlencoded"})
                    response = conn.getresponse()
                    status, text = response.status, response.read().decode("utf-8", "replace")
                finally:
                    conn.close()
            assert status == expected, (target[:60], body[:60], status)
            assert "Traceback" not in text and len(text) < 6000
            assert "<h1>" in text
        # a page on another site cannot make a reader's browser subscribe or confirm
        status, _ = post(server, "/subscribe", b"email=x@example.org",
                         headers={"Origin": "https://evil.example"})
        assert status == 403
        status, _ = post(server, "/subscribe", b"email=x@example.org",
                         headers={"Sec-Fetch-Site": "cross-site"})
        assert status == 403
        assert "Traceback" not in server.stop()
    assert changes(root) == []
    assert len(outbox(root)) == before


def test_200_unsubscribes_and_subscribes_at_once_while_a_send_freezes_its_audience(tmp_path):
    """Nothing lost, and nobody unsubscribed is sent to once the answer was given."""
    import subprocess
    import sys
    import threading
    from concurrent.futures import ThreadPoolExecutor
    from urllib.parse import quote

    from pipeline import unsubscribe

    leaving = [f"leave{i}@example.org" for i in range(100)]
    staying = [f"stay{i}@example.org" for i in range(100)]
    joining = [f"join{i}@example.org" for i in range(100)]
    root = letter(tmp_path, leaving + staying)
    assert run_publish("draft", EN, cwd=root, env=ENV).returncode == 0
    key = unsubscribe.signing_key(root / ".publish")
    import os

    with WebServer(root, ENV, workers=2) as server:
        barrier = threading.Barrier(201)

        def unsubscribe_one(address: str) -> int:
            barrier.wait()
            return post(server, f"/unsubscribe?token={unsubscribe.make_token(key, address)}",
                        b"List-Unsubscribe=One-Click")[0]

        def subscribe_one(address: str) -> int:
            barrier.wait()
            return post(server, "/subscribe", f"email={quote(address)}".encode())[0]

        with ThreadPoolExecutor(200) as pool:
            answers = [pool.submit(unsubscribe_one, a) for a in leaving]
            answers += [pool.submit(subscribe_one, a) for a in joining]
            sender = subprocess.Popen(
                [sys.executable, "-m", "pipeline.cli", "send", EN, "--yes", "--rate", "80"],
                cwd=root, env={**os.environ, **ENV}, stdout=subprocess.PIPE,
                stderr=subprocess.PIPE, text=True)
            barrier.wait()
            statuses = [f.result() for f in answers]
        if statuses != [200] * 200:
            sender.kill()
            pytest.fail(f"{statuses}\n{server.stop()}")
        _, err = sender.communicate(timeout=120)
        assert sender.returncode == 0, err
        confirmations = [m for m in outbox(root) if "Confirm" in str(m["Subject"])]
        assert len(confirmations) == 100
        tokens = [re.search(r"confirm\?token=(\S+)", m.get_body(("plain",)).get_content())
                  .group(1) for m in confirmations]
        with ThreadPoolExecutor(50) as pool:
            assert set(pool.map(lambda t: post(server, "/confirm",
                                               f"token={t}".encode())[0], tokens)) == {200}
    found = dict(db_rows(root, "SELECT key, status FROM reader_changes"))
    assert found == {**dict.fromkeys(leaving, "unsubscribed"), **dict.fromkeys(joining, "active")}
    first = dict(db_rows(root, "SELECT email, state || ':' || reason FROM recipients "
                         "WHERE send_id = 1"))
    for address in leaving:  # skipped, or claimed before their unsubscribe was answered
        assert first[address] == "skipped:unsubscribed" or first[address].startswith("sent")
    assert all(first[a].startswith("sent") for a in staying)
    delivered = [m["To"].addresses[0].addr_spec for m in outbox(root)
                 if "Confirm" not in str(m["Subject"])]
    assert sorted(delivered) == sorted(a for a, s in first.items() if s.startswith("sent"))
    send(root, ZH)
    second = dict(db_rows(root, "SELECT email, state FROM recipients WHERE send_id = 2"))
    assert {a for a, s in second.items() if s == "pending" or s == "sent"} == \
        set(staying) | set(joining)


def test_export_neutralises_formulas_and_keeps_every_subscriber(tmp_path):
    root = letter(tmp_path, ["ada@example.org"])
    with (root / "subscribers" / "main.csv").open("a", encoding="utf-8") as out:
        out.write('bo@example.org,"=HYPERLINK(""http://evil.example"",""x"")",active,\n')
        out.write("cy@example.org,@SUM(1),bounced,\n")
    result = run_publish("subscribers", "export", "--out", str(tmp_path / "x.csv"), cwd=root)
    assert result.returncode == 0, result.stderr
    text = (tmp_path / "x.csv").read_text("utf-8")
    assert "'=HYPERLINK(" in text and "'@SUM(1)" in text
    assert ",=" not in text and ",@" not in text
    assert [line.split(",")[0] for line in text.splitlines()[1:]] == [
        "ada@example.org", "bo@example.org", "cy@example.org"]
    refused = run_publish("subscribers", "export", "--out", "subscribers/main.csv", cwd=root)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr


def confirmations(root: Path) -> list[str]:
    return [re.search(r"confirm\?token=(\S+)", m.get_body(("plain",)).get_content()).group(1)
            for m in outbox(root) if m["Auto-Submitted"] == "auto-generated"]


def test_sign_ups_are_limited_bots_and_suppressed_addresses_get_no_mail(tmp_path):
    root = letter(tmp_path, ["ada@example.org"])
    (root / "subscribers" / "suppressed.csv").write_text("email\nno@example.org\n", "utf-8")
    env = {**ENV, "PUBLISH_SUBSCRIBE_PER_CLIENT": "6"}
    with WebServer(root, env) as server:
        for _ in range(3):
            assert post(server, "/subscribe", b"email=zed@example.org")[0] == 200
        assert post(server, "/subscribe", b"email=zed@example.org")[0] == 429
        assert len(confirmations(root)) == 3
        # the honeypot: a bot that fills every field is told the usual, and nothing is sent
        assert post(server, "/subscribe", b"email=bot@example.org&website=x")[0] == 200
        assert post(server, "/subscribe", b"email=no@example.org")[0] == 200  # suppressed
        assert len(confirmations(root)) == 3
        assert post(server, "/subscribe", b"email=two@example.org")[0] == 200
        assert post(server, "/subscribe", b"email=three@example.org")[0] == 200
        status, text = post(server, "/subscribe", b"email=four@example.org")
        assert status == 429 and "Traceback" not in text, "six an hour from one client"
    assert changes(root) == []


def test_confirm_links_work_once_expire_and_are_no_unsubscribe_tokens(tmp_path):
    from pipeline import settings as settings_mod
    from pipeline import signup

    root = letter(tmp_path, ["ada@example.org"])
    with WebServer(root, ENV) as server:
        assert post(server, "/subscribe", b"email=zed@example.org&lang=zh")[0] == 200
        [token] = confirmations(root)
        assert post(server, f"/unsubscribe?token={token}", b"List-Unsubscribe=One-Click")[0] \
            == 400, "a confirmation link is not an unsubscribe token"
        status, page = get(server, f"/confirm?token={token}")
        assert status == 200 and 'lang="zh"' in page and "确认订阅" in page
        assert post(server, "/confirm", f"token={token}".encode())[0] == 200
        from pipeline import unsubscribe

        key = unsubscribe.signing_key(root / ".publish")
        out = unsubscribe.make_token(key, "zed@example.org")
        assert post(server, f"/unsubscribe?token={out}", b"List-Unsubscribe=One-Click")[0] \
            == 200
        # replaying the confirmation after leaving does not bring the reader back
        assert post(server, "/confirm", f"token={token}".encode())[0] == 400
        assert post(server, "/confirm", f"token={out}".encode())[0] == 400
        settings = settings_mod.load(root, env={})
        old = signup.make_confirm_token(signup.signing_key(settings), "old@example.org", "",
                                        "en", now=0)
        status, page = get(server, f"/confirm?token={old}")
        assert status == 400 and "expired" in page
        assert post(server, "/confirm", f"token={old}".encode())[0] == 400
    assert changes(root) == [("zed@example.org", "unsubscribed", "one-click")]


def test_links_signed_with_a_retired_key_work_while_it_is_listed(tmp_path):
    from pipeline import unsubscribe

    root = letter(tmp_path, ["ada@example.org"])
    old_key = "o" * 32
    token = unsubscribe.make_token(old_key.encode(), "ada@example.org")
    rotated = {**ENV, "PUBLISH_UNSUBSCRIBE_SECRET": "n" * 32}
    with WebServer(root, rotated) as server:
        assert post(server, f"/unsubscribe?token={token}", b"List-Unsubscribe=One-Click")[0] \
            == 400
    assert changes(root) == []
    with WebServer(root, {**rotated, "PUBLISH_UNSUBSCRIBE_OLD_SECRETS": f"x, {old_key}"}) \
            as server:
        assert post(server, f"/unsubscribe?token={token}", b"List-Unsubscribe=One-Click")[0] \
            == 200
        assert old_key not in server.stop()
    assert changes(root) == [("ada@example.org", "unsubscribed", "one-click")]


def test_confirmations_go_through_the_smtp_relay_and_a_relay_down_is_a_503(tmp_path):
    from tests.smtp_server import SmtpServer, free_port

    root = letter(tmp_path, ["ada@example.org"])
    with SmtpServer() as smtp:
        env = {**ENV, "PUBLISH_SERVICE": "smtp", "SMTP_HOST": "127.0.0.1",
               "SMTP_PORT": str(smtp.port), "PUBLISH_SMTP_SECURITY": "none"}
        with WebServer(root, env) as server:
            assert post(server, "/subscribe", b"email=zed@example.org&name=Zed")[0] == 200
            [message] = smtp.recorder.parsed("zed@example.org")
            link = re.search(r"https://letter\.example/confirm\?token=\S+",
                             message.get_body(("plain",)).get_content()).group(0)
            assert get(server, server.local(link))[0] == 200
    down = {**env, "SMTP_PORT": str(free_port())}
    with WebServer(root, down) as server:
        status, page = post(server, "/subscribe", b"email=yan@example.org")
        assert status == 503 and "try again later" in page and "Traceback" not in page
        assert "cannot send a confirmation email" in server.stop()
    assert changes(root) == []
    assert not (root / "outbox").exists() or outbox(root) == []


def test_an_unsubscribe_during_a_send_stops_the_message_not_yet_handed_over(tmp_path):
    import os
    import subprocess
    import sys
    import time

    from pipeline import unsubscribe

    readers = ["one@example.org", "two@example.org", "three@example.org"]
    root = letter(tmp_path, readers)
    assert run_publish("draft", EN, cwd=root, env=ENV).returncode == 0
    token = unsubscribe.make_token(unsubscribe.signing_key(root / ".publish"), readers[2])
    with WebServer(root, ENV) as server:
        sender = subprocess.Popen(
            [sys.executable, "-m", "pipeline.cli", "send", EN, "--yes", "--rate", "0.4"],
            cwd=root, env={**os.environ, **ENV}, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True)
        while not outbox(root) and sender.poll() is None:  # the first message is out
            time.sleep(0.05)
        assert post(server, f"/unsubscribe?token={token}", b"List-Unsubscribe=One-Click")[0] \
            == 200
        _, err = sender.communicate(timeout=60)
    assert sender.returncode == 0, err
    assert db_rows(root, "SELECT email, state, reason FROM recipients ORDER BY id")[2] == \
        ("three@example.org", "skipped", "unsubscribed")
    assert "three@example.org" not in {m["To"].addresses[0].addr_spec for m in outbox(root)}
