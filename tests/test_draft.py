"""`publish draft`: the local service end to end, and Substack against a strict loopback server."""

from __future__ import annotations

import json
import os
import sqlite3
import time

import pytest

from pipeline import draft, settings, state
from pipeline.errors import InputError, PublishError
from tests.conftest import copy_sample_newsletter, run_publish
from tests.substack_server import SID

EN = "issues/2025-01-ai-art.md"
ZH = "issues/2025-02-video-models.md"


@pytest.fixture
def letter(tmp_path):
    return copy_sample_newsletter(tmp_path / "letter")


def _settings(folder, **env):
    overrides = {f"PUBLISH_{k.upper()}": v for k, v in env.items()}
    return settings.load(folder, env={**os.environ, **overrides})


def _edit(path, old, new):
    text = path.read_text("utf-8")
    assert old in text
    path.write_text(text.replace(old, new), "utf-8")


def _node_types(doc) -> set[str]:
    found = {doc["type"]}
    for child in doc.get("content", []):
        found |= _node_types(child)
    for mark in doc.get("marks", []):
        found.add("mark:" + mark["type"])
    return found


# local -----------------------------------------------------------------------------

def test_local_draft_is_created_once_and_updated_in_place(letter):
    s = _settings(letter)
    first = draft.push(letter / EN, s)
    assert first.changes == ["new draft"] and first.service == "local"
    assert first.url.startswith("file://") and first.url.endswith("email.html")
    again = draft.push(letter / EN, s)
    assert again.remote_id == first.remote_id and again.changes == []

    _edit(letter / EN, "Welcome to the first issue", "Welcome, reader, to the first issue")
    listing = draft.list_drafts(s)
    assert [(d.record.issue, d.markdown_changed) for d in listing] == [(EN, True)]
    updated = draft.push(letter / EN, s)
    assert updated.remote_id == first.remote_id and updated.changes == ["content"]
    assert draft.list_drafts(s)[0].markdown_changed is False

    db = sqlite3.connect(letter / ".publish" / "state.db")
    assert db.execute("SELECT count(*) FROM drafts").fetchone()[0] == 1
    revisions = db.execute("SELECT html, eml FROM draft_revisions ORDER BY id").fetchall()
    assert len(revisions) == 2
    assert "Welcome, reader" in revisions[1][0] and "Welcome, reader" not in revisions[0][0]
    saved = (letter / ".publish" / "drafts" / "2025-01-ai-art" / "email.html").read_text("utf-8")
    assert "Welcome, reader" in saved


def test_publish_draft_and_drafts_commands(letter):
    result = run_publish("draft", EN, cwd=letter)
    assert result.returncode == 0, result.stderr
    assert "Changed new draft" in result.stdout
    listing = json.loads(run_publish("drafts", "--json", cwd=letter).stdout)
    assert listing[0]["issue"] == EN and listing[0]["state"] == "draft"
    assert listing[0]["markdown_changed"] is False
    assert "up to date" in run_publish("drafts", cwd=letter).stdout


def test_a_broken_issue_pushes_nothing(letter):
    (letter / "issues" / "broken.md").write_text("---\ntitle: [x\n---\n", "utf-8")
    result = run_publish("draft", "issues/broken.md", cwd=letter)
    assert result.returncode == 2 and "broken.md:2:" in result.stderr
    assert draft.list_drafts(_settings(letter)) == []


def test_unknown_service_is_one_clear_line(letter):
    result = run_publish("draft", EN, "--service", "carrier-pigeon", cwd=letter)
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "error: unknown service 'carrier-pigeon' (known: buttondown, ghost, local, ses, smtp, "
        "substack)")
    assert not (letter / "build").exists()


def test_corrupted_or_foreign_state_database_is_never_reset(letter):
    db_path = letter / ".publish" / "state.db"
    db_path.parent.mkdir()
    db_path.write_bytes(b"this is not sqlite at all" * 100)
    before = db_path.read_bytes()
    result = run_publish("draft", EN, cwd=letter)
    assert result.returncode == 1
    assert ".publish/state.db" in result.stderr and "not a publish state database" in result.stderr
    assert db_path.read_bytes() == before

    db_path.unlink()
    other = sqlite3.connect(db_path)
    other.execute("CREATE TABLE recipes (name TEXT)")
    other.commit()
    other.close()
    result = run_publish("draft", EN, cwd=letter)
    assert result.returncode == 1 and "foreign" in result.stderr


def test_state_from_a_newer_publish_is_refused(letter):
    db = state.connect(letter / ".publish")
    db.execute("PRAGMA user_version = 99")
    db.close()
    with pytest.raises(PublishError, match="newer publish"):
        state.connect(letter / ".publish")


# substack ---------------------------------------------------------------------------

def test_substack_create_then_update_never_duplicates(letter, substack):
    s = _settings(letter)
    first = draft.push(letter / EN, s, "substack")
    assert first.changes == ["new draft"]
    assert first.url == f"{substack.url}/publish/post/{first.remote_id}"
    assert len(substack.drafts) == 1
    remote = substack.drafts[int(first.remote_id)]
    assert remote["draft_title"] == "Pixels & Prose #1: What image models learned in 2024"
    assert remote["draft_bylines"] == [{"id": 4242, "is_guest": False}]
    uploads = substack.count("POST", "/api/v1/image")
    assert uploads == 4  # timeline, before/after, the two card thumbnails; YouTube is youtube2

    _edit(letter / EN, "Welcome to the first issue", "Welcome back to the first issue")
    second = draft.push(letter / EN, s, "substack")
    assert second.remote_id == first.remote_id and second.changes == ["content"]
    assert substack.count("POST", "/api/v1/drafts") == 1
    assert substack.count("PUT", r"/api/v1/drafts/\d+") == 1
    assert len(substack.drafts) == 1
    assert "Welcome back" in substack.drafts[int(first.remote_id)]["draft_body"]
    assert substack.count("POST", "/api/v1/image") == uploads  # cached by content hash


def test_substack_document_uses_every_node_the_samples_need(letter, substack):
    s = _settings(letter)
    types: set[str] = set()
    warnings: list[str] = []
    for issue in (EN, ZH):
        outcome = draft.push(letter / issue, s, "substack")
        doc = json.loads(substack.drafts[int(outcome.remote_id)]["draft_body"])
        types |= _node_types(doc)
        warnings += outcome.warnings
    expected = {
        "paragraph", "heading", "bullet_list", "ordered_list", "list_item", "blockquote",
        "hard_break", "highlighted_code_block", "horizontal_rule", "captionedImage", "image2",
        "caption", "youtube2", "subscribeWidget", "footnoteAnchor", "footnote",
        "mark:strong", "mark:em", "mark:code", "mark:strikethrough", "mark:link",
    }
    assert expected <= types, expected - types
    assert any("no tables" in w for w in warnings)
    assert any("no math" in w for w in warnings)


def test_substack_image_uses_the_uploaded_url_and_real_size(letter, substack):
    outcome = draft.push(letter / ZH, _settings(letter), "substack")
    doc = json.loads(substack.drafts[int(outcome.remote_id)]["draft_body"])
    images = []

    def walk(node):
        if node["type"] == "image2":
            images.append(node["attrs"])
        for child in node.get("content", []):
            walk(child)

    walk(doc)
    first = images[0]
    assert first["src"].startswith("https://substack-post-media.example/")
    assert (first["width"], first["height"]) == (1280, 640)  # assets/2025-02/compression.png


def test_remote_edit_is_detected_and_force_overwrites(letter, substack):
    s = _settings(letter)
    first = draft.push(letter / EN, s, "substack")
    substack.edit(int(first.remote_id), draft_title="Retitled in Substack's editor")
    _edit(letter / EN, "Welcome to the first issue", "Welcome again to the first issue")
    with pytest.raises(PublishError, match=r"edited on Substack since the last push.*--force"):
        draft.push(letter / EN, s, "substack")
    forced = draft.push(letter / EN, s, "substack", force=True)
    assert forced.remote_id == first.remote_id
    assert substack.drafts[int(first.remote_id)]["draft_title"].startswith("Pixels & Prose #1")


def test_create_that_times_out_is_looked_up_not_repeated(letter, substack):
    from tests.substack_server import Fault

    substack.faults.append(Fault("POST", "/api/v1/drafts", delay=2.0))
    outcome = draft.push(letter / EN, _settings(letter, http_timeout="0.5"), "substack")
    time.sleep(1.8)  # let the slow request finish on the server
    assert len(substack.drafts) == 1
    assert substack.count("POST", "/api/v1/drafts") == 1
    assert outcome.remote_id == str(next(iter(substack.drafts)))


def test_create_left_unfinished_by_a_crash_is_found_on_the_next_run(letter, substack):
    s = _settings(letter)
    first = draft.push(letter / EN, s, "substack")
    db = sqlite3.connect(letter / ".publish" / "state.db")
    # As if the process died after the POST and before recording the id.
    db.execute("UPDATE drafts SET remote_id = NULL, status = 'creating'")
    db.commit()
    db.close()
    again = draft.push(letter / EN, s, "substack")
    assert again.remote_id == first.remote_id
    assert substack.count("POST", "/api/v1/drafts") == 1


def test_rate_limit_is_honoured_and_server_errors_retried(letter, substack):
    from tests.substack_server import Fault

    substack.faults.append(Fault("POST", "/api/v1/drafts", status=429,
                                 headers={"Retry-After": "1"}))
    start = time.monotonic()
    first = draft.push(letter / EN, _settings(letter), "substack")
    assert time.monotonic() - start >= 1.0
    assert len(substack.drafts) == 1

    substack.faults.append(Fault("PUT", r"/api/v1/drafts/\d+", status=500))
    substack.faults.append(Fault("GET", r"/api/v1/drafts/\d+", status=503))
    _edit(letter / EN, "Welcome to the first issue", "Welcome twice to the first issue")
    second = draft.push(letter / EN, _settings(letter), "substack")
    assert second.remote_id == first.remote_id
    assert substack.count("PUT", r"/api/v1/drafts/\d+") == 2
    assert len(substack.drafts) == 1


def test_server_error_on_create_is_checked_before_trying_again(letter, substack):
    from tests.substack_server import Fault

    substack.faults.append(Fault("POST", "/api/v1/drafts", status=502))
    draft.push(letter / EN, _settings(letter), "substack")
    assert len(substack.drafts) == 1
    assert substack.count("GET", "/api/v1/drafts") == 1  # looked before the second POST


def test_expired_session_says_what_to_do_and_never_prints_the_secret(letter, substack):
    result = run_publish("draft", EN, "--service", "substack", cwd=letter,
                         env={"SUBSTACK_SID": "s%3Aexpired-SECRET-value"})
    assert result.returncode == 1
    assert "session expired or not authorised — set SUBSTACK_SID" in result.stderr
    assert "SECRET" not in result.stdout + result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_missing_cookie_and_unreachable_host(letter, monkeypatch):
    monkeypatch.delenv("SUBSTACK_SID", raising=False)
    with pytest.raises(InputError, match="SUBSTACK_SID is not set"):
        draft.push(letter / EN, _settings(letter), "substack")
    assert not (letter / "build").exists()

    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = run_publish("draft", EN, "--service", "substack", cwd=letter, env={
        "SUBSTACK_SID": SID, "SUBSTACK_PUBLICATION_URL": f"http://127.0.0.1:{port}",
        "SUBSTACK_API_URL": f"http://127.0.0.1:{port}", "SUBSTACK_USER_ID": "4242"})
    assert result.returncode == 1
    assert "could not connect" in result.stderr or "connection" in result.stderr
    assert "Traceback" not in result.stderr
